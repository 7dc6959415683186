//! `HipExperts`: the routed experts on one AMD GPU, as the one GPU driver (`crate::gpu`)
//! runs them. Weights are prepared once (`layout`: fnuz normalisation on gfx942, AITER's
//! 16×16 shuffle, e8m0 scale shuffle) and uploaded; each forward queues activation
//! quantization → gemm1 (+ bias) → the activation → quantization of the intermediate →
//! gemm2 with the router-weighted sum fused, on the caller's stream (static fp8 scales
//! calibrated per expert quantize both inputs per expert-sorted slot, `fm_quant_slots`,
//! and gemm1 then reads its input by slot). With LoRA adapters
//! resident, `lora.hip` computes each slot's gate/up and down delta rows first and the
//! GEMM epilogues add them where the emulation does (before the activation, before the
//! router weight).
//!
//! This is the host side of the AITER backends the oracle names. It has run on the CPU
//! simulator (tests/rocm_sim.rs), never on an AMD GPU: none was available.

use super::kernels;
use super::layout;
use super::lora;
use super::plan::{fp8_mode, plan, static_of, ActPlan, Variant};
use super::weights::DeviceWeights;
use crate::device::hip::{HipDevice, HipKernels};
use crate::device::{Arg, Buffer, LaunchConfig, Runtime};
use crate::error::{Error, Result};
use crate::gpu::lora::{DeviceLora, LoraRoute};
use crate::gpu::{activation_code, ExpertsIo, KernelFile, Vendor, VendorExperts};
use crate::moe::{Activation, LayerConfig, Lora};
use crate::oracle::{BackendId, Conversion, Selection};
use crate::quant::{ExpertWeights, Fp8Flavor, Stage};
use std::sync::Arc;

mod quantize;

type Stream = <HipDevice as Runtime>::Stream;

/// Token slots per GEMM block (the alignment padding) and weight rows per block.
const TILE_T: usize = 16;
const TILE_N: usize = 64;

/// AMD GPUs, for the one GPU driver.
pub struct Rocm;

impl Vendor for Rocm {
    type R = HipDevice;
    type Experts = HipExperts;

    fn module(rt: &HipDevice, file: KernelFile) -> Result<HipKernels> {
        rt.load(&kernels::module(match file {
            KernelFile::Align => "align",
            KernelFile::Route => "route",
            KernelFile::Quant => "quant",
        }))
    }

    fn prepare(
        rt: &Arc<HipDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        selection: &Selection,
        lora: Option<&Lora>,
    ) -> Result<HipExperts> {
        let mut experts = HipExperts::prepare(rt, weights, config, selection)?;
        if let Some(l) = lora {
            experts.attach_lora(l)?;
        }
        Ok(experts)
    }
}

/// The routed experts of one layer on one AMD GPU.
pub struct HipExperts {
    dev: Arc<HipDevice>,
    backend: BackendId,
    variant: Variant,
    quant: HipKernels,
    gemm: HipKernels,
    lora_kernels: HipKernels,
    w13: DeviceWeights,
    w2: DeviceWeights,
    num_experts: usize,
    hidden: usize,
    intermediate: usize,
    activation: Activation,
    weight_on_input: bool,
    a1: ActPlan,
    a2: ActPlan,
    /// `[E]` f32 static scales of gemm1's and gemm2's inputs where `a1` / `a2` is
    /// `Fp8PerExpert` (the checkpoint's, as calibrated; `fm_quant_slots` stores them as
    /// the GEMM reads them).
    expert_scales: [Option<Buffer<HipDevice>>; 2],
    is_f16: bool,
    /// `fm_quant_rows`' fp8_mode: 0 e4m3fn codes, 1 e4m3fnuz codes of an e4m3fnuz
    /// checkpoint, 2 the e4m3fn rule re-read as e4m3fnuz (an e4m3fn checkpoint on gfx942).
    fp8_mode: i32,
    /// Whether the device's fp8 matrix cores read e4m3fnuz (gfx942).
    device_fnuz: bool,
    /// Resident LoRA adapters, if the layer has any.
    lora: Option<DeviceLora<HipDevice>>,
}

fn ptr(b: &Buffer<HipDevice>) -> Arg<'static> {
    Arg::Ptr(b.addr())
}

fn opt(b: Option<&Buffer<HipDevice>>) -> Arg<'static> {
    Arg::Ptr(b.map_or(0, Buffer::addr))
}

fn cfg(grid: (usize, usize), threads: u32, smem: usize) -> LaunchConfig {
    LaunchConfig {
        grid: (grid.0.max(1) as u32, grid.1.max(1) as u32, 1),
        block: (threads, 1, 1),
        shared_mem_bytes: smem as u32,
    }
}

impl HipExperts {
    /// Prepares `weights` for `backend` on `dev`: the AMD layout, uploaded, and the code
    /// objects for the device's architecture loaded.
    pub fn prepare(
        dev: &Arc<HipDevice>,
        weights: &ExpertWeights,
        config: &LayerConfig,
        selection: &Selection,
    ) -> Result<Self> {
        weights.validate()?;
        Self::prepare_unchecked_values(dev, weights, config, selection)
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
        selection: &Selection,
    ) -> Result<Self> {
        crate::moe::emulation::check_weights_match(weights, config)?;
        weights.validate_layouts()?;
        let backend = selection.chosen;
        let (variant, a1, a2) = plan(backend, &weights.scheme, weights)?;
        // The fp8 flavour the kernels run: the oracle decided whether e4m3fn is re-read as
        // e4m3fnuz (gfx942); the layout and the activation rule follow that one decision.
        let fnuz = selection.conversions.contains(&Conversion::Fp8FnToFnuz);
        let fp8 = weights
            .scheme
            .fp8_flavor()
            .map(|f| if fnuz { Fp8Flavor::E4M3Fnuz } else { f });
        if let Variant::MxNative { .. } | Variant::MxOnFp8 { .. } = variant {
            for (what, k) in [
                ("hidden", config.hidden),
                ("intermediate", config.intermediate),
            ] {
                crate::error::check_group(128, k, &format!("{what} size for the scaled MFMA"))?;
            }
        }
        let prepared = layout::prepare_layout(weights, fp8)?;
        let load = |f| dev.load(&kernels::module(f));
        let upload_scales = |p: ActPlan, stage| -> Result<_> {
            match (p, &weights.input_scales) {
                (ActPlan::Fp8PerExpert, Some(s)) => {
                    let v = s.stage(stage);
                    if v.len() != config.num_experts {
                        return Err(Error::shape(
                            format!("{stage:?} input scales"),
                            format!("one per expert ({})", config.num_experts),
                            v.len(),
                        ));
                    }
                    Ok(Some(Buffer::from_slice(&**dev, v)?))
                }
                (ActPlan::Fp8PerExpert, None) => Err(Error::Missing {
                    what: "static input scales".into(),
                    why: format!("{} quantizes activations per expert", weights.scheme),
                }),
                _ => Ok(None),
            }
        };
        let expert_scales = [
            upload_scales(a1, Stage::W13)?,
            upload_scales(a2, Stage::W2)?,
        ];
        Ok(HipExperts {
            dev: dev.clone(),
            backend,
            variant,
            quant: load("quant")?,
            gemm: load("gemm")?,
            lora_kernels: load("lora")?,
            w13: DeviceWeights::upload(dev, &prepared.w13)?,
            w2: DeviceWeights::upload(dev, &prepared.w2)?,
            num_experts: config.num_experts,
            hidden: config.hidden,
            intermediate: config.intermediate,
            activation: config.activation,
            weight_on_input: config.apply_router_weight_on_input,
            a1,
            a2,
            expert_scales,
            is_f16: variant == Variant::F16,
            fp8_mode: fp8_mode(&weights.scheme, fp8)?,
            device_fnuz: dev.capabilities().fp8 == Some(Fp8Flavor::E4M3Fnuz),
            lora: None,
        })
    }

    /// Makes `lora`'s adapters resident (replacing any before). Scratch reserved earlier
    /// lacks the LoRA buffers: reserve again after this.
    pub fn attach_lora(&mut self, lora: &Lora) -> Result<()> {
        self.lora = Some(lora::upload(
            &self.dev,
            lora,
            self.num_experts,
            self.hidden,
            self.intermediate,
            self.activation,
        )?);
        Ok(())
    }

    fn launch(
        &self,
        m: &HipKernels,
        kernel: &str,
        c: LaunchConfig,
        args: &[Arg<'_>],
        stream: &Stream,
    ) -> Result<()> {
        self.dev.launch(m, kernel, c, args, stream)
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
        io: &ExpertsIo,
        (out, lora_delta): (u64, u64),
        stream: &Stream,
    ) -> Result<()> {
        let pairs = io.tokens * io.top_k;
        let (fmt_w, fmt_a) = self.variant.mx_formats();
        // Whether fp8 codes are e4m3fnuz: read where fp8 is decoded in software, and by
        // the MX-on-fp8 and W4A8 kernels, which encode their codes in the device's flavour.
        let fnuz = match self.variant {
            Variant::MxOnFp8 { .. } | Variant::W4a8 => self.device_fnuz,
            _ => self.fp8_mode != 0,
        };
        let wbits = match self.variant {
            Variant::IntA16 { bits } => bits,
            _ => 0,
        };
        let name = format!(
            "{}_{}",
            self.variant.prefix(),
            if stage == 1 { "up" } else { "down" }
        );
        let args = [
            ptr(&w.data),
            Arg::Ptr(w.weight_scales()),
            Arg::I32(w.fp8_scales.as_ref().map_or(0, |s| s.0)),
            opt(w.block_scales.as_ref()),
            opt(w.bias.as_ref()),
            Arg::Ptr(act.0),
            Arg::Ptr(act.1),
            Arg::I32(act.2),
            Arg::F32(a_static),
            Arg::Ptr(io.sorted),
            Arg::Ptr(io.block_expert),
            Arg::Ptr(io.topk_weights),
            Arg::Ptr(out),
            Arg::I32(w.rows as i32),
            Arg::I32(w.cols as i32),
            Arg::I32(io.top_k as i32),
            Arg::I32(pairs as i32),
            Arg::I32(fnuz as i32),
            Arg::I32(self.is_f16 as i32),
            Arg::I32(fmt_w),
            Arg::I32(fmt_a),
            Arg::I32(self.weight_on_input as i32),
            // The LoRA delta rows (0: none) and the adapter each token's rows take.
            Arg::Ptr(lora_delta),
            Arg::Ptr(io.token_adapter),
            // Integer weight-only: zero points, act-order groups, group size, bits.
            Arg::Ptr(w.int_zeros()),
            Arg::Ptr(w.int_g_idx()),
            Arg::I32(w.int_group()),
            Arg::I32(wbits),
            Arg::Ptr(w.int_channel_scales()),
            // gemm1 reads its input by slot where it was quantized per expert.
            Arg::I32((stage == 1 && self.a1.per_slot()) as i32),
        ];
        self.launch(
            &self.gemm,
            &name,
            cfg((crate::fault::tiles(w.rows, TILE_N), io.max_blocks), 256, 0),
            &args,
            stream,
        )
    }
}

/// The experts' scratch for a maximum batch.
pub struct Scratch {
    amax: Buffer<HipDevice>,
    x_codes: Buffer<HipDevice>,
    x_scales: Buffer<HipDevice>,
    g: Buffer<HipDevice>,
    inter: Buffer<HipDevice>,
    i_codes: Buffer<HipDevice>,
    i_scales: Buffer<HipDevice>,
    /// LoRA: the shrink's rows and the gate/up and down delta rows per slot.
    lora_t: Buffer<HipDevice>,
    delta13: Buffer<HipDevice>,
    delta2: Buffer<HipDevice>,
}

impl VendorExperts for HipExperts {
    type R = HipDevice;
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
        TILE_T
    }

    fn block_token_choices(&self) -> Vec<usize> {
        vec![TILE_T]
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
        // Static scales per expert quantize gemm1's input per slot.
        let x_rows = if self.a1.per_slot() {
            tokens.max(slots)
        } else {
            tokens
        };
        Ok(Scratch {
            amax: alloc(4)?,
            x_codes: alloc(x_rows * h * self.a1.code_bytes())?,
            x_scales: alloc(x_rows * h.div_ceil(32) * 4)?,
            g: alloc(slots * self.w13.rows * 4)?,
            inter: alloc(slots * i * 2)?,
            i_codes: alloc(slots * i * self.a2.code_bytes())?,
            i_scales: alloc(slots * i.div_ceil(32) * 4)?,
            lora_t: alloc(lora_floats(slots * 2 * rank))?,
            delta13: alloc(lora_floats(slots * self.w13.rows))?,
            delta2: alloc(lora_floats(slots * h))?,
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
        let (h, i) = (self.hidden, self.intermediate);
        let slots = io.max_blocks * TILE_T;
        let pairs = io.tokens * io.top_k;
        let route = LoraRoute::of(io, self.num_experts);
        if let Some(l) = lora {
            // Gate and up read the unquantized (scaled) hidden states, as in the emulation.
            lora::shrink_expand(
                &self.dev,
                &self.lora_kernels,
                (io.x, false, self.is_f16, h),
                &route,
                (l.a13.addr(), l.b13.addr(), 2 * l.rank),
                ws.lora_t.addr(),
                (self.w13.rows, ws.delta13.addr()),
                stream,
            )?;
        }
        let delta = |b: &Buffer<HipDevice>| if lora.is_some() { b.addr() } else { 0 };
        let act1 = self.quantize(
            Stage::W13,
            io.x,
            io.tokens,
            h,
            &route,
            (&ws.amax, &ws.x_codes, &ws.x_scales),
            stream,
        )?;
        self.gemm_launch(
            1,
            &self.w13,
            act1,
            static_of(self.a1),
            io,
            (ws.g.addr(), delta(&ws.delta13)),
            stream,
        )?;
        let (kind, alpha, limit) = activation_code(self.activation);
        let args = [
            ptr(&ws.g),
            Arg::I32(slots as i32),
            Arg::I32(i as i32),
            Arg::Ptr(io.num_slots),
            Arg::Ptr(io.sorted),
            Arg::I32(pairs as i32),
            Arg::I32(kind),
            Arg::F32(alpha),
            Arg::F32(limit),
            Arg::I32(self.is_f16 as i32),
            ptr(&ws.inter),
        ];
        self.launch(
            &self.quant,
            "fm_act",
            cfg((slots, 1), 256, 0),
            &args,
            stream,
        )?;
        if let Some(l) = lora {
            // Down reads the activation before its quantization.
            lora::shrink_expand(
                &self.dev,
                &self.lora_kernels,
                (ws.inter.addr(), true, self.is_f16, i),
                &route,
                (l.a2.addr(), l.b2.addr(), l.rank),
                ws.lora_t.addr(),
                (h, ws.delta2.addr()),
                stream,
            )?;
        }
        let act2 = self.quantize(
            Stage::W2,
            ws.inter.addr(),
            slots,
            i,
            &route,
            (&ws.amax, &ws.i_codes, &ws.i_scales),
            stream,
        )?;
        self.gemm_launch(
            2,
            &self.w2,
            act2,
            static_of(self.a2),
            io,
            (io.out, delta(&ws.delta2)),
            stream,
        )
    }
}
