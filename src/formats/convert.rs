//! Slice-level conversions between f32 and the small formats.

use super::minifloat::MiniFloat;

/// Encodes every value with [`MiniFloat::from_f32`], one code per byte.
pub fn encode<T: MiniFloat>(xs: &[f32]) -> Vec<u8> {
    xs.iter().map(|&x| T::from_f32(x).to_bits()).collect()
}

/// Decodes one code per byte (bits above `T::BITS` ignored).
pub fn decode<T: MiniFloat>(codes: &[u8]) -> Vec<f32> {
    // Past a few hundred codes a 256-entry table beats decoding each one.
    if codes.len() > 256 {
        let table: Vec<f32> = (0..=255u8).map(|c| T::from_bits(c).to_f32()).collect();
        codes.iter().map(|&c| table[usize::from(c)]).collect()
    } else {
        codes.iter().map(|&c| T::from_bits(c).to_f32()).collect()
    }
}

/// Quantize-dequantize: the value `x` becomes once stored in `T`.
pub fn round_to<T: MiniFloat>(x: f32) -> f32 {
    T::from_f32(x).to_f32()
}
