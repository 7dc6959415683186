//! The plan a scheme gets on an NVIDIA GPU: which GEMM variant runs it, how each GEMM
//! input is quantized to fp8 on the device, the activation's code, and the token tile.

use super::kernels::{GemmVariant, Tile};
use crate::error::{Error, Result};
use crate::oracle::BackendId;
use crate::quant::{
    ActScale, FloatDtype, Fp8Flavor, InputScales, IntBits, MxAct, MxElem, QuantScheme, Stage,
};

/// How a GEMM input is quantized: fp8 (the `mode` of `fm_quant_rows`), or NVFP4's
/// quantize-dequantize to bf16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActMode {
    PerTensor,
    PerRow,
    PerRowGroup128,
    Static(f32),
    /// Static scales calibrated per expert (`fm_quant_slots`): codes and one scale per
    /// slot, gemm1's input then read by slot; the scales live in `CudaExperts`.
    StaticPerExpert,
    /// INT8 W8A8: s8 codes per row, scale amax / 127 (`fm_quant_rows` mode 4).
    Int8PerRow,
    /// NVFP4 W4A4: 16-element blocks quantize-dequantized to bf16 (`fm_nvfp4_qdq_rows`),
    /// `global` = 1 / the static input scale, as the emulation computes it.
    Nvfp4 {
        global: f32,
    },
    /// MX activations (`fm_mx_quant_rows`): each 32-column block quantized to `elem` with
    /// its shared e8m0 exponent, the values stored as e4m3 bytes and one f32 scale per
    /// block, which the GEMM folds into each k32 partial sum (`ak32`).
    Mx(MxElem),
}

impl ActMode {
    pub(super) fn code(self) -> i32 {
        match self {
            ActMode::PerTensor => 0,
            ActMode::PerRow => 1,
            ActMode::PerRowGroup128 => 2,
            ActMode::Static(_) => 3,
            ActMode::Int8PerRow => 4,
            // Not `fm_quant_rows` modes: `fm_nvfp4_qdq_rows` and `fm_quant_slots` run them.
            ActMode::Nvfp4 { .. } => -1,
            ActMode::StaticPerExpert => -2,
            ActMode::Mx(_) => -3,
        }
    }

    /// The calibrated scale of a static mode (`fm_quant_rows` ignores it otherwise).
    pub(super) fn static_scale(self) -> f32 {
        match self {
            ActMode::Static(s) => s,
            ActMode::PerTensor
            | ActMode::PerRow
            | ActMode::PerRowGroup128
            | ActMode::Int8PerRow
            | ActMode::StaticPerExpert
            | ActMode::Nvfp4 { .. }
            | ActMode::Mx(_) => 0.0,
        }
    }

    /// Strides of the scale array (per row, per 128-column group) for `cols` columns.
    /// MX scales are not read through these but through `ak32` (`mx_row`).
    pub(super) fn strides(self, cols: usize) -> (i32, i32) {
        match self {
            ActMode::Mx(_) => (0, 0),
            // NVFP4: the per-tensor 1 / global, applied by the GEMM epilogue.
            ActMode::PerTensor | ActMode::Static(_) | ActMode::Nvfp4 { .. } => (0, 0),
            ActMode::PerRow | ActMode::Int8PerRow | ActMode::StaticPerExpert => (1, 0),
            ActMode::PerRowGroup128 => (cols.div_ceil(128) as i32, 1),
        }
    }
}

impl ActMode {
    /// MX activations: the element type's number in minifloat.h (`FM_MX_*`), and the
    /// scales per row of the `[rows, cols / 32]` array the GEMM folds per k32.
    pub(super) fn mx_format(self, cols: usize) -> Option<(i32, i32)> {
        match self {
            ActMode::Mx(elem) => Some((
                match elem {
                    MxElem::Fp4E2M1 => 4,
                    MxElem::Fp6E2M3 => 2,
                    MxElem::Fp6E3M2 => 3,
                },
                (cols / 32) as i32,
            )),
            _ => None,
        }
    }

    /// Bytes of the scale array for `rows` rows of `cols` columns.
    pub(super) fn scale_bytes(self, rows: usize, cols: usize) -> usize {
        match self {
            ActMode::Mx(_) => rows * (cols / 32) * 4,
            _ => rows * cols.div_ceil(128) * 4,
        }
    }
}

/// How `scheme` quantizes gemm1's and gemm2's inputs (`None`: not at all).
pub fn act_modes(
    scheme: &QuantScheme,
    input_scales: Option<&InputScales>,
) -> Result<Option<(ActMode, ActMode)>> {
    let statics = |why: &str| {
        input_scales.ok_or_else(|| Error::Missing {
            what: "static input scales".into(),
            why: format!("{scheme} quantizes activations with {why}"),
        })
    };
    // One static scale, or one per expert where the checkpoint's differ.
    let fp8_static = |s: &InputScales, stage| match s.shared(stage) {
        Some(v) => ActMode::Static(v),
        None => ActMode::StaticPerExpert,
    };
    Ok(match scheme {
        QuantScheme::Fp8 { act, .. } => Some(match act {
            ActScale::DynamicPerTensor => (ActMode::PerTensor, ActMode::PerTensor),
            ActScale::DynamicPerToken => (ActMode::PerRow, ActMode::PerRow),
            ActScale::DynamicPerGroup128 => (ActMode::PerRowGroup128, ActMode::PerRowGroup128),
            ActScale::StaticPerTensor => {
                let s = statics("calibrated scales")?;
                (fp8_static(s, Stage::W13), fp8_static(s, Stage::W2))
            }
        }),
        QuantScheme::W4A8 => Some((ActMode::PerRow, ActMode::PerRow)),
        QuantScheme::Int8W8A8 => Some((ActMode::Int8PerRow, ActMode::Int8PerRow)),
        QuantScheme::Nvfp4 { w4a4: true } => {
            let s = statics("calibrated global scales")?;
            // quant/activation.rs: `global = 1 / input_scale`, in f32 (validation keeps
            // NVFP4's scales one per tensor).
            Some((
                ActMode::Nvfp4 {
                    global: 1.0 / s.of(Stage::W13, 0),
                },
                ActMode::Nvfp4 {
                    global: 1.0 / s.of(Stage::W2, 0),
                },
            ))
        }
        QuantScheme::Mx {
            act: MxAct::Fp8Static,
            ..
        } => {
            let s = statics("calibrated scales")?;
            Some((fp8_static(s, Stage::W13), fp8_static(s, Stage::W2)))
        }
        QuantScheme::Mx {
            act: MxAct::Mx,
            elem,
        } => Some((ActMode::Mx(*elem), ActMode::Mx(*elem))),
        _ => None,
    })
}

/// The GEMM variant that runs `backend`, the oracle's choice, for `scheme` (the backend
/// fixes the kernel family; the scheme only says which member: f16 or bf16, int4 or int8,
/// int4 or MXFP4 weights under fp8 activations). A backend that is not a CUDA one, or a
/// scheme it does not take, is an error: the oracle and this table disagree.
pub(super) fn variant_for(backend: BackendId, scheme: &QuantScheme) -> Result<GemmVariant> {
    use BackendId as B;
    let variant = match (backend, scheme) {
        (B::CudaBf16, QuantScheme::Unquantized(FloatDtype::Bf16)) => GemmVariant::Bf16,
        (B::CudaBf16, QuantScheme::Unquantized(FloatDtype::F16)) => GemmVariant::F16,
        (
            B::CudaFp8,
            QuantScheme::Fp8 {
                flavor: Fp8Flavor::E4M3Fn,
                ..
            },
        ) => GemmVariant::Fp8,
        (
            B::CudaFp8Block128,
            QuantScheme::Fp8 {
                flavor: Fp8Flavor::E4M3Fn,
                ..
            },
        ) => GemmVariant::Fp8Block,
        (
            B::CudaMxfp4W4a16,
            QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                act: MxAct::Bf16,
            },
        ) => GemmVariant::Mxfp4,
        (
            B::CudaMxfp4W4a16,
            QuantScheme::Mx {
                elem: MxElem::Fp6E2M3 | MxElem::Fp6E3M2,
                act: MxAct::Bf16,
            },
        ) => GemmVariant::Mx8,
        // W4A4 too: its activations are quantize-dequantized to bf16 first (exactly).
        (B::CudaNvfp4W4a16, QuantScheme::Nvfp4 { .. }) => GemmVariant::Nvfp4,
        (
            B::CudaMarlin,
            QuantScheme::IntWeightOnly {
                bits: IntBits::Int4,
                ..
            },
        ) => GemmVariant::W4a16,
        (
            B::CudaMarlin,
            QuantScheme::IntWeightOnly {
                bits: IntBits::Int8,
                ..
            },
        ) => GemmVariant::W8a16,
        (B::CudaW4a8, QuantScheme::W4A8) => GemmVariant::W4a8,
        (B::CudaW8a8Int8, QuantScheme::Int8W8A8) => GemmVariant::Int8,
        (
            B::CudaW4a8,
            QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                act: MxAct::Fp8Static,
            },
        ) => GemmVariant::Mxfp4Fp8,
        // MX weights with MX or static fp8 activations on the fp8 tensor cores: MXFP4 in
        // the packed e2m1 layout, MXFP6 re-encoded to e4m3 bytes.
        // MX activations take the kernels that also fold their per-32 scales.
        (
            B::CudaMxFp8,
            QuantScheme::Mx {
                elem,
                act: act @ (MxAct::Mx | MxAct::Fp8Static),
            },
        ) => match (elem, act) {
            (MxElem::Fp4E2M1, MxAct::Fp8Static) => GemmVariant::Mxfp4Fp8,
            (MxElem::Fp4E2M1, _) => GemmVariant::Mxfp4Mx,
            (MxElem::Fp6E2M3 | MxElem::Fp6E3M2, MxAct::Fp8Static) => GemmVariant::Mx8Fp8,
            (MxElem::Fp6E2M3 | MxElem::Fp6E3M2, _) => GemmVariant::Mx8Mx,
        },
        (other, scheme) => {
            return Err(Error::BackendUnavailable {
                backend: other.name().into(),
                reasons: format!(
                    "the CUDA kernels have no variant of {other} for {scheme} (the oracle's \
                     table and backends/cuda/plan.rs disagree)"
                ),
            })
        }
    };
    Ok(variant)
}

/// The token tile for a batch: enough slots for the tokens an expert typically gets; the
/// first of `wide` (the `wgmma` tiles, empty off sm_90a) of the same width where there is
/// one, from tile 3 (33 tokens per expert) up.
pub(super) fn tile_for(variant: GemmVariant, pairs: usize, experts: usize, wide: &[Tile]) -> Tile {
    let per_expert = pairs.div_ceil(experts.max(1));
    let i = match per_expert {
        0..=8 => 0,
        9..=16 => 1,
        17..=32 => 2,
        33..=64 => 3,
        _ => 4,
    };
    let tile = variant.tiles()[i];
    match wide.iter().find(|t| t.bt == tile.bt) {
        Some(w) if i >= 3 => *w,
        _ => tile,
    }
}
