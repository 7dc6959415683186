//! `HipRouter`: the layer's routing (`moe::Router`'s definition) in one launch of
//! `route.hip` on an AMD GPU, one 64-lane wavefront per token. `enqueue` works on device
//! buffers; `route` is the host-to-host form the layer uses. Checked against the host
//! router on the CPU simulator (tests/rocm_sim.rs); it has never run on an AMD GPU.

use super::kernels;
use crate::device::hip::{HipBuffer, HipDevice};
use crate::device::{Arg, Device, LaunchConfig, Module, Stream};
use crate::error::{Error, Result};
use crate::moe::{LayerConfig, TopK};
use std::sync::Arc;

/// What `route.hip` holds in LDS per token: experts and expert groups. Top-k is bounded by
/// the wavefront (lane `r` keeps the `r`-th weight).
const MAX_EXPERTS: usize = 1024;
const MAX_GROUPS: usize = 64;
const MAX_TOP_K: usize = 64;
/// Wavefronts, hence tokens, per workgroup (`ROUTE_WAVES` in route.hip).
const WAVES: usize = 4;

/// A router on one AMD GPU.
pub struct HipRouter {
    dev: Arc<HipDevice>,
    module: Module,
    experts: usize,
    top_k: usize,
    mode: i32,
    renormalize: bool,
    groups: usize,
    topk_groups: usize,
    sigmoid: bool,
    bias: Option<HipBuffer>,
    scaling: f32,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl HipRouter {
    /// The router for `config`; `None` when the layer's routing is given by the caller.
    /// A configuration beyond the kernel's limits is an error, not a silent host fallback.
    pub fn new(dev: &Arc<HipDevice>, config: &LayerConfig) -> Result<Option<Self>> {
        config.validate()?;
        let (e, k) = (config.num_experts, config.top_k);
        let Some(p) = config.routing.kernel_params() else {
            return Ok(None);
        };
        if e > MAX_EXPERTS || k > MAX_TOP_K || p.groups > MAX_GROUPS {
            return Err(Error::Config(format!(
                "the HIP router takes at most {MAX_EXPERTS} experts, top-{MAX_TOP_K} and \
                 {MAX_GROUPS} expert groups, got {e} experts, top-{k} and {} groups",
                p.groups
            )));
        }
        let bias = p
            .bias
            .map(|b| HipBuffer::from_bytes(dev, &f32_bytes(b)))
            .transpose()?;
        Ok(Some(HipRouter {
            dev: dev.clone(),
            module: dev.load_module(&kernels::module("route"))?,
            experts: e,
            top_k: k,
            mode: p.mode,
            renormalize: p.renormalize,
            groups: p.groups,
            topk_groups: p.topk_groups,
            sigmoid: p.sigmoid,
            bias,
            scaling: p.scaling,
        }))
    }

    /// Queues routing of `tokens` rows of device logits (f32 `[tokens, E]`) into device
    /// `ids` (i32) and `weights` (f32), `[tokens, top_k]` each, on the default stream.
    pub fn enqueue(
        &self,
        logits: &HipBuffer,
        tokens: usize,
        ids: &HipBuffer,
        weights: &HipBuffer,
    ) -> Result<()> {
        let tokens_i32 = i32::try_from(tokens).map_err(|_| {
            Error::Config(format!(
                "the HIP router takes at most 2^31 tokens, got {tokens}"
            ))
        })?;
        let cfg = LaunchConfig {
            grid: (tokens.div_ceil(WAVES).max(1) as u32, 1, 1),
            block: ((WAVES * 64) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(logits.ptr()),
            Arg::I32(tokens_i32),
            Arg::I32(self.experts as i32),
            Arg::I32(self.top_k as i32),
            Arg::I32(self.mode),
            Arg::I32(self.renormalize as i32),
            Arg::I32(self.groups as i32),
            Arg::I32(self.topk_groups as i32),
            Arg::I32(self.sigmoid as i32),
            Arg::U64(self.bias.as_ref().map_or(0, HipBuffer::ptr)),
            Arg::F32(self.scaling),
            Arg::U64(ids.ptr()),
            Arg::U64(weights.ptr()),
        ];
        self.dev
            .launch(self.module, "fm_route", cfg, &args, Stream::DEFAULT)
    }

    /// Routes host logits `[tokens, E]`; NaN or infinite logits are refused, as on the host, and a
    /// token whose scores are all NaN (softmax of ±inf) gets a NaN weight, which `TopK`
    /// refuses, again as on the host.
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        crate::moe::router::check_logits(logits, tokens, self.experts)?;
        let k = self.top_k;
        if tokens == 0 {
            return TopK::new(0, k, Vec::new(), Vec::new(), self.experts);
        }
        let input = HipBuffer::from_bytes(&self.dev, &f32_bytes(logits))?;
        let bytes = tokens * k * 4;
        let ids = HipBuffer::alloc(&self.dev, bytes)?;
        let weights = HipBuffer::alloc(&self.dev, bytes)?;
        self.enqueue(&input, tokens, &ids, &weights)?;
        let mut raw = vec![0u8; bytes];
        self.dev.read(ids.handle(), 0, &mut raw, Stream::DEFAULT)?;
        let ids: Vec<u32> = raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect();
        self.dev
            .read(weights.handle(), 0, &mut raw, Stream::DEFAULT)?;
        let weights: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // `TopK::new` checks every id is an expert and every weight finite: a kernel
        // that misbehaved is an error here, not a wrong answer later.
        TopK::new(tokens, k, ids, weights, self.experts)
    }
}
