//! `config.json` (the model's shape and routing) and its `quantization_config` (or
//! ModelOpt's `hf_quant_config.json`): what fleetmoe needs to know before reading tensors.

use super::arch::Arch;
use crate::error::{Error, Result};
use crate::quant::{ActScale, Fp8WeightScale, IntBits, IntGroup, MxAct, MxElem};
use serde_json::Value;
use std::path::Path;

/// How the checkpoint's linear weights are stored, as its producer wrote them.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantFormat {
    /// bf16 / f16 / f32 weights.
    Unquantized,
    /// compressed-tensors `float-quantized` FP8 (also `naive-quantized` fp8).
    CtFp8 {
        weight: Fp8WeightScale,
        act: ActScale,
    },
    /// compressed-tensors `pack-quantized` INT4/INT8 weight-only.
    CtInt {
        bits: IntBits,
        group: IntGroup,
        symmetric: bool,
        act_order: bool,
    },
    /// compressed-tensors int4 weights (group 128) with fp8 dynamic activations.
    CtW4A8,
    /// compressed-tensors `nvfp4-pack-quantized`; `w4a4` when activations are fp4 too.
    CtNvfp4 { w4a4: bool },
    /// NVIDIA ModelOpt FP8 (per-tensor weight and static input scales).
    ModeloptFp8,
    /// NVIDIA ModelOpt NVFP4 (`weight_scale`, `weight_scale_2`, `input_scale`).
    ModeloptNvfp4,
    /// AMD Quark OCP MX weights.
    Quark { elem: MxElem, act: MxAct },
    /// GPT-OSS's own MXFP4 (`*_blocks`, `*_scales`).
    GptOssMxfp4,
    /// vLLM `fp8` method: DeepSeek-V3 128×128 blocks (`weight_scale_inv`) or per-tensor.
    NativeFp8 { block: bool, static_input: bool },
    /// AutoGPTQ `qweight`/`qzeros`/`scales`/`g_idx`.
    Gptq {
        bits: IntBits,
        group: IntGroup,
        desc_act: bool,
        sym: bool,
        /// `checkpoint_format` "gptq" stores zero points minus one; "gptq_v2" does not.
        zeros_minus_one: bool,
    },
    /// AutoAWQ GEMM: int4 packed along N in AWQ's nibble order, explicit zero points.
    Awq { group: IntGroup },
}

impl QuantFormat {
    /// Short human name.
    pub fn describe(&self) -> String {
        match self {
            QuantFormat::Unquantized => "unquantized".into(),
            QuantFormat::CtFp8 { .. } => "compressed-tensors float-quantized fp8".into(),
            QuantFormat::CtInt { .. } => "compressed-tensors pack-quantized int".into(),
            QuantFormat::CtW4A8 => "compressed-tensors w4a8".into(),
            QuantFormat::CtNvfp4 { .. } => "compressed-tensors nvfp4-pack-quantized".into(),
            QuantFormat::ModeloptFp8 => "ModelOpt FP8".into(),
            QuantFormat::ModeloptNvfp4 => "ModelOpt NVFP4".into(),
            QuantFormat::Quark { .. } => "Quark OCP MX".into(),
            QuantFormat::GptOssMxfp4 => "GPT-OSS mxfp4".into(),
            QuantFormat::NativeFp8 { block: true, .. } => "fp8 weight_block_size 128x128".into(),
            QuantFormat::NativeFp8 { .. } => "fp8 per-tensor".into(),
            QuantFormat::Gptq { .. } => "GPTQ".into(),
            QuantFormat::Awq { .. } => "AWQ".into(),
        }
    }
}

/// What `config.json` says about the model's MoE layers.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The `architectures[0]` string.
    pub architecture: String,
    pub arch: Arch,
    pub num_layers: usize,
    pub num_experts: usize,
    pub top_k: usize,
    pub hidden: usize,
    /// Routed expert intermediate size.
    pub intermediate: usize,
    pub norm_topk_prob: bool,
    pub n_group: Option<usize>,
    pub topk_group: Option<usize>,
    pub routed_scaling_factor: f32,
    /// `softmax` or `sigmoid`.
    pub scoring_func: String,
    /// Layers before this index are dense (DeepSeek, GLM `first_k_dense_replace`).
    pub first_k_dense: usize,
    /// GPT-OSS `swiglu_limit`.
    pub swiglu_limit: f32,
    /// Intermediate size of the shared expert(s), summed over DeepSeek's several.
    pub shared_intermediate: Option<usize>,
    pub quant: QuantFormat,
}

fn cerr(path: &Path, key: &str, why: impl Into<String>) -> Error {
    Error::checkpoint(path.display(), key, why)
}

fn get_usize(cfg: &Value, keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(|v| v.as_u64()))
        .map(|v| v as usize)
}

impl ModelConfig {
    /// Reads `dir/config.json` and the quantization config.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let root: Value = serde_json::from_str(&text)
            .map_err(|e| cerr(&path, "", format!("not valid JSON: {e}")))?;
        let architecture = root
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .or_else(|| root.get("model_type").and_then(|m| m.as_str()))
            .ok_or_else(|| cerr(&path, "architectures", "missing"))?
            .to_string();
        let arch = Arch::from_name(&architecture).ok_or_else(|| {
            cerr(
                &path,
                "architectures",
                format!(
                    "'{architecture}' is not a supported MoE architecture (known: {})",
                    Arch::KNOWN
                ),
            )
        })?;
        // Llama 4 nests the language model's settings in `text_config`.
        let cfg = root.get("text_config").unwrap_or(&root);
        let need = |keys: &[&str]| -> Result<usize> {
            get_usize(cfg, keys)
                .ok_or_else(|| cerr(&path, keys[0], "missing or not a non-negative integer"))
        };
        let num_experts = need(&["num_local_experts", "num_experts", "n_routed_experts"])?;
        let intermediate = match arch {
            Arch::Mixtral | Arch::GptOss | Arch::Llama4 => need(&["intermediate_size"])?,
            _ => need(&["moe_intermediate_size"])?,
        };
        let quant_value = root
            .get("quantization_config")
            .or_else(|| cfg.get("quantization_config"))
            .cloned();
        let quant = match quant_value {
            Some(q) => parse_quant(&q, &path)?,
            None => {
                let hf = dir.join("hf_quant_config.json");
                if hf.exists() {
                    let t = std::fs::read_to_string(&hf).map_err(|e| Error::Io {
                        path: hf.display().to_string(),
                        source: e,
                    })?;
                    let v: Value = serde_json::from_str(&t)
                        .map_err(|e| cerr(&hf, "", format!("not valid JSON: {e}")))?;
                    let q = v.get("quantization").cloned().unwrap_or(v);
                    parse_modelopt(&q, &hf)?
                } else {
                    QuantFormat::Unquantized
                }
            }
        };
        let greedy = cfg.get("topk_method").and_then(|v| v.as_str()) == Some("greedy");
        let f = |k: &str, d: f64| cfg.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
        Ok(ModelConfig {
            architecture,
            arch,
            num_layers: need(&["num_hidden_layers"])?,
            num_experts,
            top_k: need(&["num_experts_per_tok", "experts_per_token"])?,
            hidden: need(&["hidden_size"])?,
            intermediate,
            norm_topk_prob: cfg
                .get("norm_topk_prob")
                .and_then(|v| v.as_bool())
                .unwrap_or(matches!(arch, Arch::Mixtral | Arch::GptOss)),
            // DeepSeek-V2 `topk_method: greedy` ignores the groups.
            n_group: get_usize(cfg, &["n_group"]).filter(|_| !greedy),
            topk_group: get_usize(cfg, &["topk_group"]).filter(|_| !greedy),
            routed_scaling_factor: f("routed_scaling_factor", 1.0) as f32,
            scoring_func: cfg
                .get("scoring_func")
                .and_then(|v| v.as_str())
                // GLM-4.5 and DeepSeek-V3 score with a sigmoid; GLM's config does not say so.
                .unwrap_or(if matches!(arch, Arch::Glm4Moe | Arch::DeepseekV3) {
                    "sigmoid"
                } else {
                    "softmax"
                })
                .to_string(),
            first_k_dense: get_usize(cfg, &["first_k_dense_replace"]).unwrap_or(0),
            swiglu_limit: f("swiglu_limit", 7.0) as f32,
            shared_intermediate: match arch {
                Arch::Qwen2Moe => {
                    get_usize(cfg, &["shared_expert_intermediate_size"]).filter(|&n| n > 0)
                }
                Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::Glm4Moe => {
                    get_usize(cfg, &["n_shared_experts"])
                        .filter(|&n| n > 0)
                        .map(|n| n * intermediate)
                }
                Arch::Llama4 => Some(intermediate),
                _ => None,
            },
            quant,
        })
    }
}

fn parse_modelopt(q: &Value, path: &Path) -> Result<QuantFormat> {
    match q.get("quant_algo").and_then(|v| v.as_str()) {
        Some("FP8") => Ok(QuantFormat::ModeloptFp8),
        Some("NVFP4") => {
            if let Some(g) = q.get("group_size").and_then(|v| v.as_u64()) {
                if g != 16 {
                    return Err(cerr(
                        path,
                        "group_size",
                        format!("NVFP4 group size {g}, expected 16"),
                    ));
                }
            }
            Ok(QuantFormat::ModeloptNvfp4)
        }
        other => Err(cerr(
            path,
            "quant_algo",
            format!("ModelOpt algorithm {other:?} is not supported (FP8, NVFP4)"),
        )),
    }
}

fn int_bits(path: &Path, key: &str, b: u64) -> Result<IntBits> {
    match b {
        4 => Ok(IntBits::Int4),
        8 => Ok(IntBits::Int8),
        _ => Err(cerr(
            path,
            key,
            format!("{b}-bit integers are not supported (4, 8)"),
        )),
    }
}

fn int_group(g: Option<i64>) -> IntGroup {
    match g {
        Some(n) if n > 0 => IntGroup::Size(n as usize),
        _ => IntGroup::Channel,
    }
}

/// Parses a `quantization_config` object.
pub fn parse_quant(q: &Value, path: &Path) -> Result<QuantFormat> {
    let method = q
        .get("quant_method")
        .and_then(|v| v.as_str())
        .ok_or_else(|| cerr(path, "quantization_config.quant_method", "missing"))?;
    let num = |k: &str| q.get(k).and_then(|v| v.as_i64());
    match method {
        "compressed-tensors" => parse_ct(q, path),
        "modelopt" => parse_modelopt(q, path),
        "quark" => parse_quark(q, path),
        "mxfp4" => Ok(QuantFormat::GptOssMxfp4),
        "fp8" => {
            let block = q.get("weight_block_size");
            if let Some(b) = block {
                if b != &serde_json::json!([128, 128]) {
                    return Err(cerr(path, "weight_block_size", format!("{b} is not supported (only [128, 128])")));
                }
            }
            Ok(QuantFormat::NativeFp8 {
                block: block.is_some(),
                static_input: q.get("activation_scheme").and_then(|v| v.as_str()) == Some("static"),
            })
        }
        "gptq" => Ok(QuantFormat::Gptq {
            bits: int_bits(path, "bits", num("bits").unwrap_or(4) as u64)?,
            group: int_group(num("group_size")),
            desc_act: q.get("desc_act").and_then(|v| v.as_bool()).unwrap_or(false),
            sym: q.get("sym").and_then(|v| v.as_bool()).unwrap_or(true),
            zeros_minus_one: q.get("checkpoint_format").and_then(|v| v.as_str()) != Some("gptq_v2"),
        }),
        "awq" => {
            if num("bits").unwrap_or(4) != 4 {
                return Err(cerr(path, "bits", "AWQ is read for 4 bits only"));
            }
            Ok(QuantFormat::Awq { group: int_group(num("group_size")) })
        }
        other => Err(cerr(path, "quantization_config.quant_method", format!("unknown quant_method '{other}' (known: compressed-tensors, modelopt, quark, mxfp4, fp8, gptq, awq)"))),
    }
}

/// compressed-tensors: the first entry of `config_groups` decides (checkpoints whose groups
/// differ per layer are not handled yet: an honest limitation).
fn parse_ct(q: &Value, path: &Path) -> Result<QuantFormat> {
    let groups = q
        .get("config_groups")
        .and_then(|g| g.as_object())
        .ok_or_else(|| cerr(path, "config_groups", "missing"))?;
    let group = groups
        .values()
        .next()
        .ok_or_else(|| cerr(path, "config_groups", "empty"))?;
    let w = group
        .get("weights")
        .ok_or_else(|| cerr(path, "config_groups.weights", "missing"))?;
    let a = group.get("input_activations").filter(|a| !a.is_null());
    let format = group
        .get("format")
        .and_then(|f| f.as_str())
        .or_else(|| q.get("format").and_then(|f| f.as_str()))
        .unwrap_or("");
    let s = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let n = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_i64());
    let bits = n(w, "num_bits").unwrap_or(0);
    let wtype = s(w, "type");
    let strategy = s(w, "strategy");
    match (wtype.as_str(), bits) {
        ("float", 8) => {
            let weight = match strategy.as_str() {
                "tensor" => Fp8WeightScale::PerTensor,
                "channel" => Fp8WeightScale::PerChannel,
                "block" => {
                    let b = w.get("block_structure");
                    if b != Some(&serde_json::json!([128, 128])) {
                        return Err(cerr(
                            path,
                            "block_structure",
                            format!("{b:?} is not supported (only [128, 128])"),
                        ));
                    }
                    Fp8WeightScale::Block128
                }
                other => {
                    return Err(cerr(
                        path,
                        "weights.strategy",
                        format!("fp8 strategy '{other}' is not supported"),
                    ))
                }
            };
            let act = match a {
                None => {
                    return Err(cerr(
                        path,
                        "input_activations",
                        "fp8 weight-only is not supported",
                    ))
                }
                Some(a) if a.get("dynamic").and_then(|d| d.as_bool()) == Some(false) => {
                    ActScale::StaticPerTensor
                }
                Some(a) => match s(a, "strategy").as_str() {
                    "token" => ActScale::DynamicPerToken,
                    "tensor" => ActScale::DynamicPerTensor,
                    "group" => ActScale::DynamicPerGroup128,
                    other => {
                        return Err(cerr(
                            path,
                            "input_activations.strategy",
                            format!("'{other}' is not supported"),
                        ))
                    }
                },
            };
            Ok(QuantFormat::CtFp8 { weight, act })
        }
        ("float", 4) => {
            if n(w, "group_size") != Some(16) {
                return Err(cerr(
                    path,
                    "weights.group_size",
                    "nvfp4 needs group size 16",
                ));
            }
            Ok(QuantFormat::CtNvfp4 { w4a4: a.is_some() })
        }
        ("int", 4) | ("int", 8) => {
            if let Some(a) = a {
                if s(a, "type") == "float" && n(a, "num_bits") == Some(8) && bits == 4 {
                    return Ok(QuantFormat::CtW4A8);
                }
                return Err(cerr(
                    path,
                    "input_activations",
                    format!("int weights with {a} activations are not supported"),
                ));
            }
            if format != "pack-quantized" && !format.is_empty() {
                return Err(cerr(
                    path,
                    "format",
                    format!("int weights in format '{format}' are not supported (pack-quantized)"),
                ));
            }
            let group = match strategy.as_str() {
                "channel" => IntGroup::Channel,
                "group" => int_group(n(w, "group_size")),
                other => {
                    return Err(cerr(
                        path,
                        "weights.strategy",
                        format!("int strategy '{other}' is not supported"),
                    ))
                }
            };
            Ok(QuantFormat::CtInt {
                bits: int_bits(path, "num_bits", bits as u64)?,
                group,
                symmetric: w.get("symmetric").and_then(|v| v.as_bool()).unwrap_or(true),
                act_order: matches!(
                    w.get("actorder").and_then(|v| v.as_str()),
                    Some("group") | Some("weight")
                ),
            })
        }
        _ => Err(cerr(
            path,
            "config_groups.weights",
            format!("{wtype} {bits}-bit weights are not supported"),
        )),
    }
}

fn parse_quark(q: &Value, path: &Path) -> Result<QuantFormat> {
    let g = q
        .get("global_quant_config")
        .ok_or_else(|| cerr(path, "global_quant_config", "missing"))?;
    let dtype = |v: Option<&Value>| {
        v.and_then(|v| v.get("dtype"))
            .and_then(|d| d.as_str())
            .map(str::to_string)
    };
    let w = g.get("weight");
    let elem = match dtype(w).as_deref() {
        Some("fp4") => MxElem::Fp4E2M1,
        Some("fp6_e3m2") => MxElem::Fp6E3M2,
        Some("fp6_e2m3") => MxElem::Fp6E2M3,
        other => {
            return Err(cerr(
                path,
                "global_quant_config.weight.dtype",
                format!("{other:?} is not a supported Quark weight type (fp4, fp6_e3m2, fp6_e2m3)"),
            ))
        }
    };
    if let Some(gs) = w.and_then(|w| w.get("group_size")).and_then(|v| v.as_u64()) {
        if gs != 32 {
            return Err(cerr(
                path,
                "global_quant_config.weight.group_size",
                format!("{gs}, OCP MX needs 32"),
            ));
        }
    }
    let act = match dtype(g.get("input_tensors").filter(|v| !v.is_null())).as_deref() {
        None => MxAct::Bf16,
        Some("fp8_e4m3") => MxAct::Fp8Static,
        Some(d) if Some(d) == dtype(w).as_deref() => MxAct::Mx,
        Some(d) => {
            return Err(cerr(
                path,
                "global_quant_config.input_tensors.dtype",
                format!("'{d}' activations with {elem:?} weights are not supported"),
            ))
        }
    };
    Ok(QuantFormat::Quark { elem, act })
}
