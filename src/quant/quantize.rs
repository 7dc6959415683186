//! Quantizing f32 experts into a scheme's checkpoint layout, dequantizing back, and
//! validating what a checkpoint loader (or a caller) put into an `ExpertWeights`.

use super::dense::DenseExperts;
use super::int::{self, IntSpec};
use super::scheme::{IntBits, IntGroup, QuantScheme};
use super::weights::{ExpertWeights, IntWeights, QuantTensor, WeightData};
use super::{fp8, mx, nvfp4};
use crate::error::{check_group, check_len, checked_size, Error, Result};

impl QuantTensor {
    /// Quantizes `[experts, rows, cols]` f32 weights under `scheme`.
    pub fn quantize(
        scheme: &QuantScheme,
        w: &[f32],
        experts: usize,
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<Self> {
        check_len(what, w.len(), checked_size(what, &[experts, rows, cols])?)?;
        check_dims(scheme, rows, cols, what)?;
        let per = rows * cols;
        let mats = (0..experts).map(|e| &w[e * per..(e + 1) * per]);
        let data = match *scheme {
            QuantScheme::Unquantized(super::FloatDtype::Bf16) => {
                WeightData::Bf16(w.iter().map(|&x| half::bf16::from_f32(x)).collect())
            }
            QuantScheme::Unquantized(super::FloatDtype::F16) => {
                WeightData::F16(w.iter().map(|&x| half::f16::from_f32(x)).collect())
            }
            QuantScheme::Fp8 { flavor, weight, .. } => {
                let (mut codes, mut scales) = (Vec::with_capacity(w.len()), Vec::new());
                for m in mats {
                    let (c, s) = fp8::quantize(flavor, weight, m, rows, cols);
                    codes.extend(c);
                    scales.extend(s);
                }
                WeightData::Fp8 { codes, scales }
            }
            QuantScheme::Nvfp4 { .. } => {
                let (mut packed, mut block_scales, mut global_scales) =
                    (Vec::new(), Vec::new(), Vec::new());
                for m in mats {
                    let (p, b, g) = nvfp4::quantize(m, rows, cols);
                    packed.extend(p);
                    block_scales.extend(b);
                    global_scales.push(g);
                }
                WeightData::Nvfp4 {
                    packed,
                    block_scales,
                    global_scales,
                }
            }
            QuantScheme::Mx { elem, .. } => {
                let (mut packed, mut scales) = (Vec::new(), Vec::new());
                for m in mats {
                    let (p, s) = mx::quantize(elem, m, rows, cols)?;
                    packed.extend(p);
                    scales.extend(s);
                }
                WeightData::Mx { packed, scales }
            }
            QuantScheme::IntWeightOnly {
                bits,
                group,
                zero_point,
                act_order,
            } => {
                let group = group_size(group, cols);
                let spec = IntSpec {
                    bits,
                    group,
                    zero_point,
                    act_order,
                    f16_scales: true,
                };
                let parts: Vec<_> = mats.map(|m| int::quantize(spec, m, rows, cols)).collect();
                WeightData::Int(assemble(bits, group, parts, None)?)
            }
            QuantScheme::Int8W8A8 => {
                let spec = IntSpec {
                    bits: IntBits::Int8,
                    group: cols,
                    zero_point: false,
                    act_order: false,
                    f16_scales: false,
                };
                let parts: Vec<_> = mats.map(|m| int::quantize(spec, m, rows, cols)).collect();
                WeightData::Int(assemble(IntBits::Int8, cols, parts, None)?)
            }
            QuantScheme::W4A8 => {
                let mut parts = Vec::new();
                let mut channel = Vec::new();
                for m in mats {
                    let (codes, scales, cs) = int::quantize_w4a8(m, rows, cols);
                    parts.push(int::IntExpert {
                        codes,
                        scales,
                        zeros: None,
                        g_idx: None,
                    });
                    channel.extend(cs);
                }
                WeightData::Int(assemble(IntBits::Int4, 128, parts, Some(channel))?)
            }
        };
        Ok(QuantTensor {
            experts,
            rows,
            cols,
            data,
        })
    }

    /// Dequantizes expert `e` into `out` (`rows · cols` f32), after checking the layout
    /// and that expert's values, so inconsistent data is an error, never a slice past the
    /// end of a list.
    pub fn dequantize_expert(&self, scheme: &QuantScheme, e: usize, out: &mut [f32]) -> Result<()> {
        self.dequantize_expert_named(scheme, e, out, "weights", Rounding::Exact)
    }

    /// `dequantize_expert`, naming the projection (`what`) in errors.
    pub(crate) fn dequantize_expert_named(
        &self,
        scheme: &QuantScheme,
        e: usize,
        out: &mut [f32],
        what: &str,
        rounding: Rounding,
    ) -> Result<()> {
        self.validate_layout(scheme, what)?;
        self.validate_expert(scheme, e, what)?;
        let (rows, cols) = (self.rows, self.cols);
        let per = rows * cols;
        check_len(&format!("{what} dequantized expert"), out.len(), per)?;
        match (&self.data, *scheme) {
            (WeightData::Bf16(v), _) => out
                .iter_mut()
                .zip(&v[e * per..(e + 1) * per])
                .for_each(|(o, x)| *o = x.to_f32()),
            (WeightData::F16(v), _) => out
                .iter_mut()
                .zip(&v[e * per..(e + 1) * per])
                .for_each(|(o, x)| *o = x.to_f32()),
            (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { flavor, weight, .. }) => {
                let ns = fp8::scales_per_expert(weight, rows, cols);
                fp8::dequantize(
                    flavor,
                    weight,
                    &codes[e * per..(e + 1) * per],
                    &scales[e * ns..(e + 1) * ns],
                    rows,
                    cols,
                    out,
                )
            }
            (
                WeightData::Nvfp4 {
                    packed,
                    block_scales,
                    global_scales,
                },
                _,
            ) => {
                let (pb, nb) = (per / 2, per / nvfp4::BLOCK);
                nvfp4::dequantize(
                    &packed[e * pb..(e + 1) * pb],
                    &block_scales[e * nb..(e + 1) * nb],
                    global_scales[e],
                    rows,
                    cols,
                    out,
                )
            }
            (WeightData::Mx { packed, scales }, QuantScheme::Mx { elem, .. }) => {
                let pb = rows * mx::packed_len(elem, cols);
                let nb = per / mx::BLOCK;
                mx::dequantize(
                    elem,
                    &packed[e * pb..(e + 1) * pb],
                    &scales[e * nb..(e + 1) * nb],
                    rows,
                    cols,
                    out,
                )?
            }
            (WeightData::Int(iw), QuantScheme::IntWeightOnly { .. })
                if rounding == Rounding::AsKernels =>
            {
                int::dequantize_bf16(iw, e, rows, cols, out)
            }
            (WeightData::Int(iw), _) => int::dequantize(iw, e, rows, cols, out),
            (data, scheme) => return Err(super::validate::mismatch(scheme, data)),
        }
        Ok(())
    }

    /// All experts dequantized, `[experts, rows, cols]`.
    pub fn dequantize(&self, scheme: &QuantScheme) -> Result<Vec<f32>> {
        self.validate_layout(scheme, "weights")?;
        let per = self.rows * self.cols;
        let mut out = vec![0f32; self.experts * per];
        for (e, chunk) in out.chunks_mut(per).enumerate() {
            self.dequantize_expert(scheme, e, chunk)?;
        }
        Ok(out)
    }
}

/// Whether dequantized weights are the checkpoint's exact values or the values the native
/// kernels multiply (rounded where every kernel of that scheme rounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rounding {
    Exact,
    AsKernels,
}

/// Concatenates per-expert integer pieces into the checkpoint layout.
fn assemble(
    bits: IntBits,
    group: usize,
    parts: Vec<int::IntExpert>,
    channel_scales: Option<Vec<f32>>,
) -> Result<IntWeights> {
    let codes: Vec<u8> = parts.iter().flat_map(|p| p.codes.iter().copied()).collect();
    let (packed4, bytes) = match bits {
        IntBits::Int4 => (int::pack4(&codes)?, Vec::new()),
        IntBits::Int8 => (Vec::new(), codes),
    };
    let zeros = parts
        .iter()
        .map(|p| p.zeros.clone())
        .collect::<Option<Vec<_>>>()
        .map(|z| z.concat());
    let g_idx = parts
        .iter()
        .map(|p| p.g_idx.clone())
        .collect::<Option<Vec<_>>>()
        .map(|g| g.concat());
    Ok(IntWeights {
        bits,
        packed4,
        bytes,
        group,
        scales: parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect(),
        zeros,
        g_idx,
        channel_scales,
    })
}

/// The K-extent of one integer scale group.
pub fn group_size(group: IntGroup, cols: usize) -> usize {
    match group {
        IntGroup::Channel => cols,
        IntGroup::Size(n) => n,
    }
}

/// The divisibility a scheme needs of K (`cols`).
pub(super) fn check_dims(scheme: &QuantScheme, rows: usize, cols: usize, what: &str) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::shape(
            what,
            "non-empty rows and cols",
            format!("[{rows}, {cols}]"),
        ));
    }
    let name = format!("K of {what}");
    match *scheme {
        QuantScheme::Unquantized(_) | QuantScheme::Fp8 { .. } => Ok(()),
        QuantScheme::Nvfp4 { .. } => check_group(nvfp4::BLOCK, cols, &name),
        QuantScheme::Mx { elem, .. } => {
            check_group(mx::BLOCK, cols, &name)?;
            let _ = elem;
            Ok(())
        }
        QuantScheme::IntWeightOnly { bits, group, .. } => {
            check_group(group_size(group, cols), cols, &name)?;
            if bits == IntBits::Int4 {
                check_group(8, cols, &format!("{name} (eight int4 per word)"))?;
            }
            Ok(())
        }
        QuantScheme::W4A8 => check_group(128, cols, &name),
        QuantScheme::Int8W8A8 => Ok(()),
    }
}

impl ExpertWeights {
    /// Quantizes f32 experts into `scheme`'s checkpoint layout. Static input scales are
    /// left unset: calibrate them (`moe::calibrate`) or set them from a checkpoint.
    pub fn quantize(dense: &DenseExperts, scheme: QuantScheme) -> Result<Self> {
        let (e, h, i) = (dense.num_experts, dense.hidden, dense.intermediate);
        let rows13 = dense.w13_rows();
        let w13 = QuantTensor::quantize(&scheme, &dense.w13, e, rows13, h, "w13")?;
        let w2 = QuantTensor::quantize(&scheme, &dense.w2, e, h, i, "w2")?;
        let weights = ExpertWeights {
            scheme,
            num_experts: e,
            hidden: h,
            intermediate: i,
            gated: dense.gated,
            w13,
            w2,
            w13_bias: dense.w13_bias.clone(),
            w2_bias: dense.w2_bias.clone(),
            input_scales: None,
        };
        weights.validate_shapes()?;
        Ok(weights)
    }

    /// Rows of w13.
    pub fn w13_rows(&self) -> usize {
        if self.gated {
            // Saturating: an absurd intermediate then fails `validate`'s shape check.
            self.intermediate.saturating_mul(2)
        } else {
            self.intermediate
        }
    }

    /// Dequantizes expert `e`: (w13 `[rows13, H]`, w2 `[H, I]`). The shapes and expert
    /// `e`'s values are checked first (the whole of `validate` would read every expert).
    pub fn dequantize_expert(&self, e: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.dequantize_expert_rounded(e, Rounding::Exact)
    }

    /// Expert `e` as the native kernels multiply it (`Rounding::AsKernels`): what the
    /// emulation and the f64 reference compute with. Differs from `dequantize_expert` only
    /// for integer weight-only schemes, whose kernels expand to bf16 before the MMA.
    pub fn dequantize_expert_as_kernels(&self, e: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.dequantize_expert_rounded(e, Rounding::AsKernels)
    }

    fn dequantize_expert_rounded(
        &self,
        e: usize,
        rounding: Rounding,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.validate_shapes()?;
        let mut w13 = vec![0f32; self.w13_rows() * self.hidden];
        let mut w2 = vec![0f32; self.hidden * self.intermediate];
        self.w13
            .dequantize_expert_named(&self.scheme, e, &mut w13, "w13", rounding)?;
        self.w2
            .dequantize_expert_named(&self.scheme, e, &mut w2, "w2", rounding)?;
        Ok((w13, w2))
    }

    /// `dequantize` with the values the native kernels multiply (see
    /// `dequantize_expert_as_kernels`).
    pub fn dequantize_as_kernels(&self) -> Result<DenseExperts> {
        self.validate_weights()?;
        let (mut w13, mut w2) = (Vec::new(), Vec::new());
        for e in 0..self.num_experts {
            let (a, b) = self.dequantize_expert_as_kernels(e)?;
            w13.extend(a);
            w2.extend(b);
        }
        Ok(DenseExperts {
            num_experts: self.num_experts,
            hidden: self.hidden,
            intermediate: self.intermediate,
            gated: self.gated,
            w13,
            w2,
            w13_bias: self.w13_bias.clone(),
            w2_bias: self.w2_bias.clone(),
        })
    }

    /// Everything back in f32, after `validate_weights`.
    pub fn dequantize(&self) -> Result<DenseExperts> {
        self.validate_weights()?;
        Ok(DenseExperts {
            num_experts: self.num_experts,
            hidden: self.hidden,
            intermediate: self.intermediate,
            gated: self.gated,
            w13: self.w13.dequantize(&self.scheme)?,
            w2: self.w2.dequantize(&self.scheme)?,
            w13_bias: self.w13_bias.clone(),
            w2_bias: self.w2_bias.clone(),
        })
    }

    /// Bytes of one expert's stored weights and scales (both projections), the amount a
    /// kernel must read per expert hit: the numerator of the memory floor.
    pub fn bytes_per_expert(&self) -> usize {
        stored_bytes_per_expert(
            &self.scheme,
            self.w13_rows(),
            self.hidden,
            self.intermediate,
        )
    }
}

/// Bytes of one expert's checkpoint weights and scales under `scheme` (w13 of `w13_rows`
/// rows, hidden `h`, intermediate `i`): f16 group scales and packed zero points for
/// GPTQ/AWQ, one byte per e4m3 / e8m0 scale, f32 elsewhere.
pub fn stored_bytes_per_expert(scheme: &QuantScheme, w13_rows: usize, h: usize, i: usize) -> usize {
    let elems = w13_rows * h + h * i;
    let value_bits = elems * scheme.weight_bits();
    let scale_bytes = match *scheme {
        QuantScheme::Unquantized(_) => 0,
        QuantScheme::Fp8 { weight, .. } => {
            4 * (fp8::scales_per_expert(weight, w13_rows, h) + fp8::scales_per_expert(weight, h, i))
        }
        QuantScheme::Nvfp4 { .. } => elems / nvfp4::BLOCK + 8,
        QuantScheme::Mx { .. } => elems / mx::BLOCK,
        QuantScheme::IntWeightOnly {
            group, zero_point, ..
        } => {
            let groups = w13_rows * (h / group_size(group, h)) + h * (i / group_size(group, i));
            groups * (2 + usize::from(zero_point))
        }
        QuantScheme::W4A8 => elems / 128 + 4 * (w13_rows + h),
        QuantScheme::Int8W8A8 => 4 * (w13_rows + h),
    };
    value_bits / 8 + scale_bytes
}
