//! fleetmoe runs the Mixture-of-Experts layer of large language models from quantized
//! checkpoints on NVIDIA GPUs, AMD GPUs and any CPU, and checks every native path against a
//! dequantize-and-compute emulation that defines the right answer.

pub mod backends;
pub mod bench;
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod fault;
pub mod formats;
pub mod gpu;
pub mod moe;
pub mod oracle;
pub mod quant;

pub use error::{Error, Result};

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
