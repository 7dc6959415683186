//! Embedding fleetmoe: build one MoE layer from weights and run its forward, as the
//! README's "Embedding" section shows.
//!
//! Eight experts, top-2, hidden 256, intermediate 512, weights quantized to block FP8. The
//! layer runs on the best device found: a GPU when the crate is built with `cuda` or `rocm`
//! and one answers, otherwise the CPU emulation (which this example prints as the oracle's
//! choice, with the reason every faster backend was turned down).
//!
//! ```sh
//! cargo run --example embed
//! RUST_LOG=info cargo run --example embed   # also log why no GPU was used
//! ```

use fleetmoe::moe::{LayerConfig, LayerExtras, MoeLayer, RoutingInput, Target};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};
use std::time::Instant;

fn main() -> fleetmoe::Result<()> {
    env_logger::init();

    // 8 experts, top-2, hidden 256, intermediate 512, SiLU, softmax top-k.
    let config = LayerConfig::new(8, 2, 256, 512);
    // Real code loads a checkpoint (see the `checkpoint` example); here, seeded random
    // weights quantized to FP8 with one scale per 128×128 block.
    let dense = DenseExperts::random(&config, 0);
    let weights = ExpertWeights::quantize(&dense, QuantScheme::parse("fp8-block128")?)?;

    let target = Target::detect();
    let layer = MoeLayer::new(config, &weights, &target, LayerExtras::default())?;
    // What runs, and why nothing faster does.
    println!("{}", layer.selection());

    let tokens = 4;
    let (hidden, experts) = (layer.config().hidden, layer.config().num_experts);
    let hidden_states: Vec<f32> = (0..tokens * hidden)
        .map(|i| ((i % 17) as f32 - 8.0) / 16.0)
        .collect();
    let router_logits: Vec<f32> = (0..tokens * experts).map(|i| (i % 5) as f32).collect();

    let start = Instant::now();
    let out = layer.forward(&hidden_states, RoutingInput::Logits(&router_logits), None)?;
    let elapsed = start.elapsed();
    assert_eq!(out.len(), tokens * hidden);

    let topk = layer.route(&router_logits, tokens)?;
    for t in 0..tokens {
        let row = &out[t * hidden..(t + 1) * hidden];
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        println!(
            "token {t}: experts {:?}, weights {:.3?}, output L2 norm {norm:.4}",
            &topk.ids()[t * topk.k()..(t + 1) * topk.k()],
            &topk.weights()[t * topk.k()..(t + 1) * topk.k()],
        );
    }
    println!(
        "forward   {tokens} tokens × hidden {hidden} in {:.3} ms on {}",
        elapsed.as_secs_f64() * 1e3,
        layer.selection().chosen
    );
    Ok(())
}
