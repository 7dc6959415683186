//! The [`MiniFloat`] trait and one exact codec that every small binary float format
//! (sign, exponent, mantissa) is an instance of. The per-format files only pick the
//! parameters, so rounding, subnormals and saturation are written (and tested) once.

/// A small floating-point format stored one code per `u8`.
///
/// Codes are plain bit patterns; `to_f32` is exact for every format here because each
/// one's values (subnormals included) are a subset of f32.
pub trait MiniFloat: Copy + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Largest finite magnitude.
    const MAX: f32;
    /// Short lowercase name: "e4m3fn", "e4m3fnuz", "e5m2", "e3m2", "e2m3", "e2m1", "e8m0".
    const NAME: &'static str;
    /// Width of a code in bits: 8, 6 or 4.
    const BITS: u32;
    /// Wraps a code; only the low `BITS` bits are kept.
    fn from_bits(bits: u8) -> Self;
    /// The code, in the low `BITS` bits.
    fn to_bits(self) -> u8;
    /// The exact value of the code (NaN codes give NaN, inf codes give ±inf).
    fn to_f32(self) -> f32;
    /// Round to nearest, ties to even; anything beyond `MAX` (±inf included) saturates to
    /// ±`MAX`; NaN becomes the format's NaN, or +0 where the format has none.
    fn from_f32(x: f32) -> Self;
}

/// How a format spends codes on values that are not finite numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFinite {
    /// IEEE style (e5m2): the all-ones exponent holds ±inf (zero mantissa) and NaNs.
    Ieee,
    /// OCP "fn" style (e4m3fn): only all-ones exponent and mantissa is NaN; no inf.
    AllOnesNan,
    /// "fnuz" style: the negative-zero pattern is the only NaN; no inf and no −0.
    NegZeroNan,
    /// OCP MX element style: every code is a finite number, ±0 included.
    AllFinite,
}

/// Parameters of a sign/exponent/mantissa format, with exact encode and decode.
///
/// Normal codes are `(-1)^s · 2^(E − bias) · (1 + M / 2^man_bits)`, subnormal codes
/// (E = 0) are `(-1)^s · 2^(1 − bias) · M / 2^man_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Exponent field width.
    pub exp_bits: u32,
    /// Mantissa field width (at least 1).
    pub man_bits: u32,
    /// Exponent bias.
    pub bias: i32,
    /// Which codes are NaN or inf.
    pub non_finite: NonFinite,
}

impl Codec {
    /// The sign bit, just above the exponent field.
    pub const fn sign_bit(&self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// Mask of exponent and mantissa fields.
    pub const fn magnitude_mask(&self) -> u8 {
        self.sign_bit() - 1
    }

    /// Mask of every bit of a code.
    pub const fn code_mask(&self) -> u8 {
        ((1u16 << (self.exp_bits + self.man_bits + 1)) - 1) as u8
    }

    /// The magnitude bits of the largest finite value.
    pub const fn max_magnitude_code(&self) -> u8 {
        match self.non_finite {
            // One exponent step below inf/NaN, full mantissa.
            NonFinite::Ieee => self.magnitude_mask() - (1 << self.man_bits),
            NonFinite::AllOnesNan => self.magnitude_mask() - 1,
            NonFinite::NegZeroNan | NonFinite::AllFinite => self.magnitude_mask(),
        }
    }

    /// The code `encode` gives NaN; `None` for formats without NaN (they get +0).
    ///
    /// e4m3fn and e5m2 both get the positive all-ones magnitude (0x7F) whatever the
    /// input NaN's sign or payload; fnuz gets its single NaN, 0x80.
    pub const fn nan_code(&self) -> Option<u8> {
        match self.non_finite {
            NonFinite::Ieee | NonFinite::AllOnesNan => Some(self.magnitude_mask()),
            NonFinite::NegZeroNan => Some(self.sign_bit()),
            NonFinite::AllFinite => None,
        }
    }

    /// Whether a code (high bits ignored) is NaN.
    pub const fn is_nan(&self, code: u8) -> bool {
        let code = code & self.code_mask();
        let mag = code & self.magnitude_mask();
        let exp_ones = self.magnitude_mask() >> self.man_bits;
        match self.non_finite {
            NonFinite::Ieee => {
                mag >> self.man_bits == exp_ones && mag & ((1 << self.man_bits) - 1) != 0
            }
            NonFinite::AllOnesNan => mag == self.magnitude_mask(),
            NonFinite::NegZeroNan => code == self.sign_bit(),
            NonFinite::AllFinite => false,
        }
    }

    /// Exact value of a code (high bits ignored).
    pub fn decode(&self, code: u8) -> f32 {
        let code = code & self.code_mask();
        if self.is_nan(code) {
            return f32::NAN;
        }
        let negative = code & self.sign_bit() != 0;
        let mag = code & self.magnitude_mask();
        let exp_field = i32::from(mag >> self.man_bits);
        let man_field = u32::from(mag) & ((1 << self.man_bits) - 1);
        let value = if self.non_finite == NonFinite::Ieee
            && mag >> self.man_bits == self.magnitude_mask() >> self.man_bits
        {
            f32::INFINITY
        } else if exp_field == 0 {
            man_field as f32 * exp2i(1 - self.bias - self.man_bits as i32)
        } else {
            ((1 << self.man_bits) + man_field) as f32
                * exp2i(exp_field - self.bias - self.man_bits as i32)
        };
        if negative {
            -value
        } else {
            value
        }
    }

    /// Round `x` to nearest (ties to even mantissa), saturating at the largest finite
    /// value; NaN gives [`Codec::nan_code`] or +0.
    pub fn encode(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.nan_code().unwrap_or(0);
        }
        let bits = x.to_bits();
        let negative = bits >> 31 != 0;
        let abs = bits & 0x7FFF_FFFF;
        let mag = if abs == f32::INFINITY.to_bits() {
            self.max_magnitude_code()
        } else {
            self.round_magnitude(abs)
        };
        if !negative || (mag == 0 && self.non_finite == NonFinite::NegZeroNan) {
            mag
        } else {
            mag | self.sign_bit()
        }
    }

    /// Magnitude code of a finite non-negative f32 given by its bits.
    ///
    /// Works on integers: the f32 significand is shifted right to the format's quantum
    /// in this binade (the subnormal quantum below the smallest normal), rounded with
    /// guard and sticky bits, and the result added to the binade's base code. A mantissa
    /// carry lands on the next binade's code by itself, so no renormalisation is needed.
    fn round_magnitude(&self, abs: u32) -> u8 {
        let f32_exp = (abs >> 23) as i32;
        let fraction = abs & 0x7F_FFFF;
        // abs == significand · 2^(exponent − 23)
        let (significand, exponent) = if f32_exp == 0 {
            (fraction, -126)
        } else {
            (fraction | 0x80_0000, f32_exp - 127)
        };
        if significand == 0 {
            return 0;
        }
        let min_normal_exp = 1 - self.bias;
        let binade = exponent.max(min_normal_exp);
        let quantum_exp = binade - self.man_bits as i32;
        // At least 23 − man_bits > 0 because the formats have fewer mantissa bits.
        let shift = (quantum_exp - (exponent - 23)) as u32;
        let steps = round_shift_even(u64::from(significand), shift);
        let code = (i64::from(binade - min_normal_exp) << self.man_bits) + steps as i64;
        code.min(i64::from(self.max_magnitude_code())) as u8
    }
}

/// `value >> shift` rounded to nearest, ties to even.
fn round_shift_even(value: u64, shift: u32) -> u64 {
    if shift == 0 {
        return value;
    }
    if shift >= 64 {
        // value < 2^24 here, far below half of 2^shift.
        return 0;
    }
    let quotient = value >> shift;
    let rest = value & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rest > half || (rest == half && quotient & 1 == 1) {
        quotient + 1
    } else {
        quotient
    }
}

/// Exact `2^k` as f32 for k in −149..=127 (subnormal results included).
pub(crate) fn exp2i(k: i32) -> f32 {
    debug_assert!((-149..=127).contains(&k), "2^{k} is not an f32");
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (k + 149))
    }
}

/// Defines a `u8` newtype implementing [`MiniFloat`] through a [`Codec`].
macro_rules! minifloat_type {
    (
        $(#[$meta:meta])*
        $name:ident, $codec:expr, name = $fmt_name:literal, max = $max:expr
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub u8);

        impl $name {
            /// The codec that defines this format.
            pub const CODEC: $crate::formats::minifloat::Codec = $codec;
            /// Positive zero.
            pub const ZERO: $name = $name(0);

            /// Whether this code is NaN.
            pub const fn is_nan(self) -> bool {
                Self::CODEC.is_nan(self.0)
            }
        }

        impl $crate::formats::minifloat::MiniFloat for $name {
            const MAX: f32 = $max;
            const NAME: &'static str = $fmt_name;
            const BITS: u32 = Self::CODEC.exp_bits + Self::CODEC.man_bits + 1;

            fn from_bits(bits: u8) -> Self {
                $name(bits & Self::CODEC.code_mask())
            }

            fn to_bits(self) -> u8 {
                self.0 & Self::CODEC.code_mask()
            }

            fn to_f32(self) -> f32 {
                Self::CODEC.decode(self.0)
            }

            fn from_f32(x: f32) -> Self {
                $name(Self::CODEC.encode(x))
            }
        }

        impl From<$name> for f32 {
            fn from(v: $name) -> f32 {
                $crate::formats::minifloat::MiniFloat::to_f32(v)
            }
        }
    };
}

pub(crate) use minifloat_type;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_shift_even_ties() {
        assert_eq!(round_shift_even(0b1010, 2), 0b10); // 2.5 -> 2
        assert_eq!(round_shift_even(0b1110, 2), 0b100); // 3.5 -> 4
        assert_eq!(round_shift_even(0b1011, 2), 0b11); // 2.75 -> 3
        assert_eq!(round_shift_even(0b1001, 2), 0b10); // 2.25 -> 2
        assert_eq!(round_shift_even(1 << 23, 64), 0);
    }

    #[test]
    fn exp2i_covers_subnormals() {
        assert_eq!(exp2i(0), 1.0);
        assert_eq!(exp2i(-127), f32::from_bits(1 << 22));
        assert_eq!(exp2i(-149), f32::from_bits(1));
        assert_eq!(exp2i(127), 2f32.powi(127));
    }
}
