//! The CUDA side of `fleetmoe bench`: a model-sized layer with random weights made
//! directly in the kernels' layout (values do not change the speed, and quantizing
//! billions of f32 weights on the host would dominate the run), random distinct top-k
//! choices per token, then the experts' forward timed with CUDA events: replays of a
//! captured CUDA graph for M ≤ 256 (so launch gaps do not hide kernel time), plain
//! launches above.

use super::experts::Cuda;
use super::experts::CudaExperts;
use super::layout::{fp8_activations, Elem, GemmWeights, PreparedLayer};
use super::packed::{Code, Packing};
use crate::bench::roofline::{floor_us, Ceilings};
use crate::bench::{peers, BenchRow};
use crate::device::cuda::CudaDevice;
use crate::device::{Buffer, Runtime};
use crate::error::Result;
use crate::gpu::layer::HostRouting;
use crate::gpu::{DType, DeviceBatch, DeviceRouting, DeviceSlice, GpuLayer};
use crate::moe::{LayerConfig, Lora, LoraAdapter, LoraExpert, LoraProj, ModelShape};
use crate::oracle::{self, BackendId};
use crate::quant::{
    group_size, stored_bytes_per_expert, InputScales, IntBits, MxElem, QuantScheme,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Arc;

/// Random raw weights for one projection: bf16 values of magnitude ~1/64 (random sign and
/// mantissa), or fp8 e4m3fn codes that are never NaN.
fn random_projection(
    elem: Elem,
    experts: usize,
    rows: usize,
    cols: usize,
    seed: u64,
    blocked: bool,
) -> GemmWeights {
    let n = experts * rows * cols;
    let mut data = vec![0u8; n * elem.bytes()];
    data.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            match elem {
                Elem::Bf16 | Elem::F16 => {
                    for pair in chunk.chunks_exact_mut(2) {
                        let r: u16 = rng.random();
                        // Exponent 0x3c (2^-7 .. 2^-6) with random sign and mantissa.
                        let bits = (r & 0x807f) | 0x3c00;
                        pair.copy_from_slice(&bits.to_le_bytes());
                    }
                }
                Elem::Fp8 | Elem::Int8 => {
                    for b in chunk.iter_mut() {
                        // Exponent field ≤ 0b0111: every code finite and ≤ 1.875 in magnitude.
                        *b = rng.random::<u8>() & 0xbf;
                    }
                }
            }
        });
    let (row_scales, block_scales) = match (elem, blocked) {
        (Elem::Fp8 | Elem::Int8, false) => (Some(vec![1.0 / 64.0; experts * rows]), None),
        (Elem::Fp8, true) => (
            None,
            Some(vec![1.0 / 64.0; experts * rows / 8 * cols.div_ceil(128)]),
        ),
        _ => (None, None),
    };
    GemmWeights {
        elem,
        experts,
        rows,
        cols,
        data,
        row_scales,
        block_scales,
        bias: None,
        packing: None,
    }
}

/// The packed code and group of a low-bit scheme (`None`: not packed).
fn packed_code(scheme: &QuantScheme, cols: usize) -> Option<(Code, usize)> {
    match *scheme {
        // MXFP6 is stored as e4m3 bytes (`packed::Code::MxE4m3`).
        QuantScheme::Mx {
            elem: MxElem::Fp6E2M3 | MxElem::Fp6E3M2,
            ..
        } => Some((Code::MxE4m3, 32)),
        QuantScheme::Mx { .. } => Some((Code::Mxfp4, 32)),
        QuantScheme::Nvfp4 { .. } => Some((Code::Nvfp4, 16)),
        QuantScheme::IntWeightOnly { bits, group, .. } => Some((
            match bits {
                IntBits::Int4 => Code::Uint4,
                IntBits::Int8 => Code::Uint8,
            },
            group_size(group, cols),
        )),
        QuantScheme::W4A8 => Some((Code::Uint4, 128)),
        QuantScheme::Unquantized(_) | QuantScheme::Fp8 { .. } | QuantScheme::Int8W8A8 => None,
    }
}

/// Random packed weights for one projection: any nibble or byte is a valid code; scales
/// are valid entries of magnitude ~2^-7 (see `packed::Packing` for what each entry is).
fn random_packed(
    scheme: &QuantScheme,
    experts: usize,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Result<GemmWeights> {
    let (code, group) = packed_code(scheme, cols).expect("a packed scheme");
    let fp8_act = fp8_activations(scheme);
    let mut packing = Packing::geometry(code, fp8_act, group, cols).map_err(|why| {
        crate::Error::BackendUnavailable {
            backend: "cuda".into(),
            reasons: format!("{scheme}: {why}"),
        }
    })?;
    let (data_len, chunks_len) = packing.sizes(experts, rows, cols);
    let mut data = vec![0u8; data_len];
    data.par_chunks_mut(1 << 20)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            rng.fill(chunk);
            if code == Code::MxE4m3 {
                // e4m3 values of magnitude below 2 (no NaN codes), as MXFP6 values are.
                chunk.iter_mut().for_each(|b| *b &= 0xbf);
            }
        });
    let entry: Vec<u8> = match (code, fp8_act) {
        (Code::Mxfp4 | Code::MxE4m3, _) => vec![120],
        (Code::Nvfp4, _) => vec![0x30],
        (Code::Uint4 | Code::Uint8, true) => (1.0f32 / 128.0).to_le_bytes().to_vec(),
        (Code::Uint4 | Code::Uint8, false) => {
            let zero = if code == Code::Uint4 { 136.0 } else { 128.0 };
            [1.0f32 / 128.0, zero]
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
                .collect()
        }
    };
    packing.chunks = entry.iter().copied().cycle().take(chunks_len).collect();
    let row_scales = match code {
        Code::Nvfp4 => Some(vec![
            1.0 / 4096.0 * super::packed::NVFP4_ROW_FACTOR;
            experts * rows
        ]),
        Code::Uint4 if fp8_act => Some(vec![1.0 / 64.0; experts * rows]),
        _ => None,
    };
    Ok(GemmWeights {
        elem: if fp8_act { Elem::Fp8 } else { Elem::Bf16 },
        experts,
        rows,
        cols,
        data,
        row_scales,
        block_scales: None,
        bias: None,
        packing: Some(packing),
    })
}

/// Distinct experts for each token, uniformly at random, and softmax-like weights.
fn random_topk(tokens: usize, k: usize, experts: usize, seed: u64) -> (Vec<i32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids = Vec::with_capacity(tokens * k);
    for _ in 0..tokens {
        let mut chosen: Vec<i32> = Vec::with_capacity(k);
        while chosen.len() < k {
            let e = rng.random_range(0..experts) as i32;
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        ids.extend(chosen);
    }
    (ids, vec![1.0 / k as f32; tokens * k])
}

/// `count` adapters of `rank` touching gate, up and down of every expert.
fn random_lora(config: &LayerConfig, rank: usize, count: usize) -> Lora {
    let (e, h, i) = (config.num_experts, config.hidden, config.intermediate);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut proj = |fan_in: usize, fan_out: usize| LoraProj {
        a: (0..rank * fan_in)
            .map(|_| rng.random_range(-0.02..0.02))
            .collect(),
        b: (0..fan_out * rank)
            .map(|_| rng.random_range(-0.02..0.02))
            .collect(),
    };
    let mut adapter = || LoraAdapter {
        rank,
        scaling: 2.0,
        experts: (0..e)
            .map(|_| LoraExpert {
                gate: Some(proj(h, i)),
                up: Some(proj(h, i)),
                down: Some(proj(i, h)),
            })
            .collect(),
        shared: None,
    };
    Lora {
        adapters: (0..count).map(|_| adapter()).collect(),
    }
}

/// Times the layer of `shape` under `scheme` for each token count; `reps` timed runs per
/// cell after warm-up, median reported. With `lora` = (rank, count), that many random
/// adapters of that rank are resident and each cell is also timed with LoRA on (the tokens
/// taking the adapters in turn). With
/// `api_path`, each cell is also timed the way an engine embeds the layer (bf16 hidden
/// states in, bf16 out, `forward_device` captured in a graph on the caller's stream; top-k
/// given, and routed on the GPU from logits that pick the same experts) and through the
/// host `forward` (f32 in and out, wall clock). With `per_expert_scales`, a static fp8
/// scheme's experts each get their own input scales (0.05 · 1..2).
#[allow(clippy::too_many_arguments)]
pub fn bench_shape(
    dev: &Arc<CudaDevice>,
    ceilings: &Ceilings,
    shape: ModelShape,
    scheme: QuantScheme,
    tokens: &[usize],
    reps: usize,
    lora: Option<(usize, usize)>,
    api_path: bool,
    per_expert_scales: bool,
) -> Result<Vec<BenchRow>> {
    let config = LayerConfig {
        shared_intermediate: None,
        has_bias: false,
        ..shape.config()
    };
    let selection = oracle::select(&scheme, dev.capabilities(), &config, None)?;
    let backend = selection.chosen;
    if backend == BackendId::Emulation {
        return Err(crate::Error::BackendUnavailable {
            backend: "cuda".into(),
            reasons: format!("no CUDA backend for {scheme}:\n{selection}"),
        });
    }
    let (e, h, i) = (config.num_experts, config.hidden, config.intermediate);
    let rows13 = config.activation.w13_rows(i);
    let fp8 = fp8_activations(&scheme);
    // The floor counts the checkpoint's bytes per weight, scales included.
    let bytes = stored_bytes_per_expert(&scheme, rows13, h, i) as f64 / (3 * h * i) as f64;
    let prepared = if packed_code(&scheme, h).is_some() {
        PreparedLayer {
            w13: random_packed(&scheme, e, rows13, h, 1)?,
            w2: random_packed(&scheme, e, h, i, 2)?,
        }
    } else {
        let elem = match scheme {
            QuantScheme::Fp8 { .. } => Elem::Fp8,
            QuantScheme::Int8W8A8 => Elem::Int8,
            QuantScheme::Unquantized(crate::quant::FloatDtype::F16) => Elem::F16,
            _ => Elem::Bf16,
        };
        let blocked = backend == BackendId::CudaFp8Block128;
        PreparedLayer {
            w13: random_projection(elem, e, rows13, h, 1, blocked),
            w2: random_projection(elem, e, h, i, 2, blocked),
        }
    };
    let scales = if per_expert_scales && scheme.per_expert_input_scales() {
        let spread: Vec<f32> = (0..e).map(|x| 0.05 * (1.0 + x as f32 / e as f32)).collect();
        InputScales {
            w13: spread.clone(),
            w2: spread,
        }
    } else {
        InputScales::uniform(0.05, 0.05)
    };
    let mut experts =
        CudaExperts::from_prepared(dev, &prepared, &scheme, Some(&scales), &config, backend)?;
    drop(prepared);
    if let Some((rank, count)) = lora {
        experts.attach_lora(&random_lora(&config, rank, count))?;
    }
    let layer = GpuLayer::<Cuda>::from_experts(dev, &config, experts, None)?;
    layer.reserve(tokens.iter().copied().max().unwrap_or(1))?;
    // The caller's stream, as an engine has its own.
    let stream = dev.new_stream()?;
    let mut rows = Vec::new();
    for &m in tokens {
        let (k, e) = (config.top_k, config.num_experts);
        let (ids, weights) = random_topk(m, k, e, 7 + m as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let xf: Vec<f32> = (0..m * h).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x: Vec<u16> = xf
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        // Logits whose top-k are the given ids, so both paths run the same experts.
        let mut logits: Vec<f32> = (0..m * e).map(|_| rng.random_range(-1.0..0.0)).collect();
        for (p, &id) in ids.iter().enumerate() {
            logits[(p / k) * e + id as usize] = 4.0 - (p % k) as f32 * 0.1;
        }
        let count = lora.map_or(1, |(_, n)| n) as i32;
        let adapters: Vec<i32> = (0..m as i32).map(|t| t % count).collect();
        let upload = |data: &[u8]| -> Result<Buffer<CudaDevice>> {
            let b = Buffer::alloc(&**dev, data.len().max(16))?;
            dev.upload(b.addr(), data, dev.stream())?;
            Ok(b)
        };
        let (xb, idsb, wb) = (
            upload(bytemuck::cast_slice(&x))?,
            upload(bytemuck::cast_slice(&ids))?,
            upload(bytemuck::cast_slice(&weights))?,
        );
        let (lb, ab) = (
            upload(bytemuck::cast_slice(&logits))?,
            upload(bytemuck::cast_slice(&adapters))?,
        );
        let out_f32 = Buffer::<CudaDevice>::alloc(dev, m * h * 4)?;
        let out_bf16 = Buffer::<CudaDevice>::alloc(dev, m * h * 2)?;
        dev.synchronize(dev.stream())?;
        let mut hit = vec![false; e];
        ids.iter().for_each(|&id| hit[id as usize] = true);
        let experts_hit = hit.iter().filter(|&&b| b).count();
        let slice = |b: &Buffer<CudaDevice>, n: usize, t: DType| DeviceSlice::new(b.addr(), n, t);
        let topk = DeviceRouting::TopK {
            ids: slice(&idsb, m * k, DType::I32),
            weights: slice(&wb, m * k, DType::F32),
        };
        // What the kernels alone do: top-k given, the f32 sum (no routing, no cast).
        let kernels = |lora_on: bool| DeviceBatch {
            tokens: m,
            hidden: slice(&xb, m * h, DType::Bf16),
            routing: topk,
            adapters: lora_on.then(|| slice(&ab, m, DType::I32)),
            out: slice(&out_f32, m * h, DType::F32),
        };
        // What an engine runs: bf16 in and out, top-k given or routed here from logits.
        let api = DeviceBatch {
            out: slice(&out_bf16, m * h, DType::Bf16),
            ..kernels(false)
        };
        let routed = DeviceBatch {
            routing: DeviceRouting::Logits(slice(&lb, m * e, DType::F32)),
            ..api
        };
        let time = |batch: DeviceBatch| -> Result<f64> {
            // SAFETY: every address is a live allocation of `dev` sized for `m` tokens.
            let run_once = || unsafe { layer.forward_device(&batch, &stream) };
            // One plain run first: loads the kernels lazily and checks the launches.
            run_once()?;
            dev.synchronize(&stream)?;
            let graph = if m <= 256 {
                Some(dev.capture(&stream, run_once)?)
            } else {
                None
            };
            let run = || match &graph {
                Some(g) => g
                    .launch()
                    .map_err(crate::device::cuda::drv_err("cuGraphLaunch")),
                None => run_once(),
            };
            for _ in 0..3 {
                run()?;
            }
            dev.synchronize(&stream)?;
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps.max(1) {
                times.push(dev.time_ms(&stream, run)? as f64 * 1e3);
            }
            Ok(median(times))
        };
        let host = |reps: usize| -> Result<f64> {
            let topk = crate::moe::TopK::new(
                m,
                k,
                ids.iter().map(|&i| i as u32).collect(),
                weights.clone(),
                e,
            )?;
            layer.forward(&xf, HostRouting::TopK(&topk), None)?;
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps.max(1) {
                let t0 = std::time::Instant::now();
                layer.forward(&xf, HostRouting::TopK(&topk), None)?;
                times.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            Ok(median(times))
        };
        rows.push(BenchRow {
            shape: shape.name(),
            scheme: scheme.to_string(),
            tokens: m,
            backend: backend.name().to_string(),
            us: time(kernels(false))?,
            floor_us: floor_us(ceilings, m, k, h, i, experts_hit, bytes, fp8),
            lora_us: lora.map(|_| time(kernels(true))).transpose()?,
            api_us: api_path.then(|| time(api)).transpose()?,
            routed_us: api_path.then(|| time(routed)).transpose()?,
            host_us: api_path.then(|| host(reps.min(50))).transpose()?,
            peers: peers::peers_for(&ceilings.device, shape.name(), &scheme.to_string(), m),
        });
    }
    Ok(rows)
}

/// This GPU's device-to-device copy bandwidth, read + write counted (B/s): the median of
/// 20 timed copies of 1 GiB after a warm-up.
pub fn copy_bandwidth(dev: &Arc<CudaDevice>) -> Result<f64> {
    const BYTES: usize = 1 << 30;
    let stream = dev.stream().clone();
    let src = dev.alloc(BYTES)?;
    let mut dst = dev.alloc(BYTES)?;
    let copy = |dst: &mut cudarc::driver::CudaSlice<u8>| {
        stream
            .memcpy_dtod(&src, dst)
            .map_err(|e| crate::Error::Device {
                call: "cuMemcpyDtoDAsync".into(),
                message: e.to_string(),
            })
    };
    copy(&mut dst)?;
    let mut times = Vec::with_capacity(20);
    for _ in 0..20 {
        let ms = dev.time_ms(&stream, || copy(&mut dst))?;
        times.push(ms as f64);
    }
    Ok(2.0 * BYTES as f64 / (median(times) * 1e-3))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
