//! The description of one MoE layer: sizes, activation, routing, and what rides along
//! (biases, shared experts, LoRA). Backends and the oracle read it; nothing mutates it.

use crate::error::{Error, Result};

/// The expert MLP's nonlinearity, and whether gemm1 produces gate and up halves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `silu(gate) · up`, gate rows then up rows in w13.
    SiluAndMul,
    /// `gelu(gate) · up` with the exact erf GELU.
    GeluAndMul,
    /// `gelu(gate) · up` with the tanh approximation.
    GeluTanhAndMul,
    /// GPT-OSS "swigluoai": gate = even rows, up = odd rows of w13; gate clamped above at
    /// `limit`, up clamped to ±`limit`; `(up + 1) · gate · sigmoid(alpha · gate)`.
    SwigluOai { alpha: f32, limit: f32 },
    /// Non-gated `relu(x)²` (Nemotron); w13 has I rows.
    Relu2,
    /// Non-gated `silu(x)`; w13 has I rows.
    Silu,
}

impl Activation {
    /// GPT-OSS's constants: alpha 1.702, limit 7.0.
    pub const GPT_OSS: Activation = Activation::SwigluOai {
        alpha: 1.702,
        limit: 7.0,
    };

    /// Whether gemm1 yields gate and up (w13 has 2·I rows) or a single projection (I rows).
    pub fn is_gated(&self) -> bool {
        !matches!(self, Activation::Relu2 | Activation::Silu)
    }

    /// Rows of w13 for intermediate size `i`.
    pub fn w13_rows(&self, i: usize) -> usize {
        if self.is_gated() {
            2 * i
        } else {
            i
        }
    }

    /// Short name, as `explain` and the command line print it.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::SiluAndMul => "silu",
            Activation::GeluAndMul => "gelu",
            Activation::GeluTanhAndMul => "gelu-tanh",
            Activation::SwigluOai { .. } => "swigluoai",
            Activation::Relu2 => "relu2",
            Activation::Silu => "silu-nogate",
        }
    }

    /// Parses `silu`, `gelu`, `gelu-tanh`, `swigluoai`, `relu2`, `silu-nogate`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "silu" => Activation::SiluAndMul,
            "gelu" => Activation::GeluAndMul,
            "gelu-tanh" => Activation::GeluTanhAndMul,
            "swigluoai" => Activation::GPT_OSS,
            "relu2" => Activation::Relu2,
            "silu-nogate" => Activation::Silu,
            _ => {
                return Err(Error::Config(format!(
                    "unknown activation '{s}' (known: silu, gelu, gelu-tanh, swigluoai, relu2, silu-nogate)"
                )))
            }
        })
    }
}

/// How a router turns logits into per-token expert ids and weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Routing {
    /// Softmax over all experts, then top-k; `renormalize` divides the k weights by their sum.
    SoftmaxTopK { renormalize: bool },
    /// Sigmoid per expert, then top-k.
    SigmoidTopK { renormalize: bool },
    /// DeepSeek-V3 style: experts in `num_groups` groups; score each group (sum of its top
    /// two biased scores when a correction bias is present, otherwise its max), keep the
    /// best `topk_groups`, take top-k among their experts by biased score, weight by the
    /// unbiased score, optionally renormalize, then multiply by `routed_scaling_factor`.
    Grouped {
        num_groups: usize,
        topk_groups: usize,
        scoring: GroupScoring,
        correction_bias: Option<Vec<f32>>,
        renormalize: bool,
        routed_scaling_factor: f32,
    },
    /// Llama 4: top-1 by logit, weight `sigmoid(logit)`; usually with
    /// `apply_router_weight_on_input`.
    SigmoidTop1,
    /// The caller supplies ids and weights; logits are not used.
    Given,
}

/// The score function of grouped routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScoring {
    Softmax,
    Sigmoid,
}

impl Routing {
    pub fn name(&self) -> &'static str {
        match self {
            Routing::SoftmaxTopK { .. } => "softmax-topk",
            Routing::SigmoidTopK { .. } => "sigmoid-topk",
            Routing::Grouped { .. } => "grouped-topk",
            Routing::SigmoidTop1 => "sigmoid-top1",
            Routing::Given => "given",
        }
    }
}

/// Everything about a layer that is not a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    /// Routed experts in the layer.
    pub num_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Model (hidden) size H.
    pub hidden: usize,
    /// Expert intermediate size I.
    pub intermediate: usize,
    pub activation: Activation,
    pub routing: Routing,
    /// Whether the experts carry biases (GPT-OSS).
    pub has_bias: bool,
    /// Scale the expert input by the router weight instead of the output (Llama 4, top-1).
    pub apply_router_weight_on_input: bool,
    /// Intermediate size of the shared expert(s), if the layer has them.
    pub shared_intermediate: Option<usize>,
    /// Whether LoRA adapters may be attached.
    pub lora: bool,
}

impl LayerConfig {
    /// A layer with SiLU, softmax top-k with renormalisation, no bias, no extras.
    pub fn new(num_experts: usize, top_k: usize, hidden: usize, intermediate: usize) -> Self {
        LayerConfig {
            num_experts,
            top_k,
            hidden,
            intermediate,
            activation: Activation::SiluAndMul,
            routing: Routing::SoftmaxTopK { renormalize: true },
            has_bias: false,
            apply_router_weight_on_input: false,
            shared_intermediate: None,
            lora: false,
        }
    }

    /// Checks that the sizes and options describe a layer that can exist.
    pub fn validate(&self) -> Result<()> {
        if self.num_experts == 0 || self.hidden == 0 || self.intermediate == 0 {
            return Err(Error::Config(format!(
                "experts ({}), hidden ({}) and intermediate ({}) must be positive",
                self.num_experts, self.hidden, self.intermediate
            )));
        }
        if self.top_k == 0 || self.top_k > self.num_experts {
            return Err(Error::TopK {
                top_k: self.top_k,
                num_experts: self.num_experts,
            });
        }
        if self.apply_router_weight_on_input && self.top_k != 1 {
            return Err(Error::Config(format!(
                "apply_router_weight_on_input needs top-k 1, got {}",
                self.top_k
            )));
        }
        match &self.routing {
            Routing::Grouped {
                num_groups,
                topk_groups,
                correction_bias,
                routed_scaling_factor,
                ..
            } => {
                if *num_groups == 0 || self.num_experts % num_groups != 0 {
                    return Err(Error::Config(format!(
                        "{} experts cannot be split into {num_groups} equal groups",
                        self.num_experts
                    )));
                }
                if *topk_groups == 0 || topk_groups > num_groups {
                    return Err(Error::Config(format!(
                        "topk_groups {topk_groups} must be in 1..={num_groups}"
                    )));
                }
                if self.top_k > topk_groups * (self.num_experts / num_groups) {
                    return Err(Error::Config(format!(
                        "top-k {} exceeds the {} experts in the {topk_groups} kept groups",
                        self.top_k,
                        topk_groups * (self.num_experts / num_groups)
                    )));
                }
                if let Some(b) = correction_bias {
                    crate::error::check_len("score correction bias", b.len(), self.num_experts)?;
                }
                if !routed_scaling_factor.is_finite() || *routed_scaling_factor <= 0.0 {
                    return Err(Error::Config(format!(
                        "routed_scaling_factor must be finite and positive, got {routed_scaling_factor}"
                    )));
                }
            }
            Routing::SigmoidTop1 if self.top_k != 1 => {
                return Err(Error::Config(format!(
                    "sigmoid top-1 routing needs top-k 1, got {}",
                    self.top_k
                )));
            }
            _ => {}
        }
        if self.shared_intermediate == Some(0) {
            return Err(Error::Config(
                "shared expert intermediate size must be positive".into(),
            ));
        }
        Ok(())
    }
}
