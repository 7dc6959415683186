//! Helpers shared by the integration tests: seeded data and an independent f64 reference
//! of the MoE layer written from the definitions (not from the crate's code paths).
#![allow(dead_code)]

use fleetmoe::moe::{Activation, LoraAdapter, LoraExpert, LoraProj, TopK};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale), never all zero.
pub fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Relative L2 error of `got` against `want`.
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Random top-k: distinct experts per token, weights that are positive and sum to 1.
pub fn random_topk(rng: &mut ChaCha8Rng, tokens: usize, k: usize, experts: usize) -> TopK {
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    for _ in 0..tokens {
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < k {
            let e = rng.random_range(0..experts as u32);
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        let w: Vec<f32> = (0..k).map(|_| rng.random_range(0.1f32..1.0)).collect();
        let s: f32 = w.iter().sum();
        ids.extend(chosen);
        weights.extend(w.iter().map(|v| v / s));
    }
    TopK::new(tokens, k, ids, weights, experts).unwrap()
}

fn rand_proj(rng: &mut ChaCha8Rng, rank: usize, fan_in: usize, fan_out: usize) -> LoraProj {
    LoraProj {
        a: uniform(rng, rank * fan_in, 1.0 / (fan_in as f32).sqrt()),
        b: uniform(rng, fan_out * rank, 0.5),
    }
}

/// A random adapter touching every projection of every expert (and the shared expert).
pub fn random_adapter(
    rng: &mut ChaCha8Rng,
    rank: usize,
    experts: usize,
    h: usize,
    i: usize,
    gated: bool,
    shared_i: Option<usize>,
) -> LoraAdapter {
    let expert = |i: usize, rng: &mut ChaCha8Rng| LoraExpert {
        gate: gated.then(|| rand_proj(rng, rank, h, i)),
        up: Some(rand_proj(rng, rank, h, i)),
        down: Some(rand_proj(rng, rank, i, h)),
    };
    LoraAdapter {
        rank,
        scaling: 2.0 / rank as f32,
        experts: (0..experts).map(|_| expert(i, rng)).collect(),
        shared: shared_i.map(|si| expert(si, rng)),
    }
}

/// The activation, from its definition, in f64.
pub fn act_ref(act: Activation, h: &[f64], i: usize) -> Vec<f64> {
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()));
    let gelu_tanh = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
    };
    (0..i)
        .map(|j| match act {
            Activation::SiluAndMul => silu(h[j]) * h[i + j],
            Activation::GeluAndMul => gelu(h[j]) * h[i + j],
            Activation::GeluTanhAndMul => gelu_tanh(h[j]) * h[i + j],
            Activation::SwigluOai { alpha, limit } => {
                let (g, u) = (
                    h[2 * j].min(limit as f64),
                    h[2 * j + 1].clamp(-(limit as f64), limit as f64),
                );
                (u + 1.0) * g / (1.0 + (-(alpha as f64) * g).exp())
            }
            Activation::Relu2 => h[j].max(0.0).powi(2),
            Activation::Silu => silu(h[j]),
        })
        .collect()
}

/// `W x` for a row-major `[rows, cols]` matrix, in f64.
pub fn matvec(w: &[f32], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|r| (0..cols).map(|c| w[r * cols + c] as f64 * x[c]).sum())
        .collect()
}

/// `scaling · B (A x)` in f64.
pub fn lora_ref(p: &LoraProj, rank: usize, scaling: f32, x: &[f64], fan_out: usize) -> Vec<f64> {
    let inner = matvec(&p.a, rank, x.len(), x);
    matvec(&p.b, fan_out, rank, &inner)
        .iter()
        .map(|v| v * scaling as f64)
        .collect()
}

/// The layer through `forward_cuda` with the output in the model dtype (bf16 or f16),
/// inputs and logits uploaded with cudarc on a stream of the layer's device: the
/// device-resident path every parity case also takes. Returns the output as f32.
#[cfg(feature = "cuda")]
#[allow(dead_code)]
pub fn device_forward_cuda(
    layer: &fleetmoe::moe::MoeLayer,
    x: &[f32],
    logits: &[f32],
    slots: Option<&[Option<usize>]>,
) -> Vec<f32> {
    use fleetmoe::gpu::DType;
    use fleetmoe::moe::CudaRouting;
    let g = layer.cuda_layer().expect("a CUDA layer");
    let dev = g.runtime();
    let stream = dev.new_stream().unwrap();
    let tokens = x.len() / layer.config().hidden;
    layer.reserve(tokens).unwrap();
    let dl = stream.clone_htod(logits).unwrap();
    let slots: Option<Vec<i32>> =
        slots.map(|s| s.iter().map(|a| a.map_or(-1, |v| v as i32)).collect());
    let ds = slots.map(|s| stream.clone_htod(&s).unwrap());
    // One round trip in the model dtype `T`, converted from and to f32 on the host.
    fn through<T>(
        layer: &fleetmoe::moe::MoeLayer,
        stream: &std::sync::Arc<cudarc::driver::CudaStream>,
        x: &[f32],
        logits: &cudarc::driver::CudaSlice<f32>,
        slots: Option<&cudarc::driver::CudaSlice<i32>>,
        to: fn(f32) -> T,
        from: fn(T) -> f32,
    ) -> Vec<f32>
    where
        T: fleetmoe::moe::DeviceElem
            + cudarc::driver::DeviceRepr
            + cudarc::driver::ValidAsZeroBits
            + Copy
            + Default,
    {
        let dx = stream
            .clone_htod(&x.iter().map(|&v| to(v)).collect::<Vec<T>>())
            .unwrap();
        let mut out = stream.alloc_zeros::<T>(x.len()).unwrap();
        let routing: CudaRouting<
            '_,
            _,
            cudarc::driver::CudaSlice<i32>,
            cudarc::driver::CudaSlice<f32>,
        > = CudaRouting::Logits(logits);
        layer
            .forward_cuda(&dx, routing, slots, &mut out, stream)
            .unwrap();
        stream
            .clone_dtoh(&out)
            .unwrap()
            .into_iter()
            .map(from)
            .collect()
    }
    match g.dtype() {
        DType::F16 => through(
            layer,
            &stream,
            x,
            &dl,
            ds.as_ref(),
            half::f16::from_f32,
            half::f16::to_f32,
        ),
        _ => through(
            layer,
            &stream,
            x,
            &dl,
            ds.as_ref(),
            half::bf16::from_f32,
            half::bf16::to_f32,
        ),
    }
}
