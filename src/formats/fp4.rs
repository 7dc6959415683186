//! The 4-bit e2m1 element format shared by MXFP4 and NVFP4.

use super::minifloat::{minifloat_type, Codec, NonFinite};

minifloat_type! {
    /// FP4 e2m1: bias 1, codes 0..=7 are {0, 0.5, 1, 1.5, 2, 3, 4, 6}, codes 8..=15 the
    /// same negated (8 is −0). No inf, no NaN; `from_f32(NaN)` gives +0.
    F4E2M1,
    Codec { exp_bits: 2, man_bits: 1, bias: 1, non_finite: NonFinite::AllFinite },
    name = "e2m1",
    max = 6.0
}
