//! compressed-tensors' `quantization_config`: `QuantizationArgs` with their defaults, one
//! format per config group (`float-quantized` fp8, `nvfp4-pack-quantized`, int
//! `pack-quantized` / `int-quantized`, W4A8), and the groups' `targets` and `ignore`.

use super::config::QuantFormat;
use super::fields::Fields;
use super::quant_config::int_bits;
use super::targets::QuantTargets;
use crate::error::Result;
use crate::quant::{ActScale, Fp8WeightScale, IntGroup};
use serde_json::{json, Value};

const CT: &str = "compressed-tensors QuantizationArgs";

const CT_FORMATS: &[&str] = &[
    "dense",
    "naive-quantized",
    "float-quantized",
    "int-quantized",
    "pack-quantized",
    "nvfp4-pack-quantized",
    "marlin-24",
    "sparse-bitmask",
    "mixed-precision",
];
const CT_STRATEGIES: &[&str] = &[
    "tensor",
    "channel",
    "group",
    "block",
    "token",
    "tensor_group",
];

/// One compressed-tensors `QuantizationArgs` (weights or activations), with its defaults:
/// num_bits 8, type "int", symmetric true, dynamic false, actorder none, and a strategy
/// inferred from group_size (none → tensor, positive → group, -1 → channel).
struct CtArgs {
    bits: usize,
    float: bool,
    symmetric: bool,
    strategy: String,
    group_size: Option<i64>,
    /// `false`, `true` or `"local"`.
    dynamic: Value,
    /// actorder "group": columns map to groups through `g_idx`.
    group_order: bool,
}

fn ct_args(a: &Fields) -> Result<CtArgs> {
    let bits = a.count_or("num_bits", 8, CT)?;
    let float = a.choice_or("type", &["int", "float"], "int", CT)? == "float";
    let symmetric = a.bool_or("symmetric", true, CT)?;
    let group_size = a.int("group_size")?;
    let strategy = match a.string("strategy")? {
        Some(s) => {
            a.choice_or("strategy", CT_STRATEGIES, "tensor", CT)?;
            s.to_string()
        }
        None => {
            let s = match group_size {
                None => "tensor",
                Some(g) if g > 0 => "group",
                Some(-1) => "channel",
                Some(g) => {
                    return Err(a.err(
                        "group_size",
                        format!("{g}, expected -1 (channel) or a positive size"),
                    ))
                }
            };
            a.note("strategy", format!("\"{s}\" (from group_size)"), CT);
            s.to_string()
        }
    };
    let dynamic = match a.get("dynamic") {
        None => {
            a.note("dynamic", "false", CT);
            Value::Bool(false)
        }
        Some(v @ Value::Bool(_)) => v.clone(),
        Some(Value::String(s)) if s == "local" => Value::String(s.clone()),
        Some(v) => {
            return Err(a.err(
                "dynamic",
                format!("{v} is not understood (known: true, false, \"local\")"),
            ))
        }
    };
    let group_order = match a.get("actorder") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.as_str() {
            "group" | "dynamic" => true,
            // "weight" (alias "static") reorders during calibration only: no g_idx.
            "weight" | "static" => false,
            other => {
                return Err(a.err(
                    "actorder",
                    format!("unknown value '{other}' (known: group, weight, dynamic, static)"),
                ))
            }
        },
        Some(v) => return Err(a.err("actorder", format!("{v} is not a string or boolean"))),
    };
    Ok(CtArgs {
        bits,
        float,
        symmetric,
        strategy,
        group_size,
        dynamic,
        group_order,
    })
}

/// compressed-tensors: each entry of `config_groups` with its `targets`, and `ignore`.
/// The format returned is the first group's (what `inspect` names); which group quantizes
/// a module is decided by the targets (`checkpoint::targets`).
pub(crate) fn parse_ct_targets(q: &Fields) -> Result<(QuantFormat, QuantTargets)> {
    let groups = q
        .get("config_groups")
        .and_then(|g| g.as_object())
        .ok_or_else(|| q.err("config_groups", "missing or not an object"))?;
    if groups.is_empty() {
        return Err(q.err("config_groups", "empty"));
    }
    if let Some(sp) = q.child("sparsity_config")? {
        if let Some(f) = sp.string("format")? {
            if f != "dense" {
                return Err(sp.err(
                    "format",
                    format!("sparse weights ('{f}') are not supported"),
                ));
            }
        }
    }
    let strings = |f: &Fields, key: &str| -> Result<Option<Vec<String>>> {
        match f.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| f.err(key, format!("{v} is not a string")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Err(f.err(key, format!("{v} is not a list of strings"))),
        }
    };
    let mut parsed = Vec::with_capacity(groups.len());
    for gname in groups.keys() {
        let gf = q
            .child("config_groups")?
            .and_then(|c| c.child(gname).ok().flatten())
            .ok_or_else(|| q.err("config_groups", format!("{gname} is not an object")))?;
        let targets = match strings(&gf, "targets")? {
            Some(t) => t,
            None => {
                gf.note("targets", "[\"Linear\"]", CT);
                vec!["Linear".to_string()]
            }
        };
        parsed.push((gname.clone(), targets, ct_group(q, &gf)?));
    }
    let ignore = strings(q, "ignore")?.unwrap_or_default();
    let first = parsed[0].2.clone();
    let targets = QuantTargets::new(parsed, &ignore).map_err(|why| q.err("config_groups", why))?;
    Ok((first, targets))
}

/// One config group's format.
fn ct_group(q: &Fields, gf: &Fields) -> Result<QuantFormat> {
    let w = ct_args(
        &gf.child("weights")?
            .ok_or_else(|| gf.err("weights", "missing"))?,
    )?;
    let af = gf.child("input_activations")?;
    let a = af.as_ref().map(ct_args).transpose()?;
    if gf.get("output_activations").is_some() {
        return Err(gf.err("output_activations", "output quantization is not supported"));
    }
    // The format may sit in the group or at the top; absent, the weights decide (the
    // CompressedTensorsConfig default "dense" would contradict quantized config groups).
    let (ff, format) = match gf.string("format")? {
        Some(f) => (gf, Some(f)),
        None => (q, q.string("format")?),
    };
    if let Some(f) = format {
        ff.choice_or("format", CT_FORMATS, "dense", CT)?;
        let want: &[&str] = match (w.float, w.bits) {
            (true, 8) => &["float-quantized", "naive-quantized"],
            (true, 4) => &["nvfp4-pack-quantized"],
            _ => &["pack-quantized", "int-quantized"],
        };
        if !want.contains(&f) {
            return Err(ff.err(
                "format",
                format!(
                    "'{f}' does not store {}-bit {} weights as fleetmoe reads them ({})",
                    w.bits,
                    if w.float { "float" } else { "int" },
                    want.join(", ")
                ),
            ));
        }
    }
    let wf = gf.child("weights")?.expect("checked above");
    if w.dynamic != Value::Bool(false) {
        return Err(wf.err(
            "dynamic",
            format!("{}: weights are stored, not dynamic", w.dynamic),
        ));
    }
    match (w.float, w.bits) {
        (true, 8) => ct_fp8(&wf, &w, af.as_ref().zip(a.as_ref())),
        (true, 4) => ct_nvfp4(&wf, &w, af.as_ref().zip(a.as_ref())),
        (false, 4) | (false, 8) => {
            // Absent, the format is pack-quantized (what fleetmoe read before it knew both).
            let packed = format != Some("int-quantized");
            ct_int(&wf, &w, af.as_ref().zip(a.as_ref()), packed)
        }
        (float, bits) => Err(wf.err(
            "num_bits",
            format!(
                "{} {bits}-bit weights are not supported",
                if float { "float" } else { "int" }
            ),
        )),
    }
}

fn ct_fp8(wf: &Fields, w: &CtArgs, a: Option<(&Fields, &CtArgs)>) -> Result<QuantFormat> {
    let weight = match w.strategy.as_str() {
        "tensor" => Fp8WeightScale::PerTensor,
        "channel" => Fp8WeightScale::PerChannel,
        "block" => {
            let b = wf.get("block_structure");
            if b != Some(&json!([128, 128])) && b != Some(&json!("128x128")) {
                return Err(wf.err(
                    "block_structure",
                    format!("{b:?} is not supported (only [128, 128])"),
                ));
            }
            Fp8WeightScale::Block128
        }
        other => {
            return Err(wf.err(
                "strategy",
                format!(
                "fp8 weights with strategy '{other}' are not supported (tensor, channel, block)"
            ),
            ))
        }
    };
    let Some((af, a)) = a else {
        return Err(wf.err(
            "input_activations",
            "missing: fp8 weight-only is not supported",
        ));
    };
    if !a.float || a.bits != 8 {
        return Err(af.err(
            "type",
            format!(
                "{}-bit {} activations with fp8 weights are not supported (float, 8 bits)",
                a.bits,
                if a.float { "float" } else { "int" }
            ),
        ));
    }
    let act = match (&a.dynamic, a.strategy.as_str()) {
        (Value::Bool(false), "tensor") => ActScale::StaticPerTensor,
        (Value::Bool(false), s) => {
            return Err(af.err(
                "strategy",
                format!("static '{s}' activation scales are not supported (static needs tensor)"),
            ))
        }
        (Value::Bool(true), "token") => ActScale::DynamicPerToken,
        (Value::Bool(true), "tensor") => ActScale::DynamicPerTensor,
        (Value::Bool(true), "group") if a.group_size == Some(128) => ActScale::DynamicPerGroup128,
        (Value::Bool(true), "group") => {
            return Err(af.err(
                "group_size",
                format!("{:?}: dynamic group activations need group size 128", a.group_size),
            ))
        }
        (d, s) => {
            return Err(af.err(
                "strategy",
                format!("'{s}' activations with dynamic {d} are not supported (token, tensor, group 128; static tensor)"),
            ))
        }
    };
    Ok(QuantFormat::CtFp8 { weight, act })
}

fn ct_nvfp4(wf: &Fields, w: &CtArgs, a: Option<(&Fields, &CtArgs)>) -> Result<QuantFormat> {
    let nvfp4 = |f: &Fields, x: &CtArgs| -> Result<()> {
        if x.strategy != "tensor_group" {
            return Err(f.err(
                "strategy",
                format!("'{}': nvfp4 needs tensor_group", x.strategy),
            ));
        }
        if x.group_size != Some(16) {
            return Err(f.err(
                "group_size",
                format!("{:?}: nvfp4 needs group size 16", x.group_size),
            ));
        }
        Ok(())
    };
    nvfp4(wf, w)?;
    let w4a4 = match a {
        None => false,
        Some((af, a)) => {
            if !a.float || a.bits != 4 {
                return Err(af.err(
                    "num_bits",
                    format!(
                        "{}-bit activations with nvfp4 weights are not supported (fp4)",
                        a.bits
                    ),
                ));
            }
            nvfp4(af, a)?;
            if a.dynamic != json!("local") {
                return Err(af.err(
                    "dynamic",
                    format!("{}: nvfp4 activations are \"local\" (a static global scale, dynamic block scales)", a.dynamic),
                ));
            }
            true
        }
    };
    Ok(QuantFormat::CtNvfp4 { w4a4 })
}

fn ct_int(
    wf: &Fields,
    w: &CtArgs,
    a: Option<(&Fields, &CtArgs)>,
    packed: bool,
) -> Result<QuantFormat> {
    let group = match w.strategy.as_str() {
        "channel" => IntGroup::Channel,
        "group" => match w.group_size {
            Some(g) if g > 0 => IntGroup::Size(g as usize),
            g => {
                return Err(wf.err(
                    "group_size",
                    format!("{g:?}: strategy group needs a positive group size"),
                ))
            }
        },
        other => {
            return Err(wf.err(
                "strategy",
                format!("int weights with strategy '{other}' are not supported (channel, group)"),
            ))
        }
    };
    if w.group_order && group == IntGroup::Channel {
        return Err(wf.err("actorder", "group activation order needs strategy group"));
    }
    if let Some((af, a)) = a {
        let w4a8 = a.float
            && a.bits == 8
            && a.dynamic == Value::Bool(true)
            && a.strategy == "token"
            && w.bits == 4
            && w.symmetric
            && !w.group_order
            && group == IntGroup::Size(128);
        if !w4a8 {
            return Err(af.err(
                "type",
                format!(
                    "{}-bit {} {} activations with {}-bit int weights are not supported (W4A8: int4 group 128 symmetric, dynamic fp8 per token)",
                    a.bits,
                    if a.float { "float" } else { "int" },
                    a.strategy,
                    w.bits
                ),
            ));
        }
        return Ok(QuantFormat::CtW4A8 { packed });
    }
    Ok(QuantFormat::CtInt {
        packed,
        bits: int_bits(wf, "num_bits", w.bits)?,
        group,
        symmetric: w.symmetric,
        act_order: w.group_order,
    })
}
