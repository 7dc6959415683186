//! LoRA on the AMD layer, end to end on the CPU simulator (see tests/rocm_sim.rs for what
//! the simulator is and is not): every AITER backend with two resident adapters of
//! different ranks on gate, up and down, tokens split between them and some with none,
//! against the emulated layer with the same adapters. `lora.hip` computes the delta rows,
//! gemm.hip's epilogues add them (gate/up before the activation, down before the router
//! weight); the scheme's own tolerance applies, and LoRA must move the answer by far more
//! than the error, or the test would not be testing it.
#![cfg(feature = "rocm")]

mod common;
mod fakehip;

use fakehip::{simulator, use_stand_in};
use fleetmoe::moe::{
    Activation, LayerConfig, LayerExtras, Lora, MoeLayer, Router, Routing, RoutingInput,
    SharedExpertWeights, Target,
};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    common::rel_l2(a, &b64)
}

/// One layer: a gfx target, a scheme, its activation, the backend it must get, and the
/// layer's extras (a shared expert with its own adapters; the router weight on the input).
struct Case {
    gfx: u32,
    scheme: &'static str,
    activation: Activation,
    want: BackendId,
    shared: bool,
    on_input: bool,
}

const fn case(gfx: u32, scheme: &'static str, activation: Activation, want: BackendId) -> Case {
    Case {
        gfx,
        scheme,
        activation,
        want,
        shared: false,
        on_input: false,
    }
}

#[test]
fn lora_on_the_amd_layer_matches_the_emulation() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    use Activation::{GeluAndMul, SiluAndMul};
    const GPT_OSS: Activation = Activation::GPT_OSS;
    use BackendId::{
        AiterBf16, AiterFp8, AiterFp8Block128, AiterMxFp8, AiterMxNative, AiterMxfp4, AiterNvfp4,
        AiterW4a8, AiterW8a8Int8, AiterWna16,
    };
    let cases = [
        case(942, "bf16", SiluAndMul, AiterBf16),
        case(942, "f16", GeluAndMul, AiterBf16),
        case(942, "fp8", SiluAndMul, AiterFp8),
        case(942, "fp8-channel", SiluAndMul, AiterFp8),
        case(942, "fp8-static", SiluAndMul, AiterFp8),
        case(942, "fp8-block128", SiluAndMul, AiterFp8Block128),
        case(942, "mxfp4", GPT_OSS, AiterMxfp4),
        // A shared expert with its own adapters, and top-1 with the router weight on the
        // input (the gate/up deltas then read the scaled hidden states).
        Case {
            shared: true,
            ..case(942, "fp8-channel", SiluAndMul, AiterFp8)
        },
        Case {
            on_input: true,
            ..case(942, "fp8", SiluAndMul, AiterFp8)
        },
        case(942, "w4a16-actorder", SiluAndMul, AiterWna16),
        // The shared expert's I = 64 takes whole groups of 64.
        Case {
            shared: true,
            ..case(942, "w4a16-g64-zp", SiluAndMul, AiterWna16)
        },
        case(942, "w8a16", GeluAndMul, AiterWna16),
        case(942, "nvfp4", SiluAndMul, AiterNvfp4),
        case(942, "mxfp4-a-fp8", SiluAndMul, AiterMxFp8),
        case(942, "w8a8-int8", SiluAndMul, AiterW8a8Int8),
        Case {
            shared: true,
            ..case(90, "w8a8-int8", GeluAndMul, AiterW8a8Int8)
        },
        case(942, "mxfp6-e2m3", GeluAndMul, AiterMxFp8),
        // W4A8's groups of 128: whole groups in both GEMMs, and a shared expert (I = 128).
        case(942, "w4a8", SiluAndMul, AiterW4a8),
        Case {
            shared: true,
            ..case(950, "w4a8", GeluAndMul, AiterW4a8)
        },
        case(90, "nvfp4-a16", GeluAndMul, AiterNvfp4),
        case(90, "bf16", SiluAndMul, AiterBf16),
        case(90, "w8a16-channel", SiluAndMul, AiterWna16),
        case(950, "bf16", SiluAndMul, AiterBf16),
        case(950, "fp8", SiluAndMul, AiterFp8),
        case(950, "fp8-block128", SiluAndMul, AiterFp8Block128),
        case(950, "mxfp4", GPT_OSS, AiterMxfp4),
        case(950, "mxfp4-a-mxfp4", SiluAndMul, AiterMxNative),
        case(950, "mxfp4-a-fp8", SiluAndMul, AiterMxNative),
        case(950, "mxfp6-e3m2", SiluAndMul, AiterMxNative),
        case(950, "mxfp6-e2m3-a-fp8", SiluAndMul, AiterMxNative),
    ];
    let mut failures = Vec::new();
    for (n, c) in cases.iter().enumerate() {
        // Part-filled tiles: an odd expert count, a prime batch, H = 160 leaving gemm2's
        // 64-row tile short (MX: H = 256, whole 128-element scaled-MFMA steps; int4 and
        // integer groups of 128 likewise: whole groups, int4 / fp4 rows in 32-byte units).
        let whole_k = c.scheme.starts_with("mx")
            || c.scheme.starts_with("nvfp4")
            || (c.scheme.starts_with('w') && !c.scheme.ends_with("-channel"));
        let (experts, hidden, intermediate, tokens) = if whole_k {
            (5, 256, 128, 13)
        } else {
            (5, 160, 96, 13)
        };
        // The shared expert's I: whole int groups (W4A8's are 128).
        let shared_i = c
            .shared
            .then_some(if c.scheme == "w4a8" { 128 } else { 64 });
        use_stand_in(&clang, &mut stand_ins, c.gfx);
        let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
        let config = LayerConfig {
            activation: c.activation,
            has_bias: c.activation == GPT_OSS,
            apply_router_weight_on_input: c.on_input,
            routing: if c.on_input {
                Routing::SigmoidTop1
            } else {
                Routing::SoftmaxTopK { renormalize: true }
            },
            lora: true,
            shared_intermediate: shared_i,
            ..LayerConfig::new(
                experts,
                if c.on_input { 1 } else { 2 },
                hidden,
                intermediate,
            )
        };
        // Fresh inputs per case.
        let mut rng = common::rng(700 + n as u64);
        let x = common::uniform(&mut rng, tokens * hidden, 1.5);
        let logits = common::uniform(&mut rng, tokens * experts, 2.0);
        let topk = Router::new(&config)
            .unwrap()
            .route(&logits, tokens)
            .unwrap();
        let gated = c.activation.is_gated();
        let adapters = vec![
            common::random_adapter(&mut rng, 4, experts, hidden, intermediate, gated, shared_i),
            common::random_adapter(&mut rng, 12, experts, hidden, intermediate, gated, shared_i),
        ];
        // Tokens split between the adapters, every third with none.
        let slots: Vec<Option<usize>> = (0..tokens)
            .map(|t| [Some(1), None, Some(0)][t % 3])
            .collect();
        let scheme = QuantScheme::parse(c.scheme).unwrap();
        let dense = DenseExperts::random(&config, 40 + n as u64);
        let mut w = ExpertWeights::quantize(&dense, scheme).unwrap();
        if w.scheme.needs_static_input_scales() {
            fleetmoe::moe::calibrate(&mut w, &config, &x, &topk).unwrap();
        }
        let shared = shared_i.map(|si| {
            let one = LayerConfig {
                num_experts: 1,
                top_k: 1,
                intermediate: si,
                shared_intermediate: None,
                lora: false,
                ..config.clone()
            };
            let mut sw = ExpertWeights::quantize(&DenseExperts::random(&one, 31), scheme).unwrap();
            sw.input_scales = w.input_scales.clone();
            SharedExpertWeights {
                weights: sw,
                gate: Some(common::uniform(&mut rng, hidden, 0.05)),
            }
        });
        let extras = || LayerExtras {
            shared: shared.clone(),
            lora: Some(Lora {
                adapters: adapters.clone(),
            }),
            backend: None,
        };
        let gpu = MoeLayer::new(config.clone(), &w, &target, extras()).unwrap();
        let chosen = gpu.selection().chosen;
        assert_eq!(
            chosen,
            c.want,
            "{} gfx{} with LoRA:\n{}",
            c.scheme,
            c.gfx,
            gpu.selection()
        );
        if c.shared {
            assert_eq!(
                gpu.shared_backend(),
                Some(c.want),
                "{}: the shared expert did not run on the AMD backend",
                c.scheme
            );
        }
        let emu = MoeLayer::new(config.clone(), &w, &Target::cpu(), extras()).unwrap();
        let route = RoutingInput::Logits(&logits);
        let got = gpu.forward(&x, route, Some(&slots)).unwrap();
        let want = emu.forward(&x, route, Some(&slots)).unwrap();
        let plain = emu.forward(&x, route, None).unwrap();
        // The same layer without adapters on the device: LoRA off must still be the base.
        let gpu_plain = gpu.forward(&x, route, None).unwrap();
        let effect = rel(&plain, &want);
        let err = rel(&got, &want);
        let plain_err = rel(&gpu_plain, &plain);
        let tol = scheme.parity_tolerance();
        let ok = err < tol && plain_err < tol && effect > 10.0 * err;
        println!(
            "{:4} {:17} gfx{} {:18} E={experts} k={} H={hidden} I={intermediate} M={tokens} {:10} shared={} on_input={}: lora effect {effect:.2e}, rel L2 {err:.2e} (without adapters {plain_err:.2e}; tolerance {tol:.0e})",
            if ok { "ok" } else { "FAIL" },
            c.scheme,
            c.gfx,
            chosen.name(),
            config.top_k,
            c.activation.name(),
            c.shared,
            c.on_input,
        );
        if !ok {
            failures.push(format!(
                "{} gfx{}: rel L2 {err:.2e} (tolerance {tol:.0e}), without adapters {plain_err:.2e}, lora effect {effect:.2e}",
                c.scheme, c.gfx
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "AMD LoRA differs from the emulation: {failures:?}"
    );
}
