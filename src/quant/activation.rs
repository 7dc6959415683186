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
    },
    /// int8, symmetric, dynamic per token.
    Int8PerToken,
    /// NVFP4 with a static global scale (`input_scale = amax / (448·6)`).
    Nvfp4 { input_scale: f32 },
    /// OCP MX with Quark's "even" shared scale per 32 elements.
    Mx(MxElem),
}

impl ActQuant {
    /// The rule `scheme` applies at `stage`; static schemes need `input_scales`.
    pub fn for_scheme(
        scheme: &QuantScheme,
        stage: Stage,
        input_scales: Option<InputScales>,
    ) -> Result<Self> {
        let static_scale = || -> Result<f32> {
            let s = input_scales.ok_or_else(|| Error::Missing {
                what: format!("static input scales for scheme {scheme}"),
                why: "load them from the checkpoint or calibrate with fleetmoe::moe::calibrate"
                    .into(),
            })?;
            Ok(match stage {
                Stage::W13 => s.w13,
                Stage::W2 => s.w2,
            })
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
            },
            QuantScheme::Fp8 { flavor, act, .. } => ActQuant::Fp8 {
                flavor,
                rule: act,
                static_scale: None,
            },
            QuantScheme::Nvfp4 { w4a4: false } => ActQuant::None,
            QuantScheme::Nvfp4 { w4a4: true } => ActQuant::Nvfp4 {
                input_scale: static_scale()?,
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
            },
            QuantScheme::W4A8 => ActQuant::Fp8 {
                flavor: Fp8Flavor::E4M3Fn,
                rule: ActScale::DynamicPerToken,
                static_scale: None,
            },
            QuantScheme::Int8W8A8 => ActQuant::Int8PerToken,
        })
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
            } => fp8_qdq(x, cols, flavor, rule, static_scale),
            ActQuant::Int8PerToken => {
                for row in x.chunks_mut(cols) {
                    let s = amax(row) / 127.0;
                    if s > 0.0 {
                        row.iter_mut()
                            .for_each(|v| *v = (*v / s).round_ties_even().clamp(-128.0, 127.0) * s);
                    }
                }
            }
            ActQuant::Nvfp4 { input_scale } => {
                if cols % nvfp4::BLOCK != 0 {
                    return Err(Error::GroupSize {
                        group: nvfp4::BLOCK,
                        dim: cols,
                        dim_name: "NVFP4 activation width".into(),
                    });
                }
                let global = 1.0 / input_scale;
                x.chunks_mut(nvfp4::BLOCK)
                    .for_each(|b| nvfp4_block_qdq(b, global));
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

fn fp8_qdq_slice(x: &mut [f32], flavor: Fp8Flavor, scale: f32) {
    let max = flavor.max();
    x.iter_mut()
        .for_each(|v| *v = fp8::round(flavor, (*v / scale).clamp(-max, max)) * scale);
}

/// Dynamic scales are amax / fp8 max over the rule's extent (a zero extent gets scale 1).
fn fp8_qdq(
    x: &mut [f32],
    cols: usize,
    flavor: Fp8Flavor,
    rule: ActScale,
    static_scale: Option<f32>,
) {
    match (rule, static_scale) {
        (ActScale::StaticPerTensor, Some(s)) => fp8_qdq_slice(x, flavor, s),
        (ActScale::StaticPerTensor, None) | (ActScale::DynamicPerTensor, _) => {
            let s = fp8::scale_for(flavor, amax(x));
            fp8_qdq_slice(x, flavor, s)
        }
        (ActScale::DynamicPerToken, _) => x.chunks_mut(cols).for_each(|row| {
            let s = fp8::scale_for(flavor, amax(row));
            fp8_qdq_slice(row, flavor, s)
        }),
        (ActScale::DynamicPerGroup128, _) => x.chunks_mut(cols).for_each(|row| {
            row.chunks_mut(fp8::BLOCK).for_each(|g| {
                let s = fp8::scale_for(flavor, amax(g));
                fp8_qdq_slice(g, flavor, s)
            })
        }),
    }
}

/// vLLM's reference NVFP4 activation quantize-dequantize for one 16-element block:
/// block scale = e4m3(global · amax / 6), values x · global / scale clamped to ±6 and
/// rounded to e2m1, dequantized as q · scale / global.
fn nvfp4_block_qdq(b: &mut [f32], global: f32) {
    let scale = F8E4M3::from_f32((global * amax(b) / 6.0).clamp(-448.0, 448.0)).to_f32();
    if scale == 0.0 || !scale.is_finite() {
        b.iter_mut()
            .for_each(|v| *v = if v.is_nan() { f32::NAN } else { 0.0 });
        return;
    }
    let step = scale / global;
    b.iter_mut()
        .for_each(|v| *v = F4E2M1::from_f32((*v / step).clamp(-6.0, 6.0)).to_f32() * step);
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
