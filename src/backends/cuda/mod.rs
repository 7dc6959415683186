//! CUDA experts backend: weights prepared once into the kernels' layout, then routing
//! alignment, fp8 activation quantization, two grouped tensor-core GEMMs with the
//! activation fused into the first and the router-weighted sum fused into the second.
//! `layout` and `kernels` are plain Rust and always built (tested without a GPU); the
//! parts that talk to the driver need feature `cuda`.

#[cfg(feature = "cuda")]
pub mod bench;
#[cfg(feature = "cuda")]
pub mod experts;
pub mod kernels;
#[cfg(feature = "cuda")]
pub mod launch;
pub mod layout;
#[cfg(feature = "cuda")]
pub mod lora;
pub mod packed;
#[cfg(feature = "cuda")]
mod plan;
#[cfg(feature = "cuda")]
pub mod router;

#[cfg(feature = "cuda")]
pub use experts::CudaExperts;
#[cfg(feature = "cuda")]
pub use router::CudaRouter;
