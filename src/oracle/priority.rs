//! The priority list: every backend with its needs, fastest first, emulation last. This
//! table is the oracle's whole knowledge; `select` only walks it.
//!
//! Where a backend's code has not landed yet its needs are the contract it is being written
//! to: the CUDA backends run gemm1, the activation and gemm2 as separate stages (so every
//! activation, biases and LoRA deltas fit between them); the AITER backends fuse the
//! activation into stage 1 (SiLU or GELU only, no biases), except the MXFP4 weight-only
//! path, which is there for GPT-OSS and so takes swigluoai and biases. Every AITER backend
//! takes LoRA: the HIP stage 1 adds the gate/up deltas before the activation reads its
//! rows, stage 2 the down delta before the router weight (`kernels-hip/lora.hip`).
//!
//! Every refusal is data here: `runs` says in words what a backend's `schemes` takes, a
//! scheme of its kind it cannot run yet names its `Gap` (`schemes.rs`), as does a layer
//! feature it lacks (`lora`), so `explain` never answers "does not run" alone.

use super::backend::BackendId;
use super::fit::Support;
use super::needs::{Availability, Hardware, Needs};
use super::schemes::{
    every_scheme, fp8_any_block, fp8_block128, fp8_tensor_or_channel, int8_w8a8, int_weight_only,
    marlin, mx_quantized_activations, mx_weight_only, none, nvfp4_weights, unquantized, w4a8,
    w4a8_int4,
};
use crate::moe::Activation;

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

/// AMD targets the HIP kernels are built for: MI200 (gfx90a), MI300 (gfx942) and MI350
/// (gfx950). gfx90a has bf16 / f16 MFMA but no fp8 or MX ones: the `fp8_matrix` and `mx`
/// needs keep those backends off it.
const AITER_ARCHS: &[&str] = &["gfx90a", "gfx942", "gfx950"];

/// What most native backends share; each entry overrides the rest.
const NVIDIA_BASE: Needs = Needs {
    hardware: Hardware::Nvidia { min_cc: (8, 0) },
    schemes: none,
    runs: "nothing",
    fp8_matrix: false,
    mx: false,
    activations: every_activation,
    bias: true,
    lora: Support::Yes,
    weight_on_input: true,
    availability: cuda(false),
};

/// Every AITER entry has landed (`backends::rocm`: layouts, kernels, host code); none has
/// run on an AMD GPU yet.
const AITER_BASE: Needs = Needs {
    hardware: Hardware::Amd { archs: AITER_ARCHS },
    schemes: none,
    runs: "nothing",
    fp8_matrix: false,
    mx: false,
    activations: aiter_fused_activation,
    bias: false,
    lora: Support::Yes,
    weight_on_input: true,
    availability: rocm(true),
};

#[allow(unexpected_cfgs)]
const fn wgpu() -> Availability {
    gated(
        cfg!(feature = "wgpu"),
        "wgpu",
        true,
        "wgpu backend: not implemented yet",
    )
}

static BACKENDS: [BackendSpec; 21] = [
    // NVIDIA. Hopper-only paths first, then fp8 (sm_89+), then the sm_80 weight-only ones.
    BackendSpec {
        id: BackendId::CudaFp8Block128,
        needs: Needs {
            hardware: Hardware::Nvidia { min_cc: (9, 0) },
            schemes: fp8_any_block,
            runs: "fp8 with 128 × 128 weight blocks or per-128-group activations",
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
            runs: "fp8 with per-tensor or per-channel weights and per-tensor, per-token or static activations",
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
            runs: "w4a8 and mxfp4-a-fp8 (4-bit weights, fp8 activations)",
            fp8_matrix: true,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaMxFp8,
        needs: Needs {
            // After cuda-w4a8, which runs mxfp4-a-fp8 with the same kernel and no per-32
            // activation scales to read.
            hardware: Hardware::Nvidia { min_cc: (8, 9) },
            schemes: mx_quantized_activations,
            runs: "MXFP4 / MXFP6 weights with MX or static fp8 activations, every MX value \
                   re-encoded as e4m3 for the fp8 tensor cores, the block scales folded per k32",
            fp8_matrix: true,
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaW8a8Int8,
        needs: Needs {
            schemes: int8_w8a8,
            runs: "w8a8-int8 (int8 weights per channel, int8 activations per token)",
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaNvfp4W4a16,
        needs: Needs {
            schemes: nvfp4_weights,
            runs: "nvfp4-a16 and nvfp4 (NVFP4 weights; W4A4's activations quantize-dequantized \
                   to bf16 exactly, not on sm_100's fp4 tensor cores yet)",
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaMxfp4W4a16,
        needs: Needs {
            schemes: mx_weight_only,
            runs: "mxfp4 and mxfp6 with bf16 activations (MX weights expanded to bf16 in \
                   registers, exactly)",
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaMarlin,
        needs: Needs {
            schemes: marlin,
            runs: "int4 / int8 weight-only (w4a16, w8a16) per channel or in groups of 32, 64 or 128, \
                   with or without act-order",
            availability: cuda(true),
            ..NVIDIA_BASE
        },
    },
    BackendSpec {
        id: BackendId::CudaBf16,
        needs: Needs {
            schemes: unquantized,
            runs: "bf16 / f16",
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
            runs: "MXFP4 / MXFP6 weights with MX or static fp8 activations",
            fp8_matrix: true,
            mx: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterMxFp8,
        needs: Needs {
            // Without the scaled MFMA (gfx942): each 32-element block on the fp8 MFMA.
            schemes: mx_quantized_activations,
            runs: "MXFP4 / MXFP6 weights with MX or static fp8 activations, re-encoded as e4m3 \
                   for the fp8 MFMA",
            fp8_matrix: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterFp8Block128,
        needs: Needs {
            schemes: fp8_block128,
            runs: "fp8-block128 (128 × 128 weight blocks, per-128-group activations)",
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
            runs: "fp8 with per-tensor or per-channel weights and per-tensor, per-token or static activations",
            fp8_matrix: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterMxfp4,
        needs: Needs {
            schemes: mx_weight_only,
            runs: "mxfp4 and mxfp6 with bf16 activations (MX weights expanded to bf16 in \
                   registers, exactly)",
            activations: aiter_gpt_oss_activation,
            bias: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterW8a8Int8,
        needs: Needs {
            // Every AITER target has int8 MFMAs (gfx90a's 16x16x16, gfx942 / gfx950's x32).
            schemes: int8_w8a8,
            runs: "w8a8-int8 (int8 weights per channel, int8 activations per token) on the \
                   int8 MFMA",
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterW4a8,
        needs: Needs {
            // The fp8 MFMA: gfx942 (e4m3fnuz, the activations' e4m3fn rule re-read) and
            // gfx950; gfx90a has none.
            schemes: w4a8_int4,
            runs: "w4a8 (int4 weights in groups of 128 with a channel scale, fp8 per-token \
                   activations) on the fp8 MFMA",
            fp8_matrix: true,
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterNvfp4,
        needs: Needs {
            // The e4m3 block scales are not e8m0, so gfx950's scaled MFMA does not take
            // them: bf16 MFMA on every target.
            schemes: nvfp4_weights,
            runs: "nvfp4-a16 and nvfp4 (NVFP4 weights expanded to bf16; W4A4's activations \
                   quantize-dequantized to bf16 exactly)",
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterWna16,
        needs: Needs {
            schemes: int_weight_only,
            runs: "int4 / int8 weight-only (GPTQ, AWQ, act-order), bf16 activations",
            ..AITER_BASE
        },
    },
    BackendSpec {
        id: BackendId::AiterBf16,
        needs: Needs {
            schemes: unquantized,
            runs: "bf16 / f16",
            ..AITER_BASE
        },
    },
    // Portable: any adapter wgpu opens (Vulkan, Metal, DX12), lavapipe included. WGSL
    // with the weights decoded in the shader and f32 accumulation, so it runs every scheme
    // and layer feature; no matrix units, so it comes after every vendor's own backend.
    BackendSpec {
        id: BackendId::Wgpu,
        needs: Needs {
            hardware: Hardware::Portable,
            schemes: every_scheme,
            runs: "every scheme (weights decoded in the shader, f32 accumulation)",
            fp8_matrix: false,
            mx: false,
            activations: every_activation,
            bias: true,
            lora: Support::Yes,
            weight_on_input: true,
            availability: wgpu(),
        },
    },
    // Everywhere: the definition of right.
    BackendSpec {
        id: BackendId::Emulation,
        needs: Needs {
            hardware: Hardware::Any,
            schemes: every_scheme,
            runs: "every scheme",
            fp8_matrix: false,
            mx: false,
            activations: every_activation,
            bias: true,
            lora: Support::Yes,
            weight_on_input: true,
            availability: Availability::Built,
        },
    },
];

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
