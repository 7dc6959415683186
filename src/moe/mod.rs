//! The MoE layer: router, prepare, experts, finalize, shared experts and LoRA.

pub mod config;
pub mod topk;

pub use config::*;
pub use topk::TopK;
