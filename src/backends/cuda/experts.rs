//! `CudaExperts`: the routed experts on one NVIDIA GPU, as the one GPU driver
//! (`crate::gpu`) runs them. Weights are prepared once (`layout`) and uploaded; each
//! forward queues, on the caller's stream with no host synchronisation (so the whole
//! sequence can be captured in a CUDA graph): fp8 quantization of the input → gemm1 with
//! the activation fused → fp8 quantization of the intermediate → gemm2 with the
//! router-weighted sum fused, LoRA deltas added in both epilogues.

use super::kernels::{gemm_kernel_name, sm90_gemms, GemmVariant, Tile};
use super::launch::{load_file, lora_splits, GemmArgs, LoraRoute, Modules};
use super::layout::{self, PreparedLayer};
use super::lora::DeviceLora;
pub use super::plan::act_modes;
use super::plan::{tile_for, variant_for, ActMode};
use super::weights::DeviceWeights;
use crate::device::cuda::{CudaDevice, CudaKernels};
use crate::device::{addr_of, Buffer, Runtime};
use crate::error::{Error, Result};
use crate::gpu::rows::RowsIn;
use crate::gpu::{activation_code, ExpertsIo, KernelFile, Vendor, VendorExperts};
use crate::moe::{Activation, LayerConfig, Lora};
use crate::oracle::{BackendId, Selection};
use crate::quant::{ExpertWeights, InputScales, QuantScheme, Stage};
use std::sync::Arc;

/// NVIDIA GPUs, for the one GPU driver.
pub struct Cuda;

impl Vendor for Cuda {
    type R = CudaDevice;
    type Experts = CudaExperts;

    fn module(rt: &CudaDevice, file: KernelFile) -> Result<CudaKernels> {
        load_file(
            rt,
            match file {
                KernelFile::Align => "align.cu",
                KernelFile::Route => "route.cu",
                KernelFile::Quant => "quant.cu",
            },
            &[],
        )
    }

    fn prepare(
        rt: &Arc<CudaDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        selection: &Selection,
        lora: Option<&Lora>,
    ) -> Result<CudaExperts> {
        CudaExperts::prepare(rt, weights, config, selection.chosen, lora)
    }
}

/// The experts' scratch for a maximum batch: quantized activations, the intermediate,
/// the per-tensor amax pair, and the LoRA shrink / delta rows.
pub struct Scratch {
    /// fp8 codes of the hidden states, or (NVFP4 W4A4) their bf16 quantize-dequantize.
    x_codes: Buffer<CudaDevice>,
    /// Act-order: the hidden states gathered per slot in w13's K order, and the
    /// intermediate in w2's.
    x_perm: Buffer<CudaDevice>,
    inter_perm: Buffer<CudaDevice>,
    x_scales: Buffer<CudaDevice>,
    inter: Buffer<CudaDevice>,
    inter_codes: Buffer<CudaDevice>,
    inter_scales: Buffer<CudaDevice>,
    amax: Buffer<CudaDevice>,
    lora_t: Buffer<CudaDevice>,
    delta13: Buffer<CudaDevice>,
    delta2: Buffer<CudaDevice>,
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
    /// `[E]` f32 static scales of gemm1's and gemm2's inputs where `acts` is
    /// `StaticPerExpert` (set together with `acts` by `from_prepared`).
    expert_scales: [Option<Buffer<CudaDevice>>; 2],
    /// Resident LoRA adapters, if the layer has any.
    lora: Option<DeviceLora>,
    /// The `wgmma` tiles that run gemm2's wide batches (`gemm_family`; empty: mma.sync
    /// only), and gemm1's (`sm90_gemms` may keep one GEMM on mma.sync).
    wide: Vec<Tile>,
    wide1: Vec<Tile>,
}

/// Whether `dev` runs the Hopper `wgmma` GEMMs for the wide batches: by default on
/// sm_90a (for the variants `sm90_choice` gives tiles; the H200's measurements are in
/// kernels-cuda/NOTES.md); `FLEETMOE_CUDA_GEMM=mma.sync` keeps the older family there;
/// `wgmma` where the chip has none is an error rather than a silent fallback.
fn gemm_family(dev: &CudaDevice) -> Result<bool> {
    let sm90a = dev.capabilities().arch == "sm_90a";
    match std::env::var("FLEETMOE_CUDA_GEMM").as_deref() {
        Err(_) | Ok("") => Ok(sm90a),
        Ok("mma.sync") => Ok(false),
        Ok("wgmma") if sm90a => Ok(true),
        Ok("wgmma") => Err(Error::BackendUnavailable {
            backend: "wgmma GEMMs".into(),
            reasons: format!(
                "FLEETMOE_CUDA_GEMM=wgmma, but {} is {}, not sm_90a",
                dev.capabilities().name,
                dev.capabilities().arch
            ),
        }),
        Ok(other) => Err(Error::Config(format!(
            "FLEETMOE_CUDA_GEMM={other}: expected `wgmma` or `mma.sync`"
        ))),
    }
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
        let mut experts = Self::from_prepared(
            dev,
            &prepared,
            &weights.scheme,
            weights.input_scales.as_ref(),
            config,
            backend,
        )?;
        if let Some(l) = lora {
            experts.attach_lora(l)?;
        }
        Ok(experts)
    }

    /// Makes `lora`'s adapters resident (replacing any before). Scratch reserved earlier
    /// lacks the LoRA buffers: reserve again after this.
    pub fn attach_lora(&mut self, lora: &Lora) -> Result<()> {
        self.lora = Some(DeviceLora::upload(
            &self.dev,
            lora,
            self.num_experts,
            self.hidden,
            self.intermediate,
            self.activation,
        )?);
        Ok(())
    }

    /// Uploads weights already in the kernels' layout (the benchmark makes them directly)
    /// and the static input scales `scheme` quantizes its activations with, if any.
    pub fn from_prepared(
        dev: &Arc<CudaDevice>,
        prepared: &PreparedLayer,
        scheme: &QuantScheme,
        input_scales: Option<&InputScales>,
        config: &LayerConfig,
        backend: BackendId,
    ) -> Result<Self> {
        let variant = variant_for(backend, scheme)?;
        let acts = act_modes(scheme, input_scales)?;
        let upload_scales = |mode: Option<ActMode>, stage| -> Result<_> {
            match (mode, input_scales) {
                (Some(ActMode::StaticPerExpert), Some(s)) => {
                    Ok(Some(Buffer::from_slice(&**dev, s.stage(stage))?))
                }
                _ => Ok(None),
            }
        };
        let expert_scales = [
            upload_scales(acts.map(|a| a.0), Stage::W13)?,
            upload_scales(acts.map(|a| a.1), Stage::W2)?,
        ];
        let wide = if gemm_family(dev)? {
            variant.sm90_wide_tiles()?
        } else {
            Vec::new()
        };
        let (on1, on2) = sm90_gemms(variant)?;
        Ok(CudaExperts {
            dev: dev.clone(),
            backend,
            variant,
            modules: Modules::load(dev, variant)?,
            w13: DeviceWeights::upload(dev, &prepared.w13)?,
            w2: DeviceWeights::upload(dev, &prepared.w2)?,
            num_experts: config.num_experts,
            hidden: config.hidden,
            intermediate: config.intermediate,
            activation: config.activation,
            weight_on_input: config.apply_router_weight_on_input,
            acts,
            expert_scales,
            lora: None,
            wide1: if on1 { wide.clone() } else { Vec::new() },
            wide: if on2 { wide } else { Vec::new() },
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }
}

impl VendorExperts for CudaExperts {
    type R = CudaDevice;
    type Scratch = Scratch;

    fn backend(&self) -> BackendId {
        self.backend
    }

    fn is_f16(&self) -> bool {
        self.variant == GemmVariant::F16
    }

    fn dims(&self) -> (usize, usize, usize) {
        (self.num_experts, self.hidden, self.intermediate)
    }

    fn block_tokens(&self, pairs: usize) -> usize {
        tile_for(self.variant, pairs, self.num_experts, &self.wide).bt
    }

    fn block_token_choices(&self) -> Vec<usize> {
        self.variant.tiles().iter().map(|t| t.bt).collect()
    }

    fn adapters(&self) -> Option<usize> {
        self.lora.as_ref().map(|l| l.adapters)
    }

    fn reserve(&self, tokens: usize, _top_k: usize, slots: usize) -> Result<Scratch> {
        let dev = &*self.dev;
        let (h, i) = (self.hidden, self.intermediate);
        let alloc = |bytes: usize| Buffer::alloc(dev, bytes.max(4));
        let rank = self.lora.as_ref().map_or(0, |l| l.rank);
        // LoRA buffers only when adapters are resident.
        let lora_floats = |n: usize| if self.lora.is_some() { n * 4 } else { 4 };
        // NVFP4 W4A4 keeps its quantize-dequantized inputs in bf16.
        let code_bytes = match self.acts {
            Some((ActMode::Nvfp4 { .. }, _)) => 2,
            _ => 1,
        };
        let perm_bytes = |w: &DeviceWeights, n: usize| if w.k_perm.is_some() { n } else { 4 };
        // Static scales per expert quantize gemm1's input per slot.
        let x_rows = match self.acts {
            Some((ActMode::StaticPerExpert, _)) => tokens.max(slots),
            _ => tokens,
        };
        // Per 128 columns (or, MX, per 32) at most.
        let scale_bytes = |mode: Option<ActMode>, rows: usize, cols: usize| {
            mode.map_or(rows * cols.div_ceil(128) * 4, |m| m.scale_bytes(rows, cols))
        };
        Ok(Scratch {
            x_codes: alloc(x_rows * h * code_bytes)?,
            x_perm: alloc(perm_bytes(&self.w13, slots * h * 2))?,
            inter_perm: alloc(perm_bytes(&self.w2, slots * i * 2))?,
            x_scales: alloc(scale_bytes(self.acts.map(|a| a.0), x_rows, h))?,
            inter: alloc(slots * i * 2)?,
            inter_codes: alloc(slots * i * code_bytes)?,
            inter_scales: alloc(scale_bytes(self.acts.map(|a| a.1), slots, i))?,
            amax: alloc(8)?,
            // The shrink's partial sums, one set per K split.
            lora_t: alloc(lora_floats(
                lora_splits(h).1.max(lora_splits(i).1) * slots * 2 * rank,
            ))?,
            delta13: alloc(lora_floats(slots * self.w13.rows))?,
            delta2: alloc(lora_floats(slots * h))?,
        })
    }

    fn enqueue(
        &self,
        io: &ExpertsIo,
        ws: &Scratch,
        stream: &<CudaDevice as Runtime>::Stream,
    ) -> Result<()> {
        let lora = match (io.token_adapter != 0, &self.lora) {
            (true, Some(l)) => Some(l),
            (true, None) => {
                return Err(Error::Config(
                    "LoRA requested but no adapters are resident".into(),
                ))
            }
            (false, _) => None,
        };
        let m = &self.modules;
        let (h, i, e) = (self.hidden, self.intermediate, self.num_experts);
        let (tokens, top_k) = (io.tokens, io.top_k);
        let pairs = tokens * top_k;
        let tile = tile_for(self.variant, pairs, e, &self.wide);
        if tile.bt != io.block_tokens {
            return Err(Error::Config(format!(
                "aligned to {} token slots per block, the GEMM tile takes {}",
                io.block_tokens, tile.bt
            )));
        }
        let slots = io.max_blocks * tile.bt;
        // Per-tensor scales take an amax; nothing else reads it.
        if matches!(
            self.acts,
            Some((ActMode::PerTensor, _) | (_, ActMode::PerTensor))
        ) {
            self.dev.zero(ws.amax.addr(), 8, stream)?;
        }
        let x = io.x;
        let x_rows = RowsIn {
            src: x,
            rows: tokens,
            cols: h,
            num_rows: 0,
            sorted: 0,
            pairs,
        };
        let amax1 = ws.amax.addr();
        let amax2 = ws.amax.addr() + 4;
        let route = LoraRoute::of(io, e);
        let expert_scales = |stage: usize| {
            self.expert_scales[stage]
                .as_ref()
                .map(|b| b.addr())
                .ok_or_else(|| Error::Config("per-expert input scales were not uploaded".into()))
        };
        // gemm1 reads its input by token, or (quantized per expert, or act-order) by slot.
        let mut act1_by_slot = 0;
        let (act1, x_scales) = match self.acts {
            Some((ActMode::StaticPerExpert, _)) => {
                m.quant_slots(
                    x,
                    h,
                    false,
                    &route,
                    expert_scales(0)?,
                    ws.x_codes.addr(),
                    ws.x_scales.addr(),
                    stream,
                )?;
                act1_by_slot = 1;
                (ws.x_codes.addr(), ws.x_scales.addr())
            }
            Some((mode @ ActMode::Mx(_), _)) => {
                let (fmt, _) = mode.mx_format(h).unwrap_or_default();
                m.mx_quant_rows(x_rows, fmt, ws.x_codes.addr(), ws.x_scales.addr(), stream)?;
                (ws.x_codes.addr(), ws.x_scales.addr())
            }
            Some((ActMode::Nvfp4 { global }, _)) => {
                m.nvfp4_qdq_rows(
                    x_rows,
                    global,
                    1.0 / global,
                    ws.x_codes.addr(),
                    ws.x_scales.addr(),
                    stream,
                )?;
                (ws.x_codes.addr(), ws.x_scales.addr())
            }
            Some((mode, _)) => {
                if mode == ActMode::PerTensor {
                    m.amax_rows(x_rows, amax1, stream)?;
                }
                m.quant_rows(
                    x_rows,
                    mode.code(),
                    amax1,
                    mode.static_scale(),
                    ws.x_codes.addr(),
                    ws.x_scales.addr(),
                    stream,
                )?;
                (ws.x_codes.addr(), ws.x_scales.addr())
            }
            None => (x, 0),
        };
        // Act-order (weight-only schemes, so never with the above): the input gathered per
        // slot in the expert's sorted K order (the LoRA shrink below still reads `x`
        // itself, in checkpoint order, as its A expects).
        let act1 = match &self.w13.k_perm {
            Some(perm) => {
                m.gather_cols(
                    act1,
                    h,
                    false,
                    &route,
                    perm.addr(),
                    ws.x_perm.addr(),
                    stream,
                )?;
                act1_by_slot = 1;
                ws.x_perm.addr()
            }
            None => act1,
        };
        let is_f16 = self.is_f16();
        if let Some(l) = lora {
            // Gate and up read the unquantized (scaled) hidden states, as in the emulation.
            m.lora_shrink(
                x,
                false,
                is_f16,
                h,
                &route,
                l.a13.addr(),
                2 * l.rank,
                ws.lora_t.addr(),
                stream,
            )?;
            m.lora_expand(
                ws.lora_t.addr(),
                2 * l.rank,
                h,
                &route,
                l.b13.addr(),
                self.w13.rows,
                ws.delta13.addr(),
                stream,
            )?;
        }
        let (kind, alpha, limit) = activation_code(self.activation);
        let (as_row1, as_k1) = self.acts.map_or((0, 0), |(a, _)| a.strides(h));
        // MX activations: their scales go to the k32 fold (`ak32`), not the epilogue.
        let mx_scales = |mode: Option<ActMode>, scales: u64, cols: usize| match mode
            .and_then(|m| m.mx_format(cols))
        {
            Some((_, per_row)) => (0, scales, per_row),
            None => (scales, 0, 0),
        };
        let (ascale1, ak32_1, ak_row1) = mx_scales(self.acts.map(|a| a.0), x_scales, h);
        let a2_per_tensor = matches!(self.acts, Some((_, ActMode::PerTensor)));
        let gemm1 = GemmArgs {
            w: self.w13.data.addr(),
            act: act1,
            wrow: addr_of(&self.w13.row_scales),
            wblk: addr_of(&self.w13.block_scales),
            ascale: ascale1,
            bias: addr_of(&self.w13.bias),
            sorted: io.sorted,
            block_expert: io.block_expert,
            num_slots: io.num_slots,
            topk_w: io.topk_weights,
            out: ws.inter.addr(),
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
            lora_delta: if lora.is_some() { ws.delta13.addr() } else { 0 },
            token_adapter: io.token_adapter,
            // Packed-weight fields: zero here, set per projection by `with_packed`, so
            // gemm2 (built from this) never inherits w13's.
            gs: 0,
            gpc: 0,
            nchunks: 0,
            chunk_bytes: 0,
            kpad: 0,
            group_log2: 0,
            spc_log2: 0,
            act_by_slot: act1_by_slot,
            ak_row: ak_row1,
            ak32: ak32_1,
        };
        let stage1 = if self.activation.is_gated() { 'g' } else { 's' };
        // Same slots per block as `tile` (wide tiles stand in by width), maybe the other family.
        let tile1 = tile_for(self.variant, pairs, e, &self.wide1);
        m.gemm(
            &gemm_kernel_name(self.variant, stage1, &tile1),
            &tile1,
            self.w13.with_packed(gemm1),
            io.max_blocks,
            1,
            stream,
        )?;

        if let Some(l) = lora {
            // Down reads the activation before its fp8 quantization.
            m.lora_shrink(
                ws.inter.addr(),
                true,
                is_f16,
                i,
                &route,
                l.a2.addr(),
                l.rank,
                ws.lora_t.addr(),
                stream,
            )?;
            m.lora_expand(
                ws.lora_t.addr(),
                l.rank,
                i,
                &route,
                l.b2.addr(),
                h,
                ws.delta2.addr(),
                stream,
            )?;
        }
        let inter_rows = RowsIn {
            src: ws.inter.addr(),
            rows: slots,
            cols: i,
            num_rows: io.num_slots,
            sorted: io.sorted,
            pairs,
        };
        let (act2, inter_scales) = match self.acts {
            Some((_, ActMode::StaticPerExpert)) => {
                m.quant_slots(
                    ws.inter.addr(),
                    i,
                    true,
                    &route,
                    expert_scales(1)?,
                    ws.inter_codes.addr(),
                    ws.inter_scales.addr(),
                    stream,
                )?;
                (ws.inter_codes.addr(), ws.inter_scales.addr())
            }
            Some((_, mode @ ActMode::Mx(_))) => {
                let (fmt, _) = mode.mx_format(i).unwrap_or_default();
                m.mx_quant_rows(
                    inter_rows,
                    fmt,
                    ws.inter_codes.addr(),
                    ws.inter_scales.addr(),
                    stream,
                )?;
                (ws.inter_codes.addr(), ws.inter_scales.addr())
            }
            Some((_, ActMode::Nvfp4 { global })) => {
                m.nvfp4_qdq_rows(
                    inter_rows,
                    global,
                    1.0 / global,
                    ws.inter_codes.addr(),
                    ws.inter_scales.addr(),
                    stream,
                )?;
                (ws.inter_codes.addr(), ws.inter_scales.addr())
            }
            Some((_, mode)) => {
                m.quant_rows(
                    inter_rows,
                    mode.code(),
                    amax2,
                    mode.static_scale(),
                    ws.inter_codes.addr(),
                    ws.inter_scales.addr(),
                    stream,
                )?;
                (ws.inter_codes.addr(), ws.inter_scales.addr())
            }
            None => (ws.inter.addr(), 0),
        };
        // Act-order: w2's K is the intermediate, gathered per slot the same way. (Folding
        // this permutation into w13's output rows instead would save the copy, but the
        // intermediate would then be in permuted feature order, which the LoRA down shrink
        // (lora.rs, checkpoint order) and w13's per-feature bias/LoRA delta do not expect;
        // one copy of slots × I bf16 is small beside the weights.)
        let act2 = match &self.w2.k_perm {
            Some(perm) => {
                m.gather_cols(
                    act2,
                    i,
                    true,
                    &route,
                    perm.addr(),
                    ws.inter_perm.addr(),
                    stream,
                )?;
                ws.inter_perm.addr()
            }
            None => act2,
        };
        let (as_row2, as_k2) = self.acts.map_or((0, 0), |(_, a)| a.strides(i));
        let (ascale2, ak32_2, ak_row2) = mx_scales(self.acts.map(|a| a.1), inter_scales, i);
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
            w: self.w2.data.addr(),
            act: act2,
            wrow: addr_of(&self.w2.row_scales),
            wblk: addr_of(&self.w2.block_scales),
            ascale: ascale2,
            bias: addr_of(&self.w2.bias),
            out: io.out,
            amax: 0,
            n: self.w2.rows as i32,
            k: self.w2.cols as i32,
            as_row: as_row2,
            as_k: as_k2,
            ldo: h as i32,
            k_split: k_split as i32,
            weight_on_input: self.weight_on_input as i32,
            lora_delta: if lora.is_some() { ws.delta2.addr() } else { 0 },
            // gemm2 reads its input by slot whatever this says.
            act_by_slot: 0,
            ak_row: ak_row2,
            ak32: ak32_2,
            ..gemm1
        };
        let gemm2 = self.w2.with_packed(gemm2);
        m.gemm(
            &gemm_kernel_name(self.variant, 'd', &tile),
            &tile,
            gemm2,
            io.max_blocks,
            splits,
            stream,
        )
    }
}
