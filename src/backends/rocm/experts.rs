//! `HipExperts`: the routed experts on one AMD GPU (feature `rocm`). Weights are prepared
//! once (`layout`: fnuz normalisation on gfx942, AITER's 16×16 shuffle, e8m0 scale
//! shuffle) and uploaded; each forward queues alignment → activation quantization → gemm1
//! (+ bias) → the activation → quantization of the intermediate → gemm2 with the
//! router-weighted sum fused, on the default stream, then reads the output.
//!
//! This is the host side of the AITER backends the oracle names. It has been compiled and
//! its layouts verified on the CPU, but it has never run on an AMD GPU: none was available.

use super::kernels;
use super::layout::{self, HipGemmWeights};
use super::plan::{fp8_mode, plan, static_of, ActPlan, Variant};
use crate::device::hip::{HipBuffer, HipDevice};
use crate::device::{Arg, Device, LaunchConfig, Module, Stream};
use crate::error::{check_len, Error, Result};
use crate::moe::{Activation, Experts, LayerConfig, LoraBatch, TopK};
use crate::oracle::BackendId;
use crate::quant::{ExpertWeights, Fp8WeightScale};
use std::sync::Arc;

/// Token slots per GEMM block (the alignment padding) and weight rows per block.
const TILE_T: usize = 16;
const TILE_N: usize = 64;

/// One projection on the device.
struct DeviceWeights {
    data: HipBuffer,
    fp8_scales: Option<(i32, HipBuffer)>,
    mx_scales: Option<HipBuffer>,
    bias: Option<HipBuffer>,
    rows: usize,
    cols: usize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl DeviceWeights {
    fn upload(dev: &Arc<HipDevice>, w: &HipGemmWeights) -> Result<Self> {
        let fp8_scales = match &w.fp8_scales {
            Some((g, s)) => {
                let mode = match g {
                    Fp8WeightScale::PerTensor => 0,
                    Fp8WeightScale::PerChannel => 1,
                    Fp8WeightScale::Block128 => 2,
                };
                Some((mode, HipBuffer::from_bytes(dev, &f32_bytes(s))?))
            }
            None => None,
        };
        Ok(DeviceWeights {
            data: HipBuffer::from_bytes(dev, &w.data)?,
            fp8_scales,
            mx_scales: w
                .mx_scales
                .as_ref()
                .map(|s| HipBuffer::from_bytes(dev, s))
                .transpose()?,
            bias: w
                .bias
                .as_ref()
                .map(|b| HipBuffer::from_bytes(dev, &f32_bytes(b)))
                .transpose()?,
            rows: w.rows,
            cols: w.cols,
        })
    }
}

/// The routed experts of one layer on one AMD GPU.
pub struct HipExperts {
    dev: Arc<HipDevice>,
    backend: BackendId,
    variant: Variant,
    align: Module,
    quant: Module,
    gemm: Module,
    w13: DeviceWeights,
    w2: DeviceWeights,
    num_experts: usize,
    hidden: usize,
    intermediate: usize,
    activation: Activation,
    weight_on_input: bool,
    a1: ActPlan,
    a2: ActPlan,
    is_f16: bool,
    /// `fm_quant_rows`' fp8_mode: 0 e4m3fn codes, 1 e4m3fnuz codes of an e4m3fnuz
    /// checkpoint, 2 the e4m3fn rule re-read as e4m3fnuz (an e4m3fn checkpoint on gfx942).
    fp8_mode: i32,
}

fn ptr(b: &HipBuffer) -> Arg {
    Arg::U64(b.ptr())
}

fn opt(b: Option<&HipBuffer>) -> Arg {
    Arg::U64(b.map_or(0, HipBuffer::ptr))
}

fn cfg(grid: (usize, usize), threads: u32, smem: usize) -> LaunchConfig {
    LaunchConfig {
        grid: (grid.0.max(1) as u32, grid.1.max(1) as u32, 1),
        block: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    }
}

fn act_kind(a: Activation) -> (i32, f32, f32) {
    match a {
        Activation::SiluAndMul => (0, 0.0, 0.0),
        Activation::GeluAndMul => (1, 0.0, 0.0),
        Activation::GeluTanhAndMul => (2, 0.0, 0.0),
        Activation::SwigluOai { alpha, limit } => (3, alpha, limit),
        Activation::Relu2 => (4, 0.0, 0.0),
        Activation::Silu => (5, 0.0, 0.0),
    }
}

impl HipExperts {
    /// Prepares `weights` for `backend` on `dev`: the AMD layout, uploaded, and the code
    /// objects for the device's architecture loaded.
    pub fn prepare(
        dev: &Arc<HipDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        backend: BackendId,
    ) -> Result<Self> {
        weights.validate()?;
        Self::prepare_unchecked_values(dev, weights, config, backend)
    }

    /// `prepare` checking shapes but not values, so that weights validation would refuse
    /// (NaN codes, 0xFF e8m0 scales) reach the kernels: the simulator tests use it to
    /// show that the matrix instructions see those codes as the hardware does. Not for
    /// serving: a layer built this way can return NaN.
    #[doc(hidden)]
    pub fn prepare_unchecked_values(
        dev: &Arc<HipDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        backend: BackendId,
    ) -> Result<Self> {
        crate::moe::emulation::check_weights_match(weights, config)?;
        weights.validate_layouts()?;
        let caps = dev.capabilities();
        let (variant, a1, a2) = plan(&weights.scheme, weights)?;
        if let Variant::MxNative { .. } = variant {
            for (what, k) in [
                ("hidden", config.hidden),
                ("intermediate", config.intermediate),
            ] {
                crate::error::check_group(128, k, &format!("{what} size for the scaled MFMA"))?;
            }
        }
        let prepared = layout::prepare_layout(weights, caps.fp8)?;
        let load = |f| dev.load_module(&kernels::module(f));
        Ok(HipExperts {
            dev: dev.clone(),
            backend,
            variant,
            align: load("align")?,
            quant: load("quant")?,
            gemm: load("gemm")?,
            w13: DeviceWeights::upload(dev, &prepared.w13)?,
            w2: DeviceWeights::upload(dev, &prepared.w2)?,
            num_experts: config.num_experts,
            hidden: config.hidden,
            intermediate: config.intermediate,
            activation: config.activation,
            weight_on_input: config.apply_router_weight_on_input,
            a1,
            a2,
            is_f16: variant == Variant::F16,
            fp8_mode: fp8_mode(&weights.scheme, caps.fp8)?,
        })
    }

    fn launch(&self, m: Module, kernel: &str, c: LaunchConfig, args: &[Arg]) -> Result<()> {
        self.dev.launch(m, kernel, c, args, Stream::DEFAULT)
    }

    /// Quantizes `rows` rows of the model-dtype matrix `src` (`cols` wide) for a GEMM;
    /// returns the buffers the GEMM reads (codes or the input itself, and scales).
    #[allow(clippy::too_many_arguments)]
    fn quantize(
        &self,
        plan: ActPlan,
        src: &HipBuffer,
        rows: usize,
        cols: usize,
        routing: Option<(&HipBuffer, &HipBuffer, usize)>,
        amax: &HipBuffer,
        codes: &HipBuffer,
        scales: &HipBuffer,
    ) -> Result<(u64, u64, i32)> {
        let (num_rows, sorted, pairs) = match routing {
            Some((n, s, p)) => (ptr(n), ptr(s), p),
            None => (Arg::U64(0), Arg::U64(0), 0),
        };
        let f16 = Arg::I32(self.is_f16 as i32);
        match plan {
            ActPlan::None => Ok((src.ptr(), 0, 0)),
            ActPlan::Fp8 { mode, static_scale } => {
                let fp8_mode = match self.variant {
                    // The scaled MFMA (gfx950) reads OCP fp8.
                    Variant::MxNative { .. } => 0,
                    _ => self.fp8_mode,
                };
                if mode == 0 {
                    self.dev.zero(amax.handle(), Stream::DEFAULT)?;
                    let args = [
                        ptr(src),
                        Arg::I32(rows as i32),
                        Arg::I32(cols as i32),
                        num_rows,
                        sorted,
                        Arg::I32(pairs as i32),
                        f16,
                        ptr(amax),
                    ];
                    self.launch(
                        self.quant,
                        "fm_amax_rows",
                        cfg((rows.div_ceil(256).min(1024), 1), 256, 0),
                        &args,
                    )?;
                }
                let args = [
                    ptr(src),
                    Arg::I32(rows as i32),
                    Arg::I32(cols as i32),
                    num_rows,
                    sorted,
                    Arg::I32(pairs as i32),
                    Arg::I32(mode),
                    ptr(amax),
                    Arg::F32(static_scale),
                    Arg::I32(fp8_mode),
                    f16,
                    ptr(codes),
                    ptr(scales),
                ];
                self.launch(self.quant, "fm_quant_rows", cfg((rows, 1), 256, 0), &args)?;
                Ok((codes.ptr(), scales.ptr(), mode))
            }
            ActPlan::Mx { fmt } => {
                let blocks = rows * cols / 32;
                let args = [
                    ptr(src),
                    Arg::I32(rows as i32),
                    Arg::I32(cols as i32),
                    num_rows,
                    sorted,
                    Arg::I32(pairs as i32),
                    Arg::I32(fmt),
                    f16,
                    ptr(codes),
                    ptr(scales),
                ];
                self.launch(
                    self.quant,
                    "fm_mx_quant_rows",
                    cfg((blocks.div_ceil(256), 1), 256, 0),
                    &args,
                )?;
                Ok((codes.ptr(), scales.ptr(), 0))
            }
        }
    }

    /// One grouped GEMM launch (`stage` 1: gemm1 into `out` [slots, N]; 2: gemm2 added
    /// into `out` [tokens, N]).
    #[allow(clippy::too_many_arguments)]
    fn gemm_launch(
        &self,
        stage: u8,
        w: &DeviceWeights,
        act: (u64, u64, i32),
        a_static: f32,
        route: (&HipBuffer, &HipBuffer, &HipBuffer, usize, usize, usize),
        out: u64,
    ) -> Result<()> {
        let (sorted, block_expert, topk_w, max_blocks, top_k, pairs) = route;
        let (fmt_w, fmt_a) = match self.variant {
            Variant::MxNative { fmt_w, fmt_a } => (fmt_w, fmt_a),
            _ => (0, 0),
        };
        let name = format!(
            "{}_{}",
            self.variant.prefix(),
            if stage == 1 { "up" } else { "down" }
        );
        let args = [
            ptr(&w.data),
            opt(w.fp8_scales.as_ref().map(|s| &s.1)),
            Arg::I32(w.fp8_scales.as_ref().map_or(0, |s| s.0)),
            opt(w.mx_scales.as_ref()),
            opt(w.bias.as_ref()),
            Arg::U64(act.0),
            Arg::U64(act.1),
            Arg::I32(act.2),
            Arg::F32(a_static),
            ptr(sorted),
            ptr(block_expert),
            ptr(topk_w),
            Arg::U64(out),
            Arg::I32(w.rows as i32),
            Arg::I32(w.cols as i32),
            Arg::I32(top_k as i32),
            Arg::I32(pairs as i32),
            // Whether fp8 codes are e4m3fnuz (read only where fp8 is decoded in software).
            Arg::I32((self.fp8_mode != 0) as i32),
            Arg::I32(self.is_f16 as i32),
            Arg::I32(fmt_w),
            Arg::I32(fmt_a),
            Arg::I32(self.weight_on_input as i32),
        ];
        self.launch(
            self.gemm,
            &name,
            cfg((w.rows.div_ceil(TILE_N), max_blocks), 256, 0),
            &args,
        )
    }
}

/// Plain numbers as little-endian bytes.
fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

impl Experts for HipExperts {
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
        if lora.is_some_and(|l| l.slots.iter().any(Option::is_some)) {
            return Err(Error::BackendUnavailable {
                backend: self.backend.name().into(),
                reasons: "LoRA is not supported by the AMD backends".into(),
            });
        }
        let (h, i, e) = (self.hidden, self.intermediate, self.num_experts);
        let tokens = topk.tokens();
        check_len("hidden states", x.len(), tokens * h)?;
        check_len("output", out.len(), tokens * h)?;
        topk.check_experts(e)?;
        if self.weight_on_input && topk.k() != 1 {
            return Err(Error::Config(format!(
                "router weight on the input needs top-k 1, got {}",
                topk.k()
            )));
        }
        let dev = &self.dev;
        let pairs = tokens * topk.k();
        let max_blocks = pairs.div_ceil(TILE_T) + e.min(pairs);
        let slots = max_blocks * TILE_T;
        let alloc = |bytes: usize| HipBuffer::alloc(dev, bytes.max(4));
        let model: Vec<u16> = x
            .iter()
            .map(|&v| {
                if self.is_f16 {
                    half::f16::from_f32(v).to_bits()
                } else {
                    half::bf16::from_f32(v).to_bits()
                }
            })
            .collect();
        let xb = HipBuffer::from_bytes(dev, &le(&model, u16::to_le_bytes))?;
        let ids: Vec<i32> = topk.ids().iter().map(|&v| v as i32).collect();
        let idsb = HipBuffer::from_bytes(dev, &le(&ids, i32::to_le_bytes))?;
        let wb = HipBuffer::from_bytes(dev, &le(topk.weights(), f32::to_le_bytes))?;
        let (sorted, block_expert, num_slots) =
            (alloc(slots * 4)?, alloc(max_blocks * 4)?, alloc(4)?);
        let counts = alloc(e * 4)?;
        let args = [
            ptr(&idsb),
            Arg::I32(pairs as i32),
            Arg::I32(e as i32),
            Arg::I32(TILE_T as i32),
            Arg::I32(max_blocks as i32),
            ptr(&sorted),
            ptr(&block_expert),
            ptr(&num_slots),
            ptr(&counts),
        ];
        self.launch(
            self.align,
            "fm_align",
            cfg((1, 1), 1024, (3 * e + 1) * 4),
            &args,
        )?;

        // Router weight on the input (top-1): scaled before quantization, as emulated.
        let scaled;
        let x_in = if self.weight_on_input {
            scaled = alloc(tokens * h * 2)?;
            let args = [
                ptr(&xb),
                Arg::I32(tokens as i32),
                Arg::I32(h as i32),
                ptr(&wb),
                Arg::I32(self.is_f16 as i32),
                ptr(&scaled),
            ];
            self.launch(self.quant, "fm_scale_rows", cfg((tokens, 1), 256, 0), &args)?;
            &scaled
        } else {
            &xb
        };
        let amax = alloc(4)?;
        let (x_codes, x_scales) = (alloc(tokens * h)?, alloc(tokens * h.div_ceil(32) * 4)?);
        let act1 = self.quantize(self.a1, x_in, tokens, h, None, &amax, &x_codes, &x_scales)?;
        let route = (&sorted, &block_expert, &wb, max_blocks, topk.k(), pairs);
        let rows13 = self.w13.rows;
        let g = alloc(slots * rows13 * 4)?;
        self.gemm_launch(1, &self.w13, act1, static_of(self.a1), route, g.ptr())?;

        let inter = alloc(slots * i * 2)?;
        let (kind, alpha, limit) = act_kind(self.activation);
        let args = [
            ptr(&g),
            Arg::I32(slots as i32),
            Arg::I32(i as i32),
            ptr(&num_slots),
            ptr(&sorted),
            Arg::I32(pairs as i32),
            Arg::I32(kind),
            Arg::F32(alpha),
            Arg::F32(limit),
            Arg::I32(self.is_f16 as i32),
            ptr(&inter),
        ];
        self.launch(self.quant, "fm_act", cfg((slots, 1), 256, 0), &args)?;
        let (i_codes, i_scales) = (alloc(slots * i)?, alloc(slots * i.div_ceil(32) * 4)?);
        let act2 = self.quantize(
            self.a2,
            &inter,
            slots,
            i,
            Some((&num_slots, &sorted, pairs)),
            &amax,
            &i_codes,
            &i_scales,
        )?;
        let y = alloc(tokens * h * 4)?;
        dev.zero(y.handle(), Stream::DEFAULT)?;
        self.gemm_launch(2, &self.w2, act2, static_of(self.a2), route, y.ptr())?;
        let mut raw = vec![0u8; tokens * h * 4];
        dev.read(y.handle(), 0, &mut raw, Stream::DEFAULT)?;
        for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}
