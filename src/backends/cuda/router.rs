//! `CudaRouter`: the layer's routing (`moe::Router`'s definition) in one launch of
//! `route.cu`, one warp per token. `enqueue` works on device buffers, so routing can sit in
//! a CUDA graph with the experts; `route` is the host-to-host convenience.

use super::kernels::module_source;
use crate::device::cuda::{CudaBuffer, CudaDevice};
use crate::device::{Arg, Device, LaunchConfig, Module, ModuleSource, Stream};
use crate::error::{Error, Result};
use crate::moe::{LayerConfig, TopK};
use std::sync::Arc;

/// Largest expert count and group count the kernel holds in shared memory.
const MAX_EXPERTS: usize = 1024;
const MAX_GROUPS: usize = 64;

/// A router on one GPU.
pub struct CudaRouter {
    dev: Arc<CudaDevice>,
    module: Module,
    experts: usize,
    top_k: usize,
    mode: i32,
    renormalize: bool,
    groups: usize,
    topk_groups: usize,
    /// Scores by sigmoid (`fm_route` reads it for grouped routing; the other modes imply it).
    sigmoid: bool,
    bias: Option<CudaBuffer>,
    scaling: f32,
}

impl CudaRouter {
    /// The router for `config`; `None` when the layer's routing is given by the caller.
    pub fn new(dev: &Arc<CudaDevice>, config: &LayerConfig) -> Result<Option<Self>> {
        config.validate()?;
        let (e, k) = (config.num_experts, config.top_k);
        if e > MAX_EXPERTS || k > 32 {
            return Err(Error::Config(format!(
                "the CUDA router takes at most {MAX_EXPERTS} experts and top-32, got {e} and top-{k}"
            )));
        }
        let Some(p) = config.routing.kernel_params() else {
            return Ok(None);
        };
        if p.groups > MAX_GROUPS {
            return Err(Error::Config(format!(
                "the CUDA router takes at most {MAX_GROUPS} expert groups, got {}",
                p.groups
            )));
        }
        let bias = p.bias.map(|b| CudaBuffer::from_slice(dev, b)).transpose()?;
        let source = module_source("route.cu", &[]).ok_or_else(|| Error::Missing {
            what: "route.cu".into(),
            why: "kernel source not embedded".into(),
        })?;
        let module = dev.load_module(&ModuleSource::Cuda {
            name: "route.cu",
            source: &source,
        })?;
        Ok(Some(CudaRouter {
            dev: dev.clone(),
            module,
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

    /// Queues routing of `tokens` rows of device logits into device `ids` (i32) and
    /// `weights` (f32), `[tokens, top_k]` each. No host synchronisation.
    pub fn enqueue(
        &self,
        logits: &CudaBuffer,
        tokens: usize,
        ids: &CudaBuffer,
        weights: &CudaBuffer,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (tokens.div_ceil(4).max(1) as u32, 1, 1),
            block: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::Buffer(logits.handle()),
            Arg::I32(tokens as i32),
            Arg::I32(self.experts as i32),
            Arg::I32(self.top_k as i32),
            Arg::I32(self.mode),
            Arg::I32(self.renormalize as i32),
            Arg::I32(self.groups as i32),
            Arg::I32(self.topk_groups as i32),
            Arg::I32(self.sigmoid as i32),
            Arg::U64(self.bias.as_ref().map_or(0, CudaBuffer::ptr)),
            Arg::F32(self.scaling),
            Arg::Buffer(ids.handle()),
            Arg::Buffer(weights.handle()),
        ];
        self.dev
            .launch(self.module, "fm_route", cfg, &args, Stream::DEFAULT)
    }

    /// Routes host logits `[tokens, E]`; NaN or infinite logits are refused, as on the host.
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        crate::moe::router::check_logits(logits, tokens, self.experts)?;
        let k = self.top_k;
        let input = CudaBuffer::from_slice(&self.dev, logits)?;
        let ids = CudaBuffer::alloc(&self.dev, (tokens * k * 4).max(4))?;
        let weights = CudaBuffer::alloc(&self.dev, (tokens * k * 4).max(4))?;
        self.enqueue(&input, tokens, &ids, &weights)?;
        let ids: Vec<i32> = ids.to_vec()?;
        let weights: Vec<f32> = weights.to_vec()?;
        TopK::new(
            tokens,
            k,
            ids[..tokens * k].iter().map(|&i| i as u32).collect(),
            weights[..tokens * k].to_vec(),
            self.experts,
        )
    }
}
