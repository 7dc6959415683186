//! The MoE layer as a modular kernel: `Router` → `Prepare` → `Experts` → `Finalize`, with
//! `SharedExperts` and `Lora` as parts of the layer rather than wrappers.

pub mod activation;
pub mod config;
pub mod emulation;
pub mod experts;
pub mod finalize;
pub mod layer;
pub mod lora;
pub mod prepare;
pub mod reference;
pub mod router;
pub mod routing_params;
pub mod shapes;
pub mod shared;
pub mod target;
pub mod topk;

pub use config::*;
pub use emulation::EmulatedExperts;
pub use experts::Experts;
pub use layer::{calibrate, GpuStream, LayerExtras, MoeLayer, RoutingInput};
pub use lora::{Lora, LoraAdapter, LoraBatch, LoraExpert, LoraProj};
pub use router::Router;
pub use routing_params::KernelRouting;
pub use shapes::ModelShape;
pub use shared::{shared_lora, SharedExpertWeights, SharedExperts};
pub use target::Target;
pub use topk::TopK;

#[cfg(feature = "cuda")]
pub mod cuda_api;
#[cfg(feature = "cuda")]
pub use cuda_api::{CudaRouting, DeviceElem, LogitsRouting, TopKRouting};
