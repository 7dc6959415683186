//! Every CUDA experts path against the emulation, on fresh random inputs, at shapes that
//! stress the tiling: M = 1, a prime M, expert counts that are not a multiple of anything,
//! top-k 1, 2, 4 and 8, every activation, biases, router weight on the input. Each case
//! must be within the scheme's parity tolerance (`QuantScheme::parity_tolerance`).
//! Without a GPU (or without feature `cuda`) the test prints why it skipped.

#[cfg(feature = "cuda")]
mod common;

#[cfg(feature = "cuda")]
mod gpu {
    use super::common::{device_forward_cuda, random_adapter};

    /// The device path's output in the model dtype against the host's f32: bf16 rounds
    /// each element by at most 2^-9 relative, f16 by 2^-11.
    const DEVICE_TOL: f64 = 4e-3;
    use fleetmoe::moe::*;
    use fleetmoe::oracle::BackendId;
    use fleetmoe::quant::dense::gaussian;
    use fleetmoe::quant::{DenseExperts, ExpertWeights, InputScales, QuantScheme};
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
        /// Routing that leaves expert 0 without tokens and gives expert 1 exactly one.
        lopsided: bool,
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
            lopsided: false,
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
            // K that is not a multiple of the 64- or 128-column stage, and rows (H = 352,
            // H = 160, 2I = 192) that leave the last output tile part-filled.
            c(6, 2, 352, 224, 19),
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                ..c(4, 2, 160, 96, 70)
            },
            // The wide tiles (sm_90a: wgmma, 256 rows x 64 or 128 slots): row tails in both
            // GEMMs (2I = 192, H = 352, H = 160 against 256 rows), K tails (352, 224, 208;
            // the GEMMs take multiples of 16), experts with 0 and 1 tokens beside full
            // ones, and the non-gated epilogue.
            Case {
                lopsided: true,
                ..c(6, 2, 352, 224, 400)
            },
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                ..c(8, 4, 160, 96, 300)
            },
            Case {
                activation: Activation::Relu2,
                lopsided: true,
                ..c(4, 2, 256, 208, 100)
            },
            // Qwen3-30B-A3B's expert (H = 2048, I = 768) with 8 experts all hit, 37 slots
            // each: the shape where `fleetmoe parity` found fp8 on wgmma tiles at 3.1e-2
            // (kernels-cuda/NOTES.md, 2026-12-03); the default families must pass it.
            c(8, 8, 2048, 768, 37),
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

    /// Every case under every scheme of `schemes` against the emulation; returns how many
    /// ran and what failed. A scheme whose group does not divide a case's K (so no
    /// checkpoint could exist) is reported as skipped. `per_expert` spreads the calibrated
    /// static input scales over 1x..4x across experts, and also requires the answer to
    /// differ clearly (over 4x the tolerance) from the one where they are reduced to
    /// their maximum, so a path that ignored them would fail.
    fn parity(
        target: &Target,
        cases: &[Case],
        schemes: &[&str],
        seed: u64,
        per_expert: bool,
    ) -> (usize, Vec<String>) {
        let mut failures = Vec::new();
        let mut ran = 0;
        for (n, case) in cases.iter().enumerate() {
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
            let mut rng = ChaCha8Rng::seed_from_u64(seed + n as u64);
            let x = gaussian(&mut rng, case.tokens * case.hidden, 1.0);
            let mut logits = gaussian(&mut rng, case.tokens * case.experts, 1.0);
            if case.lopsided {
                for t in 0..case.tokens {
                    logits[t * case.experts] = -30.0;
                    logits[t * case.experts + 1] = if t == 0 { 30.0 } else { -30.0 };
                }
            }
            let dense = DenseExperts::random(&config, 77 + seed + n as u64);
            let topk = Router::new(&config)
                .unwrap()
                .route(&logits, case.tokens)
                .unwrap();
            for &name in schemes {
                let scheme = QuantScheme::parse(name).unwrap();
                let mut weights = match ExpertWeights::quantize(&dense, scheme) {
                    Ok(w) => w,
                    Err(e) => {
                        println!(
                            "skip {name:22} H={} I={}: {e}",
                            case.hidden, case.intermediate
                        );
                        continue;
                    }
                };
                calibrate(&mut weights, &config, &x, &topk).unwrap();
                let reduced = weights.clone();
                if per_expert {
                    let s = weights.input_scales.clone().unwrap();
                    let e = case.experts;
                    let spread = |v: f32, k: usize| -> Vec<f32> {
                        (0..e)
                            .map(|x| v * (1.0 + 3.0 * ((x + k) % e) as f32 / (e - 1) as f32))
                            .collect()
                    };
                    weights
                        .set_input_scales_per_expert(&spread(s.w13[0], 0), &spread(s.w2[0], 1))
                        .unwrap();
                    assert!(weights.input_scales.as_ref().unwrap().is_per_expert());
                }
                let gpu = MoeLayer::new(config.clone(), &weights, target, LayerExtras::default())
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
                // The device-resident path, output in the model dtype: the host's answer
                // within the output's rounding (≤ 2^-9 relative per element for bf16).
                let dev = device_forward_cuda(&gpu, &x, &logits, None);
                let dev_err = rel(&dev, &got);
                // With per-expert scales: how far the answer is from the maximum's.
                let ignored = if per_expert {
                    let mut r = reduced.clone();
                    let s = weights.input_scales.clone().unwrap();
                    let max = |v: &[f32]| v.iter().copied().fold(0f32, f32::max);
                    r.input_scales = Some(InputScales::uniform(max(&s.w13), max(&s.w2)));
                    let emu_max =
                        MoeLayer::new(config.clone(), &r, &Target::cpu(), LayerExtras::default())
                            .unwrap();
                    rel(&got, &emu_max.forward(&x, route, None).unwrap())
                } else {
                    f64::INFINITY
                };
                let ok = err <= tol && dev_err <= DEVICE_TOL && ignored > 4.0 * tol;
                let verdict = if ok { "ok" } else { "FAIL" };
                println!(
                    "{verdict:4} {name:22} {chosen:18} E={:3} k={} H={:3} I={:3} M={:3} {:12} bias={} on_input={}  rel L2 {err:.2e} (tol {tol:.0e}), device path {dev_err:.1e}{}",
                    case.experts, case.top_k, case.hidden, case.intermediate, case.tokens, case.activation.name(), case.bias, case.on_input,
                    if per_expert { format!(", vs the maximum's {ignored:.1e}") } else { String::new() }
                );
                ran += 1;
                if !ok || got.iter().any(|v| !v.is_finite()) {
                    failures.push(format!(
                        "{name} case {n}: {err:.2e}, device path {dev_err:.1e}"
                    ));
                }
            }
        }
        (ran, failures)
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
        let (ran, failures) = parity(&target, &cases(), &schemes, 1000, false);
        println!("{ran} cases");
        assert!(
            failures.is_empty(),
            "CUDA differs from emulation: {failures:?}"
        );
    }

    /// Static fp8 input scales calibrated per expert (issue 16): each expert quantizes its
    /// inputs with its own scale, per-tensor fp8 and MXFP4 weights with fp8 activations.
    #[test]
    fn cuda_per_expert_static_scales_match_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let schemes = ["fp8-static", "fp8-wchannel-astatic", "mxfp4-a-fp8"];
        let (ran, failures) = parity(&target, &cases(), &schemes, 11000, true);
        println!("{ran} cases");
        assert!(
            failures.is_empty(),
            "CUDA differs from emulation: {failures:?}"
        );
    }

    /// The packed low-bit paths (issue 4): every case above, with groups of 16 (NVFP4), 32,
    /// 64 and 128 and per channel, symmetric and with zero points.
    #[test]
    fn cuda_low_bit_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let all = cases();
        let schemes = [
            "mxfp4",
            "mxfp4-a-fp8",
            "nvfp4-a16",
            "w4a16",
            "w4a16-g32",
            "w4a16-g64-zp",
            "w4a16-channel",
            "w8a16",
            "w8a16-g64-zp",
            "w4a8",
        ];
        let (ran, failures) = parity(&target, &all, &schemes, 3000, false);
        println!("{ran} cases");
        assert!(
            failures.is_empty(),
            "CUDA low-bit differs from emulation: {failures:?}"
        );
    }

    /// MX weights with MX or static fp8 activations on cuda-mx-fp8 (issue 18), and MXFP6
    /// with bf16 activations on cuda-mxfp4-w4a16: MXFP4 in
    /// the packed e2m1 layout, MXFP6 re-encoded as e4m3 bytes at load time, the MX
    /// activations quantized per 32 columns on the GPU (`fm_mx_quant_rows`) and both block
    /// scales folded into each k32 partial sum; every case whose H and I are multiples of 32.
    #[test]
    fn cuda_mx_on_fp8_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let schemes = [
            "mxfp4-a-mxfp4",
            "mxfp6-e2m3",
            "mxfp6-e3m2",
            "mxfp6-e2m3-a-fp8",
            "mxfp6-e3m2-a-fp8",
            // MXFP6 with bf16 activations: the same e4m3 bytes expanded to bf16.
            "mxfp6-e2m3-a-bf16",
            "mxfp6-e3m2-a-bf16",
        ];
        let (ran, failures) = parity(&target, &cases(), &schemes, 12000, false);
        println!("{ran} cases");
        assert!(ran > 0);
        assert!(
            failures.is_empty(),
            "CUDA MX on fp8 differs from emulation: {failures:?}"
        );
    }

    /// GPTQ act-order on cuda-marlin (issue 18): each expert's K sorted by group at load
    /// time, gemm1's input (the hidden states) and gemm2's (the intermediate) gathered per
    /// slot in that order. Every case above — part-filled tiles (H = 160, 352), experts with
    /// 0 and 1 tokens, M = 1, 13, 31, 37, 97 — for int4 and int8, groups of 32, 64 and 128
    /// and per channel, symmetric and with zero points.
    #[test]
    fn cuda_act_order_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let schemes = [
            "w4a16-actorder",
            "w4a16-g64-actorder",
            "w4a16-g32-zp-actorder",
            "w4a16-channel-actorder",
            "w8a16-g64-zp-actorder",
            "w8a16-actorder",
        ];
        let (ran, failures) = parity(&target, &cases(), &schemes, 7000, false);
        println!("{ran} cases");
        assert!(ran > 0);
        assert!(
            failures.is_empty(),
            "CUDA act-order differs from emulation: {failures:?}"
        );
    }

    /// NVFP4 W4A4 on cuda-nvfp4-w4a16 (issue 18): the activations quantize-dequantized to
    /// bf16 per 16-element block (`fm_nvfp4_qdq_rows`, the emulation's rounding), the
    /// per-tensor global in the epilogue, then the NVFP4 weight-only GEMM; every case above.
    #[test]
    fn cuda_nvfp4_w4a4_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let (ran, failures) = parity(&target, &cases(), &["nvfp4"], 8000, false);
        println!("{ran} cases");
        assert!(ran > 0);
        assert!(
            failures.is_empty(),
            "CUDA NVFP4 W4A4 differs from emulation: {failures:?}"
        );
    }

    /// INT8 W8A8 on cuda-w8a8-int8 (issue 18): per-token s8 activations (`fm_quant_rows`
    /// mode 4), s8 weights, int8 tensor cores with exact s32 sums; every case above.
    #[test]
    fn cuda_w8a8_int8_matches_emulation() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let (ran, failures) = parity(&target, &cases(), &["w8a8-int8"], 9000, false);
        println!("{ran} cases");
        assert!(ran > 0);
        assert!(
            failures.is_empty(),
            "CUDA INT8 W8A8 differs from emulation: {failures:?}"
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
            // The wide (sm_90a wgmma) tile's epilogue with the LoRA delta.
            cases().remove(15),
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
                // Rank 160 in the last case: gate|up is 320 ranks, past one shared-memory
                // chunk of the expand kernel.
                random_adapter(
                    &mut rng,
                    if n == 4 { 160 } else { 16 },
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
            let topk = Router::new(&config)
                .unwrap()
                .route(&logits, case.tokens)
                .unwrap();
            for name in [
                "bf16",
                "f16",
                "fp8",
                "fp8-channel",
                "fp8-static",
                "fp8-block128",
                "mxfp4",
                "mxfp4-a-fp8",
                "mxfp4-a-mxfp4",
                "mxfp6-e3m2",
                "nvfp4-a16",
                "w4a16-g64-zp",
                "w4a16-g32-zp-actorder",
                "w8a16",
                "w4a8",
            ] {
                let scheme = QuantScheme::parse(name).unwrap();
                // A group that does not divide K (H = 160 for g64) is no checkpoint.
                let mut weights = match ExpertWeights::quantize(&dense, scheme) {
                    Ok(w) => w,
                    Err(e) => {
                        println!(
                            "skip {name:14} H={} I={}: {e}",
                            case.hidden, case.intermediate
                        );
                        continue;
                    }
                };
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
                    w.input_scales = weights.input_scales.clone();
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
                let dev = device_forward_cuda(&gpu, &x, &logits, Some(&slots));
                let dev_err = rel(&dev, &got);
                let ok = err <= tol && effect > 10.0 * err && dev_err <= DEVICE_TOL;
                println!(
                    "{:4} {name:14} {chosen:18} E={:3} k={} M={:3} {:10} shared={} lora effect {effect:.2e}  rel L2 {err:.2e} (tol {tol:.0e}), device path {dev_err:.1e}",
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
    /// The routing kernel against `Router` on the host: every routing kind, expert counts
    /// from 8 to 256, ids identical and weights within 1e-5.
    #[test]
    fn cuda_router_matches_host() {
        let target = match Target::cuda(0) {
            Ok(t) => t,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        let dev = target.cuda_device().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        let mut cases = Vec::new();
        for &(e, k) in &[(8usize, 2usize), (60, 4), (128, 8), (256, 8)] {
            cases.push((e, k, Routing::SoftmaxTopK { renormalize: true }));
            cases.push((e, k, Routing::SoftmaxTopK { renormalize: false }));
            cases.push((e, k, Routing::SigmoidTopK { renormalize: true }));
            cases.push((e, 1, Routing::SigmoidTop1));
            if e % 4 == 0 {
                for bias in [true, false] {
                    for scoring in [GroupScoring::Sigmoid, GroupScoring::Softmax] {
                        let correction_bias = bias.then(|| gaussian(&mut rng, e, 0.1));
                        cases.push((
                            e,
                            k.min(e / 2),
                            Routing::Grouped {
                                num_groups: 4,
                                topk_groups: 2,
                                scoring,
                                correction_bias,
                                renormalize: bias,
                                routed_scaling_factor: 2.5,
                            },
                        ));
                    }
                }
            }
        }
        let tokens = 37;
        for (e, k, routing) in cases {
            let config = LayerConfig {
                routing: routing.clone(),
                ..LayerConfig::new(e, k, 128, 128)
            };
            let logits = gaussian(&mut rng, tokens * e, 2.0);
            let want = Router::new(&config)
                .unwrap()
                .route(&logits, tokens)
                .unwrap();
            let got = fleetmoe::gpu::GpuRouter::<fleetmoe::backends::cuda::Cuda>::new(dev, &config)
                .unwrap()
                .unwrap()
                .route(dev, &logits, tokens)
                .unwrap();
            assert_eq!(got.ids(), want.ids(), "{} E={e} k={k}", routing.name());
            for (g, w) in got.weights().iter().zip(want.weights()) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{} E={e} k={k}: weight {g} vs {w}",
                    routing.name()
                );
            }
            println!("ok   {:14} E={e:3} k={k}", routing.name());
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_per_expert_static_scales_match_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_low_bit_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_router_matches_host() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_lora_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_act_order_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_mx_on_fp8_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_nvfp4_w4a4_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_w8a8_int8_matches_emulation() {
    println!("skipped: built without feature `cuda` (cargo test --features cuda)");
}
