//! `Gap`: something a backend could do on its hardware whose code has not been written, named
//! once here and referred to by the backend table, so `explain` says "not implemented yet"
//! and what it would take instead of "does not run".

use std::fmt;

/// Work not done yet, as `explain` prints it: "{what} not implemented yet ({plan})".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// What has no code, as a noun phrase: "GPTQ act-order (g_idx)".
    pub what: &'static str,
    /// How it would be done, or where it stops today.
    pub plan: &'static str,
    /// The tracking issue, where there is one.
    pub issue: Option<u32>,
}

/// NVFP4 with the activations quantized too. The NVFP4 path keeps bf16 activations; sm_100
/// has fp4 tensor cores for W4A4, but no kernel feeds them yet.
pub const NVFP4_W4A4: Gap = Gap {
    what: "NVFP4 W4A4 (fp4 activations)",
    plan: "cuda-nvfp4-w4a16 keeps the activations in bf16; no kernel quantizes them to fp4 \
           for sm_100's fp4 tensor cores",
    issue: None,
};

/// GPTQ act-order: each input column's group comes from `g_idx` instead of its position.
pub const ACT_ORDER: Gap = Gap {
    what: "GPTQ act-order (g_idx)",
    plan: "natively, cuda-marlin would permute K at load time so the groups become \
           contiguous; that is not built",
    issue: None,
};

/// LoRA deltas on AMD: the AITER backends have no LoRA kernels and refuse adapters.
pub const AMD_LORA: Gap = Gap {
    what: "LoRA on the AITER (AMD) backends",
    plan: "kernels-hip has no LoRA shrink / expand kernels",
    issue: None,
};

/// Every gap, for tests and docs: each must be named by some backend.
pub const GAPS: &[&Gap] = &[&NVFP4_W4A4, &ACT_ORDER, &AMD_LORA];

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not implemented yet (", self.what)?;
        if let Some(n) = self.issue {
            write!(f, "issue {n}: ")?;
        }
        write!(f, "{})", self.plan)
    }
}
