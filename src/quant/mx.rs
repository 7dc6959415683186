//! OCP MX: 32-element blocks along K sharing a power-of-two (e8m0) scale.

use super::scheme::MxElem;
use crate::formats::{
    pack_fp4, pack_fp6, unpack_fp4, unpack_fp6, MiniFloat, E8M0, F4E2M1, F6E2M3, F6E3M2,
};

/// Elements per shared scale.
pub const BLOCK: usize = 32;

/// Stored mantissa bits and emax (2^(ebits−1)) of an element type, as AMD Quark's
/// `get_dtype_params` defines them for the scale rule below.
fn params(elem: ScaleElem) -> (u32, i32) {
    match elem {
        ScaleElem::Mx(MxElem::Fp4E2M1) => (1, 2),
        ScaleElem::Mx(MxElem::Fp6E3M2) => (2, 4),
        ScaleElem::Mx(MxElem::Fp6E2M3) => (3, 2),
        ScaleElem::Fp8E4M3 => (3, 8),
    }
}

/// Element types the shared-scale rule is defined for (MX weights, and MXFP8 for
/// completeness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleElem {
    Mx(MxElem),
    Fp8E4M3,
}

/// Quark's "even" shared exponent (AMD Quark 0.13 `fake_quantize_mx`, the rule vLLM's MX
/// emulation calls; OCP MX v1.0 §6.3 with rounding of the amax): round the block amax up
/// to the next power of two when its leading mantissa bits beyond the element's would
/// round up (add half an element ulp in f32 bits, keep sign and exponent), take its
/// unbiased exponent, **clamp that to 127** (an amax near f32::MAX rounds into the biased
/// exponent 255, which Quark clamps before going on, so it is never read as 2^128), subtract
/// the element's emax, clamp to ±127. A zero or subnormal block gives −127.
/// `None` for a NaN amax (the block's scale is then the e8m0 NaN code).
pub fn shared_exponent(amax: f32, elem: ScaleElem) -> Option<i32> {
    let (mbits, emax) = params(elem);
    if amax.is_nan() {
        return None;
    }
    let rounded = f32::from_bits((amax.abs().to_bits() + (1u32 << (23 - mbits - 1))) & 0xFF80_0000);
    let log2 = if rounded == 0.0 {
        -126
    } else {
        (((rounded.to_bits() >> 23) & 0xFF) as i32 - 127).min(127)
    };
    Some((log2 - emax).clamp(-127, 127))
}

/// Encodes one element (already divided by its block scale), saturating.
pub fn encode(elem: MxElem, x: f32) -> u8 {
    match elem {
        MxElem::Fp4E2M1 => F4E2M1::from_f32(x).to_bits(),
        MxElem::Fp6E3M2 => F6E3M2::from_f32(x).to_bits(),
        MxElem::Fp6E2M3 => F6E2M3::from_f32(x).to_bits(),
    }
}

/// Decodes one element code.
pub fn decode(elem: MxElem, code: u8) -> f32 {
    match elem {
        MxElem::Fp4E2M1 => F4E2M1::from_bits(code).to_f32(),
        MxElem::Fp6E3M2 => F6E3M2::from_bits(code).to_f32(),
        MxElem::Fp6E2M3 => F6E2M3::from_bits(code).to_f32(),
    }
}

/// Packs element codes the way checkpoints store them.
pub fn pack(elem: MxElem, codes: &[u8]) -> crate::Result<Vec<u8>> {
    match elem {
        MxElem::Fp4E2M1 => pack_fp4(codes),
        MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => pack_fp6(codes),
    }
}

/// Unpacks element codes.
pub fn unpack(elem: MxElem, packed: &[u8]) -> crate::Result<Vec<u8>> {
    match elem {
        MxElem::Fp4E2M1 => Ok(unpack_fp4(packed)),
        MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => unpack_fp6(packed),
    }
}

/// Bytes one row of `cols` elements takes when packed.
pub fn packed_len(elem: MxElem, cols: usize) -> usize {
    cols * elem.bits() / 8
}

/// Quantizes one expert's `[rows, cols]` matrix; returns (packed, e8m0 scales).
pub fn quantize(
    elem: MxElem,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> crate::Result<(Vec<u8>, Vec<u8>)> {
    let blocks = cols / BLOCK;
    let mut codes = vec![0u8; rows * cols];
    let mut scales = vec![0u8; rows * blocks];
    for r in 0..rows {
        for b in 0..blocks {
            let base = r * cols + b * BLOCK;
            let xs = &w[base..base + BLOCK];
            let amax = xs.iter().fold(
                0f32,
                |m, x| if x.is_nan() { f32::NAN } else { m.max(x.abs()) },
            );
            let Some(e) = shared_exponent(amax, ScaleElem::Mx(elem)) else {
                scales[r * blocks + b] = 0xFF;
                continue;
            };
            scales[r * blocks + b] = E8M0::from_exponent(e).to_bits();
            let inv = (-e as f32).exp2();
            for (i, x) in xs.iter().enumerate() {
                codes[base + i] = encode(elem, x * inv);
            }
        }
    }
    Ok((pack(elem, &codes)?, scales))
}

/// Dequantizes one expert's matrix into `out`.
pub fn dequantize(
    elem: MxElem,
    packed: &[u8],
    scales: &[u8],
    rows: usize,
    cols: usize,
    out: &mut [f32],
) -> crate::Result<()> {
    let codes = unpack(elem, packed)?;
    let blocks = cols / BLOCK;
    for r in 0..rows {
        for c in 0..cols {
            let s = E8M0::from_bits(scales[r * blocks + c / BLOCK]).to_f32();
            out[r * cols + c] = decode(elem, codes[r * cols + c]) * s;
        }
    }
    Ok(())
}
