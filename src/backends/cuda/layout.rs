//! The CUDA GEMMs' weight layout, prepared on the host from checkpoint-layout
//! `ExpertWeights`. Pure Rust, so it is tested on machines without a GPU.
//!
//! gemm1 of a gated activation fuses the activation into its epilogue: a thread's
//! accumulators hold rows `r` and `r + 8` of a 16-row group, so w13 is reordered so that
//! rows 0–7 of group `g` are the gate rows of features `8g..8g+8` and rows 8–15 their up
//! rows (whatever order the checkpoint used: halves, or GPT-OSS's interleave). Per-row
//! scales and biases follow the rows; 128 × 128 block scales become one scale per 8 rows
//! per 128 columns, which is exact because 8 consecutive prepared rows always come from
//! one 128-row block of the checkpoint.

use super::packed::{self, Code, Packing};
use crate::error::{Error, Result};
use crate::moe::Activation;
use crate::quant::{ExpertWeights, Fp8WeightScale, MxAct, QuantScheme, QuantTensor, WeightData};

/// Element type fed to the tensor cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Bf16,
    F16,
    /// OCP e4m3fn codes.
    Fp8,
    /// Signed int8 (INT8 W8A8: the checkpoint's unsigned code − 128).
    Int8,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::Bf16 | Elem::F16 => 2,
            Elem::Fp8 | Elem::Int8 => 1,
        }
    }
}

/// One projection in the kernels' layout: `[E, rows, cols]` elements plus its scales.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmWeights {
    pub elem: Elem,
    pub experts: usize,
    pub rows: usize,
    pub cols: usize,
    /// Raw elements, row-major, `elem.bytes()` each (little-endian for 16-bit).
    pub data: Vec<u8>,
    /// `[E, rows]` scale per prepared row (per-tensor and per-channel fp8).
    pub row_scales: Option<Vec<f32>>,
    /// `[E, rows/8, ceil(cols/128)]` (block-128 fp8).
    pub block_scales: Option<Vec<f32>>,
    /// `[E, rows]`.
    pub bias: Option<Vec<f32>>,
    /// Low-bit weights: `data` holds packed fragment tiles (see `packed`) and `elem` is
    /// the type they are expanded to for the tensor cores.
    pub packing: Option<Packing>,
}

/// Both projections of a layer, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedLayer {
    pub w13: GemmWeights,
    pub w2: GemmWeights,
}

/// Checkpoint row of each prepared w13 row (the identity when not gated).
pub fn w13_row_order(activation: Activation, intermediate: usize) -> Result<Vec<usize>> {
    if !activation.is_gated() {
        return Ok((0..intermediate).collect());
    }
    if intermediate % 8 != 0 {
        return Err(Error::shape(
            "intermediate size for the CUDA gated GEMM",
            "a multiple of 8",
            intermediate,
        ));
    }
    let mut order = Vec::with_capacity(2 * intermediate);
    for g in 0..intermediate / 8 {
        let features = 8 * g..8 * g + 8;
        order.extend(
            features
                .clone()
                .map(|j| activation.gate_up_index(j, intermediate).0),
        );
        for j in features {
            let up = activation.gate_up_index(j, intermediate).1;
            order.push(up.expect("gated activations have an up row"));
        }
    }
    Ok(order)
}

/// Reorders `w` (`[E, rows, cols]`) by `order` (prepared row → checkpoint row).
fn permute_rows<T: Copy>(
    w: &[T],
    experts: usize,
    rows: usize,
    cols: usize,
    order: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for e in 0..experts {
        let base = e * rows * cols;
        for &r in order {
            out.extend_from_slice(&w[base + r * cols..base + (r + 1) * cols]);
        }
    }
    out
}

pub(crate) fn permute_per_row(v: &[f32], experts: usize, rows: usize, order: &[usize]) -> Vec<f32> {
    permute_rows(v, experts, rows, 1, order)
}

/// Prepares one projection under `scheme`, rows in `order`.
fn prepare_tensor(
    scheme: &QuantScheme,
    t: &QuantTensor,
    bias: Option<&Vec<f32>>,
    order: &[usize],
) -> Result<GemmWeights> {
    let (e, rows, cols) = (t.experts, t.rows, t.cols);
    let unsupported = || Error::BackendUnavailable {
        backend: "cuda".into(),
        reasons: format!("scheme {scheme} has no CUDA GEMM layout yet"),
    };
    let (elem, data, row_scales, block_scales) = match (&t.data, scheme) {
        (WeightData::Bf16(w), _) => {
            let bits: Vec<u16> = permute_rows(w, e, rows, cols, order)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            (Elem::Bf16, le_bytes(&bits), None, None)
        }
        (WeightData::F16(w), _) => {
            let bits: Vec<u16> = permute_rows(w, e, rows, cols, order)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            (Elem::F16, le_bytes(&bits), None, None)
        }
        (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { weight, .. }) => {
            let data = permute_rows(codes, e, rows, cols, order);
            let mut scales = scales.clone();
            let (lines, groups) = crate::quant::fp8::scale_grid(*weight, e, rows, cols);
            crate::fault::shift_scales(&mut scales, lines, groups);
            let scales = &scales;
            match weight {
                Fp8WeightScale::PerTensor => {
                    let per_row = scales
                        .iter()
                        .flat_map(|&s| std::iter::repeat_n(s, rows))
                        .collect();
                    (Elem::Fp8, data, Some(per_row), None)
                }
                Fp8WeightScale::PerChannel => (
                    Elem::Fp8,
                    data,
                    Some(permute_per_row(scales, e, rows, order)),
                    None,
                ),
                Fp8WeightScale::Block128 => {
                    if rows % 8 != 0 {
                        return Err(Error::shape(
                            "rows of a block-128 fp8 projection",
                            "a multiple of 8",
                            rows,
                        ));
                    }
                    let kb = cols.div_ceil(128);
                    let rb = rows.div_ceil(128);
                    let mut blocks = Vec::with_capacity(e * rows / 8 * kb);
                    for ex in 0..e {
                        for r8 in 0..rows / 8 {
                            let src_row = order[r8 * 8];
                            for k in 0..kb {
                                blocks.push(scales[ex * rb * kb + (src_row / 128) * kb + k]);
                            }
                        }
                    }
                    (Elem::Fp8, data, None, Some(blocks))
                }
            }
        }
        (WeightData::Int(iw), QuantScheme::Int8W8A8) => {
            // Symmetric per channel only: the s8 MMA takes code − 128 as it is.
            if iw.zeros.is_some() || iw.g_idx.is_some() || iw.group != cols {
                return Err(unsupported());
            }
            let data = permute_rows(&iw.bytes, e, rows, cols, order)
                .iter()
                .map(|c| c ^ 0x80)
                .collect();
            let mut scales = iw.scales.clone();
            crate::fault::shift_scales(&mut scales, e * rows, 1);
            let per_row = permute_per_row(&scales, e, rows, order);
            (Elem::Int8, data, Some(per_row), None)
        }
        (WeightData::Mx { .. } | WeightData::Nvfp4 { .. } | WeightData::Int(_), _) => {
            let fp8_act = fp8_activations(scheme);
            let (data, packing, row_scales) = packed::pack(scheme, t, order, fp8_act)?;
            return Ok(GemmWeights {
                elem: if fp8_act { Elem::Fp8 } else { Elem::Bf16 },
                experts: e,
                rows,
                cols,
                data,
                row_scales,
                block_scales: None,
                bias: bias.map(|b| permute_per_row(b, e, rows, order)),
                packing: Some(packing),
            });
        }
        _ => return Err(unsupported()),
    };
    Ok(GemmWeights {
        elem,
        experts: e,
        rows,
        cols,
        data,
        row_scales,
        block_scales,
        bias: bias.map(|b| permute_per_row(b, e, rows, order)),
        packing: None,
    })
}

/// Whether the GEMMs of `scheme` take fp8 e4m3 activations (and so fp8 tensor cores).
pub fn fp8_activations(scheme: &QuantScheme) -> bool {
    match scheme {
        QuantScheme::Fp8 { .. } | QuantScheme::W4A8 => true,
        QuantScheme::Mx { act, .. } => matches!(act, MxAct::Fp8Static | MxAct::Mx),
        QuantScheme::Unquantized(_)
        | QuantScheme::Nvfp4 { .. }
        | QuantScheme::IntWeightOnly { .. }
        | QuantScheme::Int8W8A8 => false,
    }
}

fn le_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Prepares a layer's weights for the CUDA GEMMs. Needs K a multiple of 16 bytes per row
/// (16-byte asynchronous copies) and, when gated, I a multiple of 8.
pub fn prepare(weights: &ExpertWeights, activation: Activation) -> Result<PreparedLayer> {
    weights.validate_weights()?;
    let one_byte = fp8_activations(&weights.scheme) || weights.scheme == QuantScheme::Int8W8A8;
    let elem_bytes = if one_byte { 1 } else { 2 };
    for (what, k) in [
        ("hidden size", weights.hidden),
        ("intermediate size", weights.intermediate),
    ] {
        if (k * elem_bytes) % 16 != 0 {
            return Err(Error::shape(
                format!("{what} for the CUDA GEMMs"),
                format!("a multiple of {}", 16 / elem_bytes),
                k,
            ));
        }
    }
    let order13 = w13_row_order(activation, weights.intermediate)?;
    let order2: Vec<usize> = (0..weights.hidden).collect();
    Ok(PreparedLayer {
        w13: prepare_tensor(
            &weights.scheme,
            &weights.w13,
            weights.w13_bias.as_ref(),
            &order13,
        )?,
        w2: prepare_tensor(
            &weights.scheme,
            &weights.w2,
            weights.w2_bias.as_ref(),
            &order2,
        )?,
    })
}

impl GemmWeights {
    /// The weight at prepared row `r`, column `c` of expert `e`, dequantized: what the
    /// kernel multiplies by, for the layout tests.
    pub fn value(&self, e: usize, r: usize, c: usize) -> f32 {
        if let Some(p) = &self.packing {
            return self.packed_value(p, e, r, c);
        }
        let i = (e * self.rows + r) * self.cols + c;
        let raw = match self.elem {
            Elem::Bf16 => {
                half::bf16::from_bits(u16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]]))
                    .to_f32()
            }
            Elem::F16 => {
                half::f16::from_bits(u16::from_le_bytes([self.data[2 * i], self.data[2 * i + 1]]))
                    .to_f32()
            }
            Elem::Fp8 => crate::quant::fp8::decode(crate::quant::Fp8Flavor::E4M3Fn, self.data[i]),
            Elem::Int8 => self.data[i] as i8 as f32,
        };
        let row = self
            .row_scales
            .as_ref()
            .map_or(1.0, |s| s[e * self.rows + r]);
        let block = self.block_scales.as_ref().map_or(1.0, |s| {
            let kb = self.cols.div_ceil(128);
            s[(e * (self.rows / 8) + r / 8) * kb + c / 128]
        });
        raw * row * block
    }
}

impl GemmWeights {
    /// What the kernel multiplies by for a packed weight, rounding included: e2m1 values
    /// and their scales expand exactly; integer weights become bf16 `(code − zero) · scale`
    /// with a bf16 scale (bf16 activations) or stay exact with the group scale folded in
    /// f32 after the MMA (fp8 activations).
    fn packed_value(&self, p: &Packing, e: usize, r: usize, c: usize) -> f32 {
        use crate::formats::{MiniFloat, F4E2M1, F8E4M3};
        // One code: unpacking a single element through the same index map.
        let code = {
            let rg = self.rows.div_ceil(16);
            let tiles = self.cols.div_ceil(p.ks()) * p.ks() / p.kf();
            let (lane, bit) = p.position(r % 16, c % p.kf());
            let tile = (e * rg + r / 16) * tiles + c / p.kf();
            let byte = self.data[tile * 32 * p.lane_bytes() + lane * p.lane_bytes() + bit / 8];
            (byte >> (bit % 8)) & (((1u16 << p.code.bits()) - 1) as u8)
        };
        let entry = packed::entry(p, (self.experts, self.rows), e, r, c);
        let bf16 = |b: &[u8]| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        let round = |v: f32| half::bf16::from_f32(v).to_f32();
        let raw = match p.code {
            Code::Mxfp4 => F4E2M1::from_bits(code).to_f32() * (entry[0] as f32 - 127.0).exp2(),
            Code::MxE4m3 => F8E4M3::from_bits(code).to_f32() * (entry[0] as f32 - 127.0).exp2(),
            Code::Nvfp4 => {
                F4E2M1::from_bits(code).to_f32() * F8E4M3::from_bits(entry[0]).to_f32()
                    / packed::NVFP4_ROW_FACTOR
            }
            Code::Uint4 | Code::Uint8 if p.fp8_act => {
                let s = f32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
                (code as f32 - 8.0) * s
            }
            Code::Uint4 => round((code as f32 + 128.0 - bf16(&entry[2..])) * bf16(entry)),
            Code::Uint8 => round((code as f32 - bf16(&entry[2..])) * bf16(entry)),
        };
        let row = self
            .row_scales
            .as_ref()
            .map_or(1.0, |s| s[e * self.rows + r]);
        raw * row
    }
}
