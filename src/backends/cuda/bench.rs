//! The CUDA side of `fleetmoe bench`: a model-sized layer with random weights made
//! directly in the kernels' layout (values do not change the speed, and quantizing
//! billions of f32 weights on the host would dominate the run), random distinct top-k
//! choices per token, then the experts' forward timed with CUDA events: replays of a
//! captured CUDA graph for M ≤ 256 (so launch gaps do not hide kernel time), plain
//! launches above.

use super::experts::{act_modes, CudaExperts};
use super::layout::{fp8_activations, Elem, GemmWeights, PreparedLayer};
use super::packed::{Code, Packing};
use crate::bench::roofline::{floor_us, H100_BF16_FLOPS, H100_FP8_FLOPS};
use crate::bench::BenchRow;
use crate::device::cuda::{CudaDevice, CudaGraph, CudaTimer};
use crate::device::{Device, Stream};
use crate::error::Result;
use crate::moe::{LayerConfig, Lora, LoraAdapter, LoraExpert, LoraProj, ModelShape};
use crate::oracle::{self, BackendId};
use crate::quant::{group_size, stored_bytes_per_expert, InputScales, IntBits, QuantScheme};
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
                Elem::Fp8 => {
                    for b in chunk.iter_mut() {
                        // Exponent field ≤ 0b0111: every code finite and ≤ 1.875 in magnitude.
                        *b = rng.random::<u8>() & 0xbf;
                    }
                }
            }
        });
    let (row_scales, block_scales) = match (elem, blocked) {
        (Elem::Fp8, false) => (Some(vec![1.0 / 64.0; experts * rows]), None),
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
        });
    let entry: Vec<u8> = match (code, fp8_act) {
        (Code::Mxfp4, _) => vec![120],
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

fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only i32, f32 and u16, which have no padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Two adapters of `rank` touching gate, up and down of every expert.
fn random_lora(config: &LayerConfig, rank: usize) -> Lora {
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
        adapters: vec![adapter(), adapter()],
    }
}

/// Times the layer of `shape` under `scheme` for each token count; `reps` timed runs per
/// cell after warm-up, median reported. With `lora_rank`, two random adapters of that rank
/// are resident and each cell is also timed with LoRA on (tokens alternating).
pub fn bench_shape(
    dev: &Arc<CudaDevice>,
    shape: ModelShape,
    scheme: QuantScheme,
    tokens: &[usize],
    reps: usize,
    lora_rank: Option<usize>,
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
    let flops = if fp8_activations(&scheme) {
        H100_FP8_FLOPS
    } else {
        H100_BF16_FLOPS
    };
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
            QuantScheme::Unquantized(crate::quant::FloatDtype::F16) => Elem::F16,
            _ => Elem::Bf16,
        };
        let blocked = backend == BackendId::CudaFp8Block128;
        PreparedLayer {
            w13: random_projection(elem, e, rows13, h, 1, blocked),
            w2: random_projection(elem, e, h, i, 2, blocked),
        }
    };
    let acts = act_modes(
        &scheme,
        Some(InputScales {
            w13: 0.05,
            w2: 0.05,
        }),
    )?;
    let mut experts = CudaExperts::from_prepared(dev, &prepared, &scheme, acts, &config, backend)?;
    drop(prepared);
    if let Some(rank) = lora_rank {
        experts.attach_lora(&random_lora(&config, rank))?;
    }
    let stream = Stream::DEFAULT;
    let timer = CudaTimer::new(dev)?;
    let mut rows = Vec::new();
    for &m in tokens {
        let k = config.top_k;
        let ws = experts.workspace(m, k)?;
        let (ids, weights) = random_topk(m, k, e, 7 + m as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x: Vec<u16> = (0..m * h)
            .map(|_| half::bf16::from_f32(rng.random_range(-1.0..1.0)).to_bits())
            .collect();
        let adapters: Vec<i32> = (0..m as i32).map(|t| t % 2).collect();
        dev.write(ws.x.handle(), 0, bytes_of(&x), stream)?;
        dev.write(ws.ids.handle(), 0, bytes_of(&ids), stream)?;
        dev.write(ws.weights.handle(), 0, bytes_of(&weights), stream)?;
        dev.write(ws.token_adapter.handle(), 0, bytes_of(&adapters), stream)?;
        let mut hit = vec![false; e];
        ids.iter().for_each(|&id| hit[id as usize] = true);
        let experts_hit = hit.iter().filter(|&&b| b).count();

        let time = |lora_on: bool| -> Result<f64> {
            // One plain run first: loads the kernels lazily and checks the launches.
            experts.enqueue(&ws, k, lora_on)?;
            dev.synchronize(stream)?;
            let graph = if m <= 256 {
                Some(CudaGraph::capture(dev, stream, || {
                    experts.enqueue(&ws, k, lora_on)
                })?)
            } else {
                None
            };
            let run = || match &graph {
                Some(g) => g.launch(stream),
                None => experts.enqueue(&ws, k, lora_on),
            };
            for _ in 0..3 {
                run()?;
            }
            dev.synchronize(stream)?;
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps.max(1) {
                timer.start(stream)?;
                run()?;
                timer.stop(stream)?;
                times.push(timer.elapsed_ms()? as f64 * 1e3);
            }
            times.sort_by(f64::total_cmp);
            Ok(times[times.len() / 2])
        };
        rows.push(BenchRow {
            shape: shape.name(),
            scheme: scheme.to_string(),
            tokens: m,
            backend: backend.name().to_string(),
            us: time(false)?,
            floor_us: floor_us(m, k, h, i, experts_hit, bytes, flops),
            lora_us: lora_rank.map(|_| time(true)).transpose()?,
        });
    }
    Ok(rows)
}
