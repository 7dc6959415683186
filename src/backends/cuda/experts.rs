//! `CudaExperts`: the routed experts on one NVIDIA GPU. Weights are prepared once
//! (`layout`) and uploaded; each forward queues, with no host synchronisation in between
//! (so the whole sequence can be captured in a CUDA graph):
//! alignment → fp8 quantization of the input → gemm1 with the activation fused →
//! fp8 quantization of the intermediate → gemm2 with the router-weighted sum fused.

use super::kernels::{gemm_kernel_name, module_source, GemmVariant, Tile};
use super::launch::{GemmArgs, LoraRoute, Modules};
use super::layout::{self, GemmWeights, PreparedLayer};
use super::lora::DeviceLora;
pub use super::plan::act_modes;
use super::plan::{act_kind, tile_for, variant_for, ActMode};
use crate::device::cuda::{CudaBuffer, CudaDevice};
use crate::device::{Device, Stream};
use crate::error::{check_len, Error, Result};
use crate::moe::{Activation, Experts, LayerConfig, Lora, LoraBatch, TopK};
use crate::oracle::BackendId;
use crate::quant::{ExpertWeights, QuantScheme};
use std::sync::{Arc, Mutex};

/// One projection on the device.
struct DeviceWeights {
    data: CudaBuffer,
    row_scales: Option<CudaBuffer>,
    block_scales: Option<CudaBuffer>,
    bias: Option<CudaBuffer>,
    rows: usize,
    cols: usize,
    /// Packed low-bit weights: the scale chunks and their geometry.
    packed: Option<PackedScales>,
}

struct PackedScales {
    chunks: CudaBuffer,
    gpc: usize,
    nchunks: usize,
    chunk_bytes: usize,
    kpad: usize,
    group_log2: u32,
    spc_log2: u32,
}

impl DeviceWeights {
    fn upload(dev: &Arc<CudaDevice>, w: &GemmWeights) -> Result<Self> {
        let opt = |v: &Option<Vec<f32>>| {
            v.as_ref()
                .map(|v| CudaBuffer::from_slice(dev, v))
                .transpose()
        };
        Ok(DeviceWeights {
            data: CudaBuffer::from_slice(dev, &w.data)?,
            row_scales: opt(&w.row_scales)?,
            block_scales: opt(&w.block_scales)?,
            bias: opt(&w.bias)?,
            rows: w.rows,
            cols: w.cols,
            packed: w
                .packing
                .as_ref()
                .map(|p| -> Result<PackedScales> {
                    let kpad = w.cols.div_ceil(p.ks()) * p.ks();
                    Ok(PackedScales {
                        chunks: CudaBuffer::from_slice(dev, &p.chunks)?,
                        gpc: p.sc_k / p.group,
                        nchunks: kpad / p.sc_k,
                        chunk_bytes: p.chunk_bytes(),
                        kpad,
                        group_log2: p.group_log2(),
                        spc_log2: p.stages_per_chunk_log2(),
                    })
                })
                .transpose()?,
        })
    }

    /// `args` with this projection's packed-weight fields; `args` as given (its packed
    /// fields zero) when the weights are not packed.
    fn with_packed(&self, args: GemmArgs) -> GemmArgs {
        match &self.packed {
            None => args,
            Some(p) => GemmArgs {
                gs: p.chunks.ptr(),
                gpc: p.gpc as i32,
                nchunks: p.nchunks as i32,
                chunk_bytes: p.chunk_bytes as i32,
                kpad: p.kpad as i32,
                group_log2: p.group_log2 as i32,
                spc_log2: p.spc_log2 as i32,
                ..args
            },
        }
    }
}

/// Device buffers for one batch size and tile.
pub struct Workspace {
    pub tokens: usize,
    tile: Tile,
    max_blocks: usize,
    /// Inputs: hidden states in the model dtype, top-k ids and weights.
    pub x: CudaBuffer,
    pub ids: CudaBuffer,
    pub weights: CudaBuffer,
    /// The hidden states times the router weight (only with the weight on the input).
    x_scaled: CudaBuffer,
    sorted: CudaBuffer,
    block_expert: CudaBuffer,
    num_slots: CudaBuffer,
    counts: CudaBuffer,
    x_codes: CudaBuffer,
    x_scales: CudaBuffer,
    inter: CudaBuffer,
    inter_codes: CudaBuffer,
    inter_scales: CudaBuffer,
    amax: CudaBuffer,
    /// Output `[tokens, hidden]` f32.
    pub out: CudaBuffer,
    /// LoRA: each token's adapter slot (-1: none), the shrunk activations, the deltas.
    pub token_adapter: CudaBuffer,
    lora_t: CudaBuffer,
    delta13: CudaBuffer,
    delta2: CudaBuffer,
}

/// The routed experts of one layer on one GPU.
pub struct CudaExperts {
    dev: Arc<CudaDevice>,
    backend: BackendId,
    variant: GemmVariant,
    modules: Modules,
    w13: DeviceWeights,
    w2: DeviceWeights,
    num_experts: usize,
    hidden: usize,
    intermediate: usize,
    activation: Activation,
    weight_on_input: bool,
    /// fp8 quantization of gemm1's and gemm2's inputs; `None` for bf16 / f16.
    acts: Option<(ActMode, ActMode)>,
    /// Resident LoRA adapters, if the layer has any.
    lora: Option<DeviceLora>,
    workspace: Mutex<Option<Workspace>>,
}

impl CudaExperts {
    /// Prepares `weights` for `backend` on `dev`: converts to the kernels' layout, uploads,
    /// and compiles (or loads from the cache) the kernels.
    pub fn prepare(
        dev: &Arc<CudaDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        backend: BackendId,
        lora: Option<&Lora>,
    ) -> Result<Self> {
        crate::moe::emulation::check_weights_match(weights, config)?;
        weights.validate()?;
        let prepared = layout::prepare(weights, config.activation)?;
        let acts = act_modes(&weights.scheme, weights.input_scales)?;
        let mut experts =
            Self::from_prepared(dev, &prepared, &weights.scheme, acts, config, backend)?;
        if let Some(l) = lora {
            experts.attach_lora(l)?;
        }
        Ok(experts)
    }

    /// Makes `lora`'s adapters resident (replacing any before). Workspaces made earlier
    /// lack the LoRA buffers, so the cached one is dropped; make new ones after this.
    pub fn attach_lora(&mut self, lora: &Lora) -> Result<()> {
        self.lora = Some(DeviceLora::upload(
            &self.dev,
            lora,
            self.num_experts,
            self.hidden,
            self.intermediate,
            self.activation,
        )?);
        *self.workspace.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Uploads weights already in the kernels' layout (the benchmark makes them directly).
    pub fn from_prepared(
        dev: &Arc<CudaDevice>,
        prepared: &PreparedLayer,
        scheme: &QuantScheme,
        acts: Option<(ActMode, ActMode)>,
        config: &LayerConfig,
        backend: BackendId,
    ) -> Result<Self> {
        let variant = variant_for(scheme)?;
        let gemm = module_source("gemm.cu", &[("FM_VARIANT", &(variant as u32).to_string())])
            .ok_or_else(|| Error::Missing {
                what: "gemm.cu".into(),
                why: "kernel source not embedded".into(),
            })?;
        Ok(CudaExperts {
            dev: dev.clone(),
            backend,
            variant,
            modules: Modules::load(dev, &gemm, variant)?,
            w13: DeviceWeights::upload(dev, &prepared.w13)?,
            w2: DeviceWeights::upload(dev, &prepared.w2)?,
            num_experts: config.num_experts,
            hidden: config.hidden,
            intermediate: config.intermediate,
            activation: config.activation,
            weight_on_input: config.apply_router_weight_on_input,
            acts,
            lora: None,
            workspace: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Device buffers for `tokens` tokens with `top_k` choices each.
    pub fn workspace(&self, tokens: usize, top_k: usize) -> Result<Workspace> {
        let dev = &self.dev;
        let pairs = tokens * top_k;
        let tile = tile_for(self.variant, pairs, self.num_experts);
        let max_blocks = pairs.div_ceil(tile.bt) + self.num_experts.min(pairs);
        let slots = max_blocks * tile.bt;
        let (h, i) = (self.hidden, self.intermediate);
        let alloc = |bytes: usize| CudaBuffer::alloc(dev, bytes.max(4));
        let rank = self.lora.as_ref().map_or(0, |l| l.rank);
        let rows13 = self.w13.rows;
        // LoRA buffers only when adapters are resident.
        let lora_floats = |n: usize| if self.lora.is_some() { n * 4 } else { 4 };
        Ok(Workspace {
            tokens,
            tile,
            max_blocks,
            // bf16 or f16 hidden states, whatever the scheme.
            x: alloc(tokens * h * 2)?,
            x_scaled: alloc(if self.weight_on_input {
                tokens * h * 2
            } else {
                4
            })?,
            ids: alloc(pairs * 4)?,
            weights: alloc(pairs * 4)?,
            sorted: alloc(slots * 4)?,
            block_expert: alloc(max_blocks * 4)?,
            num_slots: alloc(4)?,
            counts: alloc(self.num_experts * 4)?,
            x_codes: alloc(tokens * h)?,
            x_scales: alloc(tokens * h.div_ceil(128) * 4)?,
            inter: alloc(slots * i * 2)?,
            inter_codes: alloc(slots * i)?,
            inter_scales: alloc(slots * i.div_ceil(128) * 4)?,
            amax: alloc(8)?,
            out: alloc(tokens * h * 4)?,
            token_adapter: alloc(tokens * 4)?,
            lora_t: alloc(lora_floats(slots * 2 * rank))?,
            delta13: alloc(lora_floats(slots * rows13))?,
            delta2: alloc(lora_floats(slots * h))?,
        })
    }

    /// Queues the whole forward on the device's default stream from the inputs already in
    /// `ws` (`x`, `ids`, `weights`); the result lands in `ws.out`. No host synchronisation.
    ///
    /// With `lora_on`, `ws.token_adapter` holds each token's adapter slot and the
    /// adapters' deltas are added inside both GEMMs' epilogues.
    pub fn enqueue(&self, ws: &Workspace, top_k: usize, lora_on: bool) -> Result<()> {
        let lora = match (lora_on, &self.lora) {
            (true, Some(l)) => Some(l),
            (true, None) => {
                return Err(Error::Config(
                    "LoRA requested but no adapters are resident".into(),
                ))
            }
            (false, _) => None,
        };
        let m = &self.modules;
        let stream = Stream::DEFAULT;
        let (h, i, e) = (self.hidden, self.intermediate, self.num_experts);
        let pairs = ws.tokens * top_k;
        let tile = ws.tile;
        self.dev.zero(ws.out.handle(), stream)?;
        self.dev.zero(ws.amax.handle(), stream)?;
        m.align(
            &ws.ids,
            pairs,
            e,
            tile.bt,
            ws.max_blocks,
            &ws.sorted,
            &ws.block_expert,
            &ws.num_slots,
            &ws.counts,
        )?;

        // With the router weight on the input (top-1), scale the hidden states first, as
        // the emulation does, so fp8 scales are taken from the scaled rows.
        let x = if self.weight_on_input {
            if top_k != 1 {
                return Err(Error::Config(format!(
                    "router weight on the input needs top-k 1, got {top_k}"
                )));
            }
            m.scale_rows(
                ws.x.ptr(),
                ws.tokens,
                h,
                ws.weights.ptr(),
                self.variant == GemmVariant::F16,
                ws.x_scaled.ptr(),
            )?;
            ws.x_scaled.ptr()
        } else {
            ws.x.ptr()
        };
        let amax1 = ws.amax.ptr();
        let amax2 = ws.amax.ptr() + 4;
        let (act1, x_scales) = match self.acts {
            Some((mode, _)) => {
                if mode == ActMode::PerTensor {
                    m.amax_rows(x, ws.tokens, h, 0, 0, pairs, amax1)?;
                }
                let s = if let ActMode::Static(s) = mode {
                    s
                } else {
                    0.0
                };
                m.quant_rows(
                    x,
                    ws.tokens,
                    h,
                    0,
                    0,
                    pairs,
                    mode.code(),
                    amax1,
                    s,
                    ws.x_codes.ptr(),
                    ws.x_scales.ptr(),
                )?;
                (ws.x_codes.ptr(), ws.x_scales.ptr())
            }
            None => (x, 0),
        };
        let route = LoraRoute {
            slots: ws.max_blocks * tile.bt,
            sorted: ws.sorted.ptr(),
            num_slots: ws.num_slots.ptr(),
            block_expert: ws.block_expert.ptr(),
            bt: tile.bt,
            pairs,
            top_k,
            token_adapter: ws.token_adapter.ptr(),
            experts: e,
        };
        let is_f16 = self.variant == GemmVariant::F16;
        if let Some(l) = lora {
            // Gate and up read the unquantized (scaled) hidden states, as in the emulation.
            m.lora_shrink(
                x,
                false,
                is_f16,
                h,
                &route,
                l.a13.ptr(),
                2 * l.rank,
                ws.lora_t.ptr(),
            )?;
            m.lora_expand(
                ws.lora_t.ptr(),
                2 * l.rank,
                &route,
                l.b13.ptr(),
                self.w13.rows,
                ws.delta13.ptr(),
            )?;
        }
        let (kind, alpha, limit) = act_kind(self.activation);
        let (as_row1, as_k1) = self.acts.map_or((0, 0), |(a, _)| a.strides(h));
        let a2_per_tensor = matches!(self.acts, Some((_, ActMode::PerTensor)));
        let gemm1 = GemmArgs {
            w: self.w13.data.ptr(),
            act: act1,
            wrow: opt_ptr(&self.w13.row_scales),
            wblk: opt_ptr(&self.w13.block_scales),
            ascale: x_scales,
            bias: opt_ptr(&self.w13.bias),
            sorted: ws.sorted.ptr(),
            block_expert: ws.block_expert.ptr(),
            num_slots: ws.num_slots.ptr(),
            topk_w: ws.weights.ptr(),
            out: ws.inter.ptr(),
            amax: if a2_per_tensor { amax2 } else { 0 },
            n: self.w13.rows as i32,
            k: self.w13.cols as i32,
            as_row: as_row1,
            as_k: as_k1,
            top_k: top_k as i32,
            pairs: pairs as i32,
            ldo: i as i32,
            k_split: (h.div_ceil(128) * 128) as i32,
            act_kind: kind,
            alpha,
            limit,
            // The input is already scaled; gemm2 then skips the router weight.
            weight_on_input: 0,
            lora_delta: if lora.is_some() { ws.delta13.ptr() } else { 0 },
            token_adapter: ws.token_adapter.ptr(),
            // Packed-weight fields: zero here, set per projection by `with_packed`, so
            // gemm2 (built from this) never inherits w13's.
            gs: 0,
            gpc: 0,
            nchunks: 0,
            chunk_bytes: 0,
            kpad: 0,
            group_log2: 0,
            spc_log2: 0,
        };
        let stage1 = if self.activation.is_gated() { 'g' } else { 's' };
        m.gemm(
            &gemm_kernel_name(self.variant, stage1, &tile),
            &tile,
            self.w13.with_packed(gemm1),
            ws.max_blocks,
            1,
            stream,
        )?;

        if let Some(l) = lora {
            // Down reads the activation before its fp8 quantization.
            m.lora_shrink(
                ws.inter.ptr(),
                true,
                is_f16,
                i,
                &route,
                l.a2.ptr(),
                l.rank,
                ws.lora_t.ptr(),
            )?;
            m.lora_expand(
                ws.lora_t.ptr(),
                l.rank,
                &route,
                l.b2.ptr(),
                h,
                ws.delta2.ptr(),
            )?;
        }
        let (act2, inter_scales) = match self.acts {
            Some((_, mode)) => {
                let s = if let ActMode::Static(s) = mode {
                    s
                } else {
                    0.0
                };
                let rows = ws.max_blocks * tile.bt;
                m.quant_rows(
                    ws.inter.ptr(),
                    rows,
                    i,
                    ws.num_slots.ptr(),
                    ws.sorted.ptr(),
                    pairs,
                    mode.code(),
                    amax2,
                    s,
                    ws.inter_codes.ptr(),
                    ws.inter_scales.ptr(),
                )?;
                (ws.inter_codes.ptr(), ws.inter_scales.ptr())
            }
            None => (ws.inter.ptr(), 0),
        };
        let (as_row2, as_k2) = self.acts.map_or((0, 0), |(_, a)| a.strides(i));
        // Split K of gemm2 until the grid covers the GPU about twice.
        let active = e.min(pairs) + pairs / tile.bt;
        let n_tiles = h.div_ceil(tile.bn);
        let k_blocks = i.div_ceil(128);
        let target = 2 * self.dev.capabilities().multiprocessors as usize;
        let splits = target
            .div_ceil(active * n_tiles)
            .clamp(1, k_blocks.div_ceil(4).max(1));
        let k_split = k_blocks.div_ceil(splits) * 128;
        let splits = i.div_ceil(k_split);
        let gemm2 = GemmArgs {
            w: self.w2.data.ptr(),
            act: act2,
            wrow: opt_ptr(&self.w2.row_scales),
            wblk: opt_ptr(&self.w2.block_scales),
            ascale: inter_scales,
            bias: opt_ptr(&self.w2.bias),
            out: ws.out.ptr(),
            amax: 0,
            n: self.w2.rows as i32,
            k: self.w2.cols as i32,
            as_row: as_row2,
            as_k: as_k2,
            ldo: h as i32,
            k_split: k_split as i32,
            weight_on_input: self.weight_on_input as i32,
            lora_delta: if lora.is_some() { ws.delta2.ptr() } else { 0 },
            ..gemm1
        };
        let gemm2 = self.w2.with_packed(gemm2);
        m.gemm(
            &gemm_kernel_name(self.variant, 'd', &tile),
            &tile,
            gemm2,
            ws.max_blocks,
            splits,
            stream,
        )
    }
}

fn opt_ptr(b: &Option<CudaBuffer>) -> u64 {
    b.as_ref().map_or(0, CudaBuffer::ptr)
}

/// Hidden states in the model dtype, as the kernels read them.
fn to_model_dtype(variant: GemmVariant, x: &[f32]) -> Vec<u16> {
    match variant {
        GemmVariant::F16 => x
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect(),
        GemmVariant::Bf16
        | GemmVariant::Fp8
        | GemmVariant::Fp8Block
        | GemmVariant::Mxfp4
        | GemmVariant::Nvfp4
        | GemmVariant::W4a16
        | GemmVariant::W8a16
        | GemmVariant::Mxfp4Fp8
        | GemmVariant::W4a8 => x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect(),
    }
}

impl Experts for CudaExperts {
    fn backend(&self) -> BackendId {
        self.backend
    }

    fn forward(
        &self,
        x: &[f32],
        topk: &TopK,
        lora: Option<&LoraBatch<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        // Each token's adapter slot; LoRA runs only when some token has one.
        let adapters: Option<Vec<i32>> = lora
            .filter(|l| l.slots.iter().any(Option::is_some))
            .map(|l| l.slots.iter().map(|s| s.map_or(-1, |a| a as i32)).collect());
        if let (Some(slots), Some(resident)) = (&adapters, &self.lora) {
            if let Some(&bad) = slots
                .iter()
                .find(|&&a| a as usize >= resident.adapters && a >= 0)
            {
                return Err(Error::AdapterIndex {
                    index: bad as usize,
                    loaded: resident.adapters,
                });
            }
        }
        check_len("hidden states", x.len(), topk.tokens() * self.hidden)?;
        check_len("output", out.len(), topk.tokens() * self.hidden)?;
        topk.check_experts(self.num_experts)?;
        let mut slot = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|w| {
            w.tokens != topk.tokens()
                || w.tile != tile_for(self.variant, topk.tokens() * topk.k(), self.num_experts)
        }) {
            *slot = Some(self.workspace(topk.tokens(), topk.k())?);
        }
        let ws = slot.as_ref().expect("workspace was just made");
        let dev = &self.dev;
        let ids: Vec<i32> = topk.ids().iter().map(|&v| v as i32).collect();
        dev.write(
            ws.x.handle(),
            0,
            bytes_of(&to_model_dtype(self.variant, x)),
            Stream::DEFAULT,
        )?;
        dev.write(ws.ids.handle(), 0, bytes_of(&ids), Stream::DEFAULT)?;
        dev.write(
            ws.weights.handle(),
            0,
            bytes_of(topk.weights()),
            Stream::DEFAULT,
        )?;
        if let Some(slots) = &adapters {
            check_len("LoRA adapter slots", slots.len(), topk.tokens())?;
            dev.write(
                ws.token_adapter.handle(),
                0,
                bytes_of(slots),
                Stream::DEFAULT,
            )?;
        }
        self.enqueue(ws, topk.k(), adapters.is_some())?;
        let mut raw = vec![0u8; out.len() * 4];
        dev.read(ws.out.handle(), 0, &mut raw, Stream::DEFAULT)?;
        for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}

/// Plain numbers as bytes.
fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: used only for u16, i32 and f32, which have no padding or invalid bit patterns.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
