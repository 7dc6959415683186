//! `Conversion`: a change the oracle makes to checkpoint weights so a backend can take
//! them, recorded in the selection so `explain` says it happened.

use std::fmt;

/// A weight conversion applied when preparing the chosen backend's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conversion {
    /// e4m3fn codes read as e4m3fnuz for gfx942: byte 0x80 (−0 in fn, NaN in fnuz) becomes
    /// 0x00, every other byte is kept, which halves each value, so weight scales and static
    /// input scales are doubled. Exact for weights; the AMD kernels quantize activations
    /// by the e4m3fn rule and re-read the codes the same way, so gfx942 multiplies exactly
    /// the values the emulation does (quantizing natively to e4m3fnuz, amax / 240, would
    /// differ from it by about 5e-2 relative L2: tests/rocm_sim.rs).
    Fp8FnToFnuz,
}

impl fmt::Display for Conversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversion::Fp8FnToFnuz => f.write_str(
                "fp8 e4m3fn → e4m3fnuz (bytes kept, 0x80 → 0x00, weight and input scales doubled)",
            ),
        }
    }
}
