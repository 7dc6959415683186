//! The OCP MX 6-bit element formats (MXFP6). No inf and no NaN: every code is finite,
//! and the sign bit gives a −0 code.

use super::minifloat::{minifloat_type, Codec, NonFinite};

minifloat_type! {
    /// FP6 e3m2: bias 3, max 28, smallest subnormal 0.0625. `from_f32(NaN)` gives +0.
    F6E3M2,
    Codec { exp_bits: 3, man_bits: 2, bias: 3, non_finite: NonFinite::AllFinite },
    name = "e3m2",
    max = 28.0
}

minifloat_type! {
    /// FP6 e2m3: bias 1, max 7.5, smallest subnormal 0.125. `from_f32(NaN)` gives +0.
    F6E2M3,
    Codec { exp_bits: 2, man_bits: 3, bias: 1, non_finite: NonFinite::AllFinite },
    name = "e2m3",
    max = 7.5
}
