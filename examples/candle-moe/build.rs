// candle-kernels links `-lcudart`. Where CUDART_STATIC_DIR names a folder holding only
// libcudart.a (CUDA's libcudart_static.a, renamed; build.sh sets it up), the linker takes
// that archive, so the binary does not need libcudart.so at run time.
fn main() {
    println!("cargo:rerun-if-env-changed=CUDART_STATIC_DIR");
    if let Ok(dir) = std::env::var("CUDART_STATIC_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
}
