//! Writing small checkpoints for the checkpoint tests: tensors with real names, dtypes and
//! packing, `config.json`, optional sharding. Each `linear_*` writes one projection in a
//! producer's format from chosen codes and returns the dequantized matrix the test expects,
//! computed here, independently of the loader.
#![allow(dead_code)]

pub mod cases;
pub mod harness;
mod writer;

pub use writer::{write_config, Writer};

use fleetmoe::formats::{MiniFloat, F4E2M1, F6E2M3, F6E3M2, F8E4M3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::Dtype;

pub fn gaussian(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f32 = rng.random_range(1e-7f32..1.0);
            let v: f32 = rng.random_range(0.0f32..1.0);
            std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
        })
        .collect()
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A storage format for one linear layer `[rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lin {
    Bf16,
    /// compressed-tensors / ModelOpt fp8; `scale_shape` decides tensor / channel / block.
    Fp8Tensor {
        input: bool,
    },
    Fp8Channel,
    /// 128×128 blocks; `ue8m0`: power-of-two scales stored as F8_E8M0 exponent bytes
    /// (DeepSeek-V3.1's `scale_fmt: "ue8m0"`), else f32.
    Fp8Block {
        inv: bool,
        ue8m0: bool,
    },
    CtInt4 {
        group: usize,
        zp: bool,
    },
    CtInt8Channel,
    /// compressed-tensors `int-quantized`: `weight` int8 `[out, in]` holding signed
    /// `bits`-bit values, bf16 `weight_scale` `[out, in/group]`, int8 `weight_zero_point`.
    CtIntQuantized {
        bits: u32,
        group: usize,
        zp: bool,
    },
    /// compressed-tensors int4 with act-order `weight_g_idx`.
    CtInt4Act {
        group: usize,
    },
    W4A8,
    /// GPTQ with `bits` 4 or 8; `v2` stores zero points as they are (`gptq_v2`).
    Gptq {
        group: usize,
        sym: bool,
        act_order: bool,
        bits: usize,
        v2: bool,
    },
    Awq {
        group: usize,
    },
    Nvfp4Ct {
        input: bool,
    },
    Nvfp4Modelopt,
    Mxfp4Quark {
        input_fp8: bool,
    },
    /// Quark MXFP6, packed as `fleetmoe::formats::pack_fp6` does (the assumed layout).
    Mxfp6Quark {
        e3m2: bool,
    },
}

fn fp8(x: f32) -> u8 {
    F8E4M3::from_f32(x).to_bits()
}
fn dfp8(b: u8) -> f32 {
    F8E4M3::from_bits(b).to_f32()
}

/// Writes `base.*` for weights `w` `[rows, cols]`; returns the expected dequantized matrix.
pub fn linear(
    wr: &mut Writer,
    lin: Lin,
    base: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    r: &mut ChaCha8Rng,
) -> Vec<f32> {
    let amax = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    match lin {
        Lin::Bf16 => {
            wr.floats(&format!("{base}.weight"), Dtype::BF16, &[rows, cols], w);
            w.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        }
        Lin::Fp8Tensor { input } => {
            // a per-projection scale that differs between projections
            let s = amax / 448.0 * r.random_range(1.0f32..1.5);
            let codes: Vec<u8> = w.iter().map(|&x| fp8(x / s)).collect();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::F8_E4M3,
                &[rows, cols],
                codes.clone(),
            );
            wr.floats(&format!("{base}.weight_scale"), Dtype::F32, &[], &[s]);
            if input {
                wr.floats(
                    &format!("{base}.input_scale"),
                    Dtype::F32,
                    &[],
                    &[r.random_range(0.01f32..0.02)],
                );
            }
            codes.iter().map(|&c| dfp8(c) * s).collect()
        }
        Lin::Fp8Channel => {
            let s: Vec<f32> = (0..rows)
                .map(|i| {
                    w[i * cols..(i + 1) * cols]
                        .iter()
                        .fold(1e-6f32, |m, x| m.max(x.abs()))
                        / 448.0
                })
                .collect();
            let codes: Vec<u8> = (0..rows * cols).map(|k| fp8(w[k] / s[k / cols])).collect();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::F8_E4M3,
                &[rows, cols],
                codes.clone(),
            );
            wr.floats(&format!("{base}.weight_scale"), Dtype::BF16, &[rows, 1], &s);
            let sb: Vec<f32> = s
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect();
            (0..rows * cols)
                .map(|k| dfp8(codes[k]) * sb[k / cols])
                .collect()
        }
        Lin::Fp8Block { inv, ue8m0 } => {
            let (br, bc) = (rows.div_ceil(128), cols.div_ceil(128));
            let s: Vec<f32> = (0..br * bc)
                .map(|_| amax / 448.0 * r.random_range(1.0f32..2.0))
                // UE8M0: the power of two at or above (so no code saturates).
                .map(|x| {
                    if ue8m0 {
                        2f32.powi(x.log2().ceil() as i32)
                    } else {
                        x
                    }
                })
                .collect();
            let sc = |i: usize, j: usize| s[(i / 128) * bc + j / 128];
            let codes: Vec<u8> = (0..rows * cols)
                .map(|k| fp8(w[k] / sc(k / cols, k % cols)))
                .collect();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::F8_E4M3,
                &[rows, cols],
                codes.clone(),
            );
            let name = if inv {
                "weight_scale_inv"
            } else {
                "weight_scale"
            };
            if ue8m0 {
                let exps = s.iter().map(|x| (x.log2() as i32 + 127) as u8).collect();
                wr.bytes(&format!("{base}.{name}"), Dtype::F8_E8M0, &[br, bc], exps);
            } else {
                wr.floats(&format!("{base}.{name}"), Dtype::F32, &[br, bc], &s);
            }
            (0..rows * cols)
                .map(|k| dfp8(codes[k]) * sc(k / cols, k % cols))
                .collect()
        }
        Lin::CtInt4 { group, zp } => {
            let g = cols / group;
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| r.random_range(0.001f32..0.01))
                .collect();
            let zeros: Vec<u8> = (0..rows * g)
                .map(|_| if zp { r.random_range(0u8..16) } else { 8 })
                .collect();
            wr.i32s(
                &format!("{base}.weight_packed"),
                &[rows, cols / 8],
                &pack_along(&codes, 4),
            );
            wr.floats(
                &format!("{base}.weight_scale"),
                Dtype::F32,
                &[rows, g],
                &scales,
            );
            wr.i32s(
                &format!("{base}.weight_shape"),
                &[2],
                &[rows as i32, cols as i32],
            );
            if zp {
                // packed along dim 0: [rows/8, groups]
                let mut t = vec![0u8; rows * g];
                for i in 0..rows {
                    for j in 0..g {
                        t[j * rows + i] = zeros[i * g + j];
                    }
                }
                // pack each column of [rows, g] along rows: word (i/8, j)
                let mut words = vec![0i32; rows / 8 * g];
                for i in 0..rows {
                    for j in 0..g {
                        words[(i / 8) * g + j] |= (zeros[i * g + j] as i32) << (4 * (i % 8));
                    }
                }
                wr.i32s(&format!("{base}.weight_zero_point"), &[rows / 8, g], &words);
            }
            (0..rows * cols)
                .map(|k| {
                    let gi = (k / cols) * g + (k % cols) / group;
                    (codes[k] as f32 - zeros[gi] as f32) * scales[gi]
                })
                .collect()
        }
        Lin::CtIntQuantized { bits, group, zp } => {
            let (g, mid) = (cols / group, 1i32 << (bits - 1));
            let vals: Vec<i32> = (0..rows * cols)
                .map(|_| r.random_range(-mid..mid))
                .collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| half::bf16::from_f32(r.random_range(0.001f32..0.01)).to_f32())
                .collect();
            let zeros: Vec<i32> = (0..rows * g)
                .map(|_| if zp { r.random_range(-mid..mid) } else { 0 })
                .collect();
            let bytes = |v: &[i32]| v.iter().map(|&x| x as i8 as u8).collect::<Vec<u8>>();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::I8,
                &[rows, cols],
                bytes(&vals),
            );
            wr.floats(
                &format!("{base}.weight_scale"),
                Dtype::BF16,
                &[rows, g],
                &scales,
            );
            if zp {
                wr.bytes(
                    &format!("{base}.weight_zero_point"),
                    Dtype::I8,
                    &[rows, g],
                    bytes(&zeros),
                );
            }
            (0..rows * cols)
                .map(|k| {
                    let gi = (k / cols) * g + (k % cols) / group;
                    (vals[k] - zeros[gi]) as f32 * scales[gi]
                })
                .collect()
        }
        Lin::CtInt4Act { group } => {
            let g = cols / group;
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| r.random_range(0.001f32..0.01))
                .collect();
            // a permutation of the columns into groups (5 is odd, K a power of two)
            let gidx: Vec<i32> = (0..cols)
                .map(|c| ((c * 5 + 1) % cols / group) as i32)
                .collect();
            wr.i32s(
                &format!("{base}.weight_packed"),
                &[rows, cols / 8],
                &pack_along(&codes, 4),
            );
            wr.floats(
                &format!("{base}.weight_scale"),
                Dtype::BF16,
                &[rows, g],
                &scales,
            );
            wr.i32s(&format!("{base}.weight_g_idx"), &[cols], &gidx);
            let sb: Vec<f32> = scales
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect();
            (0..rows * cols)
                .map(|k| (codes[k] as f32 - 8.0) * sb[(k / cols) * g + gidx[k % cols] as usize])
                .collect()
        }
        Lin::CtInt8Channel => {
            let codes: Vec<u8> = (0..rows * cols)
                .map(|_| r.random_range(0u8..=255))
                .collect();
            let scales: Vec<f32> = (0..rows).map(|_| r.random_range(0.001f32..0.01)).collect();
            wr.i32s(
                &format!("{base}.weight_packed"),
                &[rows, cols / 4],
                &pack_along(&codes, 8),
            );
            wr.floats(
                &format!("{base}.weight_scale"),
                Dtype::F16,
                &[rows, 1],
                &scales,
            );
            let s16: Vec<f32> = scales
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            (0..rows * cols)
                .map(|k| (codes[k] as f32 - 128.0) * s16[k / cols])
                .collect()
        }
        Lin::W4A8 => {
            let g = cols / 128;
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| r.random_range(0.001f32..0.01))
                .collect();
            wr.i32s(
                &format!("{base}.weight_packed"),
                &[rows, cols / 8],
                &pack_along(&codes, 4),
            );
            wr.floats(
                &format!("{base}.weight_scale"),
                Dtype::F32,
                &[rows, g],
                &scales,
            );
            (0..rows * cols)
                .map(|k| (codes[k] as f32 - 8.0) * scales[(k / cols) * g + (k % cols) / 128])
                .collect()
        }
        Lin::Gptq {
            group,
            sym,
            act_order,
            bits,
            v2,
        } => {
            let g = cols / group;
            let (per, top) = (32 / bits, 1u16 << bits);
            let mid = (top / 2) as u8;
            let codes: Vec<u8> = (0..rows * cols)
                .map(|_| r.random_range(0..top) as u8)
                .collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| half::f16::from_f32(r.random_range(0.001f32..0.01)).to_f32())
                .collect();
            let zeros: Vec<u8> = (0..rows * g)
                .map(|_| {
                    if sym {
                        mid
                    } else {
                        r.random_range(1..top) as u8
                    }
                })
                .collect();
            let gidx: Vec<u32> = (0..cols)
                .map(|c| {
                    if act_order {
                        ((c * 7 + 3) % cols / group) as u32
                    } else {
                        (c / group) as u32
                    }
                })
                .collect();
            // qweight [cols/per, rows]: word (w, n) packs codes[n][per·w..per·w+per]
            let mut qw = vec![0u32; cols / per * rows];
            for n in 0..rows {
                for c in 0..cols {
                    qw[(c / per) * rows + n] |= (codes[n * cols + c] as u32) << (bits * (c % per));
                }
            }
            let qw: Vec<i32> = qw.into_iter().map(|w| w as i32).collect();
            wr.i32s(&format!("{base}.qweight"), &[cols / per, rows], &qw);
            let mut st = vec![0f32; g * rows];
            let mut qz = vec![0u32; g * rows / per];
            for n in 0..rows {
                for j in 0..g {
                    st[j * rows + n] = scales[n * g + j];
                    // GPTQ v1 stores zero − 1, gptq_v2 the zero itself
                    let z = zeros[n * g + j] - u8::from(!v2);
                    qz[j * rows / per + n / per] |= (z as u32) << (bits * (n % per));
                }
            }
            let qz: Vec<i32> = qz.into_iter().map(|w| w as i32).collect();
            wr.floats(&format!("{base}.scales"), Dtype::F16, &[g, rows], &st);
            wr.i32s(&format!("{base}.qzeros"), &[g, rows / per], &qz);
            wr.i32s(
                &format!("{base}.g_idx"),
                &[cols],
                &gidx.iter().map(|&x| x as i32).collect::<Vec<_>>(),
            );
            (0..rows * cols)
                .map(|k| {
                    let gi = (k / cols) * g + gidx[k % cols] as usize;
                    (codes[k] as f32 - zeros[gi] as f32) * scales[gi]
                })
                .collect()
        }
        Lin::Awq { group } => {
            let g = cols / group;
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let scales: Vec<f32> = (0..rows * g)
                .map(|_| half::f16::from_f32(r.random_range(0.001f32..0.01)).to_f32())
                .collect();
            let zeros: Vec<u8> = (0..rows * g).map(|_| r.random_range(0u8..16)).collect();
            const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
            // qweight [cols, rows/8]; nibble i of word (k, w) holds output column 8w + ORDER[i]
            let mut qw = vec![0i32; cols * rows / 8];
            for k in 0..cols {
                for w in 0..rows / 8 {
                    for (i, &o) in ORDER.iter().enumerate() {
                        qw[k * rows / 8 + w] |= (codes[(8 * w + o) * cols + k] as i32) << (4 * i);
                    }
                }
            }
            let mut st = vec![0f32; g * rows];
            let mut qz = vec![0i32; g * rows / 8];
            for j in 0..g {
                for w in 0..rows / 8 {
                    for (i, &o) in ORDER.iter().enumerate() {
                        qz[j * rows / 8 + w] |= (zeros[(8 * w + o) * g + j] as i32) << (4 * i);
                    }
                }
                for n in 0..rows {
                    st[j * rows + n] = scales[n * g + j];
                }
            }
            wr.i32s(&format!("{base}.qweight"), &[cols, rows / 8], &qw);
            wr.i32s(&format!("{base}.qzeros"), &[g, rows / 8], &qz);
            wr.floats(&format!("{base}.scales"), Dtype::F16, &[g, rows], &st);
            (0..rows * cols)
                .map(|k| {
                    let gi = (k / cols) * g + (k % cols) / group;
                    (codes[k] as f32 - zeros[gi] as f32) * scales[gi]
                })
                .collect()
        }
        Lin::Nvfp4Ct { .. } | Lin::Nvfp4Modelopt => {
            let ct = matches!(lin, Lin::Nvfp4Ct { .. });
            // global a power of two so 1/global is exact
            let global_ct = 2f32.powi(r.random_range(8..12));
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let blocks: Vec<u8> = (0..rows * cols / 16)
                .map(|_| fp8(r.random_range(0.5f32..400.0)))
                .collect();
            let packed: Vec<u8> = codes.chunks(2).map(|p| p[0] | (p[1] << 4)).collect();
            let (wname, g) = if ct {
                ("weight_packed", 1.0 / global_ct)
            } else {
                ("weight", 1.0 / global_ct)
            };
            wr.bytes(
                &format!("{base}.{wname}"),
                Dtype::U8,
                &[rows, cols / 2],
                packed,
            );
            wr.bytes(
                &format!("{base}.weight_scale"),
                Dtype::F8_E4M3,
                &[rows, cols / 16],
                blocks.clone(),
            );
            if ct {
                wr.floats(
                    &format!("{base}.weight_global_scale"),
                    Dtype::F32,
                    &[1],
                    &[global_ct],
                );
                if lin == (Lin::Nvfp4Ct { input: true }) {
                    wr.floats(
                        &format!("{base}.input_global_scale"),
                        Dtype::F32,
                        &[1],
                        &[448.0 * 6.0 / 4.0],
                    );
                }
            } else {
                wr.floats(&format!("{base}.weight_scale_2"), Dtype::F32, &[], &[g]);
                wr.floats(
                    &format!("{base}.input_scale"),
                    Dtype::F32,
                    &[],
                    &[4.0 / (448.0 * 6.0)],
                );
            }
            (0..rows * cols)
                .map(|k| F4E2M1::from_bits(codes[k]).to_f32() * dfp8(blocks[k / 16]) * g)
                .collect()
        }
        Lin::Mxfp6Quark { e3m2 } => {
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..64)).collect();
            let scales: Vec<u8> = (0..rows * cols / 32)
                .map(|_| r.random_range(118u8..127))
                .collect();
            let packed = fleetmoe::formats::pack_fp6(&codes).unwrap();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::U8,
                &[rows, cols * 3 / 4],
                packed,
            );
            wr.bytes(
                &format!("{base}.weight_scale"),
                Dtype::U8,
                &[rows, cols / 32],
                scales.clone(),
            );
            let dec = |c: u8| {
                if e3m2 {
                    F6E3M2::from_bits(c).to_f32()
                } else {
                    F6E2M3::from_bits(c).to_f32()
                }
            };
            (0..rows * cols)
                .map(|k| dec(codes[k]) * 2f32.powi(scales[k / 32] as i32 - 127))
                .collect()
        }
        Lin::Mxfp4Quark { input_fp8 } => {
            let codes: Vec<u8> = (0..rows * cols).map(|_| r.random_range(0u8..16)).collect();
            let scales: Vec<u8> = (0..rows * cols / 32)
                .map(|_| r.random_range(118u8..127))
                .collect();
            let packed: Vec<u8> = codes.chunks(2).map(|p| p[0] | (p[1] << 4)).collect();
            wr.bytes(
                &format!("{base}.weight"),
                Dtype::U8,
                &[rows, cols / 2],
                packed,
            );
            wr.bytes(
                &format!("{base}.weight_scale"),
                Dtype::U8,
                &[rows, cols / 32],
                scales.clone(),
            );
            if input_fp8 {
                wr.floats(&format!("{base}.input_scale"), Dtype::F32, &[], &[0.01]);
            }
            (0..rows * cols)
                .map(|k| {
                    F4E2M1::from_bits(codes[k]).to_f32() * 2f32.powi(scales[k / 32] as i32 - 127)
                })
                .collect()
        }
    }
}

/// `32/bits` values per i32 along the last dimension, value j at bit `bits·j`.
pub fn pack_along(codes: &[u8], bits: usize) -> Vec<i32> {
    codes
        .chunks(32 / bits)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u32, |w, (j, &v)| w | ((v as u32) << (bits * j))) as i32
        })
        .collect()
}

/// Expected w13 `[E, 2I, H]` and w2 `[E, H, I]`.
pub struct Expected {
    pub w13: Vec<f32>,
    pub w2: Vec<f32>,
}

/// Writes E experts with split gate/up/down under `name(e, proj)` (proj 0 gate, 1 up,
/// 2 down) and returns what the loader should produce.
pub fn experts(
    wr: &mut Writer,
    lin: Lin,
    e: usize,
    h: usize,
    i: usize,
    name: &dyn Fn(usize, usize) -> String,
    r: &mut ChaCha8Rng,
) -> Expected {
    let (mut w13, mut w2) = (Vec::new(), Vec::new());
    for ex in 0..e {
        for p in 0..2 {
            let w = gaussian(r, i * h, 0.05);
            w13.extend(linear(wr, lin, &name(ex, p), &w, i, h, r));
        }
        let w = gaussian(r, h * i, 0.05);
        w2.extend(linear(wr, lin, &name(ex, 2), &w, h, i, r));
    }
    Expected { w13, w2 }
}

pub fn router(wr: &mut Writer, name: &str, e: usize, h: usize, r: &mut ChaCha8Rng) {
    let w = gaussian(r, e * h, 0.2);
    wr.floats(name, Dtype::BF16, &[e, h], &w);
}

/// Max relative difference (by the larger magnitude) between two matrices.
pub fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let scale = want.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs() / scale))
}
