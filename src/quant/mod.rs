//! Quantization schemes, expert weights in checkpoint layout, and activation
//! quantize-dequantize.

pub mod activation;
pub mod dense;
pub mod fp8;
pub mod int;
pub mod mx;
pub mod nvfp4;
mod quantize;
pub mod scheme;
mod validate;
pub mod weights;

pub use activation::{ActQuant, Numerics, Stage, StageQuant};
pub use dense::DenseExperts;
pub use quantize::{group_size, stored_bytes_per_expert};
pub use scheme::*;
pub use validate::MAX_WEIGHT_MAGNITUDE;
pub use weights::*;
