//! The portable experts backend: WGSL through wgpu (Vulkan, Metal, DX12), run by the one
//! GPU driver (`crate::gpu`) like CUDA and ROCm. Weights stay quantized on the device in
//! one shader-decodable form for every scheme (`layout`), activations are
//! quantize-dequantized by the emulation's own rule (`plan`, `kernels-wgsl/act.wgsl`),
//! f32 accumulation, LoRA through the packing every vendor shares (`crate::gpu::lora`).

pub mod experts;
pub mod kernels;
pub mod layout;
pub mod plan;
mod qdq;

pub use experts::{Wgpu, WgpuExperts};
