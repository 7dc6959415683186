//! The device-resident forward (`MoeLayer::forward_device`) against the host `forward` of
//! the same layers: several layers of different schemes (one with a gated shared expert,
//! and on CUDA LoRA) queued back to back on the caller's stream — on CUDA captured into
//! one graph and replayed twice, the second time on new inputs written into the same
//! buffers — plus the errors bad input must give. On AMD the same cases run through the
//! HIP driver on the CPU simulator (`kernels-hip/sim`), which is also where the bad-input
//! cases run in CI.
//!
//! Tolerance: the device path writes bf16 where the host path returns f32; bf16 rounding
//! is ≤ 2⁻⁹ relative per element, so 4e-3 rel L2 (f32 outputs: 1e-5, the order of the
//! atomic sums).
#![cfg(any(feature = "cuda", feature = "rocm"))]

mod common;
#[cfg(feature = "rocm")]
mod fakehip;

use fleetmoe::device::{Buffer, Runtime};
use fleetmoe::gpu::{DType, DeviceBatch, DeviceRouting, DeviceSlice};
use fleetmoe::moe::{
    GpuStream, LayerConfig, LayerExtras, Lora, MoeLayer, RoutingInput, SharedExpertWeights, Target,
    TopK,
};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
#[cfg(feature = "rocm")]
use fleetmoe::Error;

const TOKENS: usize = 37;

/// One layer of the test and how its forward is fed.
struct Case {
    scheme: &'static str,
    shared: bool,
    lora: bool,
    /// Routed by the layer's kernel from logits (else top-k given).
    logits: bool,
    out: DType,
}

fn config(case: &Case) -> LayerConfig {
    LayerConfig {
        shared_intermediate: case.shared.then_some(128),
        lora: case.lora,
        ..LayerConfig::new(8, 2, 256, 256)
    }
}

/// The layer of `case` on `target`, with seeded weights, shared expert and adapters.
fn layer(case: &Case, target: &Target, seed: u64) -> MoeLayer {
    let config = config(case);
    let scheme = QuantScheme::parse(case.scheme).unwrap();
    let mut rng = common::rng(seed);
    let weights = ExpertWeights::quantize(&DenseExperts::random(&config, seed), scheme).unwrap();
    let shared = case.shared.then(|| {
        let one = LayerConfig {
            num_experts: 1,
            top_k: 1,
            intermediate: 128,
            shared_intermediate: None,
            lora: false,
            ..config.clone()
        };
        SharedExpertWeights {
            weights: ExpertWeights::quantize(&DenseExperts::random(&one, seed + 1), scheme)
                .unwrap(),
            gate: Some(common::uniform(&mut rng, config.hidden, 0.05)),
        }
    });
    let lora = case.lora.then(|| Lora {
        adapters: (0..2)
            .map(|_| {
                common::random_adapter(
                    &mut rng,
                    8,
                    8,
                    config.hidden,
                    256,
                    true,
                    config.shared_intermediate,
                )
            })
            .collect(),
    });
    let extras = LayerExtras {
        shared,
        lora,
        backend: None,
    };
    MoeLayer::new(config, &weights, target, extras).unwrap()
}

/// A forward's host inputs, and the same on the device.
struct Inputs<R: Runtime> {
    x: Vec<f32>,
    logits: Vec<f32>,
    topk: TopK,
    slots: Vec<Option<usize>>,
    dev_x: Buffer<R>,
    dev_logits: Buffer<R>,
    dev_ids: Buffer<R>,
    dev_weights: Buffer<R>,
    dev_slots: Buffer<R>,
    dev_out: Buffer<R>,
}

fn bf16(x: &[f32]) -> Vec<u16> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect()
}

impl<R: Runtime> Inputs<R> {
    fn new(rt: &R, layer: &MoeLayer, case: &Case, seed: u64) -> Self {
        let c = layer.config();
        let mut rng = common::rng(seed);
        // bf16-exact inputs, so the host forward and the device read the same values.
        let x: Vec<f32> = common::uniform(&mut rng, TOKENS * c.hidden, 1.0)
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        let logits = common::uniform(&mut rng, TOKENS * c.num_experts, 2.0);
        let topk = common::random_topk(&mut rng, TOKENS, c.top_k, c.num_experts);
        let slots: Vec<Option<usize>> = (0..TOKENS)
            .map(|t| [Some(0), None, Some(1)][t % 3])
            .collect();
        let ids: Vec<i32> = topk.ids().iter().map(|&i| i as i32).collect();
        let raw_slots: Vec<i32> = slots.iter().map(|s| s.map_or(-1, |a| a as i32)).collect();
        Inputs {
            dev_x: Buffer::from_slice(rt, &bf16(&x)).unwrap(),
            dev_logits: Buffer::from_slice(rt, &logits).unwrap(),
            dev_ids: Buffer::from_slice(rt, &ids).unwrap(),
            dev_weights: Buffer::from_slice(rt, topk.weights()).unwrap(),
            dev_slots: Buffer::from_slice(rt, &raw_slots).unwrap(),
            dev_out: Buffer::alloc(rt, TOKENS * c.hidden * case.out.size()).unwrap(),
            x,
            logits,
            topk,
            slots,
        }
    }

    /// New hidden states written into the same device buffer.
    fn refresh(&mut self, rt: &R, seed: u64) {
        let mut rng = common::rng(seed);
        self.x = common::uniform(&mut rng, self.x.len(), 1.0)
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        rt.upload(
            self.dev_x.addr(),
            bytemuck::cast_slice(&bf16(&self.x)),
            rt.stream(),
        )
        .unwrap();
        rt.synchronize(rt.stream()).unwrap();
    }

    fn batch(&self, layer: &MoeLayer, case: &Case) -> DeviceBatch {
        let c = layer.config();
        let (h, k) = (c.hidden, c.top_k);
        let s = |b: &Buffer<R>, n: usize, t: DType| DeviceSlice::new(b.addr(), n, t);
        DeviceBatch {
            tokens: TOKENS,
            hidden: s(&self.dev_x, TOKENS * h, DType::Bf16),
            routing: if case.logits {
                DeviceRouting::Logits(s(&self.dev_logits, TOKENS * c.num_experts, DType::F32))
            } else {
                DeviceRouting::TopK {
                    ids: s(&self.dev_ids, TOKENS * k, DType::I32),
                    weights: s(&self.dev_weights, TOKENS * k, DType::F32),
                }
            },
            adapters: case.lora.then(|| s(&self.dev_slots, TOKENS, DType::I32)),
            out: s(&self.dev_out, TOKENS * h, case.out),
        }
    }

    /// The device output as f32, next to the host `forward` of the same inputs.
    fn compare(&self, rt: &R, layer: &MoeLayer, case: &Case) -> f64 {
        let n = self.x.len();
        let got: Vec<f32> = match case.out {
            DType::Bf16 => {
                let mut raw = vec![0u16; n];
                rt.download(
                    self.dev_out.addr(),
                    bytemuck::cast_slice_mut(&mut raw),
                    rt.stream(),
                )
                .unwrap();
                raw.iter()
                    .map(|&b| half::bf16::from_bits(b).to_f32())
                    .collect()
            }
            _ => {
                let mut raw = vec![0f32; n];
                rt.download(
                    self.dev_out.addr(),
                    bytemuck::cast_slice_mut(&mut raw),
                    rt.stream(),
                )
                .unwrap();
                raw
            }
        };
        let routing = if case.logits {
            RoutingInput::Logits(&self.logits)
        } else {
            RoutingInput::TopK(&self.topk)
        };
        let slots = case.lora.then_some(&self.slots[..]);
        let want = layer.forward(&self.x, routing, slots).unwrap();
        let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        assert!(
            want.iter().any(|&v| v != 0.0),
            "{}: an all-zero reference",
            case.scheme
        );
        common::rel_l2(&got, &want64)
    }
}

fn tolerance(case: &Case) -> f64 {
    if case.out == DType::F32 {
        1e-5
    } else {
        4e-3
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_layers_captured_in_one_graph_match_the_host_forward() {
    let target = match Target::cuda(0) {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let dev = target.cuda_device().unwrap().clone();
    let cases = [
        Case {
            scheme: "bf16",
            shared: true,
            lora: true,
            logits: true,
            out: DType::Bf16,
        },
        Case {
            scheme: "fp8",
            shared: false,
            lora: false,
            logits: false,
            out: DType::F32,
        },
        Case {
            scheme: "mxfp4",
            shared: true,
            lora: false,
            logits: true,
            out: DType::Bf16,
        },
        Case {
            scheme: "fp8-block128",
            shared: false,
            lora: true,
            logits: false,
            out: DType::Bf16,
        },
    ];
    let mut layers = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let l = layer(case, &target, 10 + n as u64);
        assert!(
            l.selection().chosen.is_cuda(),
            "{}: {}",
            case.scheme,
            l.selection()
        );
        l.reserve(TOKENS).unwrap();
        let inputs = Inputs::new(&*dev, &l, case, 50 + n as u64);
        layers.push((l, inputs));
    }
    // The engine's own stream; the whole decode step captured once.
    let stream = dev.new_stream().unwrap();
    let graph = dev
        .capture(&stream, || {
            for ((l, inputs), case) in layers.iter().zip(&cases) {
                // SAFETY: every buffer is a live allocation of `dev` sized for TOKENS.
                unsafe { l.forward_device(&inputs.batch(l, case), GpuStream::Cuda(&stream))? };
            }
            Ok(())
        })
        .unwrap();
    for round in 0..2 {
        if round == 1 {
            for (n, (_, inputs)) in layers.iter_mut().enumerate() {
                inputs.refresh(&*dev, 90 + n as u64);
            }
        }
        graph.launch().unwrap();
        stream.synchronize().unwrap();
        for ((l, inputs), case) in layers.iter().zip(&cases) {
            let err = inputs.compare(&*dev, l, case);
            println!(
                "{} (replay {round}): rel L2 {err:.2e} vs the host forward",
                case.scheme
            );
            assert!(err < tolerance(case), "{}: {err:e}", case.scheme);
        }
    }
}

#[cfg(feature = "rocm")]
#[test]
fn hip_layers_queued_on_one_stream_match_the_host_forward_on_the_simulator() {
    use fleetmoe::device::hip::HipStream;
    let Some((clang, mut stand_ins)) = fakehip::simulator() else {
        return;
    };
    fakehip::use_stand_in(&clang, &mut stand_ins, 942);
    let target = Target::hip(0).unwrap();
    let dev = target.hip_device().unwrap().clone();
    let cases = [
        Case {
            scheme: "bf16",
            shared: true,
            lora: false,
            logits: true,
            out: DType::Bf16,
        },
        Case {
            scheme: "fp8",
            shared: false,
            lora: false,
            logits: false,
            out: DType::F32,
        },
        Case {
            scheme: "mxfp4",
            shared: true,
            lora: false,
            logits: true,
            out: DType::Bf16,
        },
    ];
    let mut layers = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let l = layer(case, &target, 10 + n as u64);
        assert!(
            l.selection().chosen.is_aiter(),
            "{}: {}",
            case.scheme,
            l.selection()
        );
        l.reserve(TOKENS).unwrap();
        let inputs = Inputs::new(&*dev, &l, case, 50 + n as u64);
        layers.push((l, inputs));
    }
    let stream: HipStream = *dev.stream();
    // Twice, the second time on new inputs: the sum buffer must start from zero again.
    for round in 0..2 {
        if round == 1 {
            for (n, (_, inputs)) in layers.iter_mut().enumerate() {
                inputs.refresh(&*dev, 90 + n as u64);
            }
        }
        for ((l, inputs), case) in layers.iter().zip(&cases) {
            // SAFETY: every buffer is a live allocation of `dev` sized for TOKENS.
            unsafe { l.forward_device(&inputs.batch(l, case), GpuStream::Hip(&stream)) }.unwrap();
        }
        for ((l, inputs), case) in layers.iter().zip(&cases) {
            let err = inputs.compare(&*dev, l, case);
            println!(
                "{} (round {round}): rel L2 {err:.2e} vs the host forward",
                case.scheme
            );
            assert!(err < tolerance(case), "{}: {err:e}", case.scheme);
        }
    }

    // Bad input is an error naming it, before anything is queued.
    let case = &cases[0];
    let (l, inputs) = &layers[0];
    let good = inputs.batch(l, case);
    let run = |b: &DeviceBatch, s: &HipStream| unsafe { l.forward_device(b, GpuStream::Hip(s)) };
    let expect = |b: DeviceBatch, s: &HipStream, want: &str| match run(&b, s) {
        Err(e) => assert!(e.to_string().contains(want), "{want}: {e}"),
        Ok(()) => panic!("{want}: accepted"),
    };
    let small = DeviceSlice {
        len: TOKENS * 256 - 1,
        ..good.hidden
    };
    expect(
        DeviceBatch {
            hidden: small,
            ..good
        },
        &stream,
        "too small",
    );
    let f16 = DeviceSlice {
        dtype: DType::F16,
        ..good.hidden
    };
    expect(
        DeviceBatch {
            hidden: f16,
            ..good
        },
        &stream,
        "hidden states dtype",
    );
    let i32_out = DeviceSlice {
        dtype: DType::I32,
        ..good.out
    };
    expect(
        DeviceBatch {
            out: i32_out,
            ..good
        },
        &stream,
        "output dtype",
    );
    let odd = DeviceSlice {
        addr: good.hidden.addr + 2,
        ..good.hidden
    };
    expect(
        DeviceBatch {
            hidden: odd,
            ..good
        },
        &stream,
        "aligned to 16 bytes",
    );
    expect(
        DeviceBatch {
            tokens: TOKENS + 1,
            ..good
        },
        &stream,
        "reserved",
    );
    expect(
        DeviceBatch {
            adapters: Some(good.hidden),
            ..good
        },
        &stream,
        "no LoRA",
    );
    // SAFETY: the stand-in's stream 0xD1 belongs to "GPU 1"; it is only asked its device.
    let other = unsafe { HipStream::from_raw(0xD1 as *mut std::ffi::c_void) };
    match run(&good, &other) {
        Err(Error::Handle(why)) => assert!(why.contains("GPU 1"), "{why}"),
        other => panic!("a stream of another GPU: {other:?}"),
    }
    let fresh = layer(case, &target, 10);
    match unsafe { fresh.forward_device(&good, GpuStream::Hip(&stream)) } {
        Err(e) => assert!(e.to_string().contains("reserve"), "{e}"),
        Ok(()) => panic!("forward_device without a reserve"),
    }
    // Zero tokens: nothing to do, on both paths.
    let none = TopK::new(0, 2, Vec::new(), Vec::new(), 8).unwrap();
    assert!(l
        .forward(&[], RoutingInput::TopK(&none), None)
        .unwrap()
        .is_empty());
    run(&DeviceBatch { tokens: 0, ..good }, &stream).unwrap();
    // A layer that runs on the host has no device path.
    let cpu = layer(case, &Target::cpu(), 10);
    cpu.reserve(TOKENS).unwrap();
    match unsafe { cpu.forward_device(&good, GpuStream::Hip(&stream)) } {
        Err(Error::BackendUnavailable { reasons, .. }) => {
            assert!(reasons.contains("host"), "{reasons}")
        }
        other => panic!("forward_device on a CPU layer: {other:?}"),
    }
}

/// The cudarc interop: the same layer through `forward_cuda` on `CudaSlice`s and views
/// allocated with cudarc on an `Arc<CudaStream>` (what candle hands over), against the
/// host forward; a view too short is an error.
#[cfg(feature = "cuda")]
#[test]
fn forward_cuda_on_cudarc_slices_matches_the_host_forward() {
    use fleetmoe::moe::{LogitsRouting, TopKRouting};
    let target = match Target::cuda(0) {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return;
        }
    };
    let dev = target.cuda_device().unwrap();
    let stream = dev.new_stream().unwrap();
    let case = Case {
        scheme: "fp8",
        shared: true,
        lora: false,
        logits: true,
        out: DType::Bf16,
    };
    let l = layer(&case, &target, 3);
    l.reserve(TOKENS).unwrap();
    let c = l.config().clone();
    let mut rng = common::rng(4);
    let x: Vec<f32> = common::uniform(&mut rng, TOKENS * c.hidden, 1.0)
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let logits = common::uniform(&mut rng, TOKENS * c.num_experts, 2.0);
    let dx = stream.clone_htod(&xb).unwrap();
    let dl = stream.clone_htod(&logits).unwrap();
    let mut out = stream.alloc_zeros::<half::bf16>(TOKENS * c.hidden).unwrap();
    let routing: LogitsRouting<'_, _> = fleetmoe::moe::CudaRouting::Logits(&dl);
    l.forward_cuda(
        &dx,
        routing,
        None::<&cudarc::driver::CudaSlice<i32>>,
        &mut out,
        &stream,
    )
    .unwrap();
    let got: Vec<f32> = stream
        .clone_dtoh(&out)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let want = l.forward(&x, RoutingInput::Logits(&logits), None).unwrap();
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    let err = common::rel_l2(&got, &want64);
    println!("forward_cuda fp8 + shared: rel L2 {err:.2e} vs the host forward");
    assert!(err < 4e-3, "{err:e}");
    // Top-k given as views; a weights view one short is refused.
    let topk = common::random_topk(&mut rng, TOKENS, c.top_k, c.num_experts);
    let ids: Vec<i32> = topk.ids().iter().map(|&i| i as i32).collect();
    let di = stream.clone_htod(&ids).unwrap();
    let dw = stream.clone_htod(topk.weights()).unwrap();
    let short = dw.slice(1..);
    let routing: TopKRouting<'_, _, _> = fleetmoe::moe::CudaRouting::TopK {
        ids: &di,
        weights: &short,
    };
    let err = l
        .forward_cuda(
            &dx,
            routing,
            None::<&cudarc::driver::CudaSlice<i32>>,
            &mut out,
            &stream,
        )
        .unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
}
