//! `CudaDevice` in a build without feature `cuda` (see `stub.rs`).

super::stub::stub_device!(CudaDevice, CudaKernels, CudaStream, "CUDA device", "cuda");

/// Whether libcuda can be loaded: never, without feature `cuda`.
pub fn driver_present() -> bool {
    false
}
