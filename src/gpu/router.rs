//! `GpuRouter`: the layer's routing (`moe::Router`'s definition) in one launch of the
//! routing kernel (`kernels-cuda/route.cu`, `kernels-hip/route.hip`, the same signature),
//! four tokens per block, one warp or wavefront (`Vendor::route_lanes`) per token.

use super::vendor::{KernelFile, Vendor};
use crate::device::{addr_of, Arg, Buffer, LaunchConfig, Runtime};
use crate::error::{Error, Result};
use crate::moe::{LayerConfig, TopK};

/// Largest expert count and group count the kernel holds in shared memory.
const MAX_EXPERTS: usize = 1024;
const MAX_GROUPS: usize = 64;
/// Tokens per block (one warp / wavefront each).
const TOKENS_PER_BLOCK: usize = 4;

/// A router on one GPU.
pub struct GpuRouter<V: Vendor> {
    module: <V::R as Runtime>::Module,
    threads: u32,
    experts: usize,
    top_k: usize,
    mode: i32,
    renormalize: bool,
    groups: usize,
    topk_groups: usize,
    /// Scores by sigmoid (read for grouped routing; the other modes imply it).
    sigmoid: bool,
    bias: Option<Buffer<V::R>>,
    scaling: f32,
}

impl<V: Vendor> GpuRouter<V> {
    /// The router for `config`; `None` when the layer's routing is given by the caller.
    pub fn new(rt: &V::R, config: &LayerConfig) -> Result<Option<Self>> {
        config.validate()?;
        let Some(p) = config.routing.kernel_params() else {
            return Ok(None);
        };
        let (e, k) = (config.num_experts, config.top_k);
        let (lanes, max_k) = V::route_lanes(rt);
        if e > MAX_EXPERTS || k > max_k || p.groups > MAX_GROUPS {
            return Err(Error::Config(format!(
                "the routing kernel takes at most {MAX_EXPERTS} experts, top-{max_k} and \
                 {MAX_GROUPS} expert groups, got {e} experts, top-{k} and {} groups",
                p.groups
            )));
        }
        Ok(Some(GpuRouter {
            module: V::module(rt, KernelFile::Route)?,
            threads: (TOKENS_PER_BLOCK * lanes) as u32,
            experts: e,
            top_k: k,
            mode: p.mode,
            renormalize: p.renormalize,
            groups: p.groups,
            topk_groups: p.topk_groups,
            sigmoid: p.sigmoid,
            bias: p.bias.map(|b| Buffer::from_slice(rt, b)).transpose()?,
            scaling: p.scaling,
        }))
    }

    pub fn experts(&self) -> usize {
        self.experts
    }

    /// Queues routing of `tokens` rows of device logits (f32 `[tokens, E]`) into device
    /// `ids` (i32) and `weights` (f32), `[tokens, top_k]` each. No host synchronisation.
    pub fn enqueue(
        &self,
        rt: &V::R,
        logits: u64,
        tokens: usize,
        ids: u64,
        weights: u64,
        stream: &<V::R as Runtime>::Stream,
    ) -> Result<()> {
        if tokens == 0 {
            return Ok(());
        }
        let tokens_i32 = i32::try_from(tokens).map_err(|_| {
            Error::Config(format!(
                "the routing kernel takes at most 2^31 tokens, got {tokens}"
            ))
        })?;
        let args = [
            Arg::Ptr(logits),
            Arg::I32(tokens_i32),
            Arg::I32(self.experts as i32),
            Arg::I32(self.top_k as i32),
            Arg::I32(self.mode),
            Arg::I32(self.renormalize as i32),
            Arg::I32(self.groups as i32),
            Arg::I32(self.topk_groups as i32),
            Arg::I32(self.sigmoid as i32),
            Arg::Ptr(addr_of(&self.bias)),
            Arg::F32(self.scaling),
            Arg::Ptr(ids),
            Arg::Ptr(weights),
        ];
        let cfg = LaunchConfig::blocks(tokens.div_ceil(TOKENS_PER_BLOCK), self.threads, 0);
        rt.launch(&self.module, "fm_route", cfg, &args, stream)
    }

    /// Routes host logits `[tokens, E]` (NaN or infinite logits are refused, as on the
    /// host): upload, one launch, download. For tests and tools; the layer routes inside
    /// its device-resident forward.
    pub fn route(&self, rt: &V::R, logits: &[f32], tokens: usize) -> Result<TopK> {
        crate::moe::router::check_logits(logits, tokens, self.experts)?;
        let k = self.top_k;
        let input = Buffer::from_slice(rt, logits)?;
        let ids = Buffer::<V::R>::alloc(rt, tokens * k * 4)?;
        let weights = Buffer::<V::R>::alloc(rt, tokens * k * 4)?;
        self.enqueue(
            rt,
            input.addr(),
            tokens,
            ids.addr(),
            weights.addr(),
            rt.stream(),
        )?;
        let ids: Vec<i32> = ids.to_vec(rt)?;
        let weights: Vec<f32> = weights.to_vec(rt)?;
        TopK::new(
            tokens,
            k,
            ids.iter().map(|&i| i as u32).collect(),
            weights,
            self.experts,
        )
    }
}
