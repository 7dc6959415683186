//! Integer weights with group scales: GPTQ / AWQ weight-only (int4, int8), W4A8 and
//! INT8 W8A8. Codes are unsigned; `w = (code − zero) · scale`.

use super::scheme::IntBits;
use super::weights::IntWeights;
use crate::formats::{pack_int4_i32, unpack_int4_i32};

/// Largest unsigned code.
pub fn max_code(bits: IntBits) -> i32 {
    (1 << bits.bits()) - 1
}

/// The implicit zero point of a symmetric scheme (8 or 128).
pub fn mid_code(bits: IntBits) -> i32 {
    1 << (bits.bits() - 1)
}

/// How one expert matrix is to be quantized.
#[derive(Debug, Clone, Copy)]
pub struct IntSpec {
    pub bits: IntBits,
    /// Elements of K per scale (cols for per-channel).
    pub group: usize,
    pub zero_point: bool,
    pub act_order: bool,
    /// Round group scales to f16, as GPTQ/AWQ checkpoints store them.
    pub f16_scales: bool,
}

/// The per-expert pieces of `IntWeights` before they are concatenated.
pub struct IntExpert {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub zeros: Option<Vec<u8>>,
    pub g_idx: Option<Vec<u32>>,
}

/// Act-order: columns sorted by descending L2 norm (the usual proxy for GPTQ's Hessian
/// diagonal) are assigned to groups in that order, so a group holds scattered columns.
pub fn act_order_groups(w: &[f32], rows: usize, cols: usize, group: usize) -> Vec<u32> {
    let mut norms: Vec<(f64, usize)> = (0..cols)
        .map(|c| {
            (
                (0..rows)
                    .map(|r| (w[r * cols + c] as f64).powi(2))
                    .sum::<f64>(),
                c,
            )
        })
        .collect();
    norms.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut g_idx = vec![0u32; cols];
    for (rank, &(_, c)) in norms.iter().enumerate() {
        g_idx[c] = (rank / group) as u32;
    }
    g_idx
}

/// The group of input column `c`: `g_idx[c]` under act-order, else `c / group`.
pub fn group_of(g_idx: Option<&[u32]>, c: usize, group: usize) -> usize {
    g_idx.map_or(c / group, |g| g[c] as usize)
}

/// Quantizes one expert's `[rows, cols]` matrix (cols must be a multiple of the group).
pub fn quantize(spec: IntSpec, w: &[f32], rows: usize, cols: usize) -> IntExpert {
    let groups = cols / spec.group;
    let g_idx = spec
        .act_order
        .then(|| act_order_groups(w, rows, cols, spec.group));
    let maxq = max_code(spec.bits);
    let mut lo = vec![0f32; rows * groups];
    let mut hi = vec![0f32; rows * groups];
    for r in 0..rows {
        for c in 0..cols {
            let g = r * groups + group_of(g_idx.as_deref(), c, spec.group);
            lo[g] = lo[g].min(w[r * cols + c]);
            hi[g] = hi[g].max(w[r * cols + c]);
        }
    }
    let round_scale = |s: f32| {
        let s = if spec.f16_scales {
            half::f16::from_f32(s).to_f32()
        } else {
            s
        };
        if s > 0.0 && s.is_finite() {
            s
        } else {
            1.0
        }
    };
    let mut scales = vec![0f32; rows * groups];
    let mut zeros = vec![mid_code(spec.bits) as u8; rows * groups];
    for g in 0..rows * groups {
        if spec.zero_point {
            scales[g] = round_scale((hi[g] - lo[g]) / maxq as f32);
            zeros[g] = (-lo[g] / scales[g])
                .round_ties_even()
                .clamp(0.0, maxq as f32) as u8;
        } else {
            scales[g] = round_scale(hi[g].max(-lo[g]) / (mid_code(spec.bits) - 1) as f32);
        }
    }
    let mut codes = vec![0u8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let g = r * groups + group_of(g_idx.as_deref(), c, spec.group);
            let q = (w[r * cols + c] / scales[g]).round_ties_even() + zeros[g] as f32;
            codes[r * cols + c] = q.clamp(0.0, maxq as f32) as u8;
        }
    }
    IntExpert {
        codes,
        scales,
        zeros: spec.zero_point.then_some(zeros),
        g_idx,
    }
}

/// Dequantizes expert `e` of `iw` (a `[rows, cols]` matrix) into `out`.
pub fn dequantize(iw: &IntWeights, e: usize, rows: usize, cols: usize, out: &mut [f32]) {
    dequantize_with(iw, e, rows, cols, out, |code, zero, scale, channel| {
        (code - zero) * scale * channel
    })
}

/// Expert `e` as the native weight-only kernels expand it for a bf16 MMA (Marlin's bf16
/// path, fleetmoe's `expand_u4_bf16` / `expand_u8_bf16`): the group scale rounded to
/// bf16 once at load, `code − zero` exact, their product rounded to bf16. The emulation
/// computes with these values, so it rounds where every such kernel rounds.
pub fn dequantize_bf16(iw: &IntWeights, e: usize, rows: usize, cols: usize, out: &mut [f32]) {
    dequantize_with(iw, e, rows, cols, out, |code, zero, scale, channel| {
        bf16_weight(code, zero, scale) * channel
    })
}

/// One weight as a bf16 weight-only kernel expands it: `bf16((code − zero) · bf16(scale))`.
pub fn bf16_weight(code: f32, zero: f32, scale: f32) -> f32 {
    let bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
    bf16((code - zero) * bf16(scale))
}

/// Walks expert `e`'s codes with their zero point, group scale and W4A8 channel scale (1
/// elsewhere), writing `value(code, zero, scale, channel)`.
fn dequantize_with(
    iw: &IntWeights,
    e: usize,
    rows: usize,
    cols: usize,
    out: &mut [f32],
    value: impl Fn(f32, f32, f32, f32) -> f32,
) {
    let groups = cols / iw.group;
    let codes: Vec<u8> = match iw.bits {
        IntBits::Int4 => {
            let words = cols / 8;
            unpack_int4_i32(&iw.packed4[e * rows * words..(e + 1) * rows * words])
        }
        IntBits::Int8 => iw.bytes[e * rows * cols..(e + 1) * rows * cols].to_vec(),
    };
    let g_idx = iw.g_idx.as_ref().map(|g| &g[e * cols..(e + 1) * cols]);
    let mid = mid_code(iw.bits) as f32;
    for r in 0..rows {
        let cs = iw.channel_scales.as_ref().map_or(1.0, |s| s[e * rows + r]);
        for c in 0..cols {
            let g = (e * rows + r) * groups + group_of(g_idx, c, iw.group);
            let zero = iw.zeros.as_ref().map_or(mid, |z| z[g] as f32);
            out[r * cols + c] = value(codes[r * cols + c] as f32, zero, iw.scales[g], cs);
        }
    }
}

/// Packs unsigned int4 codes eight per i32 along K.
pub fn pack4(codes: &[u8]) -> crate::Result<Vec<i32>> {
    pack_int4_i32(codes)
}

/// W4A8 for one expert: symmetric int4 in groups of 128 whose scales are stored as e4m3
/// values relative to an f32 per-channel scale (`w = (code − 8) · group · channel`).
/// Returns (codes, group scales, channel scales).
pub fn quantize_w4a8(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    const GROUP: usize = 128;
    let groups = cols / GROUP;
    let mut group_scales = vec![0f32; rows * groups];
    let mut channel_scales = vec![1f32; rows];
    let mut codes = vec![8u8; rows * cols];
    for r in 0..rows {
        let raw: Vec<f32> = (0..groups)
            .map(|g| {
                w[r * cols + g * GROUP..r * cols + (g + 1) * GROUP]
                    .iter()
                    .fold(0f32, |m, x| m.max(x.abs()))
                    / 7.0
            })
            .collect();
        let top = raw.iter().fold(0f32, |m, &s| m.max(s));
        if top > 0.0 {
            channel_scales[r] = top / 448.0;
        }
        for g in 0..groups {
            let gs =
                super::fp8::round(super::scheme::Fp8Flavor::E4M3Fn, raw[g] / channel_scales[r]);
            group_scales[r * groups + g] = gs;
            let step = gs * channel_scales[r];
            if step > 0.0 {
                for c in g * GROUP..(g + 1) * GROUP {
                    let q = (w[r * cols + c] / step).round_ties_even().clamp(-8.0, 7.0);
                    codes[r * cols + c] = (q + 8.0) as u8;
                }
            }
        }
    }
    (codes, group_scales, channel_scales)
}
