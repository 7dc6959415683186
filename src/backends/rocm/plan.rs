//! The plan a scheme gets on an AMD GPU: which GEMM kernel family runs it, how each GEMM
//! input is quantized on the device, and which fp8 rule the activations follow.

use crate::error::{Error, Result};
use crate::oracle::BackendId;
use crate::quant::{
    ActScale, ExpertWeights, FloatDtype, Fp8Flavor, MxAct, MxElem, QuantScheme, Stage,
};

/// The GEMM kernel family (gemm.hip's variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Bf16,
    F16,
    Fp8,
    /// MX weights (fp4 / fp6, `fmt_w` as the scaled MFMA numbers them) expanded to bf16
    /// or f16 in registers, exactly; activations in the model dtype.
    MxA16 {
        fmt_w: i32,
    },
    /// NVFP4 weights expanded to bf16, bf16 activations (W4A4's quantize-dequantized).
    Nvfp4A16,
    /// Integer weight-only (GPTQ / AWQ) expanded to bf16: `bits` 4 or 8.
    IntA16 {
        bits: i32,
    },
    /// INT8 W8A8: s8 weights and activations on the int8 MFMA, i32 sums.
    W8a8,
    /// W4A8: int4 codes − 8 as e4m3 against fp8 per-token activations on the fp8 MFMA,
    /// group scales on each 128-column partial sum, the channel scale at the end.
    W4a8,
    /// gfx950 scaled MFMA; formats as the instruction numbers them.
    MxNative {
        fmt_w: i32,
        fmt_a: i32,
    },
    /// The same MX schemes on the fp8 MFMA (gfx942): codes re-encoded as e4m3, block
    /// scales on each 32-element block's dot product.
    MxOnFp8 {
        fmt_w: i32,
        fmt_a: i32,
    },
}

impl Variant {
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Variant::Bf16 => "fm_gemm_bf16",
            Variant::F16 => "fm_gemm_f16",
            Variant::Fp8 => "fm_gemm_fp8",
            Variant::MxA16 { .. } => "fm_gemm_mxa16",
            Variant::Nvfp4A16 => "fm_gemm_nvfp4a16",
            Variant::IntA16 { .. } => "fm_gemm_wna16",
            Variant::W8a8 => "fm_gemm_w8a8",
            Variant::W4a8 => "fm_gemm_w4a8",
            Variant::MxNative { .. } => "fm_gemm_mx",
            Variant::MxOnFp8 { .. } => "fm_gemm_mxfp8",
        }
    }

    /// The weight and activation formats of the MX variants (0, 0 otherwise).
    pub(super) fn mx_formats(self) -> (i32, i32) {
        match self {
            Variant::MxNative { fmt_w, fmt_a } | Variant::MxOnFp8 { fmt_w, fmt_a } => {
                (fmt_w, fmt_a)
            }
            Variant::MxA16 { fmt_w } => (fmt_w, 0),
            Variant::Bf16
            | Variant::F16
            | Variant::Fp8
            | Variant::Nvfp4A16
            | Variant::IntA16 { .. }
            | Variant::W8a8
            | Variant::W4a8 => (0, 0),
        }
    }
}

/// How a GEMM input is quantized on the device (the `mode` of `fm_quant_rows`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ActPlan {
    /// Kept in the model dtype.
    None,
    /// fp8 with a dynamic (0 per tensor, 1 per row, 2 per row per 128) or static (3) scale.
    Fp8 { mode: i32, static_scale: f32 },
    /// fp8 with static scales calibrated per expert (`fm_quant_slots`): codes and one
    /// scale per slot, which the GEMM reads per row (gemm1 by slot); the scales are the
    /// checkpoint's `InputScales::stage`, uploaded by `HipExperts`.
    Fp8PerExpert,
    /// MX in the weights' element type (`fm_mx_quant_rows`).
    Mx { fmt: i32 },
    /// INT8 W8A8: s8 codes per row, scale amax / 127 (`fm_quant_rows` mode 4).
    Int8PerRow,
    /// NVFP4 W4A4: 16-column blocks quantize-dequantized to bf16 (`fm_nvfp4_qdq_rows`),
    /// `global` = 1 / the static input scale, in f32 as the emulation computes it.
    Nvfp4 { global: f32 },
}

impl ActPlan {
    /// Bytes per element of the quantized rows the GEMM reads.
    pub(super) fn code_bytes(self) -> usize {
        match self {
            ActPlan::Nvfp4 { .. } => 2,
            ActPlan::None
            | ActPlan::Fp8 { .. }
            | ActPlan::Fp8PerExpert
            | ActPlan::Int8PerRow
            | ActPlan::Mx { .. } => 1,
        }
    }

    /// Whether the GEMM input is quantized per slot, gemm1's then read by slot.
    pub(super) fn per_slot(self) -> bool {
        matches!(self, ActPlan::Fp8PerExpert)
    }
}

const FMT_FP8: i32 = 0;

fn mx_fmt(e: MxElem) -> i32 {
    match e {
        MxElem::Fp6E2M3 => 2,
        MxElem::Fp6E3M2 => 3,
        MxElem::Fp4E2M1 => 4,
    }
}

/// The kernels and activation plans of the oracle's `backend` for `scheme`: the backend
/// fixes the kernel family, the scheme its member and the activation plans. A pairing the
/// oracle should never make is an error naming both.
pub(super) fn plan(
    backend: BackendId,
    scheme: &QuantScheme,
    weights: &ExpertWeights,
) -> Result<(Variant, ActPlan, ActPlan)> {
    let mut planned = plan_for_scheme(scheme, weights)?;
    use BackendId as B;
    // The MX schemes have two kernel families: the scaled MFMA and, without it, the fp8 MFMA.
    if let (B::AiterMxFp8, Variant::MxNative { fmt_w, fmt_a }) = (backend, planned.0) {
        planned.0 = Variant::MxOnFp8 { fmt_w, fmt_a };
    }
    let runs = match (backend, planned.0) {
        (B::AiterBf16, Variant::Bf16 | Variant::F16)
        | (B::AiterFp8 | B::AiterFp8Block128, Variant::Fp8)
        | (B::AiterMxfp4, Variant::MxA16 { .. })
        | (B::AiterNvfp4, Variant::Nvfp4A16)
        | (B::AiterWna16, Variant::IntA16 { .. })
        | (B::AiterW8a8Int8, Variant::W8a8)
        | (B::AiterW4a8, Variant::W4a8)
        | (B::AiterMxNative, Variant::MxNative { .. })
        | (B::AiterMxFp8, Variant::MxOnFp8 { .. }) => true,
        (
            _,
            Variant::Bf16
            | Variant::F16
            | Variant::Fp8
            | Variant::MxA16 { .. }
            | Variant::Nvfp4A16
            | Variant::IntA16 { .. }
            | Variant::W8a8
            | Variant::W4a8
            | Variant::MxNative { .. }
            | Variant::MxOnFp8 { .. },
        ) => false,
    };
    if !runs {
        return Err(Error::BackendUnavailable {
            backend: backend.name().into(),
            reasons: format!(
                "the AMD kernels run {scheme} as {:?}, which is not {backend}'s (the oracle's \
                 table and backends/rocm/plan.rs disagree)",
                planned.0
            ),
        });
    }
    Ok(planned)
}

fn plan_for_scheme(
    scheme: &QuantScheme,
    weights: &ExpertWeights,
) -> Result<(Variant, ActPlan, ActPlan)> {
    let statics = || {
        weights.input_scales.as_ref().ok_or_else(|| Error::Missing {
            what: "static input scales".into(),
            why: format!("{scheme} quantizes activations with calibrated scales"),
        })
    };
    // Static fp8 activations: `fm_quant_rows` mode 3 with the one scale every expert
    // shares at a stage (it doubles it for fp8_mode 2), or `fm_quant_slots` with each
    // expert's own (the same rule per expert).
    let fp8_statics = || -> Result<(ActPlan, ActPlan)> {
        let s = statics()?;
        let st = |stage| match s.shared(stage) {
            Some(v) => ActPlan::Fp8 {
                mode: 3,
                static_scale: v,
            },
            None => ActPlan::Fp8PerExpert,
        };
        Ok((st(Stage::W13), st(Stage::W2)))
    };
    Ok(match *scheme {
        QuantScheme::Unquantized(FloatDtype::Bf16) => (Variant::Bf16, ActPlan::None, ActPlan::None),
        QuantScheme::Unquantized(FloatDtype::F16) => (Variant::F16, ActPlan::None, ActPlan::None),
        QuantScheme::Fp8 { act, .. } => {
            let fp8 = |mode| ActPlan::Fp8 {
                mode,
                static_scale: 0.0,
            };
            let (a1, a2) = match act {
                ActScale::DynamicPerTensor => (fp8(0), fp8(0)),
                ActScale::DynamicPerToken => (fp8(1), fp8(1)),
                ActScale::DynamicPerGroup128 => (fp8(2), fp8(2)),
                ActScale::StaticPerTensor => fp8_statics()?,
            };
            (Variant::Fp8, a1, a2)
        }
        QuantScheme::Mx {
            elem,
            act: MxAct::Bf16,
        } => (
            Variant::MxA16 {
                fmt_w: mx_fmt(elem),
            },
            ActPlan::None,
            ActPlan::None,
        ),
        QuantScheme::Nvfp4 { w4a4: false } => (Variant::Nvfp4A16, ActPlan::None, ActPlan::None),
        QuantScheme::Nvfp4 { w4a4: true } => {
            let s = statics()?;
            // quant/activation.rs: `global = 1 / input_scale`, in f32; one per GEMM input
            // (validation reduces NVFP4's per-expert scales to their maximum).
            let global = |stage| {
                s.shared(stage).map(|v| 1.0 / v).ok_or_else(|| {
                    Error::Config(format!(
                        "{scheme} takes one static input scale per GEMM input, these differ \
                         per expert"
                    ))
                })
            };
            (
                Variant::Nvfp4A16,
                ActPlan::Nvfp4 {
                    global: global(Stage::W13)?,
                },
                ActPlan::Nvfp4 {
                    global: global(Stage::W2)?,
                },
            )
        }
        QuantScheme::Int8W8A8 => (Variant::W8a8, ActPlan::Int8PerRow, ActPlan::Int8PerRow),
        QuantScheme::W4A8 => {
            // quant/activation.rs: W4A8 takes dynamic per-token e4m3fn activations.
            let per_token = ActPlan::Fp8 {
                mode: 1,
                static_scale: 0.0,
            };
            (Variant::W4a8, per_token, per_token)
        }
        QuantScheme::IntWeightOnly { bits, .. } => (
            Variant::IntA16 {
                bits: bits.bits() as i32,
            },
            ActPlan::None,
            ActPlan::None,
        ),
        QuantScheme::Mx {
            elem,
            act: MxAct::Mx,
        } => (
            Variant::MxNative {
                fmt_w: mx_fmt(elem),
                fmt_a: mx_fmt(elem),
            },
            ActPlan::Mx { fmt: mx_fmt(elem) },
            ActPlan::Mx { fmt: mx_fmt(elem) },
        ),
        QuantScheme::Mx {
            elem,
            act: MxAct::Fp8Static,
        } => {
            let (a1, a2) = fp8_statics()?;
            (
                Variant::MxNative {
                    fmt_w: mx_fmt(elem),
                    fmt_a: FMT_FP8,
                },
                a1,
                a2,
            )
        }
    })
}

/// The fp8 activation mode for a checkpoint flavour on a device flavour.
pub(super) fn fp8_mode(scheme: &QuantScheme, device: Option<Fp8Flavor>) -> Result<i32> {
    let Some(checkpoint) = scheme.fp8_flavor() else {
        return Ok(0);
    };
    match (checkpoint, device.unwrap_or(checkpoint)) {
        (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fn) => Ok(0),
        (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fnuz) => Ok(1),
        (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fnuz) => Ok(2),
        (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fn) => Err(Error::BackendUnavailable {
            backend: "rocm".into(),
            reasons: "an e4m3fnuz checkpoint on an e4m3fn device would need requantizing".into(),
        }),
    }
}

/// The per-tensor factor the GEMM applies to its dot products: a static fp8 scale, or
/// NVFP4's 1 / global (per-expert static scales are read per slot instead).
pub(super) fn static_of(p: ActPlan) -> f32 {
    match p {
        ActPlan::Fp8 { static_scale, .. } => static_scale,
        ActPlan::Nvfp4 { global } => 1.0 / global,
        ActPlan::None | ActPlan::Fp8PerExpert | ActPlan::Int8PerRow | ActPlan::Mx { .. } => 1.0,
    }
}
