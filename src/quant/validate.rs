//! Validating what a checkpoint loader (or a caller) put into an `ExpertWeights`: the data
//! variant against the scheme, every length, and every value a forward trusts — no NaN
//! codes, scales finite and positive, and no weight larger than `MAX_WEIGHT_MAGNITUDE`.

use super::activation::Stage;
use super::quantize::{check_dims, group_size};
use super::scheme::{Fp8Flavor, IntBits, MxElem, QuantScheme};
use super::weights::{ExpertWeights, InputScales, IntWeights, QuantTensor, WeightData};
use super::{fp8, int, mx, nvfp4};
use crate::error::{check_bounded, check_len, check_scale, checked_size, Error, Result};
use crate::formats::{MiniFloat, F8E4M3};

/// The largest weight or bias magnitude a layer accepts: 2^16. Real checkpoints stay
/// orders of magnitude below it (trained weights are O(1) and smaller; biases O(10)); beyond
/// it the layer's f32 arithmetic — gemm1, a gated activation that squares magnitudes, gemm2
/// — can overflow for ordinary activations, so a layer with larger weights would give
/// infinities rather than an answer (e8m0 scales of 2^120 on MXFP4, say). Quantized
/// weights are bounded per scale (scale × the format's largest code), never per element,
/// so validation reads each scale once.
pub const MAX_WEIGHT_MAGNITUDE: f32 = 65536.0;

/// Why a scale that is finite and positive is still refused.
const TOO_LARGE: &str = "a code would dequantize beyond MAX_WEIGHT_MAGNITUDE = 2^16";

/// Refuses `scale` when `scale · largest_code` exceeds the bound.
fn check_scale_bound(what: impl FnOnce() -> String, scale: f32, largest_code: f32) -> Result<()> {
    if scale * largest_code > MAX_WEIGHT_MAGNITUDE {
        return Err(Error::Scale {
            what: what(),
            value: scale,
            why: TOO_LARGE,
        });
    }
    Ok(())
}

/// Finite, positive and bounded: what every multiplying scale must be.
fn check_weight_scale(what: &str, scale: f32, largest_code: f32) -> Result<()> {
    check_scale(what, scale)?;
    check_scale_bound(|| what.to_string(), scale, largest_code)
}

/// The largest magnitude an MX element type holds.
fn mx_max(elem: MxElem) -> f32 {
    match elem {
        MxElem::Fp4E2M1 => 6.0,
        MxElem::Fp6E3M2 => 28.0,
        MxElem::Fp6E2M3 => 7.5,
    }
}

/// Whether `code` is a NaN in `flavor` (e4m3fn: S.1111.111; e4m3fnuz: the negative zero).
fn is_fp8_nan(flavor: Fp8Flavor, code: u8) -> bool {
    match flavor {
        Fp8Flavor::E4M3Fn => code & 0x7F == 0x7F,
        Fp8Flavor::E4M3Fnuz => code == 0x80,
    }
}

pub(super) fn mismatch(scheme: QuantScheme, data: &WeightData) -> Error {
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

impl QuantTensor {
    /// Checks that the data variant matches `scheme` and every length (sizes by checked
    /// arithmetic); reads no values, so it is cheap.
    pub fn validate_layout(&self, scheme: &QuantScheme, what: &str) -> Result<()> {
        check_dims(scheme, self.rows, self.cols, what)?;
        let (e, rows, cols) = (self.experts, self.rows, self.cols);
        let n = checked_size(what, &[e, rows, cols])?;
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
                )
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
                check_len(&format!("{what} global scales"), global_scales.len(), e)
            }
            (WeightData::Mx { packed, scales }, QuantScheme::Mx { elem, .. }) => {
                check_len(
                    &format!("{what} packed elements"),
                    packed.len(),
                    e * rows * mx::packed_len(elem, cols),
                )?;
                check_len(&format!("{what} e8m0 scales"), scales.len(), n / mx::BLOCK)
            }
            (
                WeightData::Int(iw),
                QuantScheme::IntWeightOnly { .. } | QuantScheme::W4A8 | QuantScheme::Int8W8A8,
            ) => int_layout(iw, *scheme, e, rows, cols, what),
            (data, scheme) => Err(mismatch(scheme, data)),
        }
    }

    /// Checks expert `e`'s values (after `validate_layout`): no NaN or infinite float
    /// weight, no fp8 NaN code, every scale finite, positive (NVFP4 block scales may be
    /// zero: an all-zero block) and bounded by `MAX_WEIGHT_MAGNITUDE`, every zero point and
    /// act-order group index in range.
    pub fn validate_expert(&self, scheme: &QuantScheme, e: usize, what: &str) -> Result<()> {
        if e >= self.experts {
            return Err(Error::ExpertId {
                id: e,
                num_experts: self.experts,
            });
        }
        let (rows, cols) = (self.rows, self.cols);
        let per = rows * cols;
        let name = |part: &str| format!("{what} of expert {e}: {part}");
        match (&self.data, *scheme) {
            (WeightData::Bf16(v), _) => {
                let vals: Vec<f32> = v[e * per..(e + 1) * per]
                    .iter()
                    .map(|x| x.to_f32())
                    .collect();
                check_bounded(
                    &name("bf16 weight"),
                    &vals,
                    MAX_WEIGHT_MAGNITUDE,
                    "a finite weight of magnitude at most 2^16",
                )
            }
            (WeightData::F16(v), _) => {
                let vals: Vec<f32> = v[e * per..(e + 1) * per]
                    .iter()
                    .map(|x| x.to_f32())
                    .collect();
                crate::error::check_finite(&name("f16 weight"), &vals)
            }
            (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { flavor, weight, .. }) => {
                let codes = &codes[e * per..(e + 1) * per];
                if let Some(i) = codes.iter().position(|&c| is_fp8_nan(flavor, c)) {
                    return Err(Error::Value {
                        what: name(&format!("fp8 code 0x{:02X} [{i}]", codes[i])),
                        value: f32::NAN,
                        expected: "a code that is not NaN (e4m3fn 0x7F/0xFF, e4m3fnuz 0x80)",
                    });
                }
                let ns = fp8::scales_per_expert(weight, rows, cols);
                scales[e * ns..(e + 1) * ns]
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, &s)| {
                        check_weight_scale(&name(&format!("weight scale [{i}]")), s, flavor.max())
                    })
            }
            (
                WeightData::Nvfp4 {
                    block_scales,
                    global_scales,
                    ..
                },
                _,
            ) => {
                let global = global_scales[e];
                check_scale(&name("global scale"), global)?;
                let nb = per / nvfp4::BLOCK;
                block_scales[e * nb..(e + 1) * nb]
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, &b)| {
                        let v = F8E4M3::from_bits(b).to_f32();
                        let what = || name(&format!("e4m3 block scale [{i}]"));
                        if v.is_nan() || v < 0.0 {
                            return Err(Error::Scale {
                                what: what(),
                                value: v,
                                why: if v.is_nan() { "NaN" } else { "negative" },
                            });
                        }
                        // The largest code of a block is e2m1's 6 · block · global.
                        check_scale_bound(what, v * global, 6.0)
                    })
            }
            (WeightData::Mx { scales, .. }, QuantScheme::Mx { elem, .. }) => {
                let nb = per / mx::BLOCK;
                scales[e * nb..(e + 1) * nb]
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, &s)| {
                        let what = || name(&format!("e8m0 scale [{i}]"));
                        if s == 0xFF {
                            return Err(Error::Scale {
                                what: what(),
                                value: f32::NAN,
                                why: "NaN",
                            });
                        }
                        check_scale_bound(what, ((s as i32 - 127) as f32).exp2(), mx_max(elem))
                    })
            }
            (WeightData::Int(iw), _) => int_expert(iw, e, rows, cols, &name),
            (data, scheme) => Err(mismatch(scheme, data)),
        }
    }

    /// `validate_layout` and `validate_expert` for every expert.
    pub fn validate(&self, scheme: &QuantScheme, what: &str) -> Result<()> {
        self.validate_layout(scheme, what)?;
        (0..self.experts).try_for_each(|e| self.validate_expert(scheme, e, what))
    }
}

/// The integer layout: bits and group as the scheme says, the optional parts present
/// exactly when the scheme has them, and every length.
fn int_layout(
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
    if iw.zeros.is_some() != zp {
        return Err(Error::Config(format!(
            "{what}: scheme {scheme} {} zero points",
            if zp { "needs" } else { "has no" }
        )));
    }
    if let Some(z) = &iw.zeros {
        check_len(&format!("{what} zero points"), z.len(), ng)?;
    }
    if iw.g_idx.is_some() != act_order {
        return Err(Error::Config(format!(
            "{what}: scheme {scheme} {} g_idx",
            if act_order { "needs" } else { "has no" }
        )));
    }
    if let Some(g) = &iw.g_idx {
        check_len(&format!("{what} g_idx"), g.len(), e * cols)?;
    }
    let wants_channel = scheme == QuantScheme::W4A8;
    match &iw.channel_scales {
        Some(cs) if wants_channel => {
            check_len(&format!("{what} channel scales"), cs.len(), e * rows)
        }
        None if !wants_channel => Ok(()),
        _ => Err(Error::Config(format!(
            "{what}: per-channel scales go with w4a8 only"
        ))),
    }
}

/// One expert's integer values: zero points and g_idx in range, channel scales finite
/// and positive, and each group's scale (times its channel scale) bounded by the largest
/// distance of a code from its zero point.
fn int_expert(
    iw: &IntWeights,
    e: usize,
    rows: usize,
    cols: usize,
    name: &dyn Fn(&str) -> String,
) -> Result<()> {
    let groups = cols / iw.group;
    let maxq = int::max_code(iw.bits);
    let range = (e * rows * groups)..((e + 1) * rows * groups);
    if let Some(z) = &iw.zeros {
        if let Some(i) = z[range.clone()].iter().position(|&z| z as i32 > maxq) {
            return Err(Error::Config(format!(
                "{}: zero point {} exceeds {maxq}",
                name(&format!("zero point [{i}]")),
                z[range.start + i]
            )));
        }
    }
    if let Some(g) = &iw.g_idx {
        if let Some(&bad) = g[e * cols..(e + 1) * cols]
            .iter()
            .find(|&&g| g as usize >= groups)
        {
            return Err(Error::Config(format!(
                "{}: g_idx entry {bad} is not a group (there are {groups})",
                name("g_idx")
            )));
        }
    }
    if let Some(cs) = &iw.channel_scales {
        cs[e * rows..(e + 1) * rows]
            .iter()
            .enumerate()
            .try_for_each(|(r, &s)| check_scale(&name(&format!("channel scale [{r}]")), s))?;
    }
    let mid = int::mid_code(iw.bits);
    for (i, g) in range.enumerate() {
        let what = || name(&format!("group scale [{i}]"));
        let s = iw.scales[g];
        check_scale(&what(), s)?;
        let zero = iw.zeros.as_ref().map_or(mid, |z| z[g] as i32);
        let largest = zero.max(maxq - zero) as f32;
        let channel = iw.channel_scales.as_ref().map_or(1.0, |cs| cs[g / groups]);
        check_scale_bound(what, s * channel, largest)?;
    }
    Ok(())
}

impl ExpertWeights {
    /// Checks the sizes (by checked arithmetic) and that both projections and the biases
    /// have the shapes they imply.
    pub(crate) fn validate_shapes(&self) -> Result<()> {
        let (e, h, i) = (self.num_experts, self.hidden, self.intermediate);
        let r = if self.gated {
            checked_size("w13 rows (2 × intermediate)", &[2, i])?
        } else {
            i
        };
        for (t, what, rows, cols) in [(&self.w13, "w13", r, h), (&self.w2, "w2", h, i)] {
            checked_size(what, &[e, rows, cols])?;
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

    /// Checks shapes, the data variant against the scheme, every value (codes, scales,
    /// biases finite and within `MAX_WEIGHT_MAGNITUDE`), and that static schemes have their
    /// input scales, finite and positive. Every consumer — the layer, the emulation, the
    /// backends' prepare, dequantization — calls it (or its per-expert part) first.
    pub fn validate(&self) -> Result<()> {
        self.validate_weights()?;
        match (self.scheme.needs_static_input_scales(), &self.input_scales) {
            (true, None) => Err(Error::Missing {
                what: format!("static input scales for scheme {}", self.scheme),
                why: "load them from the checkpoint or calibrate with fleetmoe::moe::calibrate"
                    .into(),
            }),
            (_, Some(s)) => self.validate_input_scales(s),
            (false, None) => Ok(()),
        }
    }

    /// Each stage has one scale or one per expert, every one finite and positive; only
    /// fp8 activations take differing per-expert scales (NVFP4 W4A4's kernels take one
    /// global scale per GEMM input).
    fn validate_input_scales(&self, s: &InputScales) -> Result<()> {
        for (proj, stage) in [("w13", Stage::W13), ("w2", Stage::W2)] {
            let v = s.stage(stage);
            if v.len() != 1 && v.len() != self.num_experts {
                return Err(Error::shape(
                    format!("{proj} input scales"),
                    format!("1 (per tensor) or {} (per expert)", self.num_experts),
                    v.len(),
                ));
            }
            v.iter().enumerate().try_for_each(|(e, &x)| match v.len() {
                1 => check_scale(&format!("{proj} input scale"), x),
                _ => check_scale(&format!("{proj} input scale of expert {e}"), x),
            })?;
            let one_per_tensor =
                self.scheme.needs_static_input_scales() && !self.scheme.per_expert_input_scales();
            if s.shared(stage).is_none() && one_per_tensor {
                return Err(Error::Config(format!(
                    "{proj} input scales differ across experts, but {} takes one per tensor \
                     (set_input_scales_per_expert reduces them to their maximum)",
                    self.scheme
                )));
            }
        }
        Ok(())
    }

    /// Shapes and lengths only, no values: what a consumer needs to index safely. For
    /// fault-injection tests that hand a kernel codes validation would refuse.
    pub fn validate_layouts(&self) -> Result<()> {
        self.validate_shapes()?;
        self.w13.validate_layout(&self.scheme, "w13")?;
        self.w2.validate_layout(&self.scheme, "w2")
    }

    /// `validate` without the input scales: everything dequantization reads.
    pub fn validate_weights(&self) -> Result<()> {
        self.validate_shapes()?;
        self.w13.validate(&self.scheme, "w13")?;
        self.w2.validate(&self.scheme, "w2")?;
        for (what, b) in [("w13 bias", &self.w13_bias), ("w2 bias", &self.w2_bias)] {
            if let Some(b) = b {
                check_bounded(
                    what,
                    b,
                    MAX_WEIGHT_MAGNITUDE,
                    "a finite bias of magnitude at most 2^16",
                )?;
            }
        }
        Ok(())
    }

    /// Sets static input scales from per-expert checkpoint values, each of which must be
    /// finite and positive (the error names the expert and projection). fp8 activations
    /// keep each expert's scale (one per tensor when they agree); NVFP4 W4A4, whose
    /// kernels take one global scale per GEMM input, reduces differing values to their
    /// maximum (never clipping an expert's calibrated range), with a warning, as vLLM does.
    pub fn set_input_scales_per_expert(&mut self, w13: &[f32], w2: &[f32]) -> Result<()> {
        check_len("per-expert w13 input scales", w13.len(), self.num_experts)?;
        check_len("per-expert w2 input scales", w2.len(), self.num_experts)?;
        let per_expert = self.scheme.per_expert_input_scales();
        let keep = |proj: &str, v: &[f32]| -> Result<Vec<f32>> {
            v.iter().enumerate().try_for_each(|(e, &s)| {
                check_scale(&format!("{proj} input scale of expert {e}"), s)
            })?;
            let max = v.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
            if v.iter().all(|&s| s == max) {
                Ok(vec![max])
            } else if per_expert {
                Ok(v.to_vec())
            } else {
                log::warn!("{proj} input scales differ across experts; using their maximum {max}");
                Ok(vec![max])
            }
        };
        self.input_scales = Some(InputScales {
            w13: keep("w13", w13)?,
            w2: keep("w2", w2)?,
        });
        Ok(())
    }
}
