//! The priority list: every backend with its needs, fastest first, emulation last. This
//! table is the oracle's whole knowledge; `select` only walks it.
//!
//! Where a backend's code has not landed yet its needs are the contract it is being written
//! to: the CUDA backends run gemm1, the activation and gemm2 as separate stages (so every
//! activation, biases and LoRA deltas fit between them); the AITER backends fuse the
//! activation into stage 1 (SiLU or GELU only, no LoRA, no biases), except the MXFP4
//! weight-only path, which is there for GPT-OSS and so takes swigluoai and biases.

use super::backend::BackendId;
use super::needs::{Availability, Hardware, Needs};
use crate::moe::Activation;
use crate::quant::QuantScheme as S;
use crate::quant::{ActScale, FloatDtype, Fp8WeightScale, IntBits, IntGroup, MxAct, MxElem};

/// One backend and what it needs.
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec {
    pub id: BackendId,
    pub needs: Needs,
}

/// Every backend in priority order (fastest first; `emulation` last, and it runs anything).
pub fn backends() -> &'static [BackendSpec] {
    &BACKENDS
}

/// The entry of one backend.
pub fn spec(id: BackendId) -> Option<&'static BackendSpec> {
    BACKENDS.iter().find(|s| s.id == id)
}

/// Availability of a backend behind cargo feature `feature`; `landed` becomes `true` (a
/// one-word change in the table) when the backend's code is in. A backend whose code has
/// not landed is `Planned` whatever the features, so `explain` never suggests a feature
/// that would not help.
const fn gated(
    enabled: bool,
    feature: &'static str,
    landed: bool,
    plan: &'static str,
) -> Availability {
    if !landed {
        Availability::Planned(plan)
    } else if !enabled {
        Availability::NeedsFeature(feature)
    } else {
        Availability::Built
    }
}

// `rocm` (and, on older manifests, `cuda`) may not be declared as features yet.
#[allow(unexpected_cfgs)]
const fn cuda(landed: bool) -> Availability {
    gated(
        cfg!(feature = "cuda"),
        "cuda",
        landed,
        "CUDA backend: not implemented yet",
    )
}

#[allow(unexpected_cfgs)]
const fn rocm(landed: bool) -> Availability {
    gated(
        cfg!(feature = "rocm"),
        "rocm",
        landed,
        "ROCm backend: not implemented yet",
    )
}

/// AMD targets AITER has kernels for: MI300 (gfx942) and MI350 (gfx950).
const AITER_ARCHS: &[&str] = &["gfx942", "gfx950"];

/// What most native backends share; each entry overrides the rest.
const NVIDIA_BASE: Needs = Needs {
    hardware: Hardware::Nvidia { min_cc: (8, 0) },
    schemes: none,
    fp8_matrix: false,
    mx: false,
    activations: every_activation,
    bias: true,
    lora: true,
    weight_on_input: true,
    availability: cuda(false),
};

/// Every AITER entry has landed (`backends::rocm`: layouts, kernels, host code); none has
/// run on an AMD GPU yet.
const AITER_BASE: Needs = Needs {
    hardware: Hardware::Amd { archs: AITER_ARCHS },
    schemes: none,
    fp8_matrix: false,
    mx: false,
    activations: aiter_fused_activation,
    bias: false,
    lora: false,
    weight_on_input: true,
    availability: rocm(true),
};

static BACKENDS: [BackendSpec; 13] = [
    // NVIDIA. Hopper-only paths first, then fp8 (sm_89+), then the sm_80 weight-only ones.
    BackendSpec {
        id: BackendId::CudaFp8Block128,
        needs: Needs {
            hardware: Hardware::Nvidia { min_cc: (9, 0) },
            schemes: fp8_any_block,
            fp8_matrix: true,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaFp8,
        needs: Needs {
            hardware: Hardware::Nvidia { min_cc: (8, 9) },
            schemes: fp8_tensor_or_channel,
            fp8_matrix: true,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaW4a8,
        needs: Needs {
            hardware: Hardware::Nvidia { min_cc: (9, 0) },
            schemes: w4a8,
            fp8_matrix: true,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaNvfp4W4a16,
        needs: Needs {
            schemes: nvfp4_weight_only,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaMxfp4W4a16,
        needs: Needs {
            schemes: mxfp4_weight_only,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaMarlin,
        needs: Needs {
            schemes: marlin,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaBf16,
        needs: Needs {
            schemes: unquantized,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    // AMD.
    BackendSpec {
        id: BackendId::AiterMxNative,
        needs: Needs {
            // gfx950 is the AITER target with MX; the `mx` need says so.
            schemes: mx_quantized_activations,
            fp8_matrix: true,
            mx: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterFp8Block128,
        needs: Needs {
            schemes: fp8_block128,
            fp8_matrix: true,
            // vLLM: "apply_router_weight_on_input is not supported for block scaled moe".
            weight_on_input: false,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterFp8,
        needs: Needs {
            schemes: fp8_tensor_or_channel,
            fp8_matrix: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterMxfp4,
        needs: Needs {
            schemes: mxfp4_weight_only,
            activations: aiter_gpt_oss_activation,
            bias: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterBf16,
        needs: Needs {
            schemes: unquantized,
            ..AITER_BASE
        },
    },
    // Everywhere: the definition of right.
    BackendSpec {
        id: BackendId::Emulation,
        needs: Needs {
            hardware: Hardware::Any,
            schemes: every_scheme,
            fp8_matrix: false,
            mx: false,
            activations: every_activation,
            bias: true,
            lora: true,
            weight_on_input: true,
            availability: Availability::Built,
        },
    },
];

// Scheme predicates. Every match names every `QuantScheme` variant: a new scheme must be
// placed (or refused) in each of them.

fn none(s: &S) -> bool {
    match s {
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

fn every_scheme(s: &S) -> bool {
    match s {
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => true,
    }
}

fn unquantized(s: &S) -> bool {
    match s {
        S::Unquantized(FloatDtype::Bf16 | FloatDtype::F16) => true,
        S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// Per-tensor or per-channel fp8 weights with per-tensor, per-token or static activations.
fn fp8_tensor_or_channel(s: &S) -> bool {
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
            weight_ok && act_ok
        }
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// 128 × 128 fp8 weight blocks with per-token 128-group activations (DeepSeek-V3).
fn fp8_block128(s: &S) -> bool {
    match s {
        S::Fp8 { weight, act, .. } => match (weight, act) {
            (Fp8WeightScale::Block128, ActScale::DynamicPerGroup128) => true,
            (
                Fp8WeightScale::Block128,
                ActScale::DynamicPerTensor | ActScale::DynamicPerToken | ActScale::StaticPerTensor,
            )
            | (Fp8WeightScale::PerTensor | Fp8WeightScale::PerChannel, _) => false,
        },
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// fp8 with anything that changes along K every 128 elements: 128 × 128 weight blocks
/// (with any activation scaling) or per-128-group activations (with any weight scaling).
/// The CUDA block kernel folds each 128-wide K stage in with its own scales.
fn fp8_any_block(s: &S) -> bool {
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
            blocked_weight || grouped_act
        }
        S::Unquantized(_)
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// 4-bit weights with fp8 e4m3 activations: W4A8, and MXFP4 with static fp8 activations
/// (e2m1 values are exact in e4m3; the block scale is folded in after each k32 MMA).
fn w4a8(s: &S) -> bool {
    match s {
        S::W4A8 => true,
        S::Mx { elem, act } => match (elem, act) {
            (MxElem::Fp4E2M1, MxAct::Fp8Static) => true,
            (MxElem::Fp4E2M1, MxAct::Bf16 | MxAct::Mx) | (MxElem::Fp6E3M2 | MxElem::Fp6E2M3, _) => {
                false
            }
        },
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::Int8W8A8 => false,
    }
}

/// NVFP4 weights with bf16 activations; W4A4 would need the activations quantized too.
fn nvfp4_weight_only(s: &S) -> bool {
    match s {
        S::Nvfp4 { w4a4 } => !w4a4,
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Mx { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// MXFP4 weights with bf16 activations (GPT-OSS).
fn mxfp4_weight_only(s: &S) -> bool {
    match s {
        S::Mx { elem, act } => match (elem, act) {
            (MxElem::Fp4E2M1, MxAct::Bf16) => true,
            (MxElem::Fp4E2M1, MxAct::Fp8Static | MxAct::Mx)
            | (MxElem::Fp6E3M2 | MxElem::Fp6E2M3, _) => false,
        },
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// MXFP4 / MXFP6 weights with MX or static fp8 activations: both operands go to
/// `v_mfma_scale` as they are.
fn mx_quantized_activations(s: &S) -> bool {
    match s {
        S::Mx { elem, act } => {
            let elem_ok = match elem {
                MxElem::Fp4E2M1 | MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => true,
            };
            let act_ok = match act {
                MxAct::Mx | MxAct::Fp8Static => true,
                MxAct::Bf16 => false,
            };
            elem_ok && act_ok
        }
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::IntWeightOnly { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

/// Marlin's weight types — int4 and int8, with or without zero points, in groups of 32, 64
/// or 128 or per channel — without act-order (GPTQ `g_idx`), which the kernels do not
/// gather yet.
fn marlin(s: &S) -> bool {
    match s {
        S::IntWeightOnly {
            bits,
            group,
            zero_point: _,
            act_order,
        } => {
            let group_ok = match group {
                IntGroup::Channel => true,
                IntGroup::Size(n) => matches!(n, 32 | 64 | 128),
            };
            let bits_ok = match bits {
                IntBits::Int4 | IntBits::Int8 => true,
            };
            group_ok && bits_ok && !act_order
        }
        S::Unquantized(_)
        | S::Fp8 { .. }
        | S::Nvfp4 { .. }
        | S::Mx { .. }
        | S::W4A8
        | S::Int8W8A8 => false,
    }
}

// Activation predicates, exhaustive for the same reason.

fn every_activation(a: &Activation) -> bool {
    match a {
        Activation::SiluAndMul
        | Activation::GeluAndMul
        | Activation::GeluTanhAndMul
        | Activation::SwigluOai { .. }
        | Activation::Relu2
        | Activation::Silu => true,
    }
}

/// AITER's fused stage 1 knows gated SiLU and GELU.
fn aiter_fused_activation(a: &Activation) -> bool {
    match a {
        Activation::SiluAndMul | Activation::GeluAndMul => true,
        Activation::GeluTanhAndMul
        | Activation::SwigluOai { .. }
        | Activation::Relu2
        | Activation::Silu => false,
    }
}

/// The MXFP4 weight-only path adds GPT-OSS's swigluoai.
fn aiter_gpt_oss_activation(a: &Activation) -> bool {
    match a {
        Activation::SiluAndMul | Activation::GeluAndMul | Activation::SwigluOai { .. } => true,
        Activation::GeluTanhAndMul | Activation::Relu2 | Activation::Silu => false,
    }
}
