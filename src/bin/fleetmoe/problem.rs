//! The layer `run` and `parity` build: seeded weights of a model's shape in a scheme, the
//! input and router logits, and the f64 references it is checked against.

use crate::progress;
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
/// The same for `run --model`: the checkpoint is memory-mapped; the loaded (quantized)
/// copy, the emulation's f32 experts and the reference's dequantized expert.
const MODEL_BYTES_PER_WEIGHT: u64 = 8;

/// Refuses a `run` that cannot fit in this machine's available memory (Linux
/// `MemAvailable`), naming the figure and the `--experts` that would fit (for grouped
/// routing: the counts that also split into its groups), before anything is allocated.
pub fn check_memory(shape: ModelShape, tokens: usize, experts: Option<usize>) -> Result<()> {
    let config = match experts {
        Some(n) => shape.with_experts(n)?,
        None => shape.config(),
    };
    check_fits(&config, tokens, RUN_BYTES_PER_WEIGHT, |fits| {
        experts_that_fit(shape, fits)
    })
}

/// How to pass at most `fits` routed experts of `shape`: a range where every count in it
/// works, else the counts its routing can split (DeepSeek-V3: multiples of 8 from 16);
/// `None` if none fits.
fn experts_that_fit(shape: ModelShape, fits: u64) -> Option<String> {
    let full = shape.config().num_experts;
    let work: Vec<usize> = (1..=fits.min(full as u64) as usize)
        .filter(|&n| shape.with_experts(n).is_ok())
        .collect();
    match work.as_slice() {
        [] => None,
        [1, .., last] if work.len() == *last => Some(format!("pass --experts N with N ≤ {last}")),
        [first, .., last] if work.len() == last - first + 1 => {
            Some(format!("pass --experts N with {first} ≤ N ≤ {last}"))
        }
        _ => Some(format!(
            "pass --experts N with N one of {}",
            work.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `run --model DIR`'s check, from `config.json` alone: the checkpoint fixes the experts,
/// so only `--tokens` can shrink. A config that cannot be read is left to the loader,
/// whose error names what is wrong.
pub fn check_model_memory(dir: &std::path::Path, tokens: usize) -> Result<()> {
    match fleetmoe::checkpoint::ModelConfig::read(dir) {
        Ok(c) => check_fits(
            &LayerConfig::new(c.num_experts, c.top_k, c.hidden, c.intermediate),
            tokens,
            MODEL_BYTES_PER_WEIGHT,
            |_| None,
        ),
        Err(_) => Ok(()),
    }
}

/// The estimate and refusal behind both checks; `experts_hint(n)` says how to pass at
/// most `n` routed experts, or `None` where that cannot help.
fn check_fits(
    config: &LayerConfig,
    tokens: usize,
    bytes_per_weight: u64,
    experts_hint: impl Fn(u64) -> Option<String>,
) -> Result<()> {
    let per_expert = (3 * config.hidden as u64)
        .saturating_mul(config.intermediate as u64)
        .saturating_mul(bytes_per_weight);
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
    let fits = avail.saturating_sub(per_token.saturating_mul(tokens as u64)) / per_expert.max(1);
    let hint = match (fits, experts_hint(fits)) {
        (0, _) | (_, None) => "fewer --tokens".to_string(),
        (_, Some(h)) => format!("{h} (or fewer --tokens)"),
    };
    Err(fleetmoe::Error::Config(format!(
        "this run needs about {:.1} GiB ({} experts × {:.2} GiB, {tokens} tokens × {:.1} KiB) and {:.1} GiB is available: {hint}",
        gib(need),
        config.num_experts,
        gib(per_expert),
        per_token as f64 / 1024.0,
        gib(avail),
    )))
}

/// `DenseExperts::random(config, seed)`, value for value, with a bar (when `shown`) over
/// its 2 E matrices.
pub fn random_dense(config: &LayerConfig, seed: u64, shown: bool) -> DenseExperts {
    let e = config.num_experts;
    let mut bar =
        shown.then(|| progress::bar(format!("random weights of {e} experts, matrix"), 2 * e));
    DenseExperts::random_counted(config, seed, || {
        if let Some(b) = &mut bar {
            b.inc();
        }
    })
}

/// Seeded weights and inputs for `shape` in `scheme`; `shown`: with a bar over the random
/// experts and a spinner over quantization (`run`; `bench` and `parity` count cells).
pub fn problem(
    shape: ModelShape,
    scheme: QuantScheme,
    tokens: usize,
    seed: u64,
    experts: Option<usize>,
    shown: bool,
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
    let dense = random_dense(&config, seed + 1, shown);
    let step = |what: &str| shown.then(|| progress::step(what));
    let weights = {
        let _step = step(&format!("quantizing to {scheme}, calibrating"));
        let mut w = ExpertWeights::quantize(&dense, scheme)?;
        drop(dense);
        let topk = Router::new(&config)?.route(&logits, tokens)?;
        calibrate(&mut w, &config, &x, &topk)?;
        w
    };
    let shared = match config.shared_intermediate {
        Some(i) => {
            let _step = step("the shared expert: random weights, quantization, calibration");
            let one = config.shared_expert(i);
            let mut w = ExpertWeights::quantize(&random_dense(&one, seed + 2, false), scheme)?;
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
                    &random_dense(config, seed, false),
                    QuantScheme::Unquantized(FloatDtype::Bf16),
                )?;
                forward_f64(&bf16, config, x, topk, false)
            } else {
                forward_f64(w, config, x, topk, true)
            }
        };
    let mut out = f64_of(&p.weights, &p.config, topk, p.seed + 1)?;
    if let (Some(w), Some(i)) = (&p.shared, p.config.shared_intermediate) {
        let one = p.config.shared_expert(i);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal names only expert counts the routing takes (it once offered "N ≤ 34"
    /// for DeepSeek-V3, whose 8 groups take multiples of 8 from 16).
    #[test]
    fn the_experts_offered_are_counts_that_work() {
        assert_eq!(
            experts_that_fit(ModelShape::DeepseekV3, 34).as_deref(),
            Some("pass --experts N with N one of 16, 24, 32")
        );
        assert_eq!(experts_that_fit(ModelShape::DeepseekV3, 15), None);
        assert_eq!(
            experts_that_fit(ModelShape::Mixtral8x7b, 5).as_deref(),
            Some("pass --experts N with 2 ≤ N ≤ 5")
        );
        assert_eq!(
            experts_that_fit(ModelShape::Mixtral8x7b, 100).as_deref(),
            Some("pass --experts N with 2 ≤ N ≤ 8")
        );
    }

    /// Drawn expert by expert, the weights are the library's, value for value.
    #[test]
    fn random_dense_is_dense_experts_random() {
        for config in [
            LayerConfig::new(3, 2, 32, 48),
            LayerConfig {
                has_bias: true,
                ..ModelShape::GptOss120b.config()
            }
            .shared_expert(64),
        ] {
            assert_eq!(
                random_dense(&config, 7, false),
                DenseExperts::random(&config, 7)
            );
        }
    }
}
