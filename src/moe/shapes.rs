//! The MoE layer shapes of real models, so the command line and the benchmarks run what
//! deployments run. Sizes are from each model's published `config.json`.

use super::config::{Activation, GroupScoring, LayerConfig, Routing};
use crate::error::{Error, Result};

/// One model's MoE layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelShape {
    /// A few-megabyte layer that runs in seconds on any CPU.
    Small,
    /// Mixtral-8x7B: 8 experts, top-2, H 4096, I 14336, SiLU.
    Mixtral8x7b,
    /// Qwen3-30B-A3B: 128 experts, top-8, H 2048, I 768, SiLU, renormalized.
    Qwen3_30bA3b,
    /// DeepSeek-V3: 256 experts in 8 groups (4 kept), top-8, H 7168, I 2048, sigmoid scores
    /// with a correction bias, scaling 2.5, one shared expert of width 2048.
    DeepseekV3,
    /// GPT-OSS-120B: 128 experts, top-4, H 2880, I 2880, clamped SwiGLU, biases.
    GptOss120b,
}

impl ModelShape {
    pub const ALL: &'static [ModelShape] = &[
        ModelShape::Small,
        ModelShape::Mixtral8x7b,
        ModelShape::Qwen3_30bA3b,
        ModelShape::DeepseekV3,
        ModelShape::GptOss120b,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelShape::Small => "small",
            ModelShape::Mixtral8x7b => "mixtral-8x7b",
            ModelShape::Qwen3_30bA3b => "qwen3-30b-a3b",
            ModelShape::DeepseekV3 => "deepseek-v3",
            ModelShape::GptOss120b => "gpt-oss-120b",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        let wanted = name.trim().to_ascii_lowercase();
        ModelShape::ALL
            .iter()
            .copied()
            .find(|s| s.name() == wanted)
            .ok_or_else(|| {
                let known: Vec<_> = ModelShape::ALL.iter().map(|s| s.name()).collect();
                Error::Config(format!(
                    "unknown shape '{name}'; known shapes: {}",
                    known.join(", ")
                ))
            })
    }

    /// The layer's configuration (no LoRA; shared expert only where the model has one).
    pub fn config(self) -> LayerConfig {
        match self {
            ModelShape::Small => LayerConfig::new(8, 2, 256, 512),
            ModelShape::Mixtral8x7b => LayerConfig::new(8, 2, 4096, 14336),
            ModelShape::Qwen3_30bA3b => LayerConfig::new(128, 8, 2048, 768),
            ModelShape::DeepseekV3 => LayerConfig {
                routing: Routing::Grouped {
                    num_groups: 8,
                    topk_groups: 4,
                    scoring: GroupScoring::Sigmoid,
                    // The checkpoint carries a learned bias; `run` fills in a seeded one.
                    correction_bias: Some(vec![0.0; 256]),
                    renormalize: true,
                    routed_scaling_factor: 2.5,
                },
                shared_intermediate: Some(2048),
                ..LayerConfig::new(256, 8, 7168, 2048)
            },
            ModelShape::GptOss120b => LayerConfig {
                activation: Activation::GPT_OSS,
                has_bias: true,
                ..LayerConfig::new(128, 4, 2880, 2880)
            },
        }
    }

    /// The config with a different number of routed experts (to fit a large model's layer
    /// into a small machine); grouped routing keeps its groups, so `experts` must split
    /// into them, and top-k is capped by what is left.
    ///
    /// More experts than the model has, or a count its routing cannot split (DeepSeek-V3's
    /// groups), is an error that lists the counts that work.
    pub fn with_experts(self, experts: usize) -> Result<LayerConfig> {
        let full = self.config().num_experts;
        let shrunk = |n: usize| {
            let mut config = self.config();
            config.num_experts = n;
            if let Routing::Grouped {
                correction_bias: Some(b),
                ..
            } = &mut config.routing
            {
                b.resize(n, 0.0);
            }
            config
        };
        let valid = || {
            let ok: Vec<String> = (1..=full)
                .filter(|&n| shrunk(n).validate().is_ok())
                .map(|n| n.to_string())
                .collect();
            if ok.len() > 12 {
                format!("{}, …, {}", ok[..8].join(", "), ok[ok.len() - 1])
            } else {
                ok.join(", ")
            }
        };
        if experts > full {
            return Err(Error::Config(format!(
                "--experts {experts}: {} has {full} routed experts (counts that work: {})",
                self.name(),
                valid()
            )));
        }
        let config = shrunk(experts);
        config.validate().map_err(|e| {
            Error::Config(format!(
                "--experts {experts} does not fit {}: {e} (counts that work: {})",
                self.name(),
                valid()
            ))
        })?;
        Ok(config)
    }
}
