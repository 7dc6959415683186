//! `WgpuExperts`: the routed experts on one wgpu adapter, as the one GPU driver
//! (`crate::gpu`) runs them. Weights stay quantized on the device in `layout`'s one form
//! and are decoded in the shader. Each forward queues, on the caller's stream: the hidden
//! states to f32 and their quantize-dequantize (`act.wgsl`, the emulation's rule; per
//! slot with the slot's expert scale where static fp8 scales differ per expert) →
//! LoRA gate/up deltas → gemm1 with bias, delta and the activation fused → LoRA down
//! delta → the intermediate's quantize-dequantize → gemm2 with bias, delta and the router
//! weight, one row per (token, choice) pair → the per-token sum into `io.out` in a fixed
//! order (no f32 atomics, so every forward is deterministic).

use super::kernels;
use super::layout::PackedProjection;
use super::plan::{ActPlan, StagePlan};
use super::qdq::{act_launch, qdq, qdq_slots, SlotRows};
pub use super::qdq::{qdq_host, qdq_slots_host};
use crate::device::wgpu::WgpuDevice;
use crate::device::{Arg, Buffer, LaunchConfig, Runtime};
use crate::error::{checked_size, Error, Result};
use crate::gpu::lora::{DeviceLora, LoraPack};
use crate::gpu::{activation_code, ExpertsIo, KernelFile, Vendor, VendorExperts};
use crate::moe::{Activation, LayerConfig, Lora};
use crate::oracle::{BackendId, Selection};
use crate::quant::{ExpertWeights, FloatDtype, QuantScheme, Stage};
use std::sync::Arc;

pub(super) type Module = <WgpuDevice as Runtime>::Module;
pub(super) type Stream = <WgpuDevice as Runtime>::Stream;

/// Token slots per GEMM block, and the GEMM tile (16 × 16 threads).
const TILE: usize = 16;
/// Threads of the element-wise kernels (act.wgsl, lora.wgsl).
pub(super) const THREADS: u32 = 64;

/// wgpu adapters, for the one GPU driver.
pub struct Wgpu;

impl Vendor for Wgpu {
    type R = WgpuDevice;
    type Experts = WgpuExperts;

    fn module(rt: &WgpuDevice, file: KernelFile) -> Result<Module> {
        rt.load(&kernels::module(match file {
            KernelFile::Align => "align",
            KernelFile::Route => "route",
            KernelFile::Quant => "quant",
        }))
    }

    /// route.wgsl runs any top-k with any number of lanes (its lanes compare candidates
    /// through workgroup memory, not subgroup shuffles): 32 per token.
    fn route_lanes(_: &WgpuDevice) -> (usize, usize) {
        (32, usize::MAX)
    }

    fn prepare(
        rt: &Arc<WgpuDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        selection: &Selection,
        lora: Option<&Lora>,
    ) -> Result<WgpuExperts> {
        WgpuExperts::prepare(rt, weights, config, selection.chosen, lora)
    }
}

/// align.wgsl's `MAX_E`.
const MAX_ALIGN_EXPERTS: usize = 1024;

/// One projection on the device.
struct DeviceWeights {
    p: PackedProjection,
    codes: Buffer<WgpuDevice>,
    lut: Buffer<WgpuDevice>,
    scales: Buffer<WgpuDevice>,
    zeros: Option<Buffer<WgpuDevice>>,
    g_idx: Option<Buffer<WgpuDevice>>,
    outer: Option<Buffer<WgpuDevice>>,
    bias: Option<Buffer<WgpuDevice>>,
}

impl DeviceWeights {
    /// Uploads `p`'s tables (keeping its geometry on the host, not its codes).
    fn upload(dev: &WgpuDevice, mut p: PackedProjection, bias: Option<&[f32]>) -> Result<Self> {
        let opt_f = |v: &Option<Vec<f32>>| v.as_ref().map(|v| Buffer::from_slice(dev, v));
        let codes = Buffer::from_slice(dev, &p.codes)?;
        p.codes = Vec::new();
        Ok(DeviceWeights {
            codes,
            lut: Buffer::from_slice(dev, &p.lut)?,
            scales: Buffer::from_slice(dev, &p.scales)?,
            zeros: opt_f(&p.zeros).transpose()?,
            g_idx: p
                .g_idx
                .as_ref()
                .map(|g| Buffer::from_slice(dev, g))
                .transpose()?,
            outer: opt_f(&p.outer).transpose()?,
            bias: bias.map(|b| Buffer::from_slice(dev, b)).transpose()?,
            p,
        })
    }

    /// The weight pointers of `gemm.wgsl` (bindings 0–6).
    fn ptrs(&self) -> [u64; 7] {
        let a = |b: &Option<Buffer<WgpuDevice>>| b.as_ref().map_or(0, Buffer::addr);
        [
            self.codes.addr(),
            self.lut.addr(),
            self.scales.addr(),
            a(&self.zeros),
            a(&self.g_idx),
            a(&self.outer),
            a(&self.bias),
        ]
    }
}

/// The routed experts of one layer on one wgpu adapter.
pub struct WgpuExperts {
    dev: Arc<WgpuDevice>,
    backend: BackendId,
    act: Module,
    gemm: Module,
    lora_kernels: Module,
    w13: DeviceWeights,
    w2: DeviceWeights,
    num_experts: usize,
    hidden: usize,
    intermediate: usize,
    activation: Activation,
    weight_on_input: bool,
    a1: ActPlan,
    a2: ActPlan,
    /// Each expert's static gemm1 / gemm2 input scale, where they differ per expert.
    a1_scales: Option<Buffer<WgpuDevice>>,
    a2_scales: Option<Buffer<WgpuDevice>>,
    is_f16: bool,
    lora: Option<DeviceLora<WgpuDevice>>,
}

impl WgpuExperts {
    /// Prepares `weights` on `dev`: the shader layout, uploaded, and the kernels compiled.
    pub fn prepare(
        dev: &Arc<WgpuDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        backend: BackendId,
        lora: Option<&Lora>,
    ) -> Result<Self> {
        if !backend.is_wgpu() {
            return Err(Error::BackendUnavailable {
                backend: backend.name().into(),
                reasons: "the wgpu experts run only the `wgpu` backend".into(),
            });
        }
        // align.wgsl counts each expert's pairs in workgroup memory sized at compile time;
        // past it the alignment would route nothing, so refuse here instead.
        if config.num_experts > MAX_ALIGN_EXPERTS {
            return Err(Error::Config(format!(
                "the wgpu alignment kernel takes at most {MAX_ALIGN_EXPERTS} experts, got {}",
                config.num_experts
            )));
        }
        crate::moe::emulation::check_weights_match(weights, config)?;
        weights.validate()?;
        let scheme = weights.scheme;
        let stage = |st| StagePlan::new(&scheme, st, weights.input_scales.as_ref());
        let (a1, a2) = (stage(Stage::W13)?, stage(Stage::W2)?);
        let upload = |p: &StagePlan| {
            p.expert_scales
                .as_ref()
                .map(|v| Buffer::from_slice(&**dev, v))
                .transpose()
        };
        let (a1_scales, a2_scales) = (upload(&a1)?, upload(&a2)?);
        let w13 = PackedProjection::new(&scheme, &weights.w13)?;
        let w2 = PackedProjection::new(&scheme, &weights.w2)?;
        let load = |f| dev.load(&kernels::module(f));
        let mut experts = WgpuExperts {
            dev: dev.clone(),
            backend,
            act: load("act")?,
            gemm: load("gemm")?,
            lora_kernels: load("lora")?,
            w13: DeviceWeights::upload(dev, w13, weights.w13_bias.as_deref())?,
            w2: DeviceWeights::upload(dev, w2, weights.w2_bias.as_deref())?,
            num_experts: config.num_experts,
            hidden: config.hidden,
            intermediate: config.intermediate,
            activation: config.activation,
            weight_on_input: config.apply_router_weight_on_input,
            a1: a1.plan,
            a2: a2.plan,
            a1_scales,
            a2_scales,
            is_f16: scheme == QuantScheme::Unquantized(FloatDtype::F16),
            lora: None,
        };
        if let Some(l) = lora {
            experts.attach_lora(l)?;
        }
        Ok(experts)
    }

    /// Makes `lora`'s adapters resident (replacing any before), packed as every vendor
    /// packs them, B13's columns in the checkpoint's w13 row order (the layout keeps it).
    /// Reserve scratch again after this.
    pub fn attach_lora(&mut self, lora: &Lora) -> Result<()> {
        let order: Vec<usize> = (0..self.activation.w13_rows(self.intermediate)).collect();
        let pack = LoraPack::new(
            lora,
            self.num_experts,
            self.hidden,
            self.intermediate,
            self.activation,
            &order,
        )?;
        self.lora = Some(DeviceLora::from_pack(&*self.dev, &pack)?);
        Ok(())
    }
}

/// A 1-D launch of `n` elements on `THREADS`-thread workgroups.
pub(super) fn elements(n: usize) -> LaunchConfig {
    LaunchConfig::blocks(n.div_ceil(THREADS as usize), THREADS, 0)
}

/// The scratch of one experts object for a maximum batch.
pub struct Scratch {
    tokens: usize,
    slots: usize,
    /// Hidden states in f32, and quantize-dequantized (per slot with per-expert scales).
    x: Buffer<WgpuDevice>,
    xq: Buffer<WgpuDevice>,
    /// Row amaxes and the tensor's amax.
    amax: Buffer<WgpuDevice>,
    total: Buffer<WgpuDevice>,
    /// gemm1's activation output `[slots, I]`, and quantize-dequantized.
    inter: Buffer<WgpuDevice>,
    interq: Buffer<WgpuDevice>,
    /// gemm2's weighted rows `[pairs, H]`.
    y: Buffer<WgpuDevice>,
    /// LoRA: the shrink's rows and the delta rows per slot.
    lora_t: Buffer<WgpuDevice>,
    delta13: Buffer<WgpuDevice>,
    delta2: Buffer<WgpuDevice>,
}

/// One forward's view for the per-stage helpers.
struct Pass<'a> {
    io: &'a ExpertsIo,
    ws: &'a Scratch,
    stream: &'a Stream,
    slots: usize,
}

impl WgpuExperts {
    fn act_launch(
        &self,
        s: &Pass<'_>,
        kernel: &str,
        c: LaunchConfig,
        ptrs: [u64; 4],
        scalars: [Arg<'_>; 10],
    ) -> Result<()> {
        act_launch(&self.dev, &self.act, s.stream, kernel, c, ptrs, scalars)
    }

    /// Quantize-dequantizes gemm1's (`up`: the hidden states, by token) or gemm2's input
    /// (the intermediate, by slot) at `src` into `dst`; returns the buffer the GEMM reads.
    /// With per-expert static scales gemm1's input is then a row per slot.
    fn quantize_input(&self, s: &Pass<'_>, up: bool, src: u64, dst: u64) -> Result<u64> {
        let (plan, scales, rows, cols) = if up {
            (self.a1, &self.a1_scales, s.io.tokens, self.hidden)
        } else {
            (self.a2, &self.a2_scales, s.slots, self.intermediate)
        };
        if let Some(sc) = scales {
            let r = SlotRows {
                io: s.io,
                slots: s.slots,
                src,
                by_token: up,
                cols,
                scales: (sc.addr(), self.num_experts),
                dst,
            };
            qdq_slots(&self.dev, &self.act, s.stream, plan, &r)?;
            return Ok(dst);
        }
        let amax = (s.ws.amax.addr(), s.ws.total.addr());
        qdq(
            &self.dev,
            &self.act,
            s.stream,
            plan,
            (src, rows, cols),
            amax,
            dst,
        )
    }

    /// `t = A · x`, then `delta = B · t`, for every slot whose token has an adapter.
    #[allow(clippy::too_many_arguments)]
    fn lora_delta(
        &self,
        s: &Pass<'_>,
        x: u64,
        x_by_slot: bool,
        k: usize,
        (a, b, rr): (u64, u64, usize),
        n: usize,
        delta: u64,
    ) -> Result<()> {
        let io = s.io;
        let ptrs = |t_ptr: u64, b_ptr: u64, d: u64| {
            [
                x,
                a,
                t_ptr,
                b_ptr,
                d,
                io.sorted,
                io.block_expert,
                io.num_slots,
                io.token_adapter,
            ]
        };
        let scalars = [
            Arg::I32(k as i32),
            Arg::I32(x_by_slot as i32),
            Arg::I32(rr as i32),
            Arg::I32(n as i32),
            Arg::I32(io.block_tokens as i32),
            Arg::I32((io.tokens * io.top_k) as i32),
            Arg::I32(io.top_k as i32),
            Arg::I32(self.num_experts as i32),
            Arg::I32(s.slots as i32),
        ];
        let t = s.ws.lora_t.addr();
        for (kernel, count, p) in [
            ("fm_lora_shrink", s.slots * rr, ptrs(t, 0, 0)),
            ("fm_lora_expand", s.slots * n, ptrs(t, b, delta)),
        ] {
            let mut args: Vec<Arg<'_>> = p.iter().map(|&v| Arg::Ptr(v)).collect();
            args.extend(scalars);
            self.dev
                .launch(&self.lora_kernels, kernel, elements(count), &args, s.stream)?;
        }
        Ok(())
    }

    /// One grouped GEMM (`up`: gemm1 into `inter`; else gemm2 into `y`).
    fn gemm_launch(&self, s: &Pass<'_>, up: bool, x: u64, delta: u64) -> Result<()> {
        let io = s.io;
        let w = if up { &self.w13 } else { &self.w2 };
        let p = &w.p;
        let (kind, alpha, limit) = activation_code(self.activation);
        let out = if up { s.ws.inter.addr() } else { s.ws.y.addr() };
        let mut args: Vec<Arg<'_>> = w.ptrs().iter().map(|&v| Arg::Ptr(v)).collect();
        args.extend([
            Arg::Ptr(x),
            Arg::Ptr(io.sorted),
            Arg::Ptr(io.block_expert),
            Arg::Ptr(io.num_slots),
            Arg::Ptr(delta),
            Arg::Ptr(io.topk_weights),
            Arg::Ptr(out),
        ]);
        args.extend(gemm_scalars(
            p,
            io,
            (kind, alpha, limit),
            (self.intermediate, self.hidden),
            self.is_f16,
            !self.weight_on_input,
            up && self.a1_scales.is_some(),
        ));
        let cols = if up { self.intermediate } else { self.hidden };
        let c = LaunchConfig {
            grid: (cols.div_ceil(TILE) as u32, io.max_blocks.max(1) as u32, 1),
            block: (TILE as u32, TILE as u32, 1),
            shared_mem_bytes: (3 * TILE * TILE * 4) as u32,
        };
        self.dev.launch(
            &self.gemm,
            if up { "fm_gemm_up" } else { "fm_gemm_down" },
            c,
            &args,
            s.stream,
        )
    }

    /// `io.out[t] += Σ_j y[t·k + j]`.
    fn combine(&self, s: &Pass<'_>) -> Result<()> {
        let io = s.io;
        let mut ptrs = [0u64; 14];
        ptrs[7] = s.ws.y.addr();
        ptrs[13] = io.out;
        let mut args: Vec<Arg<'_>> = ptrs.iter().map(|&v| Arg::Ptr(v)).collect();
        args.extend(gemm_scalars(
            &self.w2.p,
            io,
            (0, 0.0, 0.0),
            (self.intermediate, self.hidden),
            self.is_f16,
            false,
            false,
        ));
        let n = io.tokens * self.hidden;
        let c = LaunchConfig::blocks(n.div_ceil(TILE * TILE), TILE as u32, 0);
        let c = LaunchConfig {
            block: (TILE as u32, TILE as u32, 1),
            ..c
        };
        self.dev
            .launch(&self.gemm, "fm_combine", c, &args, s.stream)
    }
}

/// `gemm.wgsl`'s `Params` (without `present`, which the runtime appends).
fn gemm_scalars(
    p: &PackedProjection,
    io: &ExpertsIo,
    (kind, alpha, limit): (i32, f32, f32),
    (inter, hidden): (usize, usize),
    f16: bool,
    weighted: bool,
    x_by_slot: bool,
) -> [Arg<'static>; 25] {
    let u = |v: usize| Arg::U32(v as u32);
    [
        u(p.rows),
        u(p.cols),
        u(p.words_per_row),
        Arg::U32(p.bits),
        Arg::U32(p.float16),
        u(p.group_n),
        u(p.group_k),
        u(p.rows.div_ceil(p.group_n)),
        u(p.k_groups()),
        Arg::F32(p.zero),
        Arg::U32(p.round_bf16 as u32),
        u(p.outer_group_n),
        u(p.rows.div_ceil(p.outer_group_n)),
        u(io.top_k),
        u(io.tokens * io.top_k),
        u(io.block_tokens),
        Arg::I32(kind),
        Arg::F32(alpha),
        Arg::F32(limit),
        u(inter),
        Arg::U32(f16 as u32),
        Arg::U32(weighted as u32),
        u(io.tokens),
        u(hidden),
        Arg::U32(x_by_slot as u32),
    ]
}

impl VendorExperts for WgpuExperts {
    type R = WgpuDevice;
    type Scratch = Scratch;

    fn backend(&self) -> BackendId {
        self.backend
    }

    fn is_f16(&self) -> bool {
        self.is_f16
    }

    fn dims(&self) -> (usize, usize, usize) {
        (self.num_experts, self.hidden, self.intermediate)
    }

    fn block_tokens(&self, _pairs: usize) -> usize {
        TILE
    }

    fn block_token_choices(&self) -> Vec<usize> {
        vec![TILE]
    }

    fn adapters(&self) -> Option<usize> {
        self.lora.as_ref().map(|l| l.adapters)
    }

    fn reserve(&self, tokens: usize, top_k: usize, slots: usize) -> Result<Scratch> {
        let dev = &*self.dev;
        let (h, i) = (self.hidden, self.intermediate);
        let floats = |what: &str, dims: &[usize]| {
            checked_size(what, dims).and_then(|n| Buffer::alloc(dev, n.max(1) * 4))
        };
        let rank = self.lora.as_ref().map_or(0, |l| l.rank);
        let lora = |n: usize| if self.lora.is_some() { n } else { 1 };
        // Per-expert static scales quantize gemm1's input per slot.
        let xq_rows = match self.a1_scales {
            Some(_) => tokens.max(slots),
            None => tokens,
        };
        Ok(Scratch {
            tokens,
            slots,
            x: floats("wgpu hidden states", &[tokens, h])?,
            xq: floats("wgpu quantized hidden states", &[xq_rows, h])?,
            amax: floats("wgpu row amax", &[tokens.max(slots)])?,
            total: floats("wgpu amax", &[1])?,
            inter: floats("wgpu intermediate", &[slots, i])?,
            interq: floats("wgpu quantized intermediate", &[slots, i])?,
            y: floats("wgpu pair rows", &[tokens, top_k, h])?,
            lora_t: floats("wgpu LoRA rows", &[lora(slots * 2 * rank)])?,
            delta13: floats("wgpu LoRA gate/up deltas", &[lora(slots * self.w13.p.rows)])?,
            delta2: floats("wgpu LoRA down deltas", &[lora(slots * h)])?,
        })
    }

    fn enqueue(&self, io: &ExpertsIo, ws: &Scratch, stream: &Stream) -> Result<()> {
        let lora = match (io.token_adapter != 0, &self.lora) {
            (true, Some(l)) => Some(l),
            (true, None) => {
                return Err(Error::Config(
                    "LoRA requested but no adapters are resident".into(),
                ))
            }
            (false, _) => None,
        };
        let slots = io.max_blocks * io.block_tokens;
        if io.tokens > ws.tokens || slots > ws.slots || io.block_tokens != TILE {
            return Err(Error::shape(
                "wgpu experts batch (tokens, slots, block)",
                format!("at most ({}, {}, {TILE})", ws.tokens, ws.slots),
                format!("({}, {slots}, {})", io.tokens, io.block_tokens),
            ));
        }
        let (h, i) = (self.hidden, self.intermediate);
        let s = Pass {
            io,
            ws,
            stream,
            slots,
        };
        let th = io.tokens * h;
        let zero = Arg::I32(0);
        self.act_launch(
            &s,
            "fm_to_f32",
            elements(th),
            [io.x, ws.x.addr(), 0, 0],
            [
                Arg::I32(th as i32),
                Arg::I32(self.is_f16 as i32),
                zero,
                zero,
                zero,
                zero,
                zero,
                zero,
                zero,
                zero,
            ],
        )?;
        let x = self.quantize_input(&s, true, ws.x.addr(), ws.xq.addr())?;
        let delta13 = match lora {
            Some(l) => {
                // Gate and up read the unquantized (scaled) hidden states, as the emulation.
                self.lora_delta(
                    &s,
                    ws.x.addr(),
                    false,
                    h,
                    (l.a13.addr(), l.b13.addr(), 2 * l.rank),
                    self.w13.p.rows,
                    ws.delta13.addr(),
                )?;
                ws.delta13.addr()
            }
            None => 0,
        };
        self.gemm_launch(&s, true, x, delta13)?;
        let delta2 = match lora {
            Some(l) => {
                // Down reads the activation before its quantization.
                self.lora_delta(
                    &s,
                    ws.inter.addr(),
                    true,
                    i,
                    (l.a2.addr(), l.b2.addr(), l.rank),
                    h,
                    ws.delta2.addr(),
                )?;
                ws.delta2.addr()
            }
            None => 0,
        };
        let inter = self.quantize_input(&s, false, ws.inter.addr(), ws.interq.addr())?;
        self.dev
            .zero(ws.y.addr(), io.tokens * io.top_k * h * 4, stream)?;
        self.gemm_launch(&s, false, inter, delta2)?;
        self.combine(&s)
    }
}
