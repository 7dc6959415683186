//! The MoE layer: router, prepare, experts, finalize, shared experts and LoRA.

pub mod config;

pub use config::*;
