//! Bad input to the router and the layer is an error naming what was wrong, never a panic
//! or a wrong answer; and the routers pick what their definitions say on hand-made logits.

mod common;

use common::*;
use fleetmoe::device::Capabilities;
use fleetmoe::moe::*;
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
use fleetmoe::Error;

const E: usize = 4;
const H: usize = 64;
const I: usize = 32;

fn config() -> LayerConfig {
    LayerConfig::new(E, 2, H, I)
}

fn weights(config: &LayerConfig, scheme: &str) -> ExpertWeights {
    ExpertWeights::quantize(
        &DenseExperts::random(config, 7),
        QuantScheme::parse(scheme).unwrap(),
    )
    .unwrap()
}

fn layer(config: LayerConfig, extras: LayerExtras) -> fleetmoe::Result<MoeLayer> {
    let w = weights(&config, "bf16");
    MoeLayer::new(config, &w, &Target::cpu(), extras)
}

/// The error's message, for checking it names the problem.
fn message<T>(r: fleetmoe::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn top_k_larger_than_the_expert_count_is_refused() {
    let c = LayerConfig {
        top_k: E + 1,
        ..config()
    };
    assert!(matches!(
        c.validate(),
        Err(Error::TopK {
            top_k: 5,
            num_experts: 4
        })
    ));
    assert!(matches!(
        Router::new(&c),
        Err(Error::TopK {
            top_k: 5,
            num_experts: 4
        })
    ));
    assert!(matches!(
        TopK::new(1, 5, vec![0; 5], vec![0.2; 5], E),
        Err(Error::TopK { .. })
    ));
}

#[test]
fn router_refuses_nan_and_wrong_lengths() {
    let r = Router::new(&config()).unwrap();
    assert!(message(r.route(&[0.0, f32::NAN, 1.0, 2.0], 1)).contains("NaN"));
    let m = message(r.route(&[0.0; E + 1], 1));
    assert!(m.contains("router logits"), "{m}");
}

#[test]
fn caller_top_k_is_checked_against_the_layer() {
    let l = layer(config(), LayerExtras::default()).unwrap();
    let x = uniform(&mut rng(1), 2 * H, 1.0);
    // Routing built for a larger layer names an expert this one does not have.
    let out_of_range = TopK::new(2, 2, vec![0, 1, 2, E as u32], vec![0.5; 4], 2 * E).unwrap();
    assert!(matches!(
        l.forward(&x, RoutingInput::TopK(&out_of_range), None),
        Err(Error::ExpertId {
            id: 4,
            num_experts: 4
        })
    ));
    let wrong_tokens = TopK::new(1, 2, vec![0, 1], vec![0.5, 0.5], E).unwrap();
    assert!(matches!(
        l.forward(&x, RoutingInput::TopK(&wrong_tokens), None),
        Err(Error::Shape { .. })
    ));
    // A TopK can only hold ids below its expert count and finite weights.
    assert!(matches!(
        TopK::new(2, 2, vec![0, 1, 2, E as u32], vec![0.5; 4], E),
        Err(Error::ExpertId {
            id: 4,
            num_experts: 4
        })
    ));
    match TopK::new(
        2,
        2,
        vec![0, 1, 2, 3],
        vec![0.5, f32::INFINITY, 0.5, 0.5],
        E,
    ) {
        Err(Error::Value { what, value, .. }) => {
            assert!(what.contains("top-k weights [1]"), "{what}");
            assert_eq!(value, f32::INFINITY);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hidden_states_of_the_wrong_size_or_not_finite_are_refused() {
    let l = layer(config(), LayerExtras::default()).unwrap();
    let logits = uniform(&mut rng(2), 2 * E, 1.0);
    let m = message(l.forward(&vec![0.5; 2 * H - 1], RoutingInput::Logits(&logits), None));
    assert!(m.contains("hidden states"), "{m}");
    let mut x = uniform(&mut rng(3), 2 * H, 1.0);
    x[5] = f32::INFINITY;
    assert!(message(l.forward(&x, RoutingInput::Logits(&logits), None)).contains("hidden states"));
}

#[test]
fn weights_that_do_not_match_the_config_are_refused() {
    let w = weights(&LayerConfig::new(E, 2, H, 2 * I), "fp8");
    let m = message(MoeLayer::new(
        config(),
        &w,
        &Target::cpu(),
        LayerExtras::default(),
    ));
    assert!(m.contains("shape mismatch"), "{m}");
    let w = weights(&LayerConfig::new(E + 1, 2, H, I), "fp8");
    assert!(matches!(
        MoeLayer::new(config(), &w, &Target::cpu(), LayerExtras::default()),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn shared_expert_must_match_its_config() {
    let c = LayerConfig {
        shared_intermediate: Some(I),
        ..config()
    };
    let one = LayerConfig {
        num_experts: 1,
        top_k: 1,
        ..config()
    };
    let shared = Some(SharedExpertWeights {
        weights: weights(&one, "bf16"),
        gate: None,
    });
    // Given without a shared size in the config, or missing when the config has one.
    assert!(message(layer(
        config(),
        LayerExtras {
            shared: shared.clone(),
            ..Default::default()
        }
    ))
    .contains("shared"));
    assert!(message(layer(c.clone(), LayerExtras::default())).contains("shared"));
    // A gate of the wrong length.
    let bad_gate = SharedExpertWeights {
        weights: weights(&one, "bf16"),
        gate: Some(vec![0.1; H + 1]),
    };
    assert!(message(layer(
        c.clone(),
        LayerExtras {
            shared: Some(bad_gate),
            ..Default::default()
        }
    ))
    .contains("shared expert gate"));
    assert!(layer(
        c,
        LayerExtras {
            shared,
            ..Default::default()
        }
    )
    .is_ok());
}

#[test]
fn adapter_indices_out_of_range_are_refused() {
    let c = LayerConfig {
        lora: true,
        ..config()
    };
    let adapters = (0..2)
        .map(|s| random_adapter(&mut rng(s), 4, E, H, I, true, None))
        .collect();
    let l = layer(
        c,
        LayerExtras {
            lora: Some(Lora { adapters }),
            ..Default::default()
        },
    )
    .unwrap();
    let x = uniform(&mut rng(4), 3 * H, 1.0);
    let logits = uniform(&mut rng(5), 3 * E, 1.0);
    let route = RoutingInput::Logits(&logits);
    assert!(l
        .forward(&x, route, Some(&[Some(1), None, Some(0)]))
        .is_ok());
    assert!(matches!(
        l.forward(&x, route, Some(&[Some(2), None, Some(0)])),
        Err(Error::AdapterIndex {
            index: 2,
            loaded: 2
        })
    ));
    assert!(matches!(
        l.forward(&x, route, Some(&[None, None])),
        Err(Error::Shape { .. })
    ));
    // Slots on a layer without adapters.
    let plain = layer(config(), LayerExtras::default()).unwrap();
    assert!(matches!(
        plain.forward(&x, route, Some(&[None, Some(0), None])),
        Err(Error::AdapterIndex {
            index: 0,
            loaded: 0
        })
    ));
}

#[test]
fn adapters_of_the_wrong_shape_are_refused() {
    let c = LayerConfig {
        lora: true,
        ..config()
    };
    let wrong_experts = random_adapter(&mut rng(6), 4, E - 1, H, I, true, None);
    assert!(layer(
        c.clone(),
        LayerExtras {
            lora: Some(Lora {
                adapters: vec![wrong_experts]
            }),
            ..Default::default()
        }
    )
    .is_err());
    let wrong_width = random_adapter(&mut rng(7), 4, E, H, I + 1, true, None);
    assert!(layer(
        c.clone(),
        LayerExtras {
            lora: Some(Lora {
                adapters: vec![wrong_width]
            }),
            ..Default::default()
        }
    )
    .is_err());
    let fine = random_adapter(&mut rng(8), 4, E, H, I, true, None);
    // Adapters on a layer whose config does not allow them.
    assert!(message(layer(
        config(),
        LayerExtras {
            lora: Some(Lora {
                adapters: vec![fine.clone()]
            }),
            ..Default::default()
        }
    ))
    .contains("lora"));
    assert!(layer(
        c,
        LayerExtras {
            lora: Some(Lora {
                adapters: vec![fine]
            }),
            ..Default::default()
        }
    )
    .is_ok());
}

#[test]
fn a_forced_backend_that_cannot_run_names_its_reasons() {
    let m = message(layer(
        config(),
        LayerExtras {
            backend: Some(BackendId::CudaBf16),
            ..Default::default()
        },
    ));
    assert!(m.contains("cuda-bf16") && m.contains("NVIDIA"), "{m}");
    assert!(layer(
        config(),
        LayerExtras {
            backend: Some(BackendId::Emulation),
            ..Default::default()
        }
    )
    .is_ok());
}

#[test]
fn softmax_top_k_picks_the_largest_and_breaks_ties_low() {
    let r = Router::new(&LayerConfig::new(E, 2, H, I)).unwrap();
    let t = r.route(&[1.0, 3.0, 3.0, -2.0], 1).unwrap();
    assert_eq!(t.ids(), vec![1, 2]);
    assert!((t.weights()[0] - 0.5).abs() < 1e-6 && (t.weights()[1] - 0.5).abs() < 1e-6);
    let raw = Router::new(&LayerConfig {
        routing: Routing::SoftmaxTopK { renormalize: false },
        ..config()
    })
    .unwrap();
    let t = raw.route(&[0.0, 0.0, 0.0, 0.0], 1).unwrap();
    assert_eq!(t.ids(), vec![0, 1]);
    assert!((t.weights()[0] - 0.25).abs() < 1e-6);
}

#[test]
fn grouped_routing_only_picks_from_the_kept_groups() {
    // Two groups of four; group 1 holds the single best expert but group 0 scores higher
    // on the sum of its top two biased scores, so with one kept group every pick is in 0.
    let c = LayerConfig {
        num_experts: 8,
        top_k: 2,
        routing: Routing::Grouped {
            num_groups: 2,
            topk_groups: 1,
            scoring: GroupScoring::Sigmoid,
            correction_bias: Some(vec![0.0; 8]),
            renormalize: true,
            routed_scaling_factor: 2.5,
        },
        ..config()
    };
    let logits = [2.0, 2.0, -5.0, -5.0, 3.0, -5.0, -5.0, -5.0];
    let t = Router::new(&c).unwrap().route(&logits, 1).unwrap();
    assert_eq!(t.ids(), vec![0, 1]);
    // Renormalized, then scaled: the weights sum to the routed scaling factor.
    assert!((t.weights().iter().sum::<f32>() - 2.5).abs() < 1e-5);
    // Without a correction bias a group is scored by its best expert, so group 1 wins.
    let max_scored = LayerConfig {
        routing: Routing::Grouped {
            num_groups: 2,
            topk_groups: 1,
            scoring: GroupScoring::Sigmoid,
            correction_bias: None,
            renormalize: false,
            routed_scaling_factor: 1.0,
        },
        ..c
    };
    let t = Router::new(&max_scored).unwrap().route(&logits, 1).unwrap();
    assert_eq!(t.ids()[0], 4);
    assert!(t.ids()[1] >= 4);
}

#[test]
fn grouped_configs_that_cannot_exist_are_refused() {
    let grouped = |num_groups, topk_groups, top_k| LayerConfig {
        top_k,
        routing: Routing::Grouped {
            num_groups,
            topk_groups,
            scoring: GroupScoring::Softmax,
            correction_bias: None,
            renormalize: true,
            routed_scaling_factor: 1.0,
        },
        ..config()
    };
    assert!(
        grouped(3, 1, 1).validate().is_err(),
        "4 experts in 3 groups"
    );
    assert!(
        grouped(2, 3, 1).validate().is_err(),
        "more kept groups than groups"
    );
    assert!(
        grouped(2, 1, 3).validate().is_err(),
        "top-3 from one group of 2"
    );
    assert!(grouped(2, 1, 2).validate().is_ok());
}

#[test]
fn every_model_shape_is_a_valid_layer_and_parses_back() {
    for &shape in ModelShape::ALL {
        shape.config().validate().unwrap();
        assert_eq!(ModelShape::parse(shape.name()).unwrap(), shape);
    }
    assert!(ModelShape::parse("llama-moe").is_err());
    assert!(
        ModelShape::DeepseekV3.with_experts(12).is_err(),
        "12 experts do not split into 8 groups"
    );
    assert_eq!(
        ModelShape::DeepseekV3.with_experts(16).unwrap().num_experts,
        16
    );
}

#[test]
fn every_representative_scheme_builds_and_runs_a_layer_on_the_cpu() {
    // 128 wide, so every scheme's groups and blocks divide it.
    let c = LayerConfig::new(E, 2, 128, 128);
    let x = uniform(&mut rng(9), 3 * 128, 1.0);
    let logits = uniform(&mut rng(10), 3 * E, 1.0);
    let topk = Router::new(&c).unwrap().route(&logits, 3).unwrap();
    for scheme in QuantScheme::all_representative() {
        let mut w = ExpertWeights::quantize(&DenseExperts::random(&c, 11), scheme).unwrap();
        if scheme.needs_static_input_scales() {
            let m = message(MoeLayer::new(
                c.clone(),
                &w,
                &Target::cpu(),
                LayerExtras::default(),
            ));
            assert!(m.contains("input scale"), "{scheme}: {m}");
            calibrate(&mut w, &c, &x, &topk).unwrap();
        }
        let l = MoeLayer::new(c.clone(), &w, &Target::cpu(), LayerExtras::default()).unwrap();
        assert_eq!(l.selection().chosen, BackendId::Emulation, "{scheme}");
        let y = l.forward(&x, RoutingInput::Logits(&logits), None).unwrap();
        assert!(
            y.iter().all(|v| v.is_finite()) && y.iter().any(|&v| v != 0.0),
            "{scheme}"
        );
    }
    assert!(matches!(
        Capabilities::preset("a100"),
        Err(Error::UnknownPlatform { .. })
    ));
}
