//! Quantizing f32 experts into a scheme's checkpoint layout, dequantizing back, and
//! validating what a checkpoint loader (or a caller) put into an `ExpertWeights`.

use super::dense::DenseExperts;
use super::int::{self, IntSpec};
use super::scheme::{IntBits, IntGroup, QuantScheme};
use super::weights::{ExpertWeights, InputScales, IntWeights, QuantTensor, WeightData};
use super::{fp8, mx, nvfp4};
use crate::error::{check_group, check_len, check_scale, Error, Result};
use crate::formats::{MiniFloat, F8E4M3};

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
        check_len(what, w.len(), experts * rows * cols)?;
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

    /// Dequantizes expert `e` into `out` (`rows · cols` f32).
    pub fn dequantize_expert(&self, scheme: &QuantScheme, e: usize, out: &mut [f32]) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        let per = rows * cols;
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
            (WeightData::Int(iw), _) => int::dequantize(iw, e, rows, cols, out),
            (data, scheme) => return Err(mismatch(scheme, data)),
        }
        Ok(())
    }

    /// All experts dequantized, `[experts, rows, cols]`.
    pub fn dequantize(&self, scheme: &QuantScheme) -> Result<Vec<f32>> {
        let per = self.rows * self.cols;
        let mut out = vec![0f32; self.experts * per];
        for (e, chunk) in out.chunks_mut(per).enumerate() {
            self.dequantize_expert(scheme, e, chunk)?;
        }
        Ok(out)
    }

    /// Checks that the data variant matches `scheme`, every length, and every scale.
    pub fn validate(&self, scheme: &QuantScheme, what: &str) -> Result<()> {
        check_dims(scheme, self.rows, self.cols, what)?;
        let (e, rows, cols) = (self.experts, self.rows, self.cols);
        let n = e * rows * cols;
        match (&self.data, *scheme) {
            (WeightData::Bf16(v), QuantScheme::Unquantized(super::FloatDtype::Bf16)) => {
                check_len(what, v.len(), n)
            }
            (WeightData::F16(v), QuantScheme::Unquantized(super::FloatDtype::F16)) => {
                check_len(what, v.len(), n)
            }
            (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { weight, .. }) => {
                check_len(what, codes.len(), n)?;
                check_len(
                    &format!("{what} weight scales"),
                    scales.len(),
                    e * fp8::scales_per_expert(weight, rows, cols),
                )?;
                scales
                    .iter()
                    .try_for_each(|&s| check_scale(&format!("{what} weight scale"), s))
            }
            (
                WeightData::Nvfp4 {
                    packed,
                    block_scales,
                    global_scales,
                },
                QuantScheme::Nvfp4 { .. },
            ) => {
                check_len(&format!("{what} packed fp4"), packed.len(), n / 2)?;
                check_len(
                    &format!("{what} block scales"),
                    block_scales.len(),
                    n / nvfp4::BLOCK,
                )?;
                check_len(&format!("{what} global scales"), global_scales.len(), e)?;
                global_scales
                    .iter()
                    .try_for_each(|&s| check_scale(&format!("{what} global scale"), s))?;
                block_scales.iter().try_for_each(|&b| {
                    let v = F8E4M3::from_bits(b).to_f32();
                    if v.is_nan() || v < 0.0 {
                        Err(Error::Scale {
                            what: format!("{what} e4m3 block scale"),
                            value: v,
                            why: if v.is_nan() { "NaN" } else { "negative" },
                        })
                    } else {
                        Ok(())
                    }
                })
            }
            (WeightData::Mx { packed, scales }, QuantScheme::Mx { elem, .. }) => {
                check_len(
                    &format!("{what} packed elements"),
                    packed.len(),
                    e * rows * mx::packed_len(elem, cols),
                )?;
                check_len(&format!("{what} e8m0 scales"), scales.len(), n / mx::BLOCK)?;
                match scales.iter().find(|&&s| s == 0xFF) {
                    Some(_) => Err(Error::Scale {
                        what: format!("{what} e8m0 scale"),
                        value: f32::NAN,
                        why: "NaN",
                    }),
                    None => Ok(()),
                }
            }
            (
                WeightData::Int(iw),
                QuantScheme::IntWeightOnly { .. } | QuantScheme::W4A8 | QuantScheme::Int8W8A8,
            ) => validate_int(iw, *scheme, e, rows, cols, what),
            (data, scheme) => Err(mismatch(scheme, data)),
        }
    }
}

fn mismatch(scheme: QuantScheme, data: &WeightData) -> Error {
    let kind = match data {
        WeightData::Bf16(_) => "bf16",
        WeightData::F16(_) => "f16",
        WeightData::Fp8 { .. } => "fp8",
        WeightData::Nvfp4 { .. } => "nvfp4",
        WeightData::Mx { .. } => "mx",
        WeightData::Int(_) => "integer",
    };
    Error::Config(format!("scheme {scheme} cannot hold {kind} weight data"))
}

fn validate_int(
    iw: &IntWeights,
    scheme: QuantScheme,
    e: usize,
    rows: usize,
    cols: usize,
    what: &str,
) -> Result<()> {
    let (bits, group, zp, act_order) = match scheme {
        QuantScheme::IntWeightOnly {
            bits,
            group,
            zero_point,
            act_order,
        } => (bits, group_size(group, cols), zero_point, act_order),
        QuantScheme::W4A8 => (IntBits::Int4, 128, false, false),
        _ => (IntBits::Int8, cols, false, false),
    };
    if iw.bits != bits || iw.group != group {
        return Err(Error::Config(format!(
            "{what}: scheme {scheme} wants {}-bit codes in groups of {group}, data has {}-bit in groups of {}",
            bits.bits(),
            iw.bits.bits(),
            iw.group
        )));
    }
    let n = e * rows * cols;
    match bits {
        IntBits::Int4 => check_len(
            &format!("{what} packed int4 words"),
            iw.packed4.len(),
            n / 8,
        )?,
        IntBits::Int8 => check_len(&format!("{what} int8 codes"), iw.bytes.len(), n)?,
    }
    let ng = e * rows * (cols / group);
    check_len(&format!("{what} group scales"), iw.scales.len(), ng)?;
    iw.scales
        .iter()
        .try_for_each(|&s| check_scale(&format!("{what} group scale"), s))?;
    if iw.zeros.is_some() != zp {
        return Err(Error::Config(format!(
            "{what}: scheme {scheme} {} zero points",
            if zp { "needs" } else { "has no" }
        )));
    }
    if let Some(z) = &iw.zeros {
        check_len(&format!("{what} zero points"), z.len(), ng)?;
        if let Some(&bad) = z.iter().find(|&&z| z as i32 > int::max_code(bits)) {
            return Err(Error::Config(format!(
                "{what}: zero point {bad} exceeds {}",
                int::max_code(bits)
            )));
        }
    }
    if iw.g_idx.is_some() != act_order {
        return Err(Error::Config(format!(
            "{what}: scheme {scheme} {} g_idx",
            if act_order { "needs" } else { "has no" }
        )));
    }
    if let Some(g) = &iw.g_idx {
        check_len(&format!("{what} g_idx"), g.len(), e * cols)?;
        if let Some(&bad) = g.iter().find(|&&g| g as usize >= cols / group) {
            return Err(Error::Config(format!(
                "{what}: g_idx entry {bad} is not a group (there are {})",
                cols / group
            )));
        }
    }
    let wants_channel = scheme == QuantScheme::W4A8;
    match &iw.channel_scales {
        Some(cs) if wants_channel => {
            check_len(&format!("{what} channel scales"), cs.len(), e * rows)?;
            cs.iter()
                .try_for_each(|&s| check_scale(&format!("{what} channel scale"), s))
        }
        None if !wants_channel => Ok(()),
        _ => Err(Error::Config(format!(
            "{what}: per-channel scales go with w4a8 only"
        ))),
    }
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
fn check_dims(scheme: &QuantScheme, rows: usize, cols: usize, what: &str) -> Result<()> {
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
            2 * self.intermediate
        } else {
            self.intermediate
        }
    }

    /// Dequantizes expert `e`: (w13 `[rows13, H]`, w2 `[H, I]`).
    pub fn dequantize_expert(&self, e: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut w13 = vec![0f32; self.w13_rows() * self.hidden];
        let mut w2 = vec![0f32; self.hidden * self.intermediate];
        self.w13.dequantize_expert(&self.scheme, e, &mut w13)?;
        self.w2.dequantize_expert(&self.scheme, e, &mut w2)?;
        Ok((w13, w2))
    }

    /// Everything back in f32.
    pub fn dequantize(&self) -> Result<DenseExperts> {
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

    fn validate_shapes(&self) -> Result<()> {
        let (e, h, i, r) = (
            self.num_experts,
            self.hidden,
            self.intermediate,
            self.w13_rows(),
        );
        for (t, what, rows, cols) in [(&self.w13, "w13", r, h), (&self.w2, "w2", h, i)] {
            if (t.experts, t.rows, t.cols) != (e, rows, cols) {
                return Err(Error::shape(
                    what,
                    format!("[{e}, {rows}, {cols}]"),
                    format!("[{}, {}, {}]", t.experts, t.rows, t.cols),
                ));
            }
        }
        if let Some(b) = &self.w13_bias {
            check_len("w13 bias", b.len(), e * r)?;
        }
        if let Some(b) = &self.w2_bias {
            check_len("w2 bias", b.len(), e * h)?;
        }
        Ok(())
    }

    /// Checks shapes, the data variant against the scheme, every scale, and that static
    /// schemes have their input scales.
    pub fn validate(&self) -> Result<()> {
        self.validate_shapes()?;
        self.w13.validate(&self.scheme, "w13")?;
        self.w2.validate(&self.scheme, "w2")?;
        for (what, b) in [("w13 bias", &self.w13_bias), ("w2 bias", &self.w2_bias)] {
            if let Some(v) = b.as_ref().and_then(|b| b.iter().find(|x| !x.is_finite())) {
                return Err(Error::Config(format!("{what} holds {v}")));
            }
        }
        match (self.scheme.needs_static_input_scales(), self.input_scales) {
            (true, None) => Err(Error::Missing {
                what: format!("static input scales for scheme {}", self.scheme),
                why: "load them from the checkpoint or calibrate with fleetmoe::moe::calibrate"
                    .into(),
            }),
            (_, Some(s)) => {
                check_scale("w13 input scale", s.w13)?;
                check_scale("w2 input scale", s.w2)
            }
            (false, None) => Ok(()),
        }
    }

    /// Sets static input scales from per-expert checkpoint values. Kernels take one scale
    /// per tensor, so differing values are reduced to their maximum (never clipping an
    /// expert's calibrated range), with a warning, as vLLM does.
    pub fn set_input_scales_per_expert(&mut self, w13: &[f32], w2: &[f32]) -> Result<()> {
        check_len("per-expert w13 input scales", w13.len(), self.num_experts)?;
        check_len("per-expert w2 input scales", w2.len(), self.num_experts)?;
        let reduce = |what: &str, v: &[f32]| -> Result<f32> {
            v.iter().try_for_each(|&s| check_scale(what, s))?;
            let max = v.iter().fold(0f32, |m, &s| m.max(s));
            if v.iter().any(|&s| s != max) {
                log::warn!("{what} differ across experts; using their maximum {max}");
            }
            Ok(max)
        };
        self.input_scales = Some(InputScales {
            w13: reduce("w13 input scales", w13)?,
            w2: reduce("w2 input scales", w2)?,
        });
        Ok(())
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
