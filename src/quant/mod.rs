//! Quantization schemes, expert weights in checkpoint layout, and activation
//! quantize-dequantize.

pub mod scheme;

pub use scheme::*;
