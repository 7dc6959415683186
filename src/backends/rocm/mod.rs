//! AMD (ROCm) experts backends. The weight preparation is pure Rust, so every layout an
//! AMD kernel reads is checked on any machine: fnuz normalisation for gfx942, AITER's
//! 16×16 MFMA weight shuffle and its e8m0 scale shuffle, each with its exact inverse
//! (`layout` puts them together per projection). `Rocm: Vendor` runs them through the one
//! GPU driver (`crate::gpu`), LoRA deltas included (`lora`); no AMD GPU has run them yet
//! (the CPU simulator has).

pub mod experts;
pub mod fnuz;
pub mod kernels;
pub mod layout;
mod lora;
mod plan;
pub mod scale_shuffle;
pub mod shuffle;
mod weights;

pub use experts::{HipExperts, Rocm};
