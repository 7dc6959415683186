//! The AMD path end to end on the CPU: `kernels-hip/sim/fakehip.cpp` stands in for the HIP
//! runtime and runs the kernels through a software simulator (one host thread per lane,
//! matrix instructions computed from the lane layouts the kernels assume). `HipDevice`,
//! `HipExperts`, the layouts, the launch sequence and the kernels' logic then run as on a
//! GPU, and the layer's output is compared with the emulation. What this cannot check is
//! the hardware itself (its MFMA lane layouts, the runtime's behaviour): no AMD GPU has run
//! this code. Needs clang++ (clang-22) to build the stand-in; skipped with a message
//! otherwise, and a failure where `FLEETMOE_REQUIRE_HIP_CLANG` is set (CI).
#![cfg(feature = "rocm")]

mod common;
mod fakehip;

use fakehip::{simulator, use_stand_in};
use fleetmoe::backends::rocm::{fnuz, Rocm};
use fleetmoe::device::hip::HipDevice;
use fleetmoe::device::Runtime;
use fleetmoe::gpu::GpuRouter;
use fleetmoe::moe::{
    Activation, GroupScoring, LayerConfig, LayerExtras, MoeLayer, Router, Routing, RoutingInput,
    Target,
};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{
    DenseExperts, ExpertWeights, Fp8Flavor, IntBits, IntGroup, QuantScheme, WeightData,
};

/// The checkpoint re-read as e4m3fnuz (exact for the weights) with activations quantized
/// natively in e4m3fnuz: what gfx942 would compute had it not kept the e4m3fn rule.
fn as_fnuz(w: &ExpertWeights) -> ExpertWeights {
    let mut f = w.clone();
    if let QuantScheme::Fp8 { flavor, .. } = &mut f.scheme {
        *flavor = Fp8Flavor::E4M3Fnuz;
    }
    for t in [&mut f.w13, &mut f.w2] {
        if let WeightData::Fp8 { codes, scales } = &mut t.data {
            fnuz::fn_to_fnuz(codes, scales).unwrap();
        }
    }
    if let Some(s) = &mut f.input_scales {
        for v in s.w13.iter_mut().chain(s.w2.iter_mut()) {
            *v = fnuz::fn_to_fnuz_input_scale(*v).unwrap();
        }
    }
    f
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    common::rel_l2(a, &b64)
}

#[test]
fn the_amd_layer_on_the_simulator_matches_the_emulation() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    let cases: &[(u32, &str, Activation, BackendId)] = &[
        (942, "bf16", Activation::SiluAndMul, BackendId::AiterBf16),
        (942, "f16", Activation::GeluAndMul, BackendId::AiterBf16),
        (942, "fp8", Activation::SiluAndMul, BackendId::AiterFp8),
        (
            942,
            "fp8-channel",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            942,
            "fp8-static",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            942,
            "fp8-block128",
            Activation::SiluAndMul,
            BackendId::AiterFp8Block128,
        ),
        (942, "mxfp4", Activation::GPT_OSS, BackendId::AiterMxfp4),
        // MXFP6 with bf16 activations: the same bf16 expansion, 6-bit codes.
        (
            942,
            "mxfp6-e2m3-a-bf16",
            Activation::SiluAndMul,
            BackendId::AiterMxfp4,
        ),
        (
            90,
            "mxfp6-e3m2-a-bf16",
            Activation::GPT_OSS,
            BackendId::AiterMxfp4,
        ),
        (942, "w4a16", Activation::SiluAndMul, BackendId::AiterWna16),
        (
            942,
            "w4a16-g64-zp",
            Activation::SiluAndMul,
            BackendId::AiterWna16,
        ),
        (
            942,
            "w4a16-actorder",
            Activation::SiluAndMul,
            BackendId::AiterWna16,
        ),
        (942, "w8a16", Activation::GeluAndMul, BackendId::AiterWna16),
        (
            950,
            "w4a16-g32",
            Activation::SiluAndMul,
            BackendId::AiterWna16,
        ),
        // NVFP4 on bf16 MFMA everywhere: weight-only, and W4A4 through the exact qdq.
        (
            942,
            "nvfp4-a16",
            Activation::SiluAndMul,
            BackendId::AiterNvfp4,
        ),
        (942, "nvfp4", Activation::SiluAndMul, BackendId::AiterNvfp4),
        (950, "nvfp4", Activation::GeluAndMul, BackendId::AiterNvfp4),
        // gfx942 has no scaled MFMA: MX on the fp8 MFMA, one instruction per MX block.
        (
            942,
            "mxfp4-a-mxfp4",
            Activation::SiluAndMul,
            BackendId::AiterMxFp8,
        ),
        (
            942,
            "mxfp4-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxFp8,
        ),
        (
            942,
            "mxfp6-e3m2",
            Activation::GeluAndMul,
            BackendId::AiterMxFp8,
        ),
        (
            942,
            "mxfp6-e2m3-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxFp8,
        ),
        // INT8 W8A8 on the int8 MFMA (gfx90a: two 16x16x16 per 32 of K).
        (
            942,
            "w8a8-int8",
            Activation::SiluAndMul,
            BackendId::AiterW8a8Int8,
        ),
        (
            950,
            "w8a8-int8",
            Activation::GeluAndMul,
            BackendId::AiterW8a8Int8,
        ),
        (
            90,
            "w8a8-int8",
            Activation::SiluAndMul,
            BackendId::AiterW8a8Int8,
        ),
        // W4A8: int4 codes as e4m3 on the fp8 MFMA (gfx942 re-reads the fn rule as fnuz).
        (942, "w4a8", Activation::SiluAndMul, BackendId::AiterW4a8),
        (950, "w4a8", Activation::GeluAndMul, BackendId::AiterW4a8),
        // gfx90a: bf16 / f16 MFMA only, so the 16-bit and weight-only paths.
        (90, "nvfp4", Activation::SiluAndMul, BackendId::AiterNvfp4),
        (90, "bf16", Activation::SiluAndMul, BackendId::AiterBf16),
        (90, "f16", Activation::GeluAndMul, BackendId::AiterBf16),
        (90, "mxfp4", Activation::GPT_OSS, BackendId::AiterMxfp4),
        (
            90,
            "w4a16-actorder",
            Activation::SiluAndMul,
            BackendId::AiterWna16,
        ),
        (
            90,
            "w8a16-channel",
            Activation::SiluAndMul,
            BackendId::AiterWna16,
        ),
        (950, "bf16", Activation::SiluAndMul, BackendId::AiterBf16),
        (950, "fp8", Activation::SiluAndMul, BackendId::AiterFp8),
        (
            950,
            "fp8-channel",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            950,
            "fp8-static",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            950,
            "fp8-block128",
            Activation::SiluAndMul,
            BackendId::AiterFp8Block128,
        ),
        (950, "mxfp4", Activation::GPT_OSS, BackendId::AiterMxfp4),
        (
            950,
            "mxfp4-a-mxfp4",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp4-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp6-e3m2",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp6-e2m3-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
    ];
    // (experts, hidden, intermediate, tokens): tiles filled, then an odd expert count, a
    // prime batch, and gemm2 rows (H = 160) that leave the 64-row output tile short. MX
    // needs K in whole 128-element scaled-MFMA steps, integer groups K in whole groups and
    // int4 / NVFP4 K in 64s (32 shuffled bytes), so their rows always fill the tiles.
    let shapes = |name: &str| {
        let whole_k = match QuantScheme::parse(name).unwrap() {
            // MX: whole scaled-MFMA steps; W4A8: whole groups of 128.
            QuantScheme::Mx { .. } | QuantScheme::W4A8 => 128,
            // fp4 rows are K / 2 bytes, shuffled in 32-byte units.
            QuantScheme::Nvfp4 { .. } => 64,
            // int4 rows are K / 2 bytes, shuffled in 32-byte units.
            QuantScheme::IntWeightOnly { bits, group, .. } => {
                let g = match group {
                    IntGroup::Size(g) => g,
                    IntGroup::Channel => 1,
                };
                g.max(if bits == IntBits::Int4 { 64 } else { 32 })
            }
            _ => 32,
        };
        let edge = if 160 % whole_k == 0 && 96 % whole_k == 0 {
            (5, 160, 96, 13)
        } else {
            (5, 256, 128, 13)
        };
        [(4, 128, 256, 6), edge]
    };
    for (&(gfx, name, act, want), (experts, hidden, intermediate, tokens)) in cases
        .iter()
        .flat_map(|c| shapes(c.1).into_iter().map(move |s| (c, s)))
    {
        use_stand_in(&clang, &mut stand_ins, gfx);
        let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
        let arch = if gfx == 90 {
            "gfx90a".into()
        } else {
            format!("gfx{gfx}")
        };
        assert_eq!(target.capabilities().arch, arch);
        let config = LayerConfig {
            activation: act,
            has_bias: act == Activation::GPT_OSS,
            ..LayerConfig::new(experts, 2, hidden, intermediate)
        };
        let dense = DenseExperts::random(&config, 21);
        let mut w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
        let mut rng = common::rng(3);
        let x = common::uniform(&mut rng, tokens * config.hidden, 1.5);
        let topk = common::random_topk(&mut rng, tokens, config.top_k, config.num_experts);
        if w.scheme.needs_static_input_scales() {
            fleetmoe::moe::calibrate(&mut w, &config, &x, &topk).unwrap();
        }
        let layer = MoeLayer::new(config.clone(), &w, &target, LayerExtras::default()).unwrap();
        assert_eq!(layer.selection().chosen, want, "{name} on gfx{gfx}");
        let got = layer.forward(&x, RoutingInput::TopK(&topk), None).unwrap();
        let emulate = |w: &ExpertWeights| {
            MoeLayer::new(config.clone(), w, &Target::cpu(), LayerExtras::default())
                .unwrap()
                .forward(&x, RoutingInput::TopK(&topk), None)
                .unwrap()
        };
        let reference = emulate(&w);
        let err = rel(&got, &reference);
        let tol = w.scheme.parity_tolerance();
        println!(
            "{name} {arch} E={experts} H={hidden} I={intermediate} M={tokens}: rel L2 {err:.2e} vs emulation (tolerance {tol:.0e})"
        );
        assert!(
            reference.iter().any(|v| *v != 0.0),
            "{name}: an all-zero reference"
        );
        assert!(
            err < tol,
            "{name} {arch} H={hidden} I={intermediate}: rel L2 {err:e} > {tol:e}"
        );
        if gfx == 942 && matches!(w.scheme, QuantScheme::Fp8 { .. }) {
            // What quantizing the activations natively in e4m3fnuz (amax / 240, as
            // AITER does) would have cost instead: reported, not used.
            let native = rel(&emulate(&as_fnuz(&w)), &reference);
            println!("  (native e4m3fnuz activations would differ by {native:.2e})");
        }
    }
    // gfx90a has no fp8 or MX matrix units: fp8 stays emulated there, and says why.
    use_stand_in(&clang, &mut stand_ins, 90);
    let dev = HipDevice::new(0).unwrap();
    let caps = dev.capabilities();
    assert_eq!(
        (caps.arch.as_str(), caps.fp8, caps.supports_mx),
        ("gfx90a", None, false)
    );
    let target = Target::hip(0).unwrap();
    let config = LayerConfig::new(4, 2, 128, 256);
    let w = ExpertWeights::quantize(
        &DenseExperts::random(&config, 2),
        QuantScheme::parse("fp8").unwrap(),
    )
    .unwrap();
    let layer = MoeLayer::new(config, &w, &target, LayerExtras::default()).unwrap();
    assert_eq!(layer.selection().chosen, BackendId::Emulation);
}

/// Static fp8 input scales calibrated per expert (`InputScales` with one scale per expert,
/// spread over 4x): `fm_quant_slots` quantizes gemm1's input per slot and gemm2's per slot,
/// each with its expert's scale, for every HIP variant that takes static fp8 activations —
/// fp8 on gfx950 (e4m3fn) and gfx942 (the e4m3fn rule re-read as e4m3fnuz, scales doubled
/// per expert; and an e4m3fnuz checkpoint), MX with fp8 activations on the scaled MFMA
/// (gfx950) and on the fp8 MFMA (gfx942). The layer must match the emulation within the
/// static cases' tolerance, and must clearly miss the emulation of the same weights with
/// the scales reduced to their maximum (what ignoring the per-expert scales computes).
#[test]
fn static_fp8_scales_per_expert_on_the_simulator_match_the_emulation() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    // (gfx, scheme, backend, whether w13's scales differ too: else only w2's do)
    let cases: &[(u32, &str, BackendId, bool)] = &[
        (950, "fp8-static", BackendId::AiterFp8, true),
        (942, "fp8-static", BackendId::AiterFp8, true),
        (942, "fp8-static", BackendId::AiterFp8, false),
        (942, "fp8-wchannel-astatic-fnuz", BackendId::AiterFp8, true),
        (950, "mxfp4-a-fp8", BackendId::AiterMxNative, true),
        (950, "mxfp6-e3m2-a-fp8", BackendId::AiterMxNative, true),
        (942, "mxfp4-a-fp8", BackendId::AiterMxFp8, true),
        (942, "mxfp6-e2m3-a-fp8", BackendId::AiterMxFp8, true),
    ];
    for &(gfx, name, want, both) in cases {
        use_stand_in(&clang, &mut stand_ins, gfx);
        let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
        let scheme = QuantScheme::parse(name).unwrap();
        // An odd expert count and a batch whose slots outnumber its tokens; MX needs K in
        // whole 128-element steps.
        let (experts, hidden, intermediate, tokens) = match scheme {
            QuantScheme::Mx { .. } => (5, 256, 128, 13),
            _ => (5, 160, 96, 13),
        };
        let config = LayerConfig::new(experts, 2, hidden, intermediate);
        let dense = DenseExperts::random(&config, 21);
        let mut w = ExpertWeights::quantize(&dense, scheme).unwrap();
        let mut rng = common::rng(3);
        let x = common::uniform(&mut rng, tokens * hidden, 1.5);
        let topk = common::random_topk(&mut rng, tokens, config.top_k, experts);
        fleetmoe::moe::calibrate(&mut w, &config, &x, &topk).unwrap();
        let calibrated = w.input_scales.clone().unwrap();
        // Factors 2^-1 .. 2^1 across the experts (gemm2's in the opposite order): some
        // experts clip what the calibration kept, others round on a coarser grid.
        let spread = |s: f32, rev: bool| -> Vec<f32> {
            (0..experts)
                .map(|e| {
                    let e = if rev { experts - 1 - e } else { e };
                    s * 2f32.powf(2.0 * e as f32 / (experts - 1) as f32 - 1.0)
                })
                .collect()
        };
        let s13 = calibrated.of(fleetmoe::quant::Stage::W13, 0);
        let s2 = calibrated.of(fleetmoe::quant::Stage::W2, 0);
        let w13 = if both {
            spread(s13, false)
        } else {
            vec![s13; experts]
        };
        w.set_input_scales_per_expert(&w13, &spread(s2, true))
            .unwrap();
        let scales = w.input_scales.clone().unwrap();
        assert!(scales.is_per_expert() && scales.w2.len() == experts);
        assert_eq!(scales.w13.len(), if both { experts } else { 1 });

        let layer = MoeLayer::new(config.clone(), &w, &target, LayerExtras::default()).unwrap();
        assert_eq!(layer.selection().chosen, want, "{name} on gfx{gfx}");
        let got = layer.forward(&x, RoutingInput::TopK(&topk), None).unwrap();
        let emulate = |w: &ExpertWeights| {
            MoeLayer::new(config.clone(), w, &Target::cpu(), LayerExtras::default())
                .unwrap()
                .forward(&x, RoutingInput::TopK(&topk), None)
                .unwrap()
        };
        let reference = emulate(&w);
        assert!(reference.iter().any(|v| *v != 0.0), "{name}: all zero");
        let err = rel(&got, &reference);
        // The same weights with each stage's scales reduced to their maximum.
        let mut reduced = w.clone();
        let max = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
        reduced.input_scales = Some(fleetmoe::quant::InputScales::uniform(
            max(&scales.w13),
            max(&scales.w2),
        ));
        let ignored = rel(&got, &emulate(&reduced));
        let tol = w.scheme.parity_tolerance();
        println!(
            "{name} gfx{gfx} per-expert scales (w13 {}): rel L2 {err:.2e} vs emulation \
             (tolerance {tol:.0e}); {ignored:.2e} vs the max-reduced scales' emulation",
            if both { "and w2" } else { "shared, w2" }
        );
        assert!(err < tol, "{name} gfx{gfx}: rel L2 {err:e} > {tol:e}");
        assert!(
            ignored > 4.0 * tol && ignored > 20.0 * err,
            "{name} gfx{gfx}: the per-expert scales barely matter ({ignored:e} vs {err:e})"
        );
    }
}

/// Logits with many exact ties (multiples of 0.5), to check ties go to the lower index.
fn tied_logits(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    common::uniform(rng, n, 2.0)
        .iter()
        .map(|v| (v * 2.0).round() / 2.0)
        .collect()
}

/// `route.hip` through `HipRouter` against `Router` on the host, on the gfx942 stand-in:
/// every routing kind, expert counts from 8 to 256 (60 and 72: not multiples of the
/// wavefront), a token count that leaves a workgroup part-empty, and tied logits. Ids must
/// be identical and weights agree to 1e-5; then the whole layer, fed logits, must route on
/// the device and match the emulated layer; bad input must be an error.
#[test]
fn the_hip_router_on_the_simulator_matches_the_host_router() {
    let Some((clang, mut stand_ins)) = simulator() else {
        return;
    };
    use_stand_in(&clang, &mut stand_ins, 942);
    let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
    let dev = target.hip_device().unwrap();
    let mut rng = common::rng(77);
    let grouped = |groups, kept, scoring, bias: Option<Vec<f32>>| Routing::Grouped {
        num_groups: groups,
        topk_groups: kept,
        scoring,
        renormalize: bias.is_some(),
        correction_bias: bias,
        routed_scaling_factor: 2.5,
    };
    let mut cases: Vec<(usize, usize, Routing)> = Vec::new();
    for (e, k) in [(8, 2), (60, 4), (72, 6), (128, 8), (256, 8)] {
        cases.push((e, k, Routing::SoftmaxTopK { renormalize: true }));
        cases.push((e, k, Routing::SoftmaxTopK { renormalize: false }));
        cases.push((e, k, Routing::SigmoidTopK { renormalize: true }));
        cases.push((e, k, Routing::SigmoidTopK { renormalize: false }));
        cases.push((e, 1, Routing::SigmoidTop1));
        if e % 4 == 0 {
            for scoring in [GroupScoring::Sigmoid, GroupScoring::Softmax] {
                let bias = common::uniform(&mut rng, e, 0.1);
                cases.push((e, k.min(e / 2), grouped(4, 2, scoring, Some(bias))));
                cases.push((e, k.min(e / 2), grouped(4, 2, scoring, None)));
            }
        }
    }
    // DeepSeek-V3's shape: 256 experts in 8 groups, 4 kept, top-8, sigmoid with bias.
    let bias = common::uniform(&mut rng, 256, 0.1);
    cases.push((256, 8, grouped(8, 4, GroupScoring::Sigmoid, Some(bias))));
    let tokens = 13;
    let mut worst = 0.0f32;
    for (e, k, routing) in &cases {
        let (e, k) = (*e, *k);
        let config = LayerConfig {
            routing: routing.clone(),
            ..LayerConfig::new(e, k, 128, 128)
        };
        let hip = GpuRouter::<Rocm>::new(&**dev, &config).unwrap().unwrap();
        let host = Router::new(&config).unwrap();
        for (what, logits) in [
            ("uniform", common::uniform(&mut rng, tokens * e, 3.0)),
            ("tied", tied_logits(&mut rng, tokens * e)),
        ] {
            let want = host.route(&logits, tokens).unwrap();
            let got = hip.route(dev, &logits, tokens).unwrap();
            let name = routing.name();
            assert_eq!(
                got.ids(),
                want.ids(),
                "{name} E={e} k={k} {what} logits: ids"
            );
            let mut diff = 0.0f32;
            for (g, w) in got.weights().iter().zip(want.weights()) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{name} E={e} k={k} {what} logits: weight {g} vs {w}"
                );
                diff = diff.max((g - w).abs());
            }
            worst = worst.max(diff);
            println!("ok {name:14} E={e:3} k={k} {what:7}: ids equal, max |dw| {diff:.1e}");
        }
    }
    println!(
        "{} routing cases x 2 logit sets: ids identical, weights within {worst:.1e}",
        cases.len()
    );

    // The layer, given logits, routes on the device and matches the emulated layer.
    for (routing, top_k, on_input) in [
        (Routing::SoftmaxTopK { renormalize: true }, 2, false),
        (Routing::SigmoidTopK { renormalize: false }, 2, false),
        (
            grouped(
                4,
                2,
                GroupScoring::Sigmoid,
                Some((0..8).map(|e| 0.01 * e as f32).collect()),
            ),
            2,
            false,
        ),
        (Routing::SigmoidTop1, 1, true),
    ] {
        let config = LayerConfig {
            routing: routing.clone(),
            apply_router_weight_on_input: on_input,
            ..LayerConfig::new(8, top_k, 128, 256)
        };
        let w = ExpertWeights::quantize(
            &DenseExperts::random(&config, 4),
            QuantScheme::parse("fp8-channel").unwrap(),
        )
        .unwrap();
        let tokens = 7;
        let x = common::uniform(&mut rng, tokens * config.hidden, 1.0);
        let logits = common::uniform(&mut rng, tokens * config.num_experts, 3.0);
        let gpu = MoeLayer::new(config.clone(), &w, &target, LayerExtras::default()).unwrap();
        assert_eq!(gpu.selection().chosen, BackendId::AiterFp8);
        assert!(
            gpu.routes_on_gpu(),
            "{}: routed on the host",
            routing.name()
        );
        let cpu =
            MoeLayer::new(config.clone(), &w, &Target::cpu(), LayerExtras::default()).unwrap();
        assert!(!cpu.routes_on_gpu());
        let got = gpu
            .forward(&x, RoutingInput::Logits(&logits), None)
            .unwrap();
        let want = cpu
            .forward(&x, RoutingInput::Logits(&logits), None)
            .unwrap();
        let err = rel(&got, &want);
        let tol = w.scheme.parity_tolerance();
        println!(
            "layer routing {}: rel L2 {err:.2e} vs emulation",
            routing.name()
        );
        assert!(err < tol, "layer routing {}: {err:e}", routing.name());
    }

    // Bad input is an error, as on the host; none of it panics.
    let config = LayerConfig::new(8, 2, 128, 128);
    let hip = GpuRouter::<Rocm>::new(&**dev, &config).unwrap().unwrap();
    let host = Router::new(&config).unwrap();
    let mut nan = vec![0.5f32; 16];
    nan[3] = f32::NAN;
    assert!(hip.route(dev, &nan, 2).is_err() && host.route(&nan, 2).is_err());
    assert!(hip.route(dev, &[0.0; 15], 2).is_err());
    // Softmax of +inf is NaN for every expert: no weight to give, on either side.
    let mut inf = vec![0.5f32; 16];
    inf[9] = f32::INFINITY;
    assert!(host.route(&inf, 2).is_err());
    assert!(hip.route(dev, &inf, 2).is_err());
    assert_eq!(hip.route(dev, &[], 0).unwrap().ids().len(), 0);
    let too_many = LayerConfig::new(2048, 2, 128, 128);
    assert!(GpuRouter::<Rocm>::new(&**dev, &too_many).is_err());
    let given = LayerConfig {
        routing: Routing::Given,
        ..LayerConfig::new(8, 2, 128, 128)
    };
    assert!(GpuRouter::<Rocm>::new(&**dev, &given).unwrap().is_none());
    let bad_groups = LayerConfig {
        routing: grouped(3, 2, GroupScoring::Sigmoid, None),
        ..LayerConfig::new(8, 2, 128, 128)
    };
    assert!(GpuRouter::<Rocm>::new(&**dev, &bad_groups).is_err());
}
