//! The scheme predicates of the backend table: each says whether a backend runs a scheme,
//! and for a scheme of its kind that it does not run yet, which `Gap` stands in the way.
//! Every match names every `QuantScheme` variant: a new scheme must be placed (or refused)
//! in each of them.

use super::fit::Fit;
use crate::quant::QuantScheme as S;
use crate::quant::{ActScale, FloatDtype, Fp8WeightScale, IntBits, IntGroup, MxAct, MxElem};

pub(super) fn none(s: &S) -> Fit {
    match s {
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

pub(super) fn every_scheme(s: &S) -> Fit {
    match s {
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Runs,
    }
}

pub(super) fn unquantized(s: &S) -> Fit {
    match s {
        S::Unquantized(FloatDtype::Bf16 | FloatDtype::F16) => Fit::Runs,
        S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// Per-tensor or per-channel fp8 weights with per-tensor, per-token or static activations.
pub(super) fn fp8_tensor_or_channel(s: &S) -> Fit {
    match s {
        S::Fp8 { weight, act, .. } => {
            let weight_ok = match weight {
                Fp8WeightScale::PerTensor | Fp8WeightScale::PerChannel => true,
                Fp8WeightScale::Block128 => false,
            };
            let act_ok = match act {
                ActScale::DynamicPerTensor
                | ActScale::DynamicPerToken
                | ActScale::StaticPerTensor => true,
                ActScale::DynamicPerGroup128 => false,
            };
            Fit::runs_if(weight_ok && act_ok)
        }
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// 128 × 128 fp8 weight blocks with per-token 128-group activations (DeepSeek-V3).
pub(super) fn fp8_block128(s: &S) -> Fit {
    match s {
        S::Fp8 { weight, act, .. } => Fit::runs_if(match (weight, act) {
            (Fp8WeightScale::Block128, ActScale::DynamicPerGroup128) => true,
            (
                Fp8WeightScale::Block128,
                ActScale::DynamicPerTensor | ActScale::DynamicPerToken | ActScale::StaticPerTensor,
            )
            | (Fp8WeightScale::PerTensor | Fp8WeightScale::PerChannel, _) => false,
        }),
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// fp8 with anything that changes along K every 128 elements: 128 × 128 weight blocks
/// (with any activation scaling) or per-128-group activations (with any weight scaling).
/// The CUDA block kernel folds each 128-wide K stage in with its own scales.
pub(super) fn fp8_any_block(s: &S) -> Fit {
    match s {
        S::Fp8 { weight, act, .. } => {
            let blocked_weight = match weight {
                Fp8WeightScale::Block128 => true,
                Fp8WeightScale::PerTensor | Fp8WeightScale::PerChannel => false,
            };
            let grouped_act = match act {
                ActScale::DynamicPerGroup128 => true,
                ActScale::DynamicPerTensor
                | ActScale::DynamicPerToken
                | ActScale::StaticPerTensor => false,
            };
            Fit::runs_if(blocked_weight || grouped_act)
        }
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// 4-bit weights with fp8 e4m3 activations: W4A8, and MXFP4 with static fp8 activations
/// (e2m1 values are exact in e4m3; the block scale is folded in after each k32 MMA).
pub(super) fn w4a8(s: &S) -> Fit {
    match s {
        S::W4A8 => Fit::Runs,
        S::Mx { elem, act } => Fit::runs_if(match (elem, act) {
            (MxElem::Fp4E2M1, MxAct::Fp8Static) => true,
            (MxElem::Fp4E2M1, MxAct::Bf16 | MxAct::Mx) | (MxElem::Fp6E3M2 | MxElem::Fp6E2M3, _) => {
                false
            }
        }),
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::Int8W8A8 => Fit::Other,
    }
}

/// W4A8 alone (int4 in groups of 128 with a per-channel scale, fp8 per-token
/// activations): `code − 8` is exact in e4m3, so the fp8 matrix cores take the codes as
/// they are and the group scales go on each 128-column partial sum.
pub(super) fn w4a8_int4(s: &S) -> Fit {
    match s {
        S::W4A8 => Fit::Runs,
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::Int8W8A8 => Fit::Other,
    }
}

/// INT8 W8A8 (int8 weights per channel, int8 activations per token): int8 tensor cores
/// with exact s32 accumulators.
pub(super) fn int8_w8a8(s: &S) -> Fit {
    match s {
        S::Int8W8A8 => Fit::Runs,
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8 => Fit::Other,
    }
}

/// NVFP4 weights, with bf16 activations or W4A4: W4A4's activation quantize-dequantize is
/// exact in bf16 (an e2m1 value times an e4m3 block scale; the per-tensor global goes to
/// the GEMM epilogue), so the weight-only GEMM runs it after a QDQ kernel, on any sm_80+.
pub(super) fn nvfp4_weights(s: &S) -> Fit {
    match s {
        S::Nvfp4 { w4a4: false | true } => Fit::Runs,
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// MXFP4 or MXFP6 weights with bf16 activations: every MX value times its power-of-two
/// scale is exact in bf16, so the weights expand in registers for the bf16 tensor cores.
pub(super) fn mx_weight_only(s: &S) -> Fit {
    match s {
        S::Mx { elem, act } => {
            let elem_ok = match elem {
                MxElem::Fp4E2M1 | MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => true,
            };
            let act_ok = match act {
                MxAct::Bf16 => true,
                MxAct::Mx | MxAct::Fp8Static => false,
            };
            Fit::runs_if(elem_ok && act_ok)
        }
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// MXFP4 / MXFP6 weights with MX or static fp8 activations: both operands go to
/// `v_mfma_scale` as they are.
pub(super) fn mx_quantized_activations(s: &S) -> Fit {
    match s {
        S::Mx { elem, act } => {
            let elem_ok = match elem {
                MxElem::Fp4E2M1 | MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => true,
            };
            let act_ok = match act {
                MxAct::Mx | MxAct::Fp8Static => true,
                MxAct::Bf16 => false,
            };
            Fit::runs_if(elem_ok && act_ok)
        }
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// Marlin's weight types — int4 and int8, with or without zero points, in groups of 32, 64
/// or 128 or per channel, with or without act-order (GPTQ `g_idx`: K is sorted by group at
/// load time and the activations are gathered in that order, as Marlin does).
pub(super) fn marlin(s: &S) -> Fit {
    match s {
        S::IntWeightOnly {
            bits,
            group,
            zero_point: _,
            act_order: _,
        } => {
            let group_ok = match group {
                IntGroup::Channel => true,
                IntGroup::Size(n) => matches!(n, 32 | 64 | 128),
            };
            let bits_ok = match bits {
                IntBits::Int4 | IntBits::Int8 => true,
            };
            Fit::runs_if(group_ok && bits_ok)
        }
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}

/// Every integer weight-only scheme: the HIP kernel looks each column's group (and, under
/// act-order, its `g_idx`) up per element, so any group size and zero points run.
pub(super) fn int_weight_only(s: &S) -> Fit {
    match s {
        S::IntWeightOnly { .. } => Fit::Runs,
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::W4A8
        | S::Int8W8A8 => Fit::Other,
    }
}
