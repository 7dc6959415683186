//! The HIP kernels' weight layout, prepared on the host from checkpoint-layout
//! `ExpertWeights`, and its exact inverse. Pure Rust, tested on machines without a GPU.
//!
//! Per projection (`[E, rows, cols]`, rows = N, cols = K):
//! - the element bytes (bf16 / f16 little-endian, fp8 codes, or the checkpoint's packed
//!   MXFP4 / MXFP6 bytes) go through AITER's 16×16 shuffle ([`super::shuffle`]);
//! - fp8 on a device whose matrix cores take the other e4m3 flavour is re-read in that
//!   flavour ([`super::fnuz`]: bytes kept, 0x80 → 0x00, scales doubled for fnuz);
//!   fp8 scales keep the checkpoint's granularity and indexing (`quant::fp8::scale_index`);
//! - MX e8m0 scales of all experts, viewed as `[E·rows, cols/32]` as AITER's MoE does, go
//!   through the e8m0 shuffle ([`super::scale_shuffle`]); NVFP4's e4m3 block scales,
//!   `[E·rows, cols/16]`, go through the same byte permutation, and its per-expert global
//!   scales stay `[E]` f32 (the kernel applies them to the finished dot product);
//! - integer weight-only codes (GPTQ / AWQ) are shuffled as bytes (int4: two codes per
//!   byte, low nibble first, which is GPTQ's i32 packing read little-endian); their group
//!   scales, zero points and act-order `g_idx` keep the checkpoint's `[E, rows, groups]` /
//!   `[E, cols]` indexing, so act-order needs no permutation: the kernel looks each
//!   column's group up;
//! - W4A8 int4 codes are shuffled the same way, with their group scales (e4m3 values in
//!   f32) and f32 channel scales as the checkpoint has them; the fp8 kernel takes
//!   `code − 8` as an e4m3 code (exact) and applies the scales to its partial sums;
//! - INT8 W8A8 codes become signed (`code ^ 0x80` = code − 128) and are shuffled as bytes,
//!   with their f32 scale per row.
//!
//! Rows and columns are not reordered: the HIP stage 1 writes gate and up rows as the
//! checkpoint has them and the activation is a separate step.

use super::fnuz;
use super::scale_shuffle::{self, shuffle_e8m0, shuffle_padded, unshuffle_e8m0, E4M3_ONE};
use super::shuffle::{shuffle_16x16, unshuffle_16x16, ShuffleShape};
use crate::error::{Error, Result};
use crate::fault::{self, Fault};
use crate::formats::MiniFloat;
use crate::oracle::Conversion;
use crate::quant::{
    fp8, int, mx, nvfp4, ExpertWeights, Fp8Flavor, Fp8WeightScale, IntBits, IntWeights, MxElem,
    QuantScheme, QuantTensor, WeightData,
};

/// Element type of a prepared projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Bf16,
    F16,
    Fp8(Fp8Flavor),
    /// Packed OCP MX elements, as the checkpoint packs them.
    Mx(MxElem),
    /// NVFP4 e2m1 elements, two per byte, low nibble first (as the checkpoint packs them).
    Nvfp4,
    /// Unsigned integer codes (int4 two per byte, int8 one).
    Int(IntBits),
    /// Signed int8 codes (INT8 W8A8: the checkpoint's unsigned code − 128, for the s8 MFMA).
    S8,
}

impl Elem {
    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            Elem::Bf16 | Elem::F16 => 2 * cols,
            Elem::Fp8(_) | Elem::S8 => cols,
            Elem::Mx(m) => mx::packed_len(m, cols),
            Elem::Nvfp4 | Elem::Int(IntBits::Int4) => cols / 2,
            Elem::Int(IntBits::Int8) => cols,
        }
    }

    /// Elements of K per block scale (1: none).
    pub fn block(self) -> usize {
        match self {
            Elem::Mx(_) => mx::BLOCK,
            Elem::Nvfp4 => nvfp4::BLOCK,
            Elem::Bf16 | Elem::F16 | Elem::Fp8(_) | Elem::Int(_) | Elem::S8 => 1,
        }
    }

    /// Bytes the shuffle moves as one element (packed MX data moves byte by byte, as AITER
    /// shuffles fp4x2).
    fn shuffle_bytes(self) -> usize {
        match self {
            Elem::Bf16 | Elem::F16 => 2,
            Elem::Fp8(_) | Elem::Mx(_) | Elem::Nvfp4 | Elem::Int(_) | Elem::S8 => 1,
        }
    }
}

/// One projection in the HIP kernels' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HipGemmWeights {
    pub elem: Elem,
    pub experts: usize,
    pub rows: usize,
    pub cols: usize,
    /// AITER 16×16-shuffled element bytes of all experts.
    pub data: Vec<u8>,
    /// fp8 scales in the checkpoint's granularity, in the prepared flavour.
    pub fp8_scales: Option<(Fp8WeightScale, Vec<f32>)>,
    /// Block scales, e8m0-shuffled (padded): MX e8m0 of `[E·rows, cols/32]` or NVFP4
    /// e4m3fn of `[E·rows, cols/16]`.
    pub block_scales: Option<Vec<u8>>,
    /// NVFP4's global scale per expert, `[E]` (`w = fp4 · block · global`).
    pub global_scales: Option<Vec<f32>>,
    /// INT8 W8A8's f32 scale per row, `[E, rows]`.
    pub row_scales: Option<Vec<f32>>,
    /// Integer weight-only: group scales, zero points, act-order.
    pub int: Option<IntGroups>,
    /// `[E, rows]`.
    pub bias: Option<Vec<f32>>,
}

/// The group quantities of integer weight-only codes, in the checkpoint's indexing.
#[derive(Debug, Clone, PartialEq)]
pub struct IntGroups {
    /// Elements of K per scale (cols for per-channel).
    pub group: usize,
    /// `[E, rows, cols/group]` as the checkpoint stores them; the kernel rounds each to
    /// bf16 once, as every bf16 weight-only kernel does (`quant::int::bf16_weight`).
    pub scales: Vec<f32>,
    /// `[E, rows, cols/group]`; `None`: the symmetric mid code (8 or 128).
    pub zeros: Option<Vec<u8>>,
    /// Act-order: the group of each input column, `[E, cols]`.
    pub g_idx: Option<Vec<u32>>,
    /// W4A8's f32 scale per row, `[E, rows]`: its codes are not rounded to bf16 but
    /// multiplied out exactly, `(code − 8) · group · channel`, as the fp8 MFMA sees them.
    pub channel_scales: Option<Vec<f32>>,
}

/// Both projections of a layer, and what was converted on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct HipLayer {
    pub w13: HipGemmWeights,
    pub w2: HipGemmWeights,
    pub conversions: Vec<Conversion>,
}

fn unsupported(scheme: &QuantScheme) -> Error {
    Error::BackendUnavailable {
        backend: "rocm".into(),
        reasons: format!("scheme {scheme} has no HIP GEMM layout"),
    }
}

impl HipGemmWeights {
    /// The shuffle shape of the element bytes.
    pub fn shuffle_shape(&self) -> ShuffleShape {
        let s = self.elem.shuffle_bytes();
        ShuffleShape {
            matrices: self.experts,
            rows: self.rows,
            cols: self.elem.row_bytes(self.cols) / s,
            elem_bytes: s,
        }
    }

    /// The weight at row `r`, column `c` of expert `e`, read through the shuffled layout
    /// and dequantized: what the kernel multiplies by.
    pub fn value(&self, e: usize, r: usize, c: usize) -> f32 {
        let shape = self.shuffle_shape();
        let byte = |b: usize| self.data[shape.shuffled_offset(e, r, b)];
        let raw = match self.elem {
            Elem::Bf16 | Elem::F16 => {
                let o = shape.shuffled_offset(e, r, c);
                let bits = u16::from_le_bytes([self.data[o], self.data[o + 1]]);
                if self.elem == Elem::Bf16 {
                    half::bf16::from_bits(bits).to_f32()
                } else {
                    half::f16::from_bits(bits).to_f32()
                }
            }
            Elem::Fp8(flavor) => fp8::decode(flavor, byte(c)),
            Elem::S8 => byte(c) as i8 as f32,
            Elem::Mx(MxElem::Fp4E2M1) | Elem::Nvfp4 => {
                let b = byte(c / 2);
                mx::decode(MxElem::Fp4E2M1, if c % 2 == 0 { b & 0xF } else { b >> 4 })
            }
            Elem::Mx(m) => {
                // Four 6-bit codes per three bytes, code i at bits 6i of the 24-bit word.
                let q = c / 4 * 3;
                let word = u32::from_le_bytes([byte(q), byte(q + 1), byte(q + 2), 0]);
                mx::decode(m, ((word >> (6 * (c % 4))) & 0x3F) as u8)
            }
            Elem::Int(bits) => {
                let code = match bits {
                    IntBits::Int4 => (byte(c / 2) >> (4 * (c % 2))) & 0xF,
                    IntBits::Int8 => byte(c),
                };
                return self.int_value(bits, e, r, c, code);
            }
        };
        let fp8_scale = self.fp8_scales.as_ref().map_or(1.0, |(g, s)| {
            let per = fp8::scales_per_expert(*g, self.rows, self.cols);
            s[e * per + fp8::scale_index(*g, r, c, self.cols)]
        });
        let block = self.elem.block();
        let block_scale = self.block_scales.as_ref().map_or(1.0, |s| {
            let (_, pc) = scale_shuffle::padded_shape(self.experts * self.rows, self.cols / block);
            let code = s[scale_shuffle::shuffled_index(pc, e * self.rows + r, c / block)];
            match self.elem {
                Elem::Nvfp4 => crate::formats::F8E4M3::from_bits(code).to_f32(),
                _ => crate::formats::E8M0::from_bits(code).to_f32(),
            }
        });
        let global = self.global_scales.as_ref().map_or(1.0, |g| g[e]);
        let row = self
            .row_scales
            .as_ref()
            .map_or(1.0, |s| s[e * self.rows + r]);
        raw * fp8_scale * block_scale * global * row
    }

    /// Integer code `code` at (e, r, c) expanded as the kernel expands it.
    fn int_value(&self, bits: IntBits, e: usize, r: usize, c: usize, code: u8) -> f32 {
        let Some(g) = &self.int else {
            return f32::NAN; // an integer projection always carries its groups
        };
        let groups = self.cols / g.group;
        let gi = (e * self.rows + r) * groups
            + int::group_of(
                g.g_idx
                    .as_ref()
                    .map(|x| &x[e * self.cols..(e + 1) * self.cols]),
                c,
                g.group,
            );
        let zero = g
            .zeros
            .as_ref()
            .map_or(int::mid_code(bits), |z| z[gi] as i32);
        match &g.channel_scales {
            Some(cs) => (code as i32 - zero) as f32 * g.scales[gi] * cs[e * self.rows + r],
            None => int::bf16_weight(code as f32, zero as f32, g.scales[gi]),
        }
    }
}

/// Prepares one projection; `device_fp8` is the flavour the matrix cores take.
fn prepare_tensor(
    scheme: &QuantScheme,
    t: &QuantTensor,
    bias: Option<&Vec<f32>>,
    device_fp8: Option<Fp8Flavor>,
    conversions: &mut Vec<Conversion>,
) -> Result<HipGemmWeights> {
    let mut int_groups = None;
    let mut global_scales = None;
    let mut row_scales = None;
    let (elem, bytes, fp8_scales, block_scales) = match (&t.data, scheme) {
        (WeightData::Bf16(w), _) => (
            Elem::Bf16,
            w.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
            None,
            None,
        ),
        (WeightData::F16(w), _) => (
            Elem::F16,
            w.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect(),
            None,
            None,
        ),
        (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { flavor, weight, .. }) => {
            let (mut codes, mut scales) = (codes.clone(), scales.clone());
            let target = device_fp8.unwrap_or(*flavor);
            match (*flavor, target) {
                (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fnuz) => {
                    if !fault::is(Fault::FnuzAsFn) {
                        fnuz::fn_to_fnuz(&mut codes, &mut scales)?;
                    }
                    if !conversions.contains(&Conversion::Fp8FnToFnuz) {
                        conversions.push(Conversion::Fp8FnToFnuz);
                    }
                }
                (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fn) => {
                    fnuz::fnuz_to_fn(&mut codes, &mut scales)?
                }
                _ => {}
            }
            let (lines, groups) = fp8::scale_grid(*weight, t.experts, t.rows, t.cols);
            fault::shift_scales(&mut scales, lines, groups);
            (Elem::Fp8(target), codes, Some((*weight, scales)), None)
        }
        (WeightData::Mx { packed, scales }, QuantScheme::Mx { elem, .. }) => {
            let (lines, groups) = (t.experts * t.rows, t.cols / mx::BLOCK);
            let mut scales = scales.clone();
            fault::shift_scales(&mut scales, lines, groups);
            let shuffled = shuffle_e8m0(&scales, lines, groups)?;
            let mut packed = packed.clone();
            if *elem == MxElem::Fp4E2M1 {
                fault::swap_nibbles(&mut packed);
            }
            (Elem::Mx(*elem), packed, None, Some(shuffled))
        }
        (
            WeightData::Nvfp4 {
                packed,
                block_scales,
                global_scales: g,
            },
            QuantScheme::Nvfp4 { .. },
        ) => {
            let (lines, groups) = (t.experts * t.rows, t.cols / nvfp4::BLOCK);
            let mut packed = packed.clone();
            fault::swap_nibbles(&mut packed);
            global_scales = Some(g.clone());
            let shuffled = shuffle_padded(block_scales, lines, groups, E4M3_ONE)?;
            (Elem::Nvfp4, packed, None, Some(shuffled))
        }
        (WeightData::Int(iw), QuantScheme::Int8W8A8) => {
            // Symmetric per channel only: the s8 MFMA takes code − 128 as it is.
            if iw.bits != IntBits::Int8
                || iw.zeros.is_some()
                || iw.g_idx.is_some()
                || iw.group != t.cols
            {
                return Err(Error::BackendUnavailable {
                    backend: "rocm".into(),
                    reasons: format!(
                        "{scheme} on the int8 MFMA takes symmetric int8 weights with one scale \
                         per channel (no zero points, groups or act-order)"
                    ),
                });
            }
            let mut scales = iw.scales.clone();
            fault::shift_scales(&mut scales, t.experts * t.rows, 1);
            row_scales = Some(scales);
            let bytes = iw.bytes.iter().map(|c| c ^ 0x80).collect();
            (Elem::S8, bytes, None, None)
        }
        (WeightData::Int(iw), QuantScheme::IntWeightOnly { .. }) if iw.channel_scales.is_none() => {
            int_groups = Some(IntGroups {
                group: iw.group,
                scales: iw.scales.clone(),
                zeros: iw.zeros.clone(),
                g_idx: iw.g_idx.clone(),
                channel_scales: None,
            });
            let bytes = match iw.bits {
                IntBits::Int4 => iw.packed4.iter().flat_map(|w| w.to_le_bytes()).collect(),
                IntBits::Int8 => iw.bytes.clone(),
            };
            (Elem::Int(iw.bits), bytes, None, None)
        }
        (WeightData::Int(iw), QuantScheme::W4A8) => {
            let (Some(cs), IntBits::Int4, None, None) =
                (&iw.channel_scales, iw.bits, &iw.zeros, &iw.g_idx)
            else {
                return Err(Error::BackendUnavailable {
                    backend: "rocm".into(),
                    reasons: format!(
                        "{scheme} on the fp8 MFMA takes symmetric int4 weights with group and \
                         channel scales (no zero points or act-order)"
                    ),
                });
            };
            int_groups = Some(IntGroups {
                group: iw.group,
                scales: iw.scales.clone(),
                zeros: None,
                g_idx: None,
                channel_scales: Some(cs.clone()),
            });
            let bytes = iw.packed4.iter().flat_map(|w| w.to_le_bytes()).collect();
            (Elem::Int(IntBits::Int4), bytes, None, None)
        }
        _ => return Err(unsupported(scheme)),
    };
    let mut w = HipGemmWeights {
        elem,
        experts: t.experts,
        rows: t.rows,
        cols: t.cols,
        data: Vec::new(),
        fp8_scales,
        block_scales,
        global_scales,
        row_scales,
        int: int_groups,
        bias: bias.cloned(),
    };
    w.data = shuffle_16x16(&bytes, w.shuffle_shape())?;
    Ok(w)
}

/// Prepares a layer's weights for the HIP kernels of a device whose fp8 matrix cores take
/// `device_fp8` (`None`: no fp8 matrix cores; fp8 stays in the checkpoint's flavour).
pub fn prepare(weights: &ExpertWeights, device_fp8: Option<Fp8Flavor>) -> Result<HipLayer> {
    weights.validate_weights()?;
    prepare_layout(weights, device_fp8)
}

/// `prepare` after checking shapes only: codes that validation refuses (NaN codes, say)
/// travel into the layout unchanged, for the simulator's fault-injection tests.
#[doc(hidden)]
pub fn prepare_layout(weights: &ExpertWeights, device_fp8: Option<Fp8Flavor>) -> Result<HipLayer> {
    weights.validate_layouts()?;
    let mut conversions = Vec::new();
    let w13 = prepare_tensor(
        &weights.scheme,
        &weights.w13,
        weights.w13_bias.as_ref(),
        device_fp8,
        &mut conversions,
    )?;
    let w2 = prepare_tensor(
        &weights.scheme,
        &weights.w2,
        weights.w2_bias.as_ref(),
        device_fp8,
        &mut conversions,
    )?;
    Ok(HipLayer {
        w13,
        w2,
        conversions,
    })
}

fn block_scales(w: &HipGemmWeights) -> Result<&[u8]> {
    w.block_scales.as_deref().ok_or_else(|| Error::Missing {
        what: "block scales of a prepared projection".into(),
        why: "MX and NVFP4 weights carry block scales".into(),
    })
}

/// The exact inverse of [`prepare_tensor`]: checkpoint-layout data in `flavor` (the
/// checkpoint's fp8 flavour).
fn unprepare_tensor(w: &HipGemmWeights, flavor: Option<Fp8Flavor>) -> Result<QuantTensor> {
    let bytes = unshuffle_16x16(&w.data, w.shuffle_shape())?;
    let halves = |b: &[u8]| -> Vec<u16> {
        b.chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect()
    };
    let data = match w.elem {
        Elem::Bf16 => WeightData::Bf16(
            halves(&bytes)
                .into_iter()
                .map(half::bf16::from_bits)
                .collect(),
        ),
        Elem::F16 => WeightData::F16(
            halves(&bytes)
                .into_iter()
                .map(half::f16::from_bits)
                .collect(),
        ),
        Elem::Fp8(prepared) => {
            let (mut codes, mut scales) =
                (bytes, w.fp8_scales.clone().map(|s| s.1).unwrap_or_default());
            match (prepared, flavor.unwrap_or(prepared)) {
                (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fn) => {
                    fnuz::fnuz_to_fn(&mut codes, &mut scales)?
                }
                (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fnuz) => {
                    fnuz::fn_to_fnuz(&mut codes, &mut scales)?
                }
                _ => {}
            }
            WeightData::Fp8 { codes, scales }
        }
        Elem::Mx(_) => WeightData::Mx {
            packed: bytes,
            scales: unshuffle_e8m0(block_scales(w)?, w.experts * w.rows, w.cols / mx::BLOCK)?,
        },
        Elem::Nvfp4 => WeightData::Nvfp4 {
            packed: bytes,
            block_scales: unshuffle_e8m0(
                block_scales(w)?,
                w.experts * w.rows,
                w.cols / nvfp4::BLOCK,
            )?,
            global_scales: w.global_scales.clone().ok_or_else(|| Error::Missing {
                what: "global scales of a prepared NVFP4 projection".into(),
                why: "NVFP4 weights carry one f32 scale per expert".into(),
            })?,
        },
        Elem::S8 => WeightData::Int(IntWeights {
            bits: IntBits::Int8,
            packed4: Vec::new(),
            bytes: bytes.iter().map(|c| c ^ 0x80).collect(),
            group: w.cols,
            scales: w.row_scales.clone().ok_or_else(|| Error::Missing {
                what: "row scales of a prepared INT8 W8A8 projection".into(),
                why: "int8 weights carry one scale per channel".into(),
            })?,
            zeros: None,
            g_idx: None,
            channel_scales: None,
        }),
        Elem::Int(bits) => {
            let g = w.int.clone().ok_or_else(|| Error::Missing {
                what: "group scales of a prepared integer projection".into(),
                why: "integer weights carry group scales".into(),
            })?;
            let (packed4, bytes) = match bits {
                IntBits::Int4 => (
                    bytes
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    Vec::new(),
                ),
                IntBits::Int8 => (Vec::new(), bytes),
            };
            WeightData::Int(IntWeights {
                bits,
                packed4,
                bytes,
                group: g.group,
                scales: g.scales,
                zeros: g.zeros,
                g_idx: g.g_idx,
                channel_scales: g.channel_scales,
            })
        }
    };
    Ok(QuantTensor {
        experts: w.experts,
        rows: w.rows,
        cols: w.cols,
        data,
    })
}

/// The checkpoint-layout projections `(w13, w2)` a prepared layer came from, bit for bit
/// (fp8 −0 comes back as +0: fnuz has no −0; the values are equal).
pub fn unprepare(layer: &HipLayer, scheme: &QuantScheme) -> Result<(QuantTensor, QuantTensor)> {
    let flavor = scheme.fp8_flavor();
    Ok((
        unprepare_tensor(&layer.w13, flavor)?,
        unprepare_tensor(&layer.w2, flavor)?,
    ))
}
