//! Every CUDA experts path against the emulation, on fresh random inputs, at shapes that
//! stress the tiling: M = 1, a prime M, expert counts that are not a multiple of anything,
//! top-k 1, 2, 4 and 8, every activation, biases, router weight on the input. Each case
//! must be within the scheme's parity tolerance (`QuantScheme::parity_tolerance`).
//! Without a GPU (or without feature `cuda`) the test prints why it skipped.

#[cfg(feature = "cuda")]
mod common;

#[cfg(feature = "cuda")]
mod gpu {
    use super::common::random_adapter;
    use fleetmoe::moe::*;
    use fleetmoe::oracle::BackendId;
    use fleetmoe::quant::dense::gaussian;
    use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    struct Case {
        experts: usize,
        top_k: usize,
        hidden: usize,
        intermediate: usize,
        tokens: usize,
        activation: Activation,
        bias: bool,
        on_input: bool,
    }

    fn cases() -> Vec<Case> {
        let c = |experts, top_k, hidden, intermediate, tokens| Case {
            experts,
            top_k,
            hidden,
            intermediate,
            tokens,
            activation: Activation::SiluAndMul,
            bias: false,
            on_input: false,
        };
        vec![
            c(8, 2, 256, 512, 1),
            c(8, 2, 256, 512, 13),
            c(7, 1, 384, 256, 31),
            c(12, 4, 512, 384, 97),
            c(64, 8, 256, 128, 257),
            c(5, 2, 128, 768, 600),
            Case {
                activation: Activation::GeluAndMul,
                ..c(8, 2, 256, 256, 17)
            },
            Case {
                activation: Activation::GeluTanhAndMul,
                ..c(8, 2, 256, 256, 5)
            },
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                ..c(16, 4, 256, 256, 40)
            },
            Case {
                activation: Activation::Relu2,
                ..c(6, 2, 256, 384, 23)
            },
            Case {
                activation: Activation::Silu,
                bias: true,
                ..c(6, 2, 256, 256, 9)
            },
            Case {
                on_input: true,
                ..c(8, 1, 256, 512, 29)
            },
        ]
    }

    fn rel(got: &[f32], want: &[f32]) -> f64 {
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn cuda_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        println!("device: {}", target.capabilities());
        let schemes = [
            "bf16",
            "f16",
            "fp8",
            "fp8-channel",
            "fp8-static",
            "fp8-block128",
            "fp8-wchannel-atensor",
            "fp8-wblock128-atoken",
        ];
        let mut failures = Vec::new();
        let mut ran = 0;
        for (n, case) in cases().iter().enumerate() {
            let config = LayerConfig {
                activation: case.activation,
                has_bias: case.bias,
                apply_router_weight_on_input: case.on_input,
                routing: if case.on_input {
                    Routing::SigmoidTop1
                } else {
                    Routing::SoftmaxTopK { renormalize: true }
                },
                ..LayerConfig::new(case.experts, case.top_k, case.hidden, case.intermediate)
            };
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + n as u64);
            let x = gaussian(&mut rng, case.tokens * case.hidden, 1.0);
            let logits = gaussian(&mut rng, case.tokens * case.experts, 1.0);
            let dense = DenseExperts::random(&config, 77 + n as u64);
            let topk = Router::new(&config).route(&logits, case.tokens).unwrap();
            for name in schemes {
                let scheme = QuantScheme::parse(name).unwrap();
                let mut weights = ExpertWeights::quantize(&dense, scheme).unwrap();
                calibrate(&mut weights, &config, &x, &topk).unwrap();
                let gpu = MoeLayer::new(config.clone(), &weights, &target, LayerExtras::default())
                    .unwrap();
                let chosen = gpu.selection().chosen;
                assert_ne!(
                    chosen,
                    BackendId::Emulation,
                    "{name}: the oracle did not pick a CUDA backend:\n{}",
                    gpu.selection()
                );
                let emu = MoeLayer::new(
                    config.clone(),
                    &weights,
                    &Target::cpu(),
                    LayerExtras::default(),
                )
                .unwrap();
                let route = RoutingInput::Logits(&logits);
                let got = gpu.forward(&x, route, None).unwrap();
                let want = emu.forward(&x, route, None).unwrap();
                let err = rel(&got, &want);
                let tol = scheme.parity_tolerance();
                let verdict = if err <= tol { "ok" } else { "FAIL" };
                println!(
                    "{verdict:4} {name:22} {chosen:18} E={:3} k={} H={:3} I={:3} M={:3} {:12} bias={} on_input={}  rel L2 {err:.2e} (tol {tol:.0e})",
                    case.experts, case.top_k, case.hidden, case.intermediate, case.tokens, case.activation.name(), case.bias, case.on_input
                );
                ran += 1;
                if err > tol || got.iter().any(|v| !v.is_finite()) {
                    failures.push(format!("{name} case {n}: {err:.2e}"));
                }
            }
        }
        println!("{ran} cases");
        assert!(
            failures.is_empty(),
            "CUDA differs from emulation: {failures:?}"
        );
    }

    /// LoRA on the GPU: two adapters of different ranks, tokens split across them and no
    /// adapter, for every activation layout, with a shared expert (which carries its own
    /// adapter) in one case; the regression cases of issue 7 (fp8 + LoRA) are among them.
    #[test]
    fn cuda_lora_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let lora_cases = [
            Case {
                ..cases().remove(1)
            },
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                ..cases().remove(0)
            },
            Case {
                activation: Activation::Relu2,
                ..cases().remove(9)
            },
            Case {
                on_input: true,
                ..cases().remove(11)
            },
            Case {
                tokens: 257,
                ..cases().remove(4)
            },
        ];
        let mut failures = Vec::new();
        for (n, case) in lora_cases.iter().enumerate() {
            let shared_i = (n == 0).then_some(256);
            let config = LayerConfig {
                activation: case.activation,
                has_bias: case.bias,
                apply_router_weight_on_input: case.on_input,
                routing: if case.on_input {
                    Routing::SigmoidTop1
                } else {
                    Routing::SoftmaxTopK { renormalize: true }
                },
                lora: true,
                shared_intermediate: shared_i,
                ..LayerConfig::new(case.experts, case.top_k, case.hidden, case.intermediate)
            };
            let mut rng = ChaCha8Rng::seed_from_u64(5000 + n as u64);
            let x = gaussian(&mut rng, case.tokens * case.hidden, 1.0);
            let logits = gaussian(&mut rng, case.tokens * case.experts, 1.0);
            let gated = case.activation.is_gated();
            let adapters = vec![
                random_adapter(
                    &mut rng,
                    8,
                    case.experts,
                    case.hidden,
                    case.intermediate,
                    gated,
                    shared_i,
                ),
                random_adapter(
                    &mut rng,
                    16,
                    case.experts,
                    case.hidden,
                    case.intermediate,
                    gated,
                    shared_i,
                ),
            ];
            let slots: Vec<Option<usize>> = (0..case.tokens)
                .map(|t| [Some(0), Some(1), None][t % 3])
                .collect();
            let dense = DenseExperts::random(&config, 900 + n as u64);
            // Qwen2-MoE style sigmoid gate on the shared expert.
            let gate = gaussian(&mut rng, case.hidden, 0.05);
            let topk = Router::new(&config).route(&logits, case.tokens).unwrap();
            for name in [
                "bf16",
                "f16",
                "fp8",
                "fp8-channel",
                "fp8-static",
                "fp8-block128",
            ] {
                let scheme = QuantScheme::parse(name).unwrap();
                let mut weights = ExpertWeights::quantize(&dense, scheme).unwrap();
                calibrate(&mut weights, &config, &x, &topk).unwrap();
                let shared = shared_i.map(|si| {
                    let one = LayerConfig {
                        num_experts: 1,
                        top_k: 1,
                        intermediate: si,
                        shared_intermediate: None,
                        lora: false,
                        ..config.clone()
                    };
                    let mut w =
                        ExpertWeights::quantize(&DenseExperts::random(&one, 31), scheme).unwrap();
                    w.input_scales = weights.input_scales;
                    SharedExpertWeights {
                        weights: w,
                        gate: Some(gate.clone()),
                    }
                });
                let extras = || LayerExtras {
                    shared: shared.clone(),
                    lora: Some(Lora {
                        adapters: adapters.clone(),
                    }),
                    backend: None,
                };
                let gpu = MoeLayer::new(config.clone(), &weights, &target, extras()).unwrap();
                let chosen = gpu.selection().chosen;
                assert_ne!(
                    chosen,
                    BackendId::Emulation,
                    "{name} with LoRA fell back:\n{}",
                    gpu.selection()
                );
                if shared_i.is_some() {
                    assert_ne!(
                        gpu.shared_backend(),
                        Some(BackendId::Emulation),
                        "{name}: the shared expert stayed on the host"
                    );
                }
                let emu =
                    MoeLayer::new(config.clone(), &weights, &Target::cpu(), extras()).unwrap();
                let route = RoutingInput::Logits(&logits);
                let got = gpu.forward(&x, route, Some(&slots)).unwrap();
                let want = emu.forward(&x, route, Some(&slots)).unwrap();
                // LoRA must change the answer, or this test would not be testing it.
                let plain = emu.forward(&x, route, None).unwrap();
                let effect = rel(&plain, &want);
                let err = rel(&got, &want);
                let tol = scheme.parity_tolerance();
                let ok = err <= tol && effect > 10.0 * err;
                println!(
                    "{:4} {name:14} {chosen:18} E={:3} k={} M={:3} {:10} shared={} lora effect {effect:.2e}  rel L2 {err:.2e} (tol {tol:.0e})",
                    if ok { "ok" } else { "FAIL" }, case.experts, case.top_k, case.tokens, case.activation.name(), shared_i.is_some()
                );
                if !ok {
                    failures.push(format!("{name} lora case {n}: {err:.2e}"));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "CUDA LoRA differs from emulation: {failures:?}"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_lora_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}
