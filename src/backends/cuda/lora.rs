//! LoRA adapters on the device for the CUDA experts: the vendor-neutral packing of
//! `crate::gpu::lora` (A and B per expert in f32, padded to the largest rank, B transposed
//! with the scaling folded in) with B13's columns in the CUDA GEMMs' prepared w13 row order
//! (`layout::w13_row_order`: gate and up interleaved in groups of 8 for the fused
//! activation), so `lora.cu` needs no indirection.

use super::layout::w13_row_order;
use crate::device::cuda::CudaDevice;
use crate::error::Result;
use crate::gpu::lora::LoraPack;
use crate::moe::{Activation, Lora};

/// The adapters of one layer on an NVIDIA GPU.
pub type DeviceLora = crate::gpu::lora::DeviceLora<CudaDevice>;

impl crate::gpu::lora::DeviceLora<CudaDevice> {
    /// Uploads `lora` (already validated against the layer by `MoeLayer::new`).
    pub fn upload(
        dev: &CudaDevice,
        lora: &Lora,
        experts: usize,
        hidden: usize,
        intermediate: usize,
        activation: Activation,
    ) -> Result<Self> {
        let order = w13_row_order(activation, intermediate)?;
        let pack = LoraPack::new(lora, experts, hidden, intermediate, activation, &order)?;
        Self::from_pack(dev, &pack)
    }
}
