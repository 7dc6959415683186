//! LoRA on an MoE layer: two adapters resident at once, each token picking one (or none).
//!
//! A layer of 4 experts (top-2, hidden 128, intermediate 128, per-channel FP8 weights,
//! per-token FP8 activations) carries two adapters, of ranks 4 and 8, on every expert's
//! gate, up and down projections (`delta(x) = scaling · B (A x)`, `A` `[rank, in]`, `B`
//! `[out, rank]`). Six tokens alternate adapter 0, adapter 1 and no adapter; the example
//! prints how far each token's output moved from the layer without LoRA. Tokens without an
//! adapter do not move (with one activation scale for the whole batch, as in scheme `fp8`,
//! they can: the adapted tokens change that scale).
//! Adapters from a PEFT directory load with `fleetmoe::checkpoint::load_adapter` instead.
//!
//! ```sh
//! cargo run --example lora
//! ```

use fleetmoe::moe::{
    LayerConfig, LayerExtras, Lora, LoraAdapter, LoraExpert, LoraProj, MoeLayer, RoutingInput,
    Target,
};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};

const EXPERTS: usize = 4;
const HIDDEN: usize = 128;
const INTERMEDIATE: usize = 128;
const TOKENS: usize = 6;

/// `n` seeded values in [-scale, scale).
fn seeded(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// One projection's low-rank pair for a `fan_in → fan_out` matrix.
fn proj(rank: usize, fan_in: usize, fan_out: usize, seed: u64) -> LoraProj {
    LoraProj {
        a: seeded(rank * fan_in, 1.0 / (fan_in as f32).sqrt(), seed),
        b: seeded(fan_out * rank, 0.5, seed + 1),
    }
}

/// An adapter of `rank` on every routed expert's gate, up and down projections.
fn adapter(rank: usize, seed: u64) -> LoraAdapter {
    LoraAdapter {
        rank,
        scaling: 2.0 / rank as f32, // alpha / rank, with alpha = 2
        experts: (0..EXPERTS as u64)
            .map(|e| {
                let s = seed * 1000 + e * 10;
                LoraExpert {
                    gate: Some(proj(rank, HIDDEN, INTERMEDIATE, s)),
                    up: Some(proj(rank, HIDDEN, INTERMEDIATE, s + 2)),
                    down: Some(proj(rank, INTERMEDIATE, HIDDEN, s + 4)),
                }
            })
            .collect(),
        shared: None,
    }
}

fn main() -> fleetmoe::Result<()> {
    env_logger::init();

    let config = LayerConfig {
        lora: true,
        ..LayerConfig::new(EXPERTS, 2, HIDDEN, INTERMEDIATE)
    };
    let weights = ExpertWeights::quantize(
        &DenseExperts::random(&config, 3),
        QuantScheme::parse("fp8-channel")?,
    )?;
    let extras = LayerExtras {
        lora: Some(Lora {
            adapters: vec![adapter(4, 1), adapter(8, 2)],
        }),
        ..LayerExtras::default()
    };
    let layer = MoeLayer::new(config, &weights, &Target::detect(), extras)?;
    println!("{}", layer.selection());

    let x = seeded(TOKENS * HIDDEN, 1.0, 7);
    let logits = seeded(TOKENS * EXPERTS, 1.0, 8);
    let routing = RoutingInput::Logits(&logits);
    // Token t uses adapter 0, adapter 1, or none, in turn.
    let slots: Vec<Option<usize>> = (0..TOKENS)
        .map(|t| [Some(0), Some(1), None][t % 3])
        .collect();

    let base = layer.forward(&x, routing, None)?;
    let tuned = layer.forward(&x, routing, Some(&slots))?;

    for (t, slot) in slots.iter().enumerate() {
        let rows = t * HIDDEN..(t + 1) * HIDDEN;
        let (b, l) = (&base[rows.clone()], &tuned[rows]);
        let diff = b.iter().zip(l).map(|(u, v)| (u - v).powi(2)).sum::<f32>();
        let norm = b.iter().map(|u| u * u).sum::<f32>();
        let adapter = match slot {
            Some(a) => format!("adapter {a}"),
            None => "no adapter".to_string(),
        };
        println!(
            "token {t} ({adapter:>10}): output moved by {:.3e} rel L2 from the layer without LoRA",
            (diff / norm.max(f32::MIN_POSITIVE)).sqrt()
        );
    }
    Ok(())
}
