//! `config.json` (the model's shape and routing) and its `quantization_config` (or
//! ModelOpt's `hf_quant_config.json`): what fleetmoe needs to know before reading tensors.

use super::arch::Arch;
use super::ct_config::parse_ct_targets;
use super::fields::{Fields, Setting};
use super::quant_config::{parse_modelopt, parse_quant};
use super::targets::QuantTargets;
use crate::error::{Error, Result};
use crate::moe::GroupScoring;
use crate::quant::{ActScale, Fp8WeightScale, IntBits, IntGroup, MxAct, MxElem};
use serde_json::Value;
use std::cell::RefCell;
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
    /// compressed-tensors INT4/INT8 weight-only, `pack-quantized` (int32 words) or
    /// `int-quantized` (one int8 per value).
    CtInt {
        packed: bool,
        bits: IntBits,
        group: IntGroup,
        symmetric: bool,
        /// `actorder: "group"` (or `true` / `"dynamic"`): columns map to groups through
        /// `weight_g_idx`. `"weight"` only changed calibration and stores no g_idx.
        act_order: bool,
    },
    /// compressed-tensors int4 weights (group 128) with fp8 dynamic activations, packed or
    /// not (its W4AFP8 preset is written `int-quantized` by default).
    CtW4A8 { packed: bool },
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
            QuantFormat::CtInt { packed: true, .. } => {
                "compressed-tensors pack-quantized int".into()
            }
            QuantFormat::CtInt { .. } => "compressed-tensors int-quantized int".into(),
            QuantFormat::CtW4A8 { packed: true } => "compressed-tensors pack-quantized w4a8".into(),
            QuantFormat::CtW4A8 { .. } => "compressed-tensors int-quantized w4a8".into(),
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
///
/// Shape fields and top-k have no default (transformers' `save_pretrained` writes every
/// model-specific attribute, so their absence means a hand-edited file, and a guessed shape
/// is never right). Routing options take the default of the architecture's transformers
/// config class when absent; `settings` records every value used and which were defaults.
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
    /// Expert groups of grouped routing (1 when the architecture or `topk_method` does not
    /// group).
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f32,
    pub scoring: GroupScoring,
    /// Layers before this index are dense (DeepSeek, GLM `first_k_dense_replace`).
    pub first_k_dense: usize,
    /// GPT-OSS `swiglu_limit`.
    pub swiglu_limit: f32,
    /// Intermediate size of the shared expert(s), summed over DeepSeek's several.
    pub shared_intermediate: Option<usize>,
    /// Whether `shared_intermediate` came from a default rather than the file: then a
    /// checkpoint without shared-expert tensors simply has none; when the file says so,
    /// the tensors must be there.
    pub shared_is_default: bool,
    /// The checkpoint's format (compressed-tensors: its first config group's).
    pub quant: QuantFormat,
    /// compressed-tensors: which group quantizes which module, and what is ignored.
    pub targets: Option<QuantTargets>,
    /// Every config value used, from `config.json` and the quantization config.
    pub settings: Vec<Setting>,
}

// Defaults of the transformers config classes (`configuration_*.py`), by architecture.
const DSV2: &str = "transformers DeepseekV2Config";
const DSV3: &str = "transformers DeepseekV3Config";
const GLM: &str = "transformers Glm4MoeConfig";
const QWEN2: &str = "transformers Qwen2MoeConfig";
const QWEN3: &str = "transformers Qwen3MoeConfig";
const GPT_OSS: &str = "transformers GptOssConfig";

fn cerr(path: &Path, key: &str, why: impl Into<String>) -> Error {
    Error::checkpoint(path.display(), key, why)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| cerr(path, "", format!("not valid JSON: {e}")))
}

/// `a · b · …` of named config values, or an error naming them.
pub(crate) fn product(path: &Path, parts: &[(&str, usize)]) -> Result<usize> {
    parts
        .iter()
        .try_fold(1usize, |acc, &(_, v)| acc.checked_mul(v))
        .ok_or_else(|| {
            let names: Vec<String> = parts.iter().map(|(n, v)| format!("{n} ({v})")).collect();
            cerr(path, parts[0].0, format!("{} overflows", names.join(" × ")))
        })
}

impl ModelConfig {
    /// Reads `dir/config.json` and the quantization config.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let root = read_json(&path)?;
        let log = RefCell::new(Vec::new());
        let top = Fields::new(&path, &root, "", &log);
        let architecture = match root.get("architectures") {
            Some(a) => a.get(0).and_then(|a| a.as_str()).ok_or_else(|| {
                cerr(
                    &path,
                    "architectures",
                    format!("{a} is not a list of names"),
                )
            })?,
            None => top
                .string("model_type")?
                .ok_or_else(|| cerr(&path, "architectures", "missing"))?,
        }
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
        let text = top.child("text_config")?;
        let cfg = text.as_ref().unwrap_or(&top);
        let num_experts =
            cfg.need_count(&["num_local_experts", "num_experts", "n_routed_experts"])?;
        let intermediate = match arch {
            Arch::Mixtral | Arch::GptOss | Arch::Llama4 => {
                cfg.need_count(&["intermediate_size"])?
            }
            _ => cfg.need_count(&["moe_intermediate_size"])?,
        };
        let num_layers = cfg.need_count(&["num_hidden_layers"])?;
        let top_k = cfg.need_count(&["num_experts_per_tok", "experts_per_token"])?;
        let hidden = cfg.need_count(&["hidden_size"])?;
        let mut targets = None;
        let quant = match root
            .get("quantization_config")
            .or_else(|| text.as_ref().and_then(|t| t.get("quantization_config")))
        {
            Some(q) => {
                let f = Fields::new(&path, q, "quantization_config", &log);
                if f.string("quant_method")? == Some("compressed-tensors") {
                    let (format, t) = parse_ct_targets(&f)?;
                    targets = Some(t);
                    format
                } else {
                    parse_quant(&f)?
                }
            }
            None => {
                let hf = dir.join("hf_quant_config.json");
                if hf.exists() {
                    let v = read_json(&hf)?;
                    match v.get("quantization") {
                        Some(q) => parse_modelopt(&Fields::new(&hf, q, "quantization", &log))?,
                        None => parse_modelopt(&Fields::new(&hf, &v, "", &log))?,
                    }
                } else {
                    QuantFormat::Unquantized
                }
            }
        };
        let routing = Routing::read(cfg, arch, num_experts, top_k)?;
        let (shared_intermediate, shared_is_default) =
            shared_intermediate(cfg, arch, intermediate)?;
        let c = ModelConfig {
            architecture,
            arch,
            num_layers,
            num_experts,
            top_k,
            hidden,
            intermediate,
            norm_topk_prob: routing.norm_topk_prob,
            n_group: routing.n_group,
            topk_group: routing.topk_group,
            routed_scaling_factor: routing.scaling as f32,
            scoring: routing.scoring,
            first_k_dense: routing.first_k_dense,
            swiglu_limit: routing.swiglu_limit as f32,
            shared_intermediate,
            shared_is_default,
            quant,
            targets,
            settings: Vec::new(),
        };
        c.check_sizes(&path)?;
        Ok(ModelConfig {
            settings: log.into_inner(),
            ..c
        })
    }

    /// Every product of config sizes the loader forms fits in `usize`.
    fn check_sizes(&self, path: &Path) -> Result<()> {
        let (e, h, i) = (
            ("num_experts", self.num_experts),
            ("hidden_size", self.hidden),
            ("intermediate_size", self.intermediate),
        );
        for (what, n) in [e, h, i, ("num_hidden_layers", self.num_layers)] {
            if n == 0 {
                return Err(cerr(path, what, "0, expected a positive size"));
            }
        }
        product(path, &[e, ("2", 2), i, h])?;
        if let Some(si) = self.shared_intermediate {
            product(path, &[("shared intermediate size", si), ("2", 2), h])?;
        }
        Ok(())
    }
}

/// The routing fields, read and checked together.
struct Routing {
    norm_topk_prob: bool,
    n_group: usize,
    topk_group: usize,
    scaling: f64,
    scoring: GroupScoring,
    first_k_dense: usize,
    swiglu_limit: f64,
}

impl Routing {
    fn read(cfg: &Fields, arch: Arch, experts: usize, top_k: usize) -> Result<Self> {
        let mut r = Routing {
            norm_topk_prob: true,
            n_group: 1,
            topk_group: 1,
            scaling: 1.0,
            scoring: GroupScoring::Softmax,
            first_k_dense: 0,
            swiglu_limit: 7.0,
        };
        if top_k == 0 || top_k > experts {
            return Err(cfg.err(
                "num_experts_per_tok",
                format!("top-k {top_k} must be in 1..={experts} (the number of experts)"),
            ));
        }
        match arch {
            // Mixtral and GPT-OSS always renormalize; Llama 4 routes top-1 by sigmoid.
            Arch::Mixtral | Arch::Llama4 => {}
            Arch::GptOss => r.swiglu_limit = cfg.number_or("swiglu_limit", 7.0, GPT_OSS)?,
            Arch::Qwen2Moe => r.norm_topk_prob = cfg.bool_or("norm_topk_prob", false, QWEN2)?,
            Arch::Qwen3Moe => r.norm_topk_prob = cfg.bool_or("norm_topk_prob", false, QWEN3)?,
            Arch::DeepseekV2 => {
                r.norm_topk_prob = cfg.bool_or("norm_topk_prob", false, DSV2)?;
                r.scaling = cfg.number_or("routed_scaling_factor", 1.0, DSV2)?;
                r.first_k_dense = cfg.count_or("first_k_dense_replace", 0, DSV2)?;
                let scoring =
                    cfg.choice_or("scoring_func", &["softmax", "sigmoid"], "softmax", DSV2)?;
                r.scoring = scoring_of(scoring);
                // `greedy` ignores the groups (n_group / topk_group default to None).
                let method = cfg.choice_or(
                    "topk_method",
                    &["greedy", "group_limited_greedy"],
                    "greedy",
                    DSV2,
                )?;
                if method == "group_limited_greedy" {
                    let need = |k: &str| {
                        cfg.count(k)?.ok_or_else(|| {
                            cfg.err(k, "missing; topk_method group_limited_greedy needs it")
                        })
                    };
                    r.n_group = need("n_group")?;
                    r.topk_group = need("topk_group")?;
                }
            }
            Arch::DeepseekV3 => {
                r.norm_topk_prob = cfg.bool_or("norm_topk_prob", true, DSV3)?;
                r.scaling = cfg.number_or("routed_scaling_factor", 2.5, DSV3)?;
                r.first_k_dense = cfg.count_or("first_k_dense_replace", 3, DSV3)?;
                r.n_group = cfg.count_or("n_group", 8, DSV3)?;
                r.topk_group = cfg.count_or("topk_group", 4, DSV3)?;
                // transformers always scores V3 with a sigmoid; DeepSeek's own config says so.
                let scoring =
                    cfg.choice_or("scoring_func", &["sigmoid", "softmax"], "sigmoid", DSV3)?;
                r.scoring = scoring_of(scoring);
                cfg.choice_or("topk_method", &["noaux_tc"], "noaux_tc", DSV3)?;
            }
            Arch::Glm4Moe => {
                r.norm_topk_prob = cfg.bool_or("norm_topk_prob", true, GLM)?;
                r.scaling = cfg.number_or("routed_scaling_factor", 1.0, GLM)?;
                r.first_k_dense = cfg.count_or("first_k_dense_replace", 1, GLM)?;
                r.n_group = cfg.count_or("n_group", 1, GLM)?;
                r.topk_group = cfg.count_or("topk_group", 1, GLM)?;
                // GLM-4.5's router (DeepseekV3TopkRouter) always scores with a sigmoid.
                r.scoring = GroupScoring::Sigmoid;
            }
        }
        if r.scaling <= 0.0 {
            return Err(cfg.err(
                "routed_scaling_factor",
                format!("{}, expected a positive number", r.scaling),
            ));
        }
        if r.swiglu_limit <= 0.0 {
            return Err(cfg.err(
                "swiglu_limit",
                format!("{}, expected a positive number", r.swiglu_limit),
            ));
        }
        if r.n_group == 0 || experts % r.n_group != 0 {
            return Err(cfg.err(
                "n_group",
                format!(
                    "{} does not divide the {experts} routed experts into equal groups",
                    r.n_group
                ),
            ));
        }
        if r.topk_group == 0 || r.topk_group > r.n_group {
            return Err(cfg.err(
                "topk_group",
                format!("{} must be in 1..={} (n_group)", r.topk_group, r.n_group),
            ));
        }
        let kept = r.topk_group * (experts / r.n_group);
        if top_k > kept {
            return Err(cfg.err(
                "num_experts_per_tok",
                format!(
                    "top-k {top_k} exceeds the {kept} experts of the {} kept groups (topk_group)",
                    r.topk_group
                ),
            ));
        }
        Ok(r)
    }
}

fn scoring_of(s: &str) -> GroupScoring {
    if s == "sigmoid" {
        GroupScoring::Sigmoid
    } else {
        GroupScoring::Softmax
    }
}

/// The shared expert's intermediate size and whether it was a default.
fn shared_intermediate(
    cfg: &Fields,
    arch: Arch,
    intermediate: usize,
) -> Result<(Option<usize>, bool)> {
    let explicit = |k: &str| cfg.get(k).is_some();
    Ok(match arch {
        Arch::Qwen2Moe => {
            let d = !explicit("shared_expert_intermediate_size");
            let n = cfg.count_or("shared_expert_intermediate_size", 5632, QWEN2)?;
            ((n > 0).then_some(n), d)
        }
        Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::Glm4Moe => {
            let (default, source) = match arch {
                Arch::DeepseekV2 => (2, DSV2),
                Arch::DeepseekV3 => (1, DSV3),
                _ => (1, GLM),
            };
            let d = !explicit("n_shared_experts");
            let n = cfg.count_or("n_shared_experts", default, source)?;
            let size = n.checked_mul(intermediate).ok_or_else(|| {
                cfg.err(
                    "n_shared_experts",
                    format!(
                        "n_shared_experts ({n}) × moe_intermediate_size ({intermediate}) overflows"
                    ),
                )
            })?;
            ((size > 0).then_some(size), d)
        }
        Arch::Llama4 => (Some(intermediate), false),
        Arch::Mixtral | Arch::Qwen3Moe | Arch::GptOss => (None, false),
    })
}
