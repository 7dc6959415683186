//! The layer `run` and `parity` build: seeded weights of a model's shape in a scheme, the
//! input and router logits, and the f64 references it is checked against.

use fleetmoe::moe::reference::forward_f64;
use fleetmoe::moe::shapes::ModelShape;
use fleetmoe::moe::{calibrate, LayerConfig, Router, Routing, TopK};
use fleetmoe::quant::dense::gaussian;
use fleetmoe::quant::{DenseExperts, ExpertWeights, FloatDtype, QuantScheme};
use fleetmoe::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeded weights, input, router logits (and bias, shared expert) for a layer.
pub struct Problem {
    pub config: LayerConfig,
    pub weights: ExpertWeights,
    pub shared: Option<ExpertWeights>,
    pub x: Vec<f32>,
    pub logits: Vec<f32>,
    /// The seed the weights were drawn from: the reference draws them again, unquantized.
    pub seed: u64,
}

/// Host bytes a `run` holds per routed-expert weight: the f32 dense draw, the quantized
/// copy, the emulation's f32 experts and the f64 reference's bf16 copy and f32 dequant.
const RUN_BYTES_PER_WEIGHT: u64 = 16;

/// Refuses a `run` that cannot fit in this machine's available memory (Linux
/// `MemAvailable`), naming the figure and the `--experts` that would fit, before anything
/// is allocated.
pub fn check_memory(shape: ModelShape, tokens: usize, experts: Option<usize>) -> Result<()> {
    let config = match experts {
        Some(n) => shape.with_experts(n)?,
        None => shape.config(),
    };
    let per_expert = 3 * config.hidden as u64 * config.intermediate as u64 * RUN_BYTES_PER_WEIGHT;
    let per_token = (config.hidden as u64 * 32).saturating_add(config.num_experts as u64 * 8);
    let need = per_expert
        .saturating_mul(config.num_experts as u64)
        .saturating_add(per_token.saturating_mul(tokens as u64));
    let Some(avail) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }) else {
        return Ok(());
    };
    if need <= avail {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let fits = avail.saturating_sub(per_token.saturating_mul(tokens as u64)) / per_expert;
    Err(fleetmoe::Error::Config(format!(
        "this run needs about {:.1} GiB ({} experts × {:.2} GiB, {tokens} tokens × {:.1} KiB) and {:.1} GiB is available: {}",
        gib(need),
        config.num_experts,
        gib(per_expert),
        per_token as f64 / 1024.0,
        gib(avail),
        if fits == 0 {
            "fewer --tokens".to_string()
        } else {
            format!("pass --experts N with N ≤ {fits} (or fewer --tokens)")
        }
    )))
}

pub fn problem(
    shape: ModelShape,
    scheme: QuantScheme,
    tokens: usize,
    seed: u64,
    experts: Option<usize>,
) -> Result<Problem> {
    let mut config = match experts {
        Some(n) => shape.with_experts(n)?,
        None => shape.config(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if let Routing::Grouped {
        correction_bias: Some(b),
        ..
    } = &mut config.routing
    {
        *b = gaussian(&mut rng, b.len(), 0.1);
    }
    let x = gaussian(&mut rng, tokens * config.hidden, 1.0);
    let logits = gaussian(&mut rng, tokens * config.num_experts, 1.0);
    let mut weights = ExpertWeights::quantize(&DenseExperts::random(&config, seed + 1), scheme)?;
    let topk = Router::new(&config)?.route(&logits, tokens)?;
    calibrate(&mut weights, &config, &x, &topk)?;
    let shared = match config.shared_intermediate {
        Some(i) => {
            let one = LayerConfig {
                num_experts: 1,
                top_k: 1,
                intermediate: i,
                routing: Routing::Given,
                shared_intermediate: None,
                ..config.clone()
            };
            let mut w = ExpertWeights::quantize(&DenseExperts::random(&one, seed + 2), scheme)?;
            calibrate(&mut w, &one, &x, &everyone_to_expert_0(tokens)?)?;
            Some(w)
        }
        None => None,
    };
    Ok(Problem {
        config,
        weights,
        shared,
        x,
        logits,
        seed,
    })
}

/// Every token to expert 0 with weight 1: the shared expert as a one-expert layer.
pub fn everyone_to_expert_0(tokens: usize) -> Result<TopK> {
    TopK::new(tokens, 1, vec![0; tokens], vec![1.0; tokens], 1)
}

/// The f64 output of the routed (and shared) experts; `truth` uses the weights as drawn,
/// before quantization (rounded to bf16, as a bf16 checkpoint holds them), and exact
/// activations: what the scheme costs, its weight error included.
///
/// It covers the first `topk.tokens()` tokens of the problem (a check at several M slices
/// one problem drawn at the largest).
pub fn reference(p: &Problem, topk: &TopK, truth: bool) -> Result<Vec<f64>> {
    let x = &p.x[..topk.tokens() * p.config.hidden];
    let f64_of =
        |w: &ExpertWeights, config: &LayerConfig, topk: &TopK, seed: u64| -> Result<Vec<f64>> {
            if truth {
                let bf16 = ExpertWeights::quantize(
                    &DenseExperts::random(config, seed),
                    QuantScheme::Unquantized(FloatDtype::Bf16),
                )?;
                forward_f64(&bf16, config, x, topk, false)
            } else {
                forward_f64(w, config, x, topk, true)
            }
        };
    let mut out = f64_of(&p.weights, &p.config, topk, p.seed + 1)?;
    if let (Some(w), Some(i)) = (&p.shared, p.config.shared_intermediate) {
        let one = LayerConfig {
            num_experts: 1,
            top_k: 1,
            intermediate: i,
            routing: Routing::Given,
            shared_intermediate: None,
            ..p.config.clone()
        };
        let s = f64_of(w, &one, &everyone_to_expert_0(topk.tokens())?, p.seed + 2)?;
        out.iter_mut().zip(s).for_each(|(o, v)| *o += v);
    }
    Ok(out)
}

/// The fewest routed experts (at least 4) `shape`'s routing takes.
pub fn fewest_experts(shape: ModelShape) -> Result<usize> {
    let full = shape.config().num_experts;
    (full.min(4)..=full)
        .find(|&n| shape.with_experts(n).is_ok())
        .ok_or_else(|| fleetmoe::Error::Config(format!("{} takes no expert count", shape.name())))
}
