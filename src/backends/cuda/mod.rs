//! CUDA experts backend: weights prepared once into the kernels' layout, then fp8
//! activation quantization and two grouped tensor-core GEMMs with the activation fused
//! into the first and the router-weighted sum fused into the second, run by the one GPU
//! driver (`crate::gpu`) through `Cuda: Vendor`. Everything here is plain Rust over the
//! `Runtime` seam and is always built (without feature `cuda` its device cannot be
//! opened); only the benchmark needs the feature.

#[cfg(feature = "cuda")]
pub mod bench;
pub mod experts;
pub mod kernels;
pub mod launch;
pub mod layout;
pub mod lora;
pub mod packed;
mod plan;
mod weights;

pub use experts::{Cuda, CudaExperts};
