//! AMD (ROCm) experts backends. The weight preparation is pure Rust and always built, so
//! every layout an AMD kernel reads is checked on any machine: fnuz normalisation for
//! gfx942, AITER's 16×16 MFMA weight shuffle and its e8m0 scale shuffle, each with its
//! exact inverse (`layout` puts them together per projection). The parts that talk to the
//! HIP runtime need feature `rocm`; no AMD GPU has run them yet.

#[cfg(feature = "rocm")]
pub mod experts;
pub mod fnuz;
#[cfg(feature = "rocm")]
pub mod kernels;
pub mod layout;
#[cfg(feature = "rocm")]
mod plan;
#[cfg(feature = "rocm")]
pub mod router;
pub mod scale_shuffle;
pub mod shuffle;

#[cfg(feature = "rocm")]
pub use experts::HipExperts;
#[cfg(feature = "rocm")]
pub use router::HipRouter;
