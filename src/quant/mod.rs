//! Quantization schemes, expert weights in checkpoint layout, and activation
//! quantize-dequantize.

pub mod scheme;
pub mod weights;

pub use scheme::*;
pub use weights::*;
