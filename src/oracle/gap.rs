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

// NVFP4 W4A4 and GPTQ act-order were gaps until issue 18: cuda-nvfp4-w4a16 now runs W4A4
// (activations quantize-dequantized to bf16, exactly) and cuda-marlin act-order (K permuted
// at load time). What remains for W4A4, sm_100's fp4 tensor cores, is speed rather than a
// capability a backend lacks, so it is no gap here; the backend's `runs` and the README
// say it.

/// Every gap, for tests and docs: each must be named by some backend.
pub const GAPS: &[&Gap] = &[];

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not implemented yet (", self.what)?;
        if let Some(n) = self.issue {
            write!(f, "issue {n}: ")?;
        }
        write!(f, "{})", self.plan)
    }
}
