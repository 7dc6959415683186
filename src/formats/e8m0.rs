//! E8M0, the OCP MX block scale: an unsigned power of two.

use super::minifloat::{exp2i, MiniFloat};

/// OCP MX e8m0 scale: code `c` is `2^(c − 127)` for `c` in 0..=254, 0xFF is NaN. There
/// is no sign and no zero.
///
/// `from_f32` picks the nearer of the two neighbouring powers of two by absolute
/// difference; the midpoint `1.5 · 2^e` rounds up to `2^(e+1)`. That is round-to-nearest-
/// even if the implicit leading 1 is taken as the last significand bit (it is odd), and it
/// matches PyTorch's `float8_e8m0fnu` cast for normal f32 inputs. Edge cases:
/// NaN and any negative input (−inf too) give NaN (0xFF), since a negative scale is a
/// bug upstream; ±0 and everything below `2^-127` give code 0 (`2^-127`, the smallest
/// scale); values that would round past `2^127`, and +inf, saturate to code 254
/// (PyTorch maps +inf to NaN instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct E8M0(pub u8);

impl E8M0 {
    /// The all-zero code, `2^-127` (e8m0 has no zero; this is its smallest value).
    pub const ZERO: E8M0 = E8M0(0);
    /// `2^0`.
    pub const ONE: E8M0 = E8M0(127);
    /// The only NaN code.
    pub const NAN: E8M0 = E8M0(0xFF);

    /// `2^e`, with `e` clamped to −127..=127.
    pub fn from_exponent(e: i32) -> E8M0 {
        E8M0((e.clamp(-127, 127) + 127) as u8)
    }

    /// The power of two this scale stands for; `None` for NaN.
    pub fn exponent(self) -> Option<i32> {
        if self.is_nan() {
            None
        } else {
            Some(i32::from(self.0) - 127)
        }
    }

    /// Whether this is the NaN code.
    pub const fn is_nan(self) -> bool {
        self.0 == 0xFF
    }
}

impl MiniFloat for E8M0 {
    const MAX: f32 = 1.701_411_8e38; // 2^127
    const NAME: &'static str = "e8m0";
    const BITS: u32 = 8;

    fn from_bits(bits: u8) -> Self {
        E8M0(bits)
    }

    fn to_bits(self) -> u8 {
        self.0
    }

    fn to_f32(self) -> f32 {
        match self.exponent() {
            Some(e) => exp2i(e),
            None => f32::NAN,
        }
    }

    fn from_f32(x: f32) -> Self {
        if x.is_nan() || x < 0.0 {
            return E8M0::NAN;
        }
        let bits = x.to_bits() & 0x7FFF_FFFF;
        if bits == f32::INFINITY.to_bits() {
            return E8M0(254);
        }
        let exp_field = bits >> 23;
        let fraction = bits & 0x7F_FFFF;
        let code = if exp_field == 0 {
            // f32 subnormal: only [1.5 · 2^-127, 2^-126) rounds up to code 1.
            u32::from(fraction >= 3 << 21)
        } else {
            // The biased f32 exponent is already the e8m0 code of 2^floor(log2 x);
            // a fraction of one half or more rounds up.
            (exp_field + u32::from(fraction >= 1 << 22)).min(254)
        };
        E8M0(code as u8)
    }
}

impl From<E8M0> for f32 {
    fn from(v: E8M0) -> f32 {
        v.to_f32()
    }
}
