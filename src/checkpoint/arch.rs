//! Tensor names per architecture, as Hugging Face `transformers` (and vLLM's loaders) name
//! them; the routing and activation each architecture uses.

use super::config::ModelConfig;
use crate::moe::{Activation, Routing};

/// A supported MoE architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    DeepseekV2,
    DeepseekV3,
    Glm4Moe,
    GptOss,
    Llama4,
}

/// One of the three expert projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Gate,
    Up,
    Down,
}

impl Arch {
    pub const KNOWN: &'static str = "MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM, Glm4MoeForCausalLM, GptOssForCausalLM, Llama4ForConditionalGeneration / Llama4ForCausalLM";

    /// From `architectures[0]` (or `model_type`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "MixtralForCausalLM" | "mixtral" => Arch::Mixtral,
            "Qwen2MoeForCausalLM" | "qwen2_moe" => Arch::Qwen2Moe,
            "Qwen3MoeForCausalLM" | "qwen3_moe" => Arch::Qwen3Moe,
            "DeepseekV2ForCausalLM" | "deepseek_v2" => Arch::DeepseekV2,
            "DeepseekV3ForCausalLM" | "deepseek_v3" => Arch::DeepseekV3,
            "Glm4MoeForCausalLM" | "glm4_moe" => Arch::Glm4Moe,
            "GptOssForCausalLM" | "gpt_oss" => Arch::GptOss,
            "Llama4ForConditionalGeneration" | "Llama4ForCausalLM" | "llama4" => Arch::Llama4,
            _ => return None,
        })
    }

    /// The MoE block's module names inside a decoder layer, as its writers have used them
    /// (Mixtral: transformers 4's `block_sparse_moe`, transformers 5's `mlp`).
    pub fn moe_modules(self) -> &'static [&'static str] {
        match self {
            Arch::Mixtral => &["block_sparse_moe", "mlp"],
            Arch::Llama4 => &["feed_forward"],
            _ => &["mlp"],
        }
    }

    /// The router's weight, relative to the MoE block.
    pub fn router(self) -> &'static str {
        match self {
            Arch::GptOss | Arch::Llama4 => "router.weight",
            _ => "gate.weight",
        }
    }

    /// Whether fused experts are stored `[E, in, out]` (used as `x @ W`: GPT-OSS, Llama 4)
    /// rather than transformers 5's `[E, out, in]` (`F.linear`).
    pub fn fused_transposed(self) -> bool {
        matches!(self, Arch::GptOss | Arch::Llama4)
    }

    /// The per-expert projection names (gate, up, down) its writers use, the
    /// transformers 4 ones first (Mixtral's `w1 / w3 / w2`; llm-compressor's linearised
    /// Mixtral uses `gate_proj / up_proj / down_proj`).
    pub fn per_expert_names(self) -> &'static [[&'static str; 3]] {
        const QWEN: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];
        match self {
            Arch::Mixtral => &[["w1", "w3", "w2"], QWEN],
            _ => &[QWEN],
        }
    }

    /// The shared expert's module, relative to the block, if the architecture has one.
    pub fn shared_module(self) -> Option<&'static str> {
        match self {
            Arch::Qwen2Moe | Arch::Llama4 => Some("shared_expert"),
            Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::Glm4Moe => Some("shared_experts"),
            _ => None,
        }
    }

    /// The shared expert's sigmoid gate (`[1, hidden]`), Qwen2-MoE only.
    pub fn shared_gate(self) -> Option<&'static str> {
        (self == Arch::Qwen2Moe).then_some("shared_expert_gate.weight")
    }

    /// The expert activation.
    pub fn activation(self, config: &ModelConfig) -> Activation {
        match self {
            Arch::GptOss => Activation::SwigluOai {
                alpha: 1.702,
                limit: config.swiglu_limit,
            },
            _ => Activation::SiluAndMul,
        }
    }

    /// Routing (the DeepSeek correction bias is filled in by the loader).
    pub fn routing(self, c: &ModelConfig) -> Routing {
        match self {
            Arch::Mixtral | Arch::GptOss => Routing::SoftmaxTopK { renormalize: true },
            Arch::Qwen2Moe | Arch::Qwen3Moe => Routing::SoftmaxTopK {
                renormalize: c.norm_topk_prob,
            },
            Arch::Llama4 => Routing::SigmoidTop1,
            Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::Glm4Moe => Routing::Grouped {
                num_groups: c.n_group,
                topk_groups: c.topk_group,
                scoring: c.scoring,
                correction_bias: None,
                renormalize: c.norm_topk_prob,
                routed_scaling_factor: c.routed_scaling_factor,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Mixtral => "Mixtral",
            Arch::Qwen2Moe => "Qwen2-MoE",
            Arch::Qwen3Moe => "Qwen3-MoE",
            Arch::DeepseekV2 => "DeepSeek-V2",
            Arch::DeepseekV3 => "DeepSeek-V3",
            Arch::Glm4Moe => "GLM-4.5",
            Arch::GptOss => "GPT-OSS",
            Arch::Llama4 => "Llama 4",
        }
    }
}

/// `gate_proj` / `up_proj` / `down_proj`.
pub fn proj_name(p: Proj) -> &'static str {
    match p {
        Proj::Gate => "gate_proj",
        Proj::Up => "up_proj",
        Proj::Down => "down_proj",
    }
}
