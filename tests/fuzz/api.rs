//! API-level seeds: a `LayerConfig`, weights quantized in memory, a shared expert, LoRA
//! adapters and forward inputs, run through `MoeLayer` (mutated by `apimut`).

use fleetmoe::moe::{
    calibrate, Activation, GroupScoring, LayerConfig, LayerExtras, Lora, LoraAdapter, LoraExpert,
    LoraProj, MoeLayer, Router, Routing, RoutingInput, SharedExpertWeights, Target, TopK,
};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};

#[derive(Clone)]
pub struct ApiCase {
    pub label: &'static str,
    pub config: LayerConfig,
    pub weights: ExpertWeights,
    pub shared: Option<SharedExpertWeights>,
    pub lora: Option<Lora>,
    pub backend: Option<BackendId>,
    pub x: Vec<f32>,
    pub logits: Vec<f32>,
    /// Routing given by the caller instead of logits, as raw parts: `TopK`'s fields are
    /// private, so a mutant goes through `TopK::new` like any caller.
    pub topk: Option<RawTopK>,
    pub slots: Option<Vec<Option<usize>>>,
    /// The seed's (experts, hidden, intermediate), which mutations size new data by.
    pub dims: (usize, usize, usize),
}

pub const TOKENS: usize = 3;

/// The parts a caller hands `TopK::new`.
#[derive(Clone, Debug)]
pub struct RawTopK {
    pub tokens: usize,
    pub k: usize,
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl RawTopK {
    pub fn of(t: &TopK) -> Self {
        RawTopK {
            tokens: t.tokens(),
            k: t.k(),
            ids: t.ids().to_vec(),
            weights: t.weights().to_vec(),
        }
    }
}

fn case(label: &'static str, config: LayerConfig, scheme: &str, seed: u64) -> ApiCase {
    let scheme = QuantScheme::parse(scheme).expect("seed scheme");
    let dense = DenseExperts::random(&config, seed);
    let mut weights = ExpertWeights::quantize(&dense, scheme).expect("seed weights");
    let (e, h) = (config.num_experts, config.hidden);
    let x = super::check::input(TOKENS, h);
    let logits: Vec<f32> = (0..TOKENS * e)
        .map(|k| ((k * 37 % 11) as f32 - 5.0) / 4.0)
        .collect();
    let r = Router::new(&LayerConfig {
        routing: match config.routing {
            Routing::Given => Routing::SoftmaxTopK { renormalize: true },
            ref r => r.clone(),
        },
        ..config.clone()
    })
    .expect("seed router");
    let topk = r.route(&logits, TOKENS).expect("seed routing");
    calibrate(&mut weights, &config, &x, &topk).expect("seed calibration");
    ApiCase {
        label,
        config: config.clone(),
        weights,
        shared: None,
        lora: None,
        backend: None,
        x,
        logits,
        topk: matches!(config.routing, Routing::Given).then(|| RawTopK::of(&topk)),
        slots: None,
        dims: (e, h, config.intermediate),
    }
}

pub fn lora(e: usize, h: usize, i: usize, rank: usize, shared: Option<usize>) -> LoraAdapter {
    let mut r = crate::ckpt::rng(77);
    let mut proj = |fan_in: usize, fan_out: usize| {
        Some(LoraProj {
            a: crate::ckpt::gaussian(&mut r, rank * fan_in, 0.1),
            b: crate::ckpt::gaussian(&mut r, fan_out * rank, 0.1),
        })
    };
    let mut expert = |i: usize| LoraExpert {
        gate: proj(h, i),
        up: proj(h, i),
        down: proj(i, h),
    };
    LoraAdapter {
        rank,
        scaling: 2.0,
        experts: (0..e).map(|_| expert(i)).collect(),
        shared: shared.map(expert),
    }
}

/// The API seeds; each builds and runs cleanly.
pub fn seeds() -> Vec<ApiCase> {
    let base = LayerConfig::new(4, 2, 64, 32);
    let grouped = LayerConfig {
        routing: Routing::Grouped {
            num_groups: 2,
            topk_groups: 1,
            scoring: GroupScoring::Sigmoid,
            correction_bias: Some(vec![0.1, -0.2, 0.3, 0.0]),
            renormalize: true,
            routed_scaling_factor: 2.5,
        },
        shared_intermediate: Some(32),
        ..base.clone()
    };
    let mut v = vec![
        case("api-bf16-softmax", base.clone(), "bf16", 1),
        case("api-fp8-channel-grouped-shared", grouped, "fp8-channel", 2),
        case(
            "api-mxfp4-swigluoai-bias",
            LayerConfig {
                activation: Activation::GPT_OSS,
                has_bias: true,
                ..base.clone()
            },
            "mxfp4",
            3,
        ),
        case(
            "api-w4a16-relu2-given",
            LayerConfig {
                activation: Activation::Relu2,
                routing: Routing::Given,
                ..base.clone()
            },
            "w4a16-g32-zp",
            4,
        ),
        case(
            "api-nvfp4-top1-on-input",
            LayerConfig {
                top_k: 1,
                routing: Routing::SigmoidTop1,
                apply_router_weight_on_input: true,
                ..base.clone()
            },
            "nvfp4",
            5,
        ),
        case(
            "api-fp8-static-lora",
            LayerConfig {
                lora: true,
                ..base.clone()
            },
            "fp8-static",
            6,
        ),
        case("api-w4a16-actorder", base.clone(), "w4a16-g32-actorder", 7),
        case("api-mxfp6-a-fp8", base.clone(), "mxfp6-e3m2-a-fp8", 8),
    ];
    let sh = LayerConfig::new(1, 1, 64, 32);
    let w = ExpertWeights::quantize(
        &DenseExperts::random(&sh, 9),
        QuantScheme::parse("bf16").unwrap(),
    );
    v[1].shared = Some(SharedExpertWeights {
        weights: w.unwrap(),
        gate: Some(crate::ckpt::gaussian(&mut crate::ckpt::rng(10), 64, 0.1)),
    });
    v[5].lora = Some(Lora {
        adapters: vec![lora(4, 64, 32, 2, None), lora(4, 64, 32, 4, None)],
    });
    v[5].slots = Some(vec![Some(1), None, Some(0)]);
    v
}

/// Runs a case: build the layer, then forward.
pub fn run(c: &ApiCase, target: &Target) -> fleetmoe::Result<Vec<f32>> {
    let extras = LayerExtras {
        shared: c.shared.clone(),
        lora: c.lora.clone(),
        backend: c.backend,
    };
    let layer = MoeLayer::new(c.config.clone(), &c.weights, target, extras)?;
    let topk = match &c.topk {
        Some(t) => Some(TopK::new(
            t.tokens,
            t.k,
            t.ids.clone(),
            t.weights.clone(),
            c.config.num_experts,
        )?),
        None => None,
    };
    let routing = match &topk {
        Some(t) => RoutingInput::TopK(t),
        None => RoutingInput::Logits(&c.logits),
    };
    layer.forward(&c.x, routing, c.slots.as_deref())
}
