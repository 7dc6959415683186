//! The wgpu experts against the emulation, for every scheme, on fresh random inputs at
//! shapes that stress the tiling: M = 1, prime M, top-k 1 to 3, expert counts that are
//! a multiple of nothing, an expert with no tokens, K and N that are not multiples of the
//! 16-wide tile (where the scheme's groups allow it), every activation, biases, the router
//! weight on the input, LoRA with two adapters and tokens without one, a shared expert.
//! Each case must be within the scheme's parity tolerance (`QuantScheme::parity_tolerance`);
//! the worst error per scheme is printed as a table. Static fp8 input scales that differ
//! per expert have their own cases (`per_expert`). Small shapes, so the suite runs in
//! about a minute on lavapipe (software Vulkan). Without an adapter (or without feature
//! `wgpu`) the test prints why it skipped.

#[cfg(feature = "wgpu")]
mod common;

/// Set (by `.ci/wgpu`) where an adapter must exist: a missing one fails instead of skipping.
#[cfg(feature = "wgpu")]
const REQUIRE: &str = "FLEETMOE_REQUIRE_WGPU";

#[cfg(feature = "wgpu")]
mod gpu {
    use super::common::random_adapter;
    use super::REQUIRE;
    use fleetmoe::moe::*;
    use fleetmoe::oracle::BackendId;
    use fleetmoe::quant::dense::gaussian;
    use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// Every scheme family with its options (`SCHEME_EXAMPLES`), fnuz and act-order included.
    const SCHEMES: &[&str] = &[
        "bf16",
        "f16",
        "fp8",
        "fp8-channel",
        "fp8-block128",
        "fp8-static",
        "fp8-wtensor-atoken-fnuz",
        "fp8-block128-fnuz",
        "nvfp4",
        "nvfp4-a16",
        "mxfp4",
        "mxfp4-a-fp8",
        "mxfp4-a-mxfp4",
        "mxfp6-e3m2",
        "mxfp6-e2m3",
        "mxfp6-e3m2-a-fp8",
        "mxfp6-e2m3-a-fp8",
        "w4a16",
        "w4a16-g32-zp",
        "w4a16-g64-actorder",
        "w4a16-channel",
        "w8a16",
        "w8a16-g32-zp-actorder",
        "w4a8",
        "w8a8-int8",
    ];

    #[derive(Clone)]
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
        lora: bool,
        shared: Option<usize>,
    }

    fn c(experts: usize, top_k: usize, hidden: usize, intermediate: usize, tokens: usize) -> Case {
        Case {
            experts,
            top_k,
            hidden,
            intermediate,
            tokens,
            activation: Activation::SiluAndMul,
            bias: false,
            on_input: false,
            lopsided: false,
            lora: false,
            shared: None,
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            c(3, 1, 64, 64, 1),
            Case {
                activation: Activation::GeluAndMul,
                ..c(5, 2, 128, 96, 13)
            },
            Case {
                activation: Activation::GeluTanhAndMul,
                lopsided: true,
                ..c(7, 3, 160, 96, 31)
            },
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                ..c(9, 2, 256, 192, 23)
            },
            Case {
                activation: Activation::Relu2,
                ..c(4, 2, 128, 128, 17)
            },
            Case {
                activation: Activation::Silu,
                bias: true,
                ..c(6, 2, 96, 64, 11)
            },
            Case {
                on_input: true,
                ..c(5, 1, 128, 128, 29)
            },
            // K and N not multiples of the 16-wide tile (schemes without K groups only).
            c(3, 2, 72, 40, 7),
            // Both K multiples of 128 (the group-128 integer schemes and W4A8), top-k 4.
            Case {
                activation: Activation::GeluAndMul,
                lopsided: true,
                ..c(6, 4, 256, 128, 41)
            },
            // LoRA: two adapters of different ranks, tokens with none; a shared expert
            // with a sigmoid gate and its own adapter.
            Case {
                lora: true,
                shared: Some(64),
                ..c(5, 2, 128, 64, 19)
            },
            Case {
                activation: Activation::GPT_OSS,
                bias: true,
                lora: true,
                ..c(4, 2, 64, 96, 5)
            },
        ]
    }

    /// The device path's output in the model dtype against the host's f32: bf16 rounds
    /// each element by at most 2^-9 relative, f16 by 2^-11.
    pub(super) const DEVICE_TOL: f64 = 4e-3;

    /// `forward_device` on device buffers the test owns, output in the model dtype.
    pub(super) fn device_forward(
        layer: &MoeLayer,
        x: &[f32],
        logits: &[f32],
        slots: Option<&[Option<usize>]>,
    ) -> fleetmoe::Result<Vec<f32>> {
        use fleetmoe::device::{Buffer, Runtime};
        use fleetmoe::gpu::{DType, DeviceBatch, DeviceRouting, DeviceSlice};
        let g = layer.wgpu_layer().expect("a wgpu layer");
        let dev = &**g.runtime();
        let tokens = x.len() / layer.config().hidden;
        layer.reserve(tokens)?;
        let dtype = g.dtype();
        let bits: Vec<u16> = x
            .iter()
            .map(|&v| match dtype {
                DType::F16 => half::f16::from_f32(v).to_bits(),
                _ => half::bf16::from_f32(v).to_bits(),
            })
            .collect();
        let xb = Buffer::from_slice(dev, &bits)?;
        let lb = Buffer::from_slice(dev, logits)?;
        let sb = slots
            .map(|s| {
                let v: Vec<i32> = s.iter().map(|a| a.map_or(-1, |v| v as i32)).collect();
                Buffer::from_slice(dev, &v)
            })
            .transpose()?;
        let ob = Buffer::<fleetmoe::device::wgpu::WgpuDevice>::alloc(dev, x.len() * 2)?;
        let batch = DeviceBatch {
            tokens,
            hidden: DeviceSlice::new(xb.addr(), x.len(), dtype),
            routing: DeviceRouting::Logits(DeviceSlice::new(lb.addr(), logits.len(), DType::F32)),
            adapters: sb
                .as_ref()
                .map(|b| DeviceSlice::new(b.addr(), tokens, DType::I32)),
            out: DeviceSlice::new(ob.addr(), x.len(), dtype),
        };
        // SAFETY: every buffer is this device's, sized as the batch says, and lives until
        // the download below has waited for the queue.
        unsafe { layer.forward_device(&batch, GpuStream::Wgpu(dev.stream()))? };
        let out: Vec<u16> = ob.to_vec(dev)?;
        Ok(out
            .iter()
            .map(|&b| match dtype {
                DType::F16 => half::f16::from_bits(b).to_f32(),
                _ => half::bf16::from_bits(b).to_f32(),
            })
            .collect())
    }

    pub(super) fn rel(got: &[f32], want: &[f32]) -> f64 {
        let num: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    /// Worst error and cells run, per scheme.
    #[derive(Default)]
    struct Row {
        cells: usize,
        worst: f64,
        skipped: usize,
    }

    /// One case under every scheme: `(scheme, error)` per cell run, the skipped ones as
    /// `None`, failures pushed to `failures`.
    fn run_case(
        target: &Target,
        n: usize,
        case: &Case,
        table: &mut BTreeMap<&'static str, Row>,
        failures: &mut Vec<String>,
    ) {
        let config = LayerConfig {
            activation: case.activation,
            has_bias: case.bias,
            apply_router_weight_on_input: case.on_input,
            routing: if case.on_input {
                Routing::SigmoidTop1
            } else {
                Routing::SoftmaxTopK { renormalize: true }
            },
            lora: case.lora,
            shared_intermediate: case.shared,
            ..LayerConfig::new(case.experts, case.top_k, case.hidden, case.intermediate)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4200 + n as u64);
        let x = gaussian(&mut rng, case.tokens * case.hidden, 1.0);
        let mut logits = gaussian(&mut rng, case.tokens * case.experts, 1.0);
        if case.lopsided {
            for t in 0..case.tokens {
                logits[t * case.experts] = -30.0;
                logits[t * case.experts + 1] = if t == 0 { 30.0 } else { -30.0 };
            }
        }
        let gated = case.activation.is_gated();
        let adapters = case.lora.then(|| {
            (0..2)
                .map(|a| {
                    random_adapter(
                        &mut rng,
                        [4, 8][a],
                        case.experts,
                        case.hidden,
                        case.intermediate,
                        gated,
                        case.shared,
                    )
                })
                .collect::<Vec<_>>()
        });
        let slots: Vec<Option<usize>> = (0..case.tokens)
            .map(|t| [Some(0), None, Some(1)][t % 3])
            .collect();
        let gate = gaussian(&mut rng, case.hidden, 0.05);
        let dense = DenseExperts::random(&config, 77 + n as u64);
        let topk = Router::new(&config)
            .unwrap()
            .route(&logits, case.tokens)
            .unwrap();
        for &name in SCHEMES {
            let scheme = QuantScheme::parse(name).unwrap();
            let row = table.entry(name).or_default();
            let mut weights = match ExpertWeights::quantize(&dense, scheme) {
                Ok(w) => w,
                // A group that does not divide K is no checkpoint.
                Err(_) => {
                    row.skipped += 1;
                    continue;
                }
            };
            calibrate(&mut weights, &config, &x, &topk).unwrap();
            let shared = case.shared.map(|si| {
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
                lora: adapters.clone().map(|adapters| Lora { adapters }),
                backend: None,
            };
            let gpu = match MoeLayer::new(config.clone(), &weights, target, extras()) {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{name} case {n}: building the layer: {e}"));
                    continue;
                }
            };
            let chosen = gpu.selection().chosen;
            if chosen != BackendId::Wgpu {
                failures.push(format!(
                    "{name} case {n}: the oracle chose {chosen}:\n{}",
                    gpu.selection()
                ));
                continue;
            }
            if case.shared.is_some() && gpu.shared_backend() != Some(BackendId::Wgpu) {
                failures.push(format!("{name} case {n}: the shared expert is not on wgpu"));
            }
            let emu = MoeLayer::new(config.clone(), &weights, &Target::cpu(), extras()).unwrap();
            let route = RoutingInput::Logits(&logits);
            let lora_slots = case.lora.then_some(&slots[..]);
            let got = match gpu.forward(&x, route, lora_slots) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{name} case {n}: forward: {e}"));
                    continue;
                }
            };
            let want = emu.forward(&x, route, lora_slots).unwrap();
            let err = rel(&got, &want);
            let tol = scheme.parity_tolerance();
            let mut ok = err <= tol && got.iter().all(|v| v.is_finite());
            let mut note = String::new();
            if case.lora {
                // LoRA must change the answer, or this cell would not be testing it.
                let plain = emu.forward(&x, route, None).unwrap();
                let effect = rel(&plain, &want);
                ok &= effect > 10.0 * err;
                note = format!(" lora effect {effect:.1e}");
            }
            // The device-resident path, output in the model dtype: the host's answer
            // within the output's rounding.
            match device_forward(&gpu, &x, &logits, lora_slots) {
                Ok(dev) => {
                    let dev_err = rel(&dev, &got);
                    ok &= dev_err <= DEVICE_TOL;
                    note.push_str(&format!(" device path {dev_err:.1e}"));
                }
                Err(e) => {
                    ok = false;
                    note.push_str(&format!(" device path: {e}"));
                }
            }
            row.cells += 1;
            row.worst = row.worst.max(err);
            if !ok {
                failures.push(format!("{name} case {n}: {err:.2e} (tol {tol:.0e}){note}"));
            }
            println!(
                "{:4} {name:24} E={} k={} H={:3} I={:3} M={:2} {:11} bias={} on_input={} lora={} shared={}  rel L2 {err:.2e} (tol {tol:.0e}){note}",
                if ok { "ok" } else { "FAIL" },
                case.experts,
                case.top_k,
                case.hidden,
                case.intermediate,
                case.tokens,
                case.activation.name(),
                case.bias,
                case.on_input,
                case.lora,
                case.shared.is_some(),
            );
        }
    }

    #[test]
    fn wgpu_matches_emulation() {
        let target = match Target::wgpu(0) {
            Ok(t) => t,
            Err(e) => {
                assert!(std::env::var_os(REQUIRE).is_none(), "{REQUIRE} is set: {e}");
                println!("skipped: {e}");
                return;
            }
        };
        println!("device: {}", target.capabilities());
        let start = Instant::now();
        let mut table = BTreeMap::new();
        let mut failures = Vec::new();
        for (n, case) in cases().iter().enumerate() {
            run_case(&target, n, case, &mut table, &mut failures);
        }
        println!("\n| scheme | cells | worst rel L2 | tolerance |\n| --- | --- | --- | --- |");
        for name in SCHEMES {
            let r = &table[name];
            let tol = QuantScheme::parse(name).unwrap().parity_tolerance();
            println!(
                "| {name} | {} ({} skipped: K not a multiple of its group) | {:.2e} | {tol:.0e} |",
                r.cells, r.skipped, r.worst
            );
        }
        println!("total {:.1} s", start.elapsed().as_secs_f64());
        assert!(table.values().all(|r| r.cells > 0));
        assert!(
            failures.is_empty(),
            "wgpu differs from emulation:\n{}",
            failures.join("\n")
        );
    }
}

/// Static fp8 input scales that differ per expert (`set_input_scales_per_expert`, spread
/// over 4x): the wgpu experts quantize each (token, expert) pair's gemm1 and gemm2 inputs
/// with that expert's scale, as the emulation does, and the answer is visibly not the one
/// of the scales reduced to their maximum (so the case would fail if they were ignored).
#[cfg(feature = "wgpu")]
mod per_expert {
    use super::gpu::{device_forward, rel, DEVICE_TOL};
    use super::REQUIRE;
    use fleetmoe::moe::*;
    use fleetmoe::oracle::BackendId;
    use fleetmoe::quant::dense::gaussian;
    use fleetmoe::quant::{DenseExperts, ExpertWeights, InputScales, QuantScheme};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Every scheme the wgpu experts run with static fp8 activations.
    const SCHEMES: &[&str] = &[
        "fp8-static",
        "fp8-wchannel-astatic-fnuz",
        "mxfp4-a-fp8",
        "mxfp6-e3m2-a-fp8",
        "mxfp6-e2m3-a-fp8",
    ];

    /// Expert `e` of `n`'s factor on the calibrated scale: `lo` to `4 lo`, evenly spaced,
    /// so most pairs of experts are not a power of two apart (which would round alike).
    /// With `lo` = 1 no value is clipped and the experts differ by their grids alone;
    /// with `lo` = 0.5 the narrowest experts also clip their largest inputs.
    fn spread(lo: f32, e: usize, n: usize) -> f32 {
        lo * (1.0 + 3.0 * e as f32 / (n - 1) as f32)
    }

    #[test]
    fn wgpu_per_expert_input_scales_match_emulation() {
        let target = match Target::wgpu(0) {
            Ok(t) => t,
            Err(e) => {
                assert!(std::env::var_os(REQUIRE).is_none(), "{REQUIRE} is set: {e}");
                println!("skipped: {e}");
                return;
            }
        };
        println!("device: {}", target.capabilities());
        let mut failures = Vec::new();
        // (experts, top_k, hidden, intermediate, tokens, router weight on the input, the
        // smallest scale factor)
        for (n, &(experts, top_k, hidden, inter, tokens, on_input, lo)) in [
            (6, 2, 128, 96, 23, false, 0.5),
            (6, 2, 128, 96, 23, false, 1.0),
            (5, 3, 96, 64, 17, false, 1.0),
            (4, 1, 64, 64, 9, true, 0.5),
        ]
        .iter()
        .enumerate()
        {
            let config = LayerConfig {
                apply_router_weight_on_input: on_input,
                routing: if on_input {
                    Routing::SigmoidTop1
                } else {
                    Routing::SoftmaxTopK { renormalize: true }
                },
                ..LayerConfig::new(experts, top_k, hidden, inter)
            };
            let mut rng = ChaCha8Rng::seed_from_u64(9100 + n as u64);
            let x = gaussian(&mut rng, tokens * hidden, 1.0);
            let logits = gaussian(&mut rng, tokens * experts, 1.0);
            let dense = DenseExperts::random(&config, 300 + n as u64);
            let topk = Router::new(&config)
                .unwrap()
                .route(&logits, tokens)
                .unwrap();
            for &name in SCHEMES {
                let scheme = QuantScheme::parse(name).unwrap();
                let mut weights = ExpertWeights::quantize(&dense, scheme).unwrap();
                calibrate(&mut weights, &config, &x, &topk).unwrap();
                let base = weights.input_scales.clone().unwrap();
                let (s1, s2) = (base.w13[0], base.w2[0]);
                // w2's factors run the other way, so no expert keeps one ratio for both.
                let w13: Vec<f32> = (0..experts).map(|e| s1 * spread(lo, e, experts)).collect();
                let w2: Vec<f32> = (0..experts)
                    .map(|e| s2 * spread(lo, experts - 1 - e, experts))
                    .collect();
                weights.set_input_scales_per_expert(&w13, &w2).unwrap();
                let scales = weights.input_scales.clone().unwrap();
                assert!(scales.is_per_expert() && scales.w13.len() == experts);
                let mut reduced = weights.clone();
                let max = |v: &[f32]| v.iter().copied().fold(0.0f32, f32::max);
                reduced.input_scales = Some(InputScales::uniform(max(&w13), max(&w2)));

                let gpu = match MoeLayer::new(
                    config.clone(),
                    &weights,
                    &target,
                    LayerExtras::default(),
                ) {
                    Ok(l) => l,
                    Err(e) => {
                        failures.push(format!("{name} case {n}: building the layer: {e}"));
                        continue;
                    }
                };
                if gpu.selection().chosen != BackendId::Wgpu {
                    failures.push(format!(
                        "{name} case {n}: the oracle chose {}:\n{}",
                        gpu.selection().chosen,
                        gpu.selection()
                    ));
                    continue;
                }
                let emu = |w: &ExpertWeights| {
                    MoeLayer::new(config.clone(), w, &Target::cpu(), LayerExtras::default())
                        .unwrap()
                };
                let route = RoutingInput::Logits(&logits);
                let got = match gpu.forward(&x, route, None) {
                    Ok(v) => v,
                    Err(e) => {
                        failures.push(format!("{name} case {n}: forward: {e}"));
                        continue;
                    }
                };
                let want = emu(&weights).forward(&x, route, None).unwrap();
                let ignored = emu(&reduced).forward(&x, route, None).unwrap();
                let err = rel(&got, &want);
                let off = rel(&got, &ignored);
                let tol = scheme.parity_tolerance();
                let dev = device_forward(&gpu, &x, &logits, None)
                    .map(|d| rel(&d, &got))
                    .unwrap_or(f64::INFINITY);
                // Matching the emulation, and far from the max-reduced scales' answer.
                let ok = err <= tol
                    && got.iter().all(|v| v.is_finite())
                    && off > 2.0 * tol
                    && off > 20.0 * err
                    && dev <= DEVICE_TOL;
                println!(
                    "{:4} {name:18} E={experts} k={top_k} H={hidden:3} I={inter:3} M={tokens:2} on_input={on_input} scales {lo}..{}x  rel L2 {err:.2e} (tol {tol:.0e}), vs max-reduced scales {off:.2e}, device path {dev:.1e}",
                    if ok { "ok" } else { "FAIL" },
                    4.0 * lo,
                );
                if !ok {
                    failures.push(format!(
                        "{name} case {n}: {err:.2e} (tol {tol:.0e}), max-reduced {off:.2e}, device {dev:.1e}"
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "wgpu per-expert input scales:\n{}",
            failures.join("\n")
        );
    }

    /// `fm_qdq_slots` against `StageQuant::apply`, value for value: each row quantized
    /// with its expert's static scale (fp8 e4m3fn and e4m3fnuz).
    #[test]
    fn wgpu_per_expert_quantization_is_the_emulations() {
        use fleetmoe::backends::wgpu::experts::qdq_slots_host;
        use fleetmoe::device::wgpu::WgpuDevice;
        use fleetmoe::quant::{Stage, StageQuant};
        let dev = match WgpuDevice::new(0) {
            Ok(d) => d,
            Err(e) => {
                assert!(std::env::var_os(REQUIRE).is_none(), "{REQUIRE} is set: {e}");
                println!("skipped: {e}");
                return;
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(19);
        let (rows, cols, experts) = (41, 96, 5);
        let x: Vec<f32> = gaussian(&mut rng, rows * cols, 1.0)
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        let ids: Vec<usize> = (0..rows).map(|r| (r * 7 + r / 3) % experts).collect();
        let w13: Vec<f32> = (0..experts)
            .map(|e| 0.004 * spread(0.5, e, experts))
            .collect();
        let scales = InputScales {
            w13: w13.clone(),
            w2: w13.iter().rev().copied().collect(),
        };
        let mut bad = Vec::new();
        for name in ["fp8-static", "fp8-wtensor-astatic-fnuz", "mxfp4-a-fp8"] {
            let scheme = QuantScheme::parse(name).unwrap();
            for stage in [Stage::W13, Stage::W2] {
                let a = StageQuant::for_scheme(&scheme, stage, Some(&scales)).unwrap();
                assert!(a.uniform().is_none());
                let mut want = x.clone();
                a.apply(&mut want, cols, &ids).unwrap();
                let got = qdq_slots_host(&dev, &a, &x, cols, &ids).unwrap();
                let diff = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| g.to_bits() != w.to_bits())
                    .count();
                println!("{name:14} {stage:?}: {diff} of {} differ", x.len());
                if diff > 0 {
                    bad.push(format!("{name} {stage:?}"));
                }
            }
        }
        assert!(bad.is_empty(), "{bad:?}");
    }
}

/// More experts than the WGSL alignment holds is refused by name, not routed to nothing.
#[cfg(feature = "wgpu")]
#[test]
fn too_many_experts_for_the_wgsl_alignment_are_refused() {
    use fleetmoe::moe::{LayerConfig, LayerExtras, MoeLayer, Target};
    use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
    let target = match Target::wgpu(0) {
        Ok(t) => t,
        Err(e) => {
            assert!(std::env::var_os("FLEETMOE_REQUIRE_WGPU").is_none(), "{e}");
            println!("skipped: {e}");
            return;
        }
    };
    let config = LayerConfig::new(1025, 2, 16, 16);
    let dense = DenseExperts::random(&config, 5);
    let weights = ExpertWeights::quantize(&dense, QuantScheme::parse("bf16").unwrap()).unwrap();
    let err = MoeLayer::new(config, &weights, &target, LayerExtras::default())
        .err()
        .expect("1025 experts on wgpu must be refused");
    assert!(
        err.to_string()
            .contains("alignment kernel takes at most 1024 experts"),
        "{err}"
    );
}

/// `act.wgsl` against `ActQuant::apply` on one matrix, element for element, for every
/// activation rule: the GEMM inputs are then the emulation's values.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_activation_quantization_is_the_emulations() {
    use fleetmoe::backends::wgpu::experts::qdq_host;
    use fleetmoe::device::wgpu::WgpuDevice;
    use fleetmoe::quant::dense::gaussian;
    use fleetmoe::quant::{ActQuant, InputScales, QuantScheme, Stage};
    use rand::SeedableRng;
    let dev = match WgpuDevice::new(0) {
        Ok(d) => d,
        Err(e) => {
            assert!(std::env::var_os(REQUIRE).is_none(), "{REQUIRE} is set: {e}");
            println!("skipped: {e}");
            return;
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (rows, cols) = (37, 256);
    let x: Vec<f32> = gaussian(&mut rng, rows * cols, 1.0)
        .iter()
        .map(|v| half::bf16::from_f32(*v).to_f32())
        .collect();
    let scales = Some(InputScales::uniform(0.01, 0.02));
    let mut bad = Vec::new();
    for name in [
        "fp8",
        "fp8-channel",
        "fp8-block128",
        "fp8-static",
        "fp8-wtensor-atoken-fnuz",
        "nvfp4",
        "mxfp4-a-mxfp4",
        "mxfp6-e3m2",
        "mxfp6-e2m3",
        "w4a8",
        "w8a8-int8",
    ] {
        let scheme = QuantScheme::parse(name).unwrap();
        let a = ActQuant::for_scheme(&scheme, Stage::W13, scales.as_ref()).unwrap();
        let mut want = x.clone();
        a.apply(&mut want, cols).unwrap();
        let got = qdq_host(&dev, &a, &x, cols).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()))
            .count();
        let first = got
            .iter()
            .zip(&want)
            .zip(&x)
            .position(|((g, w), _)| g.to_bits() != w.to_bits());
        println!(
            "{name:24} {diff} of {} differ{}",
            x.len(),
            first.map_or(String::new(), |i| format!(
                " (first at {i}: x {} got {} want {})",
                x[i], got[i], want[i]
            ))
        );
        if diff > 0 {
            bad.push(name);
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}
