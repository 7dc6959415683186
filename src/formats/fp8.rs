//! The three 8-bit float formats checkpoints and GPUs use: OCP e4m3fn (NVIDIA, gfx950),
//! e4m3fnuz (gfx942 / MI300) and OCP e5m2.

use super::minifloat::{minifloat_type, Codec, NonFinite};

minifloat_type! {
    /// OCP FP8 e4m3fn: bias 7, no inf, NaN = S.1111.111 (0x7F, 0xFF), max 448, −0 = 0x80.
    /// `from_f32(NaN)` gives 0x7F.
    F8E4M3,
    Codec { exp_bits: 4, man_bits: 3, bias: 7, non_finite: NonFinite::AllOnesNan },
    name = "e4m3fn",
    max = 448.0
}

minifloat_type! {
    /// FP8 e4m3fnuz (AMD gfx942): bias 8, no inf, 0x80 is the only NaN, no −0 (negative
    /// results that round to zero encode as 0x00), max 240.
    ///
    /// Same bit layout as e4m3fn with one more unit of bias, so every code that is finite
    /// in both formats reads as exactly half its e4m3fn value here.
    F8E4M3Fnuz,
    Codec { exp_bits: 4, man_bits: 3, bias: 8, non_finite: NonFinite::NegZeroNan },
    name = "e4m3fnuz",
    max = 240.0
}

minifloat_type! {
    /// OCP FP8 e5m2: IEEE-like, bias 15, ±inf = 0x7C / 0xFC, NaNs 0x7D..=0x7F and
    /// 0xFD..=0xFF, max 57344. Decoding an inf code gives ±inf, but `from_f32` is the
    /// saturating conversion: finite overflow and ±inf both give ±57344; NaN gives 0x7F.
    F8E5M2,
    Codec { exp_bits: 5, man_bits: 2, bias: 15, non_finite: NonFinite::Ieee },
    name = "e5m2",
    max = 57344.0
}
