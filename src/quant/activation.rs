//! Activation quantize-dequantize: what each scheme does to the activations entering a
//! GEMM, applied in f32 so emulation sees exactly the values a native kernel multiplies.

use super::scheme::{ActScale, FloatDtype, Fp8Flavor, MxAct, MxElem, QuantScheme};
use super::weights::InputScales;
use super::{fp8, mx, nvfp4};
use crate::error::{Error, Result};
use crate::formats::{MiniFloat, F4E2M1, F8E4M3};

/// Which GEMM the activations feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Hidden states into w13.
    W13,
    /// Activation output into w2.
    W2,
}

/// Whose rounding rules the fp8 and NVFP4 activation quantize-dequantize follows.
///
/// `Producer` (the default) is the rule of the format's producer and of fleetmoe's native
/// kernels, so the emulation and every native path round at the same points. `Vllm`
/// reproduces vLLM 0.33's own rules, for comparing against a vLLM run; no native kernel
/// computes it, so it is an emulation setting. The differences, each small and each at an
/// edge, are listed in the README's numerics notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerics {
    /// fp8 dynamic: `scale = max(amax, 1e-12) / fp8_max`, values divided by it (what
    /// `kernels-cuda/quant.cu` and `kernels-hip/quant.hip` compute), fp8_max 448 for
    /// e4m3fn and 240 for e4m3fnuz (the format's largest value, as AMD Quark uses).
    /// NVFP4: compressed-tensors' fake quantization (see `nvfp4_block_qdq`).
    #[default]
    Producer,
    /// vLLM's `QuantFP8.forward_native` (`input_quant_fp8.py`): `scale = max(amax /
    /// fp8_max, 1 / (fp8_max · 512))`; per-tensor, per-token and static scales multiply by
    /// `1 / scale`, 128-groups divide; fp8_max is 224 on e4m3fnuz (`get_fp8_min_max`).
    /// NVFP4: `ref_nvfp4_quant` (`nvfp4_emulation_utils.py`), which multiplies by
    /// reciprocals.
    Vllm,
}

/// The quantize-dequantize one GEMM input gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActQuant {
    /// Kept in the model's float type (values were already rounded to it).
    None,
    /// fp8 e4m3 with a dynamic (per tensor / token / 128-group) or static scale.
    Fp8 {
        flavor: Fp8Flavor,
        rule: ActScale,
        static_scale: Option<f32>,
        numerics: Numerics,
    },
    /// int8, symmetric, dynamic per token.
    Int8PerToken,
    /// NVFP4 with a static global scale (`input_scale = amax / (448·6)`).
    Nvfp4 {
        input_scale: f32,
        numerics: Numerics,
    },
    /// OCP MX with Quark's "even" shared scale per 32 elements.
    Mx(MxElem),
}

impl ActQuant {
    /// The rule `scheme` applies at `stage`; static schemes need `input_scales`, and one
    /// that differs per expert there needs `StageQuant` instead.
    pub fn for_scheme(
        scheme: &QuantScheme,
        stage: Stage,
        input_scales: Option<&InputScales>,
    ) -> Result<Self> {
        if let Some(s) = input_scales.filter(|s| s.shared(stage).is_none()) {
            if scheme.needs_static_input_scales() {
                return Err(Error::Config(format!(
                    "{scheme}'s {stage:?} input scales differ across {} experts: take the \
                     rule per expert (StageQuant)",
                    s.stage(stage).len()
                )));
            }
        }
        Self::for_expert(scheme, stage, input_scales, 0)
    }

    /// The rule `scheme` applies at `stage` to the inputs of `expert`.
    pub fn for_expert(
        scheme: &QuantScheme,
        stage: Stage,
        input_scales: Option<&InputScales>,
        expert: usize,
    ) -> Result<Self> {
        let static_scale = || -> Result<f32> {
            let s = input_scales.ok_or_else(|| Error::Missing {
                what: format!("static input scales for scheme {scheme}"),
                why: "load them from the checkpoint or calibrate with fleetmoe::moe::calibrate"
                    .into(),
            })?;
            Ok(s.of(stage, expert))
        };
        Ok(match *scheme {
            QuantScheme::Unquantized(_) | QuantScheme::IntWeightOnly { .. } => ActQuant::None,
            QuantScheme::Fp8 {
                flavor,
                act: ActScale::StaticPerTensor,
                ..
            } => ActQuant::Fp8 {
                flavor,
                rule: ActScale::StaticPerTensor,
                static_scale: Some(static_scale()?),
                numerics: Numerics::Producer,
            },
            QuantScheme::Fp8 { flavor, act, .. } => ActQuant::Fp8 {
                flavor,
                rule: act,
                static_scale: None,
                numerics: Numerics::Producer,
            },
            QuantScheme::Nvfp4 { w4a4: false } => ActQuant::None,
            QuantScheme::Nvfp4 { w4a4: true } => ActQuant::Nvfp4 {
                input_scale: static_scale()?,
                numerics: Numerics::Producer,
            },
            QuantScheme::Mx {
                act: MxAct::Bf16, ..
            } => ActQuant::None,
            QuantScheme::Mx {
                act: MxAct::Mx,
                elem,
            } => ActQuant::Mx(elem),
            QuantScheme::Mx {
                act: MxAct::Fp8Static,
                ..
            } => ActQuant::Fp8 {
                flavor: Fp8Flavor::E4M3Fn,
                rule: ActScale::StaticPerTensor,
                static_scale: Some(static_scale()?),
                numerics: Numerics::Producer,
            },
            QuantScheme::W4A8 => ActQuant::Fp8 {
                flavor: Fp8Flavor::E4M3Fn,
                rule: ActScale::DynamicPerToken,
                static_scale: None,
                numerics: Numerics::Producer,
            },
            QuantScheme::Int8W8A8 => ActQuant::Int8PerToken,
        })
    }

    /// The same quantize-dequantize under `numerics` (only fp8 and NVFP4 rules differ).
    pub fn with_numerics(self, numerics: Numerics) -> Self {
        match self {
            ActQuant::Fp8 {
                flavor,
                rule,
                static_scale,
                ..
            } => ActQuant::Fp8 {
                flavor,
                rule,
                static_scale,
                numerics,
            },
            ActQuant::Nvfp4 { input_scale, .. } => ActQuant::Nvfp4 {
                input_scale,
                numerics,
            },
            other => other,
        }
    }

    /// The scale a static scheme should store, given the calibrated amax of a GEMM input.
    pub fn static_scale_for(scheme: &QuantScheme, amax: f32) -> f32 {
        let range = match scheme {
            QuantScheme::Nvfp4 { .. } => nvfp4::RANGE,
            s => s.fp8_flavor().unwrap_or(Fp8Flavor::E4M3Fn).max(),
        };
        if amax > 0.0 && amax.is_finite() {
            amax / range
        } else {
            1.0
        }
    }

    /// Quantizes and dequantizes `x` (`rows × cols`, row-major) in place.
    pub fn apply(&self, x: &mut [f32], cols: usize) -> Result<()> {
        if cols == 0 || x.len() % cols != 0 {
            return Err(Error::shape(
                "activations",
                format!("a multiple of {cols} elements"),
                x.len(),
            ));
        }
        match *self {
            ActQuant::None => {}
            ActQuant::Fp8 {
                flavor,
                rule,
                static_scale,
                numerics,
            } => fp8_qdq(x, cols, Fp8Rule::new(flavor, numerics), rule, static_scale),
            ActQuant::Int8PerToken => {
                for row in x.chunks_mut(cols) {
                    let s = amax(row) / 127.0;
                    if s > 0.0 {
                        row.iter_mut()
                            .for_each(|v| *v = (*v / s).round_ties_even().clamp(-128.0, 127.0) * s);
                    }
                }
            }
            ActQuant::Nvfp4 {
                input_scale,
                numerics,
            } => {
                if cols % nvfp4::BLOCK != 0 {
                    return Err(Error::GroupSize {
                        group: nvfp4::BLOCK,
                        dim: cols,
                        dim_name: "NVFP4 activation width".into(),
                    });
                }
                let global = 1.0 / input_scale;
                x.chunks_mut(nvfp4::BLOCK).for_each(|b| match numerics {
                    Numerics::Producer => nvfp4_block_qdq(b, global),
                    Numerics::Vllm => nvfp4_block_qdq_vllm(b, global),
                });
            }
            ActQuant::Mx(elem) => {
                if cols % mx::BLOCK != 0 {
                    return Err(Error::GroupSize {
                        group: mx::BLOCK,
                        dim: cols,
                        dim_name: "MX activation width".into(),
                    });
                }
                x.chunks_mut(mx::BLOCK).for_each(|b| mx_block_qdq(b, elem));
            }
        }
        Ok(())
    }
}

/// The quantize-dequantize of one GEMM input, for every expert: one rule for all, or
/// (fp8 static scales calibrated per expert) one rule per expert.
#[derive(Debug, Clone, PartialEq)]
pub struct StageQuant(Vec<ActQuant>);

impl StageQuant {
    /// Inputs kept as they are.
    pub fn none() -> Self {
        StageQuant(vec![ActQuant::None])
    }

    /// What `scheme` does at `stage`, per expert where its static scales differ.
    pub fn for_scheme(
        scheme: &QuantScheme,
        stage: Stage,
        input_scales: Option<&InputScales>,
    ) -> Result<Self> {
        match input_scales.filter(|s| s.shared(stage).is_none()) {
            Some(s) if scheme.needs_static_input_scales() => (0..s.stage(stage).len())
                .map(|e| ActQuant::for_expert(scheme, stage, Some(s), e))
                .collect::<Result<Vec<_>>>()
                .map(StageQuant),
            _ => Ok(StageQuant(vec![ActQuant::for_scheme(
                scheme,
                stage,
                input_scales,
            )?])),
        }
    }

    /// The same rules under `numerics`.
    pub fn with_numerics(self, numerics: Numerics) -> Self {
        StageQuant(
            self.0
                .into_iter()
                .map(|a| a.with_numerics(numerics))
                .collect(),
        )
    }

    /// The one rule every expert shares, if they do.
    pub fn uniform(&self) -> Option<ActQuant> {
        match self.0.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The rule of `expert`.
    pub fn of(&self, expert: usize) -> ActQuant {
        match self.0.as_slice() {
            [one] => *one,
            v => v.get(expert).copied().unwrap_or(ActQuant::None),
        }
    }

    /// Quantizes and dequantizes `x` (`rows × cols`) in place, row `r` by the rule of
    /// `experts[r]`. One shared rule covers the whole tensor at once (so a dynamic
    /// per-tensor scale spans every row) and reads no expert.
    pub fn apply(&self, x: &mut [f32], cols: usize, experts: &[usize]) -> Result<()> {
        if let Some(one) = self.uniform() {
            return one.apply(x, cols);
        }
        if cols == 0 || x.len() != experts.len() * cols {
            return Err(Error::shape(
                "activations",
                format!("{} rows of {cols}", experts.len()),
                x.len(),
            ));
        }
        for (row, &e) in x.chunks_mut(cols).zip(experts) {
            if e >= self.0.len() {
                return Err(Error::Config(format!(
                    "activation row of expert {e}, which has no input scale ({} experts)",
                    self.0.len()
                )));
            }
            self.0[e].apply(row, cols)?;
        }
        Ok(())
    }
}

/// Rounds every value to the scheme's model dtype (bf16 unless the scheme is f16).
pub fn round_to_model_dtype(scheme: &QuantScheme, x: &mut [f32]) {
    match scheme {
        QuantScheme::Unquantized(FloatDtype::F16) => x
            .iter_mut()
            .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
        _ => x
            .iter_mut()
            .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
    }
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(
        0f32,
        |m, v| if v.is_nan() { f32::NAN } else { m.max(v.abs()) },
    )
}

/// One fp8 activation rounding rule: the format, its clamp, and how scales are found
/// and applied.
#[derive(Debug, Clone, Copy)]
struct Fp8Rule {
    flavor: Fp8Flavor,
    /// Clamp of `x / scale`, and the divisor of a dynamic scale.
    max: f32,
    numerics: Numerics,
}

impl Fp8Rule {
    fn new(flavor: Fp8Flavor, numerics: Numerics) -> Self {
        let max = match (numerics, flavor) {
            // vLLM: "Using the default value (240.0) from pytorch will cause accuracy
            // issue on dynamic quantization models on ROCm" (`get_fp8_min_max`).
            (Numerics::Vllm, Fp8Flavor::E4M3Fnuz) => 224.0,
            _ => flavor.max(),
        };
        Fp8Rule {
            flavor,
            max,
            numerics,
        }
    }

    /// The dynamic scale of an extent whose amax is `amax`.
    fn dynamic_scale(&self, amax: f32) -> f32 {
        match self.numerics {
            Numerics::Producer => fp8::dynamic_scale(self.max, amax),
            // `_FP8_MIN_SCALING_FACTOR = 1.0 / (_FP8_MAX * 512.0)`; NaN amax stays NaN.
            Numerics::Vllm => {
                let s = amax / self.max;
                if s < 1.0 / (self.max * 512.0) {
                    1.0 / (self.max * 512.0)
                } else {
                    s
                }
            }
        }
    }

    /// Quantize-dequantize with `scale`; `reciprocal` multiplies by `1 / scale` instead
    /// of dividing (vLLM's per-tensor and per-token paths).
    fn qdq(&self, x: &mut [f32], scale: f32, reciprocal: bool) {
        let (max, flavor) = (self.max, self.flavor);
        let inv = 1.0 / scale;
        x.iter_mut().for_each(|v| {
            let q = if reciprocal { *v * inv } else { *v / scale };
            *v = fp8::round(flavor, q.clamp(-max, max)) * scale
        });
    }
}

/// Dynamic scales are taken over the rule's extent (whole tensor, token row, or 128
/// columns of a row); static scales come from the checkpoint.
fn fp8_qdq(x: &mut [f32], cols: usize, r: Fp8Rule, rule: ActScale, static_scale: Option<f32>) {
    let reciprocal = r.numerics == Numerics::Vllm;
    match (rule, static_scale) {
        (ActScale::StaticPerTensor, Some(s)) => r.qdq(x, s, reciprocal),
        (ActScale::StaticPerTensor, None) | (ActScale::DynamicPerTensor, _) => {
            let s = r.dynamic_scale(amax(x));
            r.qdq(x, s, reciprocal)
        }
        (ActScale::DynamicPerToken, _) => x.chunks_mut(cols).for_each(|row| {
            let s = r.dynamic_scale(amax(row));
            r.qdq(row, s, reciprocal)
        }),
        // vLLM's `_quantize_group_native` divides.
        (ActScale::DynamicPerGroup128, _) => x.chunks_mut(cols).for_each(|row| {
            row.chunks_mut(fp8::BLOCK).for_each(|g| {
                let s = r.dynamic_scale(amax(g));
                r.qdq(g, s, false)
            })
        }),
    }
}

/// NVFP4 activation quantize-dequantize of one 16-element block, as compressed-tensors
/// 0.20 fake-quantizes (`calculate_qparams`, `_quantize_dequantize`): block scale
/// `e4m3(clamp(global · (amax / 6), ±448))`, a zero scale replaced by e4m3's eps 0.125,
/// step `scale / global`, values `x / step` clamped to ±6 and rounded to e2m1 with ties
/// to even, the sign kept (`torch.sign(x) · |q|`, so an underflowing block gives ±0).
fn nvfp4_block_qdq(b: &mut [f32], global: f32) {
    let scale = F8E4M3::from_f32((global * (amax(b) / 6.0)).clamp(-448.0, 448.0)).to_f32();
    let scale = if scale == 0.0 { 0.125 } else { scale };
    let step = scale / global;
    b.iter_mut()
        .for_each(|v| *v = F4E2M1::from_f32((*v / step).clamp(-6.0, 6.0)).to_f32() * step);
}

/// vLLM's `ref_nvfp4_quant` for one block: scale `e4m3(global · (amax · (1/6)))`, values
/// multiplied by `1 / (scale · (1 / global))` (`get_reciprocal`, which maps 0 to 0), so
/// exact ties can land on the other e2m1 neighbour; dequantized as `q · (scale / global)`.
fn nvfp4_block_qdq_vllm(b: &mut [f32], global: f32) {
    let recip = |x: f32| if x == 0.0 { 0.0 } else { 1.0 / x };
    let scale = F8E4M3::from_f32((global * (amax(b) * (1.0 / 6.0))).clamp(-448.0, 448.0)).to_f32();
    let mul = recip(scale * recip(global));
    let step = scale / global;
    b.iter_mut()
        .for_each(|v| *v = F4E2M1::from_f32((*v * mul).clamp(-6.0, 6.0)).to_f32() * step);
}

fn mx_block_qdq(b: &mut [f32], elem: MxElem) {
    match mx::shared_exponent(amax(b), mx::ScaleElem::Mx(elem)) {
        None => b.iter_mut().for_each(|v| *v = f32::NAN),
        Some(e) => {
            let scale = (e as f32).exp2();
            b.iter_mut()
                .for_each(|v| *v = mx::decode(elem, mx::encode(elem, *v / scale)) * scale)
        }
    }
}
