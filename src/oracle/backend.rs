//! `BackendId`: the name of every experts backend, declared once. Names are what users
//! type (`--backend cuda-fp8`) and what `explain` prints, so they are kebab-case and stable.

use crate::error::{Error, Result};
use std::fmt;

/// Declares the enum, its `ALL` list and its names from one table, so a backend cannot be
/// added to one and forgotten in another.
macro_rules! backend_ids {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// An experts backend. What each needs is in [`crate::oracle::backends`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum BackendId {
            $($(#[doc = $doc])* $variant,)*
        }

        impl BackendId {
            /// Every backend, in declaration order (priority order is `backends()`'s).
            pub const ALL: &'static [BackendId] = &[$(BackendId::$variant,)*];

            /// The kebab-case name users type and `explain` prints.
            pub fn name(self) -> &'static str {
                match self {
                    $(BackendId::$variant => $name,)*
                }
            }
        }
    };
}

backend_ids! {
    /// Dequantize-and-compute on the CPU: the definition of right, runs everything.
    Emulation => "emulation",
    /// Unquantized bf16 / f16 grouped GEMMs on tensor cores.
    CudaBf16 => "cuda-bf16",
    /// FP8 W8A8 with per-tensor or per-channel weight scales.
    CudaFp8 => "cuda-fp8",
    /// DeepSeek-V3 style FP8 with 128 × 128 weight blocks and per-token 128-group activations.
    CudaFp8Block128 => "cuda-fp8-block128",
    /// MX weights (MXFP4, GPT-OSS on Hopper; MXFP6) dequantized in registers, bf16
    /// activations.
    CudaMxfp4W4a16 => "cuda-mxfp4-w4a16",
    /// NVFP4 weights dequantized in registers, bf16 activations.
    CudaNvfp4W4a16 => "cuda-nvfp4-w4a16",
    /// int4 / int8 weight-only GEMMs (GPTQ, AWQ), weights expanded to bf16 in registers.
    CudaMarlin => "cuda-marlin",
    /// 4-bit weights (int4 W4A8, or MXFP4) expanded to fp8 e4m3, fp8 activations.
    CudaW4a8 => "cuda-w4a8",
    /// INT8 W8A8: per-channel s8 weights, per-token s8 activations, int8 tensor cores.
    CudaW8a8Int8 => "cuda-w8a8-int8",
    /// MXFP4 / MXFP6 weights with MX or static fp8 activations on the fp8 tensor cores:
    /// every MX value re-encoded as e4m3, both operands' block scales folded per k32.
    CudaMxFp8 => "cuda-mx-fp8",
    /// AITER unquantized fused MoE.
    AiterBf16 => "aiter-bf16",
    /// AITER FP8 with per-tensor or per-channel weight scales (gfx942 fnuz or gfx950).
    AiterFp8 => "aiter-fp8",
    /// AITER block-128 FP8.
    AiterFp8Block128 => "aiter-fp8-block128",
    /// MX weights (MXFP4, MXFP6) dequantized to bf16 in registers, bf16 activations.
    AiterMxfp4 => "aiter-mxfp4",
    /// NVFP4 weights dequantized to bf16 in registers; W4A4's activations
    /// quantize-dequantized to bf16 exactly.
    AiterNvfp4 => "aiter-nvfp4",
    /// INT8 W8A8: per-channel s8 weights, per-token s8 activations, int8 MFMA.
    AiterW8a8Int8 => "aiter-w8a8-int8",
    /// W4A8: int4 weights (groups of 128, per-channel scale) as e4m3 codes against fp8
    /// per-token activations on the fp8 MFMA (gfx942, gfx950).
    AiterW4a8 => "aiter-w4a8",
    /// int4 / int8 weight-only (GPTQ, AWQ, act-order) expanded to bf16 in registers.
    AiterWna16 => "aiter-wna16",
    /// gfx950 `v_mfma_scale`: MXFP4 / MXFP6 weights with MX or fp8 activations.
    AiterMxNative => "aiter-mx-native",
    /// MXFP4 / MXFP6 weights with MX or fp8 activations on the fp8 MFMA (gfx942): codes
    /// re-encoded as e4m3, block scales on each 32-element block's dot product.
    AiterMxFp8 => "aiter-mx-fp8",
    /// Portable WGSL through wgpu (Vulkan, Metal, DX12): weights dequantized in the shader,
    /// f32 accumulation, every scheme.
    Wgpu => "wgpu",
}

impl BackendId {
    /// Whether this is one of the CUDA experts backends (`CudaExperts` runs them all).
    pub fn is_cuda(self) -> bool {
        self.name().starts_with("cuda-")
    }

    /// Whether this is one of the AMD experts backends (`HipExperts` runs them all).
    pub fn is_aiter(self) -> bool {
        self.name().starts_with("aiter-")
    }

    /// Whether this is the portable wgpu backend (`WgpuExperts` runs it).
    pub fn is_wgpu(self) -> bool {
        self == BackendId::Wgpu
    }

    /// Parses a backend name as [`BackendId::name`] prints it (case-insensitive).
    pub fn parse(name: &str) -> Result<BackendId> {
        let wanted = name.trim().to_ascii_lowercase();
        BackendId::ALL
            .iter()
            .copied()
            .find(|id| id.name() == wanted)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown backend '{name}'; known backends: {}",
                    BackendId::ALL
                        .iter()
                        .map(|id| id.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
