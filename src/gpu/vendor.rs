//! What the one GPU driver asks of a vendor: its kernel files, and the routed experts of
//! one layer in its own weight layout, running the GEMM pipeline on an aligned batch.

use crate::device::Runtime;
use crate::error::Result;
use crate::moe::{Activation, LayerConfig, Lora};
use crate::oracle::{BackendId, Selection};
use crate::quant::ExpertWeights;
use std::sync::Arc;

/// fleetmoe's kernel files whose kernels have the same signature on every vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFile {
    /// `fm_align`: (token, choice) pairs sorted by expert, padded to the GEMM's token block.
    Align,
    /// `fm_route`: top-k routing from logits.
    Route,
    /// `fm_scale_rows`, `fm_shared_gate`, `fm_finalize` (and the vendor's quantizers).
    Quant,
}

/// A GPU vendor: its runtime and how its experts are built.
pub trait Vendor: Send + Sync + Sized + 'static {
    type R: Runtime;
    type Experts: VendorExperts<R = Self::R>;

    /// Loads `file`'s module for this vendor's devices.
    fn module(rt: &Self::R, file: KernelFile) -> Result<<Self::R as Runtime>::Module>;

    /// The routing kernel's lanes per token and the largest top-k it takes: on CUDA and
    /// HIP a warp / wavefront, one choice per lane, so top-k is at most the warp size.
    fn route_lanes(rt: &Self::R) -> (usize, usize) {
        let warp = rt.capabilities().warp_size as usize;
        (warp, warp)
    }

    /// The routed experts of `weights` for `selection`'s backend: the backend's layout,
    /// uploaded, its kernels loaded; `lora`'s adapters resident if given.
    fn prepare(
        rt: &Arc<Self::R>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        selection: &Selection,
        lora: Option<&Lora>,
    ) -> Result<Self::Experts>;
}

/// One forward's aligned batch as the experts see it: device addresses in the driver's
/// workspace and the caller's memory.
#[derive(Debug, Clone, Copy)]
pub struct ExpertsIo {
    pub tokens: usize,
    pub top_k: usize,
    /// Hidden states `[tokens, hidden]` in the model dtype (already scaled by the router
    /// weight when the layer applies it to the input).
    pub x: u64,
    /// Router weights `[tokens, top_k]` f32.
    pub topk_weights: u64,
    /// From `fm_align`: pair id per slot, expert per token block, slots in use.
    pub sorted: u64,
    pub block_expert: u64,
    pub num_slots: u64,
    /// Token slots per block and the blocks the workspace holds for this batch.
    pub block_tokens: usize,
    pub max_blocks: usize,
    /// Each token's adapter slot (−1: none), or 0 when no token has one.
    pub token_adapter: u64,
    /// `[tokens, hidden]` f32 the experts' weighted sum is added into (zeroed before).
    pub out: u64,
}

/// The routed experts of one layer on one vendor's GPU.
pub trait VendorExperts: Send + Sync {
    type R: Runtime;
    /// The experts' scratch buffers, sized once for a maximum batch.
    type Scratch: Send + Sync;

    fn backend(&self) -> BackendId;
    /// Whether the hidden states are f16 (else bf16).
    fn is_f16(&self) -> bool;
    /// (experts, hidden, intermediate).
    fn dims(&self) -> (usize, usize, usize);
    /// Token slots per GEMM block for a batch of `pairs` (token, choice) pairs.
    fn block_tokens(&self, pairs: usize) -> usize;
    /// Every value `block_tokens` can return.
    fn block_token_choices(&self) -> Vec<usize>;
    /// Adapters resident (`None`: the layer has no LoRA, or this backend takes none).
    fn adapters(&self) -> Option<usize>;
    /// Scratch for up to `tokens` tokens and `slots` expert-sorted slots.
    fn reserve(&self, tokens: usize, top_k: usize, slots: usize) -> Result<Self::Scratch>;
    /// Queues the GEMM pipeline on `io` (quantize, gemm1, activation, quantize, gemm2,
    /// LoRA deltas where `io.token_adapter` is set). No host synchronisation.
    fn enqueue(
        &self,
        io: &ExpertsIo,
        scratch: &Self::Scratch,
        stream: &<Self::R as Runtime>::Stream,
    ) -> Result<()>;
}

/// The activation's code and parameters as both dialects' kernels read them (`act_kind`
/// of gemm.cu's `GemmArgs`, `kind` of quant.hip's `fm_act`).
pub fn activation_code(a: Activation) -> (i32, f32, f32) {
    match a {
        Activation::SiluAndMul => (0, 0.0, 0.0),
        Activation::GeluAndMul => (1, 0.0, 0.0),
        Activation::GeluTanhAndMul => (2, 0.0, 0.0),
        Activation::SwigluOai { alpha, limit } => (3, alpha, limit),
        Activation::Relu2 => (4, 0.0, 0.0),
        Activation::Silu => (5, 0.0, 0.0),
    }
}
