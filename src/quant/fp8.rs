//! FP8 weights: per-tensor, per-channel and 128×128 block scales, in either e4m3 flavour.

use super::scheme::{Fp8Flavor, Fp8WeightScale};
use crate::formats::{F8E4M3Fnuz, MiniFloat, F8E4M3};

/// Side of a DeepSeek-V3 weight scale block.
pub const BLOCK: usize = 128;

/// Encodes `x` (already divided by its scale) in `flavor`, saturating.
pub fn encode(flavor: Fp8Flavor, x: f32) -> u8 {
    match flavor {
        Fp8Flavor::E4M3Fn => F8E4M3::from_f32(x).to_bits(),
        Fp8Flavor::E4M3Fnuz => F8E4M3Fnuz::from_f32(x).to_bits(),
    }
}

/// Decodes one code of `flavor`.
pub fn decode(flavor: Fp8Flavor, code: u8) -> f32 {
    match flavor {
        Fp8Flavor::E4M3Fn => F8E4M3::from_bits(code).to_f32(),
        Fp8Flavor::E4M3Fnuz => F8E4M3Fnuz::from_bits(code).to_f32(),
    }
}

/// Rounds `x` to the nearest value of `flavor` (saturating).
pub fn round(flavor: Fp8Flavor, x: f32) -> f32 {
    decode(flavor, encode(flavor, x))
}

/// The scale that maps `amax` onto the flavour's largest value; a zero block gets scale 1
/// so that dividing by it stays finite.
pub fn scale_for(flavor: Fp8Flavor, amax: f32) -> f32 {
    if amax > 0.0 {
        amax / flavor.max()
    } else {
        1.0
    }
}

/// The amax below which a dynamic activation scale stops shrinking: `fm_quant`'s
/// `scale_from_amax` in `kernels-cuda/quant.cu` and `kernels-hip/quant.hip` takes
/// `max(amax, 1e-12)`, and the emulation computes what the kernels compute.
pub const MIN_DYNAMIC_AMAX: f32 = 1e-12;

/// A dynamic activation scale: `max(amax, 1e-12) / max`, with `max` the clamp of the
/// rule (the flavour's largest value). A zero extent gets a tiny positive scale, so its
/// codes are all zero; a NaN amax stays NaN.
pub fn dynamic_scale(max: f32, amax: f32) -> f32 {
    if amax.is_nan() {
        return f32::NAN;
    }
    amax.max(MIN_DYNAMIC_AMAX) / max
}

/// Number of scales one expert's `[rows, cols]` matrix has.
pub fn scales_per_expert(granularity: Fp8WeightScale, rows: usize, cols: usize) -> usize {
    match granularity {
        Fp8WeightScale::PerTensor => 1,
        Fp8WeightScale::PerChannel => rows,
        Fp8WeightScale::Block128 => rows.div_ceil(BLOCK) * cols.div_ceil(BLOCK),
    }
}

/// The scales of `experts` experts as a `[lines, groups]` matrix: one line per expert
/// (per-tensor), per row (per-channel), per 128-row block (block-128, 128-column groups).
pub fn scale_grid(
    granularity: Fp8WeightScale,
    experts: usize,
    rows: usize,
    cols: usize,
) -> (usize, usize) {
    match granularity {
        Fp8WeightScale::PerTensor => (experts, 1),
        Fp8WeightScale::PerChannel => (experts * rows, 1),
        Fp8WeightScale::Block128 => (experts * rows.div_ceil(BLOCK), cols.div_ceil(BLOCK)),
    }
}

/// Index into one expert's scales for element (r, c).
pub fn scale_index(granularity: Fp8WeightScale, r: usize, c: usize, cols: usize) -> usize {
    match granularity {
        Fp8WeightScale::PerTensor => 0,
        Fp8WeightScale::PerChannel => r,
        Fp8WeightScale::Block128 => (r / BLOCK) * cols.div_ceil(BLOCK) + c / BLOCK,
    }
}

/// Quantizes one expert's `[rows, cols]` matrix; returns (codes, scales).
pub fn quantize(
    flavor: Fp8Flavor,
    granularity: Fp8WeightScale,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<f32>) {
    let mut amax = vec![0f32; scales_per_expert(granularity, rows, cols)];
    for r in 0..rows {
        for c in 0..cols {
            let s = &mut amax[scale_index(granularity, r, c, cols)];
            *s = s.max(w[r * cols + c].abs());
        }
    }
    let scales: Vec<f32> = amax.iter().map(|&a| scale_for(flavor, a)).collect();
    let mut codes = vec![0u8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[scale_index(granularity, r, c, cols)];
            codes[r * cols + c] = encode(flavor, w[r * cols + c] / s);
        }
    }
    (codes, scales)
}

/// Dequantizes one expert's matrix into `out`.
pub fn dequantize(
    flavor: Fp8Flavor,
    granularity: Fp8WeightScale,
    codes: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [f32],
) {
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[scale_index(granularity, r, c, cols)];
            out[r * cols + c] = decode(flavor, codes[r * cols + c]) * s;
        }
    }
}
