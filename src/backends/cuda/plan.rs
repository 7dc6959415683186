//! The plan a scheme gets on an NVIDIA GPU: which GEMM variant runs it, how each GEMM
//! input is quantized to fp8 on the device, the activation's code, and the token tile.

use super::kernels::{GemmVariant, Tile};
use crate::error::{Error, Result};
use crate::moe::Activation;
use crate::quant::{
    ActScale, FloatDtype, Fp8Flavor, InputScales, IntBits, MxAct, MxElem, QuantScheme,
};

/// How an fp8 activation is quantized (the `mode` of `fm_quant_rows`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActMode {
    PerTensor,
    PerRow,
    PerRowGroup128,
    Static(f32),
}

impl ActMode {
    pub(super) fn code(self) -> i32 {
        match self {
            ActMode::PerTensor => 0,
            ActMode::PerRow => 1,
            ActMode::PerRowGroup128 => 2,
            ActMode::Static(_) => 3,
        }
    }

    /// The calibrated scale of a static mode (`fm_quant_rows` ignores it otherwise).
    pub(super) fn static_scale(self) -> f32 {
        match self {
            ActMode::Static(s) => s,
            ActMode::PerTensor | ActMode::PerRow | ActMode::PerRowGroup128 => 0.0,
        }
    }

    /// Strides of the scale array (per row, per 128-column group) for `cols` columns.
    pub(super) fn strides(self, cols: usize) -> (i32, i32) {
        match self {
            ActMode::PerTensor | ActMode::Static(_) => (0, 0),
            ActMode::PerRow => (1, 0),
            ActMode::PerRowGroup128 => (cols.div_ceil(128) as i32, 1),
        }
    }
}

/// How `scheme` quantizes gemm1's and gemm2's inputs (`None`: not at all).
pub fn act_modes(
    scheme: &QuantScheme,
    input_scales: Option<InputScales>,
) -> Result<Option<(ActMode, ActMode)>> {
    Ok(match scheme {
        QuantScheme::Fp8 { act, .. } => Some(match act {
            ActScale::DynamicPerTensor => (ActMode::PerTensor, ActMode::PerTensor),
            ActScale::DynamicPerToken => (ActMode::PerRow, ActMode::PerRow),
            ActScale::DynamicPerGroup128 => (ActMode::PerRowGroup128, ActMode::PerRowGroup128),
            ActScale::StaticPerTensor => {
                let s = input_scales.ok_or_else(|| Error::Missing {
                    what: "static input scales".into(),
                    why: format!("{scheme} quantizes activations with calibrated scales"),
                })?;
                (ActMode::Static(s.w13), ActMode::Static(s.w2))
            }
        }),
        QuantScheme::W4A8 => Some((ActMode::PerRow, ActMode::PerRow)),
        QuantScheme::Mx {
            act: MxAct::Fp8Static,
            ..
        } => {
            let s = input_scales.ok_or_else(|| Error::Missing {
                what: "static input scales".into(),
                why: format!("{scheme} quantizes activations with calibrated scales"),
            })?;
            Some((ActMode::Static(s.w13), ActMode::Static(s.w2)))
        }
        _ => None,
    })
}

pub(super) fn variant_for(scheme: &QuantScheme) -> Result<GemmVariant> {
    use crate::quant::Fp8WeightScale as W;
    match scheme {
        QuantScheme::Unquantized(FloatDtype::Bf16) => Ok(GemmVariant::Bf16),
        QuantScheme::Unquantized(FloatDtype::F16) => Ok(GemmVariant::F16),
        QuantScheme::Fp8 {
            flavor: Fp8Flavor::E4M3Fn,
            weight,
            act,
        } => Ok(
            if *weight == W::Block128 || *act == ActScale::DynamicPerGroup128 {
                GemmVariant::Fp8Block
            } else {
                GemmVariant::Fp8
            },
        ),
        QuantScheme::Mx {
            elem: MxElem::Fp4E2M1,
            act: MxAct::Bf16,
        } => Ok(GemmVariant::Mxfp4),
        QuantScheme::Mx {
            elem: MxElem::Fp4E2M1,
            act: MxAct::Fp8Static,
        } => Ok(GemmVariant::Mxfp4Fp8),
        QuantScheme::Nvfp4 { w4a4: false } => Ok(GemmVariant::Nvfp4),
        QuantScheme::IntWeightOnly {
            bits: IntBits::Int4,
            ..
        } => Ok(GemmVariant::W4a16),
        QuantScheme::IntWeightOnly {
            bits: IntBits::Int8,
            ..
        } => Ok(GemmVariant::W8a16),
        QuantScheme::W4A8 => Ok(GemmVariant::W4a8),
        other => Err(Error::BackendUnavailable {
            backend: "cuda".into(),
            reasons: format!("no CUDA GEMM for {other} yet"),
        }),
    }
}

/// The activation's code in gemm.cu.
pub(super) fn act_kind(a: Activation) -> (i32, f32, f32) {
    match a {
        Activation::SiluAndMul => (0, 0.0, 0.0),
        Activation::GeluAndMul => (1, 0.0, 0.0),
        Activation::GeluTanhAndMul => (2, 0.0, 0.0),
        Activation::SwigluOai { alpha, limit } => (3, alpha, limit),
        Activation::Relu2 => (4, 0.0, 0.0),
        Activation::Silu => (5, 0.0, 0.0),
    }
}

/// The token tile for a batch: enough slots for the tokens an expert typically gets.
pub(super) fn tile_for(variant: GemmVariant, pairs: usize, experts: usize) -> Tile {
    let per_expert = pairs.div_ceil(experts.max(1));
    let i = match per_expert {
        0..=8 => 0,
        9..=16 => 1,
        17..=32 => 2,
        33..=64 => 3,
        _ => 4,
    };
    variant.tiles()[i]
}
