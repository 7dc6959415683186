//! `quantization_config` (and ModelOpt's `hf_quant_config.json`) into a [`QuantFormat`].
//! Every field that changes how tensors are read is checked: present and understood, or
//! an error naming it; absent, the producer's documented default (cited at each use).

use super::config::QuantFormat;
use super::ct_config::parse_ct_targets;
use super::fields::Fields;
use crate::error::Result;
use crate::quant::{IntBits, IntGroup, MxAct, MxElem};
use serde_json::json;

const GPTQ: &str = "transformers GPTQConfig";
const AWQ: &str = "transformers AwqConfig";
const FP8: &str = "transformers FineGrainedFP8Config / vLLM Fp8Config";
const MODELOPT: &str = "ModelOpt NVFP4 block size";
const OCP_MX: &str = "OCP MX block size";

const METHODS: &[&str] = &[
    "compressed-tensors",
    "modelopt",
    "quark",
    "mxfp4",
    "fp8",
    "gptq",
    "awq",
];

/// Parses a `quantization_config` object.
pub(crate) fn parse_quant(q: &Fields) -> Result<QuantFormat> {
    let method = q
        .string("quant_method")?
        .ok_or_else(|| q.err("quant_method", "missing"))?;
    match method {
        "compressed-tensors" => parse_ct_targets(q).map(|(f, _)| f),
        "modelopt" => parse_modelopt(q),
        "quark" => parse_quark(q),
        // GPT-OSS `Mxfp4Config`: nothing in it changes how the blocks are read.
        "mxfp4" => Ok(QuantFormat::GptOssMxfp4),
        "fp8" => parse_fp8(q),
        "gptq" => parse_gptq(q),
        "awq" => parse_awq(q),
        other => Err(q.err(
            "quant_method",
            format!(
                "unknown quant_method '{other}' (known: {})",
                METHODS.join(", ")
            ),
        )),
    }
}

/// ModelOpt `quant_algo` FP8 or NVFP4 (group 16).
pub(crate) fn parse_modelopt(q: &Fields) -> Result<QuantFormat> {
    let algo = q
        .string("quant_algo")?
        .ok_or_else(|| q.err("quant_algo", "missing (known: FP8, NVFP4)"))?;
    match algo {
        "FP8" => Ok(QuantFormat::ModeloptFp8),
        "NVFP4" => {
            let g = q.count_or("group_size", 16, MODELOPT)?;
            if g != 16 {
                return Err(q.err("group_size", format!("NVFP4 group size {g}, expected 16")));
            }
            Ok(QuantFormat::ModeloptNvfp4)
        }
        other => Err(q.err(
            "quant_algo",
            format!("ModelOpt algorithm '{other}' is not supported (known: FP8, NVFP4)"),
        )),
    }
}

pub(super) fn int_bits(q: &Fields, key: &str, b: usize) -> Result<IntBits> {
    match b {
        4 => Ok(IntBits::Int4),
        8 => Ok(IntBits::Int8),
        _ => Err(q.err(key, format!("{b}-bit integers are not supported (4, 8)"))),
    }
}

/// GPTQ / AWQ `group_size`: -1 is per channel, a positive size groups K.
fn gptq_group(q: &Fields, source: &'static str) -> Result<IntGroup> {
    match q.int_or("group_size", 128, source)? {
        -1 => Ok(IntGroup::Channel),
        n if n > 0 => Ok(IntGroup::Size(n as usize)),
        n => Err(q.err(
            "group_size",
            format!("{n}, expected -1 (per channel) or a positive group size"),
        )),
    }
}

/// transformers `GPTQConfig`: `bits` has no default; group_size 128, desc_act false,
/// sym true; `checkpoint_format` "gptq" (zero points stored minus one).
fn parse_gptq(q: &Fields) -> Result<QuantFormat> {
    let bits = q.need_count(&["bits"])?;
    let bits = int_bits(q, "bits", bits)?;
    let group = gptq_group(q, GPTQ)?;
    let desc_act = q.bool_or("desc_act", false, GPTQ)?;
    let sym = q.bool_or("sym", true, GPTQ)?;
    let fmt = q.choice_or("checkpoint_format", &["gptq", "gptq_v2"], "gptq", GPTQ)?;
    Ok(QuantFormat::Gptq {
        bits,
        group,
        desc_act,
        sym,
        zeros_minus_one: fmt == "gptq",
    })
}

/// transformers `AwqConfig`: bits 4, group_size 128, zero_point true, version "gemm".
fn parse_awq(q: &Fields) -> Result<QuantFormat> {
    let bits = q.count_or("bits", 4, AWQ)?;
    if bits != 4 {
        return Err(q.err("bits", format!("{bits}: AWQ is read for 4 bits only")));
    }
    let group = gptq_group(q, AWQ)?;
    if !q.bool_or("zero_point", true, AWQ)? {
        return Err(q.err(
            "zero_point",
            "false: AWQ without zero points is not supported",
        ));
    }
    q.choice_or("version", &["gemm"], "gemm", AWQ)?;
    Ok(QuantFormat::Awq { group })
}

/// `quant_method: fp8`: DeepSeek-V3's 128×128 blocks, or AutoFP8's per-tensor scales
/// when `weight_block_size` is absent (vLLM `Fp8Config`'s reading).
fn parse_fp8(q: &Fields) -> Result<QuantFormat> {
    let scheme = q.choice_or("activation_scheme", &["dynamic", "static"], "dynamic", FP8)?;
    q.choice_or("fmt", &["e4m3"], "e4m3", FP8)?;
    // How the scales are held: f32 values, or UE8M0 exponents (DeepSeek-V3.1 / V4, which
    // ships them as F8_E8M0 or as f32 powers of two); the stored dtype says which.
    q.choice_or("scale_fmt", &["float", "ue8m0"], "float", FP8)?;
    let block = match q.get("weight_block_size") {
        None => {
            q.note("weight_block_size", "none: per-tensor", "vLLM Fp8Config");
            false
        }
        Some(b) if b == &json!([128, 128]) => true,
        Some(b) => {
            return Err(q.err(
                "weight_block_size",
                format!("{b} is not supported (only [128, 128])"),
            ))
        }
    };
    let static_input = scheme == "static";
    if block && static_input {
        return Err(q.err(
            "activation_scheme",
            "static activations with 128×128 weight blocks are not supported (vLLM refuses them too)",
        ));
    }
    Ok(QuantFormat::NativeFp8 {
        block,
        static_input,
    })
}

const QUARK_DTYPES: &[&str] = &[
    "int8", "uint8", "int4", "uint4", "bfloat16", "float16", "fp8_e4m3", "fp8_e5m2", "fp6_e3m2",
    "fp6_e2m3", "fp4", "mx", "mx6", "mx9", "bfp16",
];

/// AMD Quark OCP MX: weights fp4 / fp6 per group of 32 with e8m0 scales; activations
/// none, static fp8 per tensor, or MX in the weights' type.
fn parse_quark(q: &Fields) -> Result<QuantFormat> {
    let g = q
        .child("global_quant_config")?
        .ok_or_else(|| q.err("global_quant_config", "missing"))?;
    for k in ["layer_quant_config", "layer_type_quant_config"] {
        if let Some(v) = q.get(k) {
            if v.as_object().is_none_or(|o| !o.is_empty()) {
                return Err(q.err(k, "per-layer quantization overrides are not supported"));
            }
        }
    }
    let w = g
        .child("weight")?
        .ok_or_else(|| g.err("weight", "missing"))?;
    let wd = w
        .string("dtype")?
        .ok_or_else(|| w.err("dtype", "missing"))?;
    w.choice_or("dtype", QUARK_DTYPES, "fp4", "Quark")?;
    let elem = match wd {
        "fp4" => MxElem::Fp4E2M1,
        "fp6_e3m2" => MxElem::Fp6E3M2,
        "fp6_e2m3" => MxElem::Fp6E2M3,
        other => {
            return Err(w.err(
                "dtype",
                format!("'{other}' is not a supported Quark weight type (fp4, fp6_e3m2, fp6_e2m3)"),
            ))
        }
    };
    let gs = w.count_or("group_size", 32, OCP_MX)?;
    if gs != 32 {
        return Err(w.err("group_size", format!("{gs}, OCP MX needs 32")));
    }
    if let Some(s) = w.string("qscheme")? {
        if s != "per_group" {
            return Err(w.err("qscheme", format!("'{s}', OCP MX weights are per_group")));
        }
    }
    if let Some(s) = w.string("scale_format")? {
        if s != "e8m0" {
            return Err(w.err("scale_format", format!("'{s}', OCP MX scales are e8m0")));
        }
    }
    if g.get("output_tensors").is_some() {
        return Err(g.err("output_tensors", "output quantization is not supported"));
    }
    let act = match g.child("input_tensors")? {
        None => MxAct::Bf16,
        Some(i) => {
            let d = i
                .string("dtype")?
                .ok_or_else(|| i.err("dtype", "missing"))?;
            i.choice_or("dtype", QUARK_DTYPES, "fp4", "Quark")?;
            if d == "fp8_e4m3" {
                if i.bool_or("is_dynamic", false, "Quark QuantizationSpec")? {
                    return Err(i.err(
                        "is_dynamic",
                        "true: dynamic fp8 activations with MX weights are not supported (static per tensor)",
                    ));
                }
                MxAct::Fp8Static
            } else if d == wd {
                MxAct::Mx
            } else {
                return Err(i.err(
                    "dtype",
                    format!("'{d}' activations with {wd} weights are not supported (none, fp8_e4m3, {wd})"),
                ));
            }
        }
    };
    Ok(QuantFormat::Quark { elem, act })
}
