//! One file per producer's storage format: each reads one linear layer (one expert's
//! gate, up or down projection) into a one-expert `QuantTensor` in fleetmoe's layout.

mod float;
mod fp8;
mod gptq;
mod int;
mod mx;
mod nvfp4;

pub(crate) use mx::gpt_oss_blocks;

use super::config::QuantFormat;
use super::shards::{RawTensor, Shards};
use crate::error::Result;
use crate::quant::{
    ActScale, FloatDtype, Fp8Flavor, Fp8WeightScale, IntBits, IntGroup, MxAct, MxElem, QuantScheme,
    QuantTensor,
};

/// One projection of one expert, with its static input scale if the checkpoint has one.
pub(crate) struct Linear {
    pub t: QuantTensor,
    pub input_scale: Option<f32>,
}

/// The scheme a format loads into; `dtype` is the stored dtype of unquantized weights.
pub fn scheme_of(format: &QuantFormat, dtype: safetensors::Dtype) -> QuantScheme {
    let fp8 = |weight, act| QuantScheme::Fp8 {
        flavor: Fp8Flavor::E4M3Fn,
        weight,
        act,
    };
    match *format {
        QuantFormat::Unquantized => QuantScheme::Unquantized(if dtype == safetensors::Dtype::F16 {
            FloatDtype::F16
        } else {
            FloatDtype::Bf16
        }),
        QuantFormat::CtFp8 { weight, act } => fp8(weight, act),
        QuantFormat::ModeloptFp8 => fp8(Fp8WeightScale::PerTensor, ActScale::StaticPerTensor),
        QuantFormat::NativeFp8 { block: true, .. } => {
            fp8(Fp8WeightScale::Block128, ActScale::DynamicPerGroup128)
        }
        QuantFormat::NativeFp8 {
            static_input: true, ..
        } => fp8(Fp8WeightScale::PerTensor, ActScale::StaticPerTensor),
        QuantFormat::NativeFp8 { .. } => fp8(Fp8WeightScale::PerTensor, ActScale::DynamicPerTensor),
        QuantFormat::CtInt {
            bits,
            group,
            symmetric,
            act_order,
            ..
        } => QuantScheme::IntWeightOnly {
            bits,
            group,
            zero_point: !symmetric,
            act_order,
        },
        QuantFormat::CtW4A8 { .. } => QuantScheme::W4A8,
        QuantFormat::CtNvfp4 { w4a4 } => QuantScheme::Nvfp4 { w4a4 },
        QuantFormat::ModeloptNvfp4 => QuantScheme::Nvfp4 { w4a4: true },
        QuantFormat::Quark { elem, act } => QuantScheme::Mx { elem, act },
        QuantFormat::GptOssMxfp4 => QuantScheme::Mx {
            elem: MxElem::Fp4E2M1,
            act: MxAct::Bf16,
        },
        QuantFormat::Gptq {
            bits,
            group,
            desc_act,
            sym,
            ..
        } => QuantScheme::IntWeightOnly {
            bits,
            group,
            zero_point: !sym,
            act_order: desc_act,
        },
        QuantFormat::Awq { group } => QuantScheme::IntWeightOnly {
            bits: IntBits::Int4,
            group,
            zero_point: true,
            act_order: false,
        },
    }
}

/// The tensor that tells a layer's stored dtype / presence: the main weight's name.
pub fn weight_name(format: &QuantFormat, base: &str) -> String {
    match format {
        QuantFormat::CtInt { packed: true, .. }
        | QuantFormat::CtW4A8 { packed: true }
        | QuantFormat::CtNvfp4 { .. } => format!("{base}.weight_packed"),
        QuantFormat::Gptq { .. } | QuantFormat::Awq { .. } => format!("{base}.qweight"),
        _ => format!("{base}.weight"),
    }
}

/// Reads one linear layer `[rows, cols]` (out, in) stored under `base` (no `.weight`).
pub(crate) fn load_linear(
    format: &QuantFormat,
    scheme: &QuantScheme,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<Linear> {
    let data = match format {
        QuantFormat::Unquantized => float::load(scheme, shards, base, rows, cols)?,
        QuantFormat::CtFp8 { .. } | QuantFormat::ModeloptFp8 | QuantFormat::NativeFp8 { .. } => {
            fp8::load(format, scheme, shards, base, rows, cols)?
        }
        QuantFormat::CtNvfp4 { .. } | QuantFormat::ModeloptNvfp4 => {
            nvfp4::load(format, shards, base, rows, cols)?
        }
        QuantFormat::Quark { elem, .. } => mx::load(*elem, shards, base, rows, cols)?,
        QuantFormat::GptOssMxfp4 => {
            return Err(crate::Error::checkpoint(
                "",
                base,
                "GPT-OSS mxfp4 stores experts fused; per-expert linear layers are not expected",
            ))
        }
        QuantFormat::CtInt { packed, .. } | QuantFormat::CtW4A8 { packed } => {
            int::load(scheme, *packed, shards, base, rows, cols)?
        }
        QuantFormat::Gptq { .. } | QuantFormat::Awq { .. } => {
            gptq::load(format, scheme, shards, base, rows, cols)?
        }
    };
    let input_scale = input_scale(format, scheme, shards, base)?;
    Ok(Linear {
        t: QuantTensor {
            experts: 1,
            rows,
            cols,
            data,
        },
        input_scale,
    })
}

/// A scale read from the checkpoint: finite and positive, or an error naming the tensor
/// and the value (a zero, negative, NaN or infinite scale has no meaning and would only
/// surface later as NaN or garbage, hidden by a merge).
pub(crate) fn positive(t: &RawTensor, v: f32) -> Result<f32> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(crate::Error::checkpoint(
            &t.file,
            &t.name,
            format!("scale {v}: expected a finite positive number"),
        ))
    }
}

/// A scale stored as its reciprocal (compressed-tensors global scales, 448·6/amax): it
/// must be positive and finite, and so must the scale it stands for.
pub(crate) fn reciprocal(t: &RawTensor, v: f32) -> Result<f32> {
    let r = 1.0 / positive(t, v)?;
    if r.is_finite() && r > 0.0 {
        Ok(r)
    } else {
        Err(crate::Error::checkpoint(
            &t.file,
            &t.name,
            format!("global scale {v}: its reciprocal {r} is not a usable scale"),
        ))
    }
}

fn input_scale(
    format: &QuantFormat,
    scheme: &QuantScheme,
    shards: &Shards,
    base: &str,
) -> Result<Option<f32>> {
    // compressed-tensors NVFP4 stores the reciprocal convention: (448·6)/amax.
    let name = match format {
        QuantFormat::CtNvfp4 { .. } => format!("{base}.input_global_scale"),
        _ => format!("{base}.input_scale"),
    };
    if !scheme.needs_static_input_scales() {
        if shards.contains(&name) {
            return Err(crate::Error::checkpoint(
                shards.file_of(&name),
                &name,
                format!(
                    "a static input scale, but {} says activations are not statically scaled, so it would be ignored",
                    act_field(format)
                ),
            ));
        }
        return Ok(None);
    }
    let t = shards.get(&name)?;
    let v = t.scalar()?;
    Ok(Some(match format {
        QuantFormat::CtNvfp4 { .. } => reciprocal(&t, v)?,
        _ => positive(&t, v)?,
    }))
}

/// The config field that decides whether activations have a static scale.
fn act_field(format: &QuantFormat) -> &'static str {
    match format {
        QuantFormat::CtFp8 { .. } => "quantization_config input_activations.dynamic",
        QuantFormat::CtNvfp4 { .. } => {
            "quantization_config input_activations (absent: weight-only nvfp4-a16)"
        }
        QuantFormat::NativeFp8 { .. } => {
            "quantization_config.activation_scheme (\"dynamic\", or absent: the default)"
        }
        QuantFormat::Quark { .. } => "quantization_config global_quant_config.input_tensors",
        _ => "the quantization format (it has no activation scales)",
    }
}

/// Zero points read from `zname` that a symmetric setting would ignore must all be the
/// symmetric zero `2^(bits − 1)`; `why(bad, mid)` says which setting made them ignorable.
pub(crate) fn check_symmetric_zeros(
    shards: &Shards,
    zname: &str,
    zeros: &[u8],
    bits: usize,
    why: impl Fn(u8, u8) -> String,
) -> Result<()> {
    let mid = 1u8 << (bits - 1);
    match zeros.iter().find(|&&v| v != mid) {
        Some(&bad) => Err(crate::Error::checkpoint(
            shards.file_of(zname),
            zname,
            why(bad, mid),
        )),
        None => Ok(()),
    }
}

/// Integer scale groups along K for `cols`, checking that the group divides it.
pub(crate) fn groups_of(group: IntGroup, cols: usize, t: &str) -> Result<usize> {
    let g = crate::quant::group_size(group, cols);
    if g == 0 || cols % g != 0 {
        return Err(crate::Error::checkpoint(
            "",
            t,
            format!("group size {g} does not divide the input dimension {cols}"),
        ));
    }
    Ok(cols / g)
}

/// A float tensor of exactly `shape`, as f32.
pub(crate) fn floats(shards: &Shards, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = shards.get(name)?;
    t.expect_shape(shape)?;
    t.f32s()
}

/// A tensor of exactly `shape` and one of `dtypes`.
pub(crate) fn tensor(
    shards: &Shards,
    name: &str,
    shape: &[usize],
    dtypes: &[safetensors::Dtype],
) -> Result<RawTensor> {
    let t = shards.get(name)?;
    t.expect_dtype(dtypes)?;
    t.expect_shape(shape)?;
    Ok(t)
}
