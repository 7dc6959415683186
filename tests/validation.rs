//! Nothing malformed gets through: every value the layer trusts — activation and routing
//! parameters, sizes, top-k lists, adapters, gates — is checked where it enters, and
//! refused with an error naming the field and the bad value. And what is accepted gives
//! finite output: a layer of finite weights within `MAX_WEIGHT_MAGNITUDE` on ordinary
//! input (|x| ≤ 64), for every scheme. The weights' own checks are in
//! `validation_weights.rs`.

mod common;
mod refusals;

use common::*;
use fleetmoe::moe::*;
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme, MAX_WEIGHT_MAGNITUDE};
use fleetmoe::Error;
use refusals::*;

// ---- 1. What used to panic ----

#[test]
fn swiglu_parameters_out_of_their_domain_are_refused() {
    let with = |alpha, limit| LayerConfig {
        activation: Activation::SwigluOai { alpha, limit },
        ..config()
    };
    assert_value(with(1.702, -1.0).validate(), "swigluoai limit", -1.0);
    assert_value(
        with(1.702, f32::NAN).validate(),
        "swigluoai limit",
        f32::NAN,
    );
    assert_value(with(1.702, 0.0).validate(), "swigluoai limit", 0.0);
    assert_value(
        with(1.702, f32::INFINITY).validate(),
        "swigluoai limit",
        f32::INFINITY,
    );
    assert_value(
        with(f32::INFINITY, 7.0).validate(),
        "swigluoai alpha",
        f32::INFINITY,
    );
    assert_value(with(f32::NAN, 7.0).validate(), "swigluoai alpha", f32::NAN);
    // The layer refuses it before a forward could reach the clamp.
    let c = with(1.702, -1.0);
    let w = weights(&LayerConfig::new(E, 2, H, I), "bf16");
    assert_value(
        layer(c, &w, LayerExtras::default()),
        "swigluoai limit",
        -1.0,
    );
    // And so does a shared expert prepared on its own.
    let one = LayerConfig {
        num_experts: 1,
        top_k: 1,
        ..config()
    };
    let shared = SharedExpertWeights {
        weights: weights(&one, "bf16"),
        gate: None,
    };
    assert_value(
        SharedExperts::prepare(
            &shared,
            Activation::SwigluOai {
                alpha: 1.702,
                limit: f32::NAN,
            },
            H,
        ),
        "swigluoai limit",
        f32::NAN,
    );
    assert!(with(1.702, 7.0).validate().is_ok());
}

#[test]
fn sizes_whose_products_overflow_are_refused() {
    let huge = usize::MAX / 2 + 1;
    assert_overflow(
        TopK::new(huge, 2, vec![], vec![], E),
        "top-k pairs (tokens × k)",
    );
    let r = Router::new(&config()).unwrap();
    assert_overflow(r.route(&[], huge), "router logits (tokens × experts)");
    assert_overflow(
        LayerConfig::new(huge, 1, 1 << 20, 1 << 20).validate(),
        "experts × w13 rows × hidden",
    );
    assert_overflow(
        LayerConfig::new(E, 2, 8, huge).validate(),
        "w13 rows (2 × intermediate)",
    );
    // Weights whose dimensions multiply past usize (data that could never be allocated).
    let mut w = weights(&config(), "bf16");
    w.w13.experts = huge;
    w.w13.rows = 1 << 40;
    w.num_experts = huge;
    assert_overflow(w.validate(), "w13");
    assert_overflow(w.dequantize_expert(0), "w13");
    // A LoRA rank whose product with the fan-in overflows.
    let c = LayerConfig {
        lora: true,
        ..config()
    };
    let mut ad = random_adapter(&mut rng(1), 2, E, H, I, true, None);
    ad.rank = huge;
    let w = weights(&c, "bf16");
    assert_overflow(
        layer(
            c,
            &w,
            LayerExtras {
                lora: Some(Lora { adapters: vec![ad] }),
                ..Default::default()
            },
        ),
        "adapter 0 expert 0 gate LoRA A",
    );
}

#[test]
fn the_router_checks_its_groups_at_construction() {
    let grouped = |num_groups, topk_groups, top_k| LayerConfig {
        top_k,
        routing: Routing::Grouped {
            num_groups,
            topk_groups,
            scoring: GroupScoring::Sigmoid,
            correction_bias: None,
            renormalize: true,
            routed_scaling_factor: 1.0,
        },
        ..config()
    };
    // More groups than experts used to divide by zero inside `route`.
    assert_config(
        Router::new(&grouped(8, 1, 1)),
        &["num_groups = 8", "4 experts"],
    );
    assert_config(Router::new(&grouped(0, 1, 1)), &["num_groups = 0"]);
    assert_config(Router::new(&grouped(3, 1, 1)), &["num_groups = 3"]);
    assert_config(
        Router::new(&grouped(2, 0, 1)),
        &["topk_groups = 0", "1..=2"],
    );
    assert_config(
        Router::new(&grouped(2, 3, 1)),
        &["topk_groups = 3", "1..=2"],
    );
    assert_config(Router::new(&grouped(2, 1, 3)), &["top-k 3", "2 experts"]);
    assert!(matches!(
        Router::new(&LayerConfig {
            top_k: 0,
            ..config()
        }),
        Err(Error::TopK {
            top_k: 0,
            num_experts: 4
        })
    ));
    assert_config(
        Router::new(&LayerConfig {
            routing: Routing::SigmoidTop1,
            ..config()
        }),
        &["top-k 1, got 2"],
    );
    assert!(Router::new(&grouped(2, 1, 2)).is_ok());
}

#[test]
fn a_top_k_cannot_be_shorter_than_its_tokens_or_name_a_missing_expert() {
    assert!(matches!(
        TopK::new(3, 2, vec![0; 5], vec![0.5; 6], E),
        Err(Error::Shape { what, got, .. }) if what == "top-k ids" && got == "5 elements"
    ));
    assert!(matches!(
        TopK::new(3, 2, vec![0; 6], vec![0.5; 4], E),
        Err(Error::Shape { what, .. }) if what == "top-k weights"
    ));
    assert_value(
        TopK::new(1, 2, vec![0, 1], vec![0.5, f32::NAN], E),
        "top-k weights [1]",
        f32::NAN,
    );
    assert_value(
        TopK::new(1, 2, vec![0, 1], vec![0.5, 1e6], E),
        "top-k weights [1]",
        1e6,
    );
    // The emulation checks a TopK against its own experts and the input's tokens.
    let c = config();
    let emu = EmulatedExperts::prepare(&weights(&c, "bf16"), &c).unwrap();
    let x = uniform(&mut rng(2), 3 * H, 1.0);
    let mut out = vec![0f32; 3 * H];
    let wide = TopK::new(3, 2, vec![0, 1, 2, 3, 4, 5], vec![0.5; 6], 8).unwrap();
    assert!(matches!(
        emu.forward(&x, &wide, None, &mut out),
        Err(Error::ExpertId {
            id: 4,
            num_experts: 4
        })
    ));
    let two_tokens = TopK::new(2, 2, vec![0, 1, 2, 3], vec![0.5; 4], E).unwrap();
    assert!(matches!(
        emu.forward(&x, &two_tokens, None, &mut out),
        Err(Error::Shape { what, .. }) if what == "output"
    ));
}

// ---- 4. Routing and shared experts at the API level ----

#[test]
fn routing_parameters_and_logits_must_be_finite() {
    let grouped = |bias: Vec<f32>, factor: f32| LayerConfig {
        routing: Routing::Grouped {
            num_groups: 2,
            topk_groups: 1,
            scoring: GroupScoring::Sigmoid,
            correction_bias: Some(bias),
            renormalize: true,
            routed_scaling_factor: factor,
        },
        ..config()
    };
    let w = weights(&config(), "bf16");
    let bias = vec![0.0, 0.1, f32::NAN, 0.0];
    assert_value(
        layer(grouped(bias.clone(), 2.5), &w, LayerExtras::default()),
        "e_score_correction_bias [2]",
        f32::NAN,
    );
    assert_value(
        Router::new(&grouped(vec![f32::INFINITY, 0.0, 0.0, 0.0], 2.5)),
        "e_score_correction_bias [0]",
        f32::INFINITY,
    );
    for bad in [f32::NAN, 0.0, -1.0, f32::INFINITY, 1e6] {
        assert_value(
            layer(grouped(vec![0.0; E], bad), &w, LayerExtras::default()),
            "routed_scaling_factor",
            bad,
        );
    }
    let l = layer(config(), &w, LayerExtras::default()).unwrap();
    let x = uniform(&mut rng(3), 2 * H, 1.0);
    let mut logits = uniform(&mut rng(4), 2 * E, 1.0);
    logits[6] = f32::INFINITY;
    assert_value(
        l.forward(&x, RoutingInput::Logits(&logits), None),
        "router logits [6]",
        f32::INFINITY,
    );
}

#[test]
fn a_shared_expert_gate_must_be_finite() {
    let c = LayerConfig {
        shared_intermediate: Some(I),
        ..config()
    };
    let one = LayerConfig {
        num_experts: 1,
        top_k: 1,
        ..config()
    };
    let mut gate = vec![0.01; H];
    gate[17] = f32::NAN;
    let shared = SharedExpertWeights {
        weights: weights(&one, "bf16"),
        gate: Some(gate),
    };
    assert_value(
        SharedExperts::prepare(&shared, Activation::SiluAndMul, H),
        "shared expert gate [17]",
        f32::NAN,
    );
    let w = weights(&config(), "bf16");
    assert_value(
        layer(
            c,
            &w,
            LayerExtras {
                shared: Some(shared),
                ..Default::default()
            },
        ),
        "shared expert gate [17]",
        f32::NAN,
    );
}

// ---- 5. LoRA ----

#[test]
fn adapters_with_bad_ranks_values_or_scaling_are_refused() {
    let c = LayerConfig {
        lora: true,
        ..config()
    };
    let w = weights(&c, "bf16");
    let with = |ad: LoraAdapter| {
        layer(
            c.clone(),
            &w,
            LayerExtras {
                lora: Some(Lora { adapters: vec![ad] }),
                ..Default::default()
            },
        )
    };
    let fine = || random_adapter(&mut rng(5), 4, E, H, I, true, None);
    let mut zero_rank = fine();
    zero_rank.rank = 0;
    assert_config(with(zero_rank), &["adapter 0", "rank = 0"]);
    for bad in [f32::NAN, f32::INFINITY] {
        let mut ad = fine();
        ad.scaling = bad;
        assert_value(with(ad), "adapter 0 scaling", bad);
    }
    let mut ad = fine();
    ad.experts[1].gate.as_mut().unwrap().a[11] = f32::NAN;
    assert_value(with(ad), "adapter 0 expert 1 gate LoRA A [11]", f32::NAN);
    let mut ad = fine();
    ad.experts[3].down.as_mut().unwrap().b[2] = f32::NEG_INFINITY;
    assert_value(
        with(ad),
        "adapter 0 expert 3 down LoRA B [2]",
        f32::NEG_INFINITY,
    );
    assert!(with(fine()).is_ok());
}

// ---- What is accepted gives finite output ----

/// Every scheme, three activations (one squares its input), weights scaled so the largest
/// is 2^14 (a quarter of the bound, so quantization rounding stays inside it), biases up
/// to about 2^10, input of magnitude up to 64: the output is finite, and so is an ordinary
/// layer's. The one exception is f16, whose intermediates end at 65504: there the large
/// layer's forward is an error naming the output element, never an infinity.
#[test]
fn valid_layers_give_finite_output_for_every_scheme() {
    let tokens = 3;
    let x = uniform(&mut rng(6), tokens * H, 64.0);
    assert!(x.iter().all(|v| v.abs() <= 64.0));
    for activation in [
        Activation::SiluAndMul,
        Activation::GPT_OSS,
        Activation::Relu2,
    ] {
        let c = LayerConfig {
            activation,
            has_bias: true,
            ..config()
        };
        let logits = uniform(&mut rng(7), tokens * E, 4.0);
        let topk = Router::new(&c).unwrap().route(&logits, tokens).unwrap();
        let ordinary = DenseExperts::random(&c, 8);
        let mut large = ordinary.clone();
        let amax = large
            .w13
            .iter()
            .chain(&large.w2)
            .fold(0f32, |m, v| m.max(v.abs()));
        let to = |v: &mut Vec<f32>, top: f32| v.iter_mut().for_each(|w| *w *= top / amax);
        to(&mut large.w13, 16384.0);
        to(&mut large.w2, 16384.0);
        to(large.w13_bias.as_mut().unwrap(), 1024.0);
        to(large.w2_bias.as_mut().unwrap(), 1024.0);
        for scheme in QuantScheme::all_representative() {
            for (what, dense) in [("ordinary", &ordinary), ("large", &large)] {
                let mut w = ExpertWeights::quantize(dense, scheme).unwrap();
                calibrate(&mut w, &c, &x, &topk).unwrap();
                w.validate()
                    .unwrap_or_else(|e| panic!("{scheme} {what}: {e}"));
                let l =
                    MoeLayer::new(c.clone(), &w, &Target::cpu(), LayerExtras::default()).unwrap();
                let y = l.forward(&x, RoutingInput::Logits(&logits), None);
                let name = activation.name();
                if what == "large" && scheme == QuantScheme::parse("f16").unwrap() {
                    // f16 intermediates end at 65504: an error, never an infinity.
                    match y {
                        Err(Error::Value { what, .. }) => assert!(
                            what.starts_with("layer output [token"),
                            "{scheme} {name} {what}"
                        ),
                        Err(e) => panic!("{scheme} {name}: {e}"),
                        Ok(_) => panic!("{scheme} {name}: f16 intermediates cannot hold these"),
                    }
                    continue;
                }
                let y = y.unwrap_or_else(|e| panic!("{scheme} {name} {what}: {e}"));
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "{scheme} {name} {what}: non-finite output"
                );
                assert!(
                    y.iter().any(|&v| v != 0.0),
                    "{scheme} {name} {what}: all zero"
                );
            }
        }
    }
    assert_eq!(MAX_WEIGHT_MAGNITUDE, 65536.0);
}
