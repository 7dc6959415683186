//! fleetmoe runs the Mixture-of-Experts layer of large language models from quantized
//! checkpoints on NVIDIA GPUs, AMD GPUs and any CPU, and checks every native path against a
//! dequantize-and-compute emulation that defines the right answer.
//!
//! Start with [`moe::MoeLayer`] (build a layer from [`quant::ExpertWeights`], call
//! `forward`) and [`checkpoint::Checkpoint`] (load those weights from a Hugging Face model
//! directory); `examples/` in the repository has one program for each (`embed`,
//! `checkpoint`, `lora`, `device_resident`).
//!
//! # Features
//!
//! Without any, the crate has every format and scheme, the CPU emulation, the oracle and
//! the command line; each GPU feature adds backends, and a machine without that GPU or its
//! driver gets [`Error::NoDevice`] and runs the layer emulated, so one binary serves a
//! mixed fleet.
//!
//! - `cuda`: the NVIDIA backends (bf16 / f16, fp8, fp8 block-128, MXFP4, NVFP4, int4 / int8
//!   weight-only, W4A8; LoRA and shared experts) and the device-resident forward on
//!   cudarc's types (`MoeLayer::forward_cuda`). Builds without a CUDA toolkit: the driver
//!   and NVRTC are loaded at run time and the kernels compiled for the GPU found.
//! - `rocm`: the AMD (AITER-style) backends. The HIP runtime is opened at run time; the
//!   build script compiles the HIP kernels ahead of time with clang-22 and, without it,
//!   builds anyway (with a warning) and the AMD backends run emulated.
//! - `faults`: deliberate bugs switched on by `FLEETMOE_FAULT` ([`fault`]), for the
//!   mutation tests of the test suites only; inert while the variable is unset, and never
//!   for a build anyone runs.

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
