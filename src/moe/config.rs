//! The description of one MoE layer: sizes, activation, routing, and what rides along
//! (biases, shared experts, LoRA). Backends and the oracle read it; nothing mutates it.

use crate::error::{checked_size, Error, Result};

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

    /// Rows of w13 for intermediate size `i` (saturating: `LayerConfig::validate` refuses
    /// sizes whose products overflow).
    pub fn w13_rows(&self, i: usize) -> usize {
        if self.is_gated() {
            i.saturating_mul(2)
        } else {
            i
        }
    }

    /// Checks the activation's parameters: GPT-OSS's `alpha` finite, its `limit` finite
    /// and positive (a negative or NaN limit would make the clamp panic, an infinite one
    /// is no clamp at all).
    pub fn validate(&self) -> Result<()> {
        if let Activation::SwigluOai { alpha, limit } = *self {
            if !alpha.is_finite() {
                return Err(Error::Value {
                    what: "swigluoai alpha".into(),
                    value: alpha,
                    expected: "a finite number",
                });
            }
            if !(limit.is_finite() && limit > 0.0) {
                return Err(Error::Value {
                    what: "swigluoai limit".into(),
                    value: limit,
                    expected: "a finite positive clamp limit",
                });
            }
        }
        Ok(())
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

    /// The one-expert layer a shared expert of intermediate size `intermediate` runs as
    /// beside this (routed) layer: every token to expert 0 with weight 1 (`Routing::Given`),
    /// the same hidden size, activation, biases and LoRA flag, the router weight never on
    /// the input, and no shared expert of its own.
    pub fn shared_expert(&self, intermediate: usize) -> LayerConfig {
        LayerConfig {
            num_experts: 1,
            top_k: 1,
            intermediate,
            routing: Routing::Given,
            apply_router_weight_on_input: false,
            shared_intermediate: None,
            ..self.clone()
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
        self.activation.validate()?;
        self.routing.validate(self.num_experts, self.top_k)?;
        if self.apply_router_weight_on_input && self.top_k != 1 {
            return Err(Error::Config(format!(
                "apply_router_weight_on_input needs top-k 1, got {}",
                self.top_k
            )));
        }
        let rows13 = self.activation.w13_rows(self.intermediate);
        if self.activation.is_gated() {
            checked_size("w13 rows (2 × intermediate)", &[2, self.intermediate])?;
        }
        checked_size(
            "w13 (experts × w13 rows × hidden)",
            &[self.num_experts, rows13, self.hidden],
        )?;
        checked_size(
            "w2 (experts × hidden × intermediate)",
            &[self.num_experts, self.hidden, self.intermediate],
        )?;
        if let Some(i) = self.shared_intermediate {
            checked_size(
                "shared expert w13 (2 × intermediate × hidden)",
                &[2, i, self.hidden],
            )?;
        }
        if self.shared_intermediate == Some(0) {
            return Err(Error::Config(
                "shared expert intermediate size must be positive".into(),
            ));
        }
        Ok(())
    }
}
