//! `fleetmoe run`: one MoE layer of a model's shape from random weights, timed and checked
//! against an f64 reference.

use crate::problem::{check_memory, problem, reference};
use crate::progress;
use fleetmoe::moe::reference::rel_l2;
use fleetmoe::moe::shapes::ModelShape;
use fleetmoe::moe::{LayerExtras, MoeLayer, Router, RoutingInput, SharedExpertWeights, Target};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::QuantScheme;
use fleetmoe::Result;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
/// Returns whether the forward matched its reference within the scheme's tolerance.
pub fn run(
    shape: &str,
    scheme: &str,
    tokens: usize,
    seed: u64,
    experts: Option<usize>,
    reps: usize,
    backend: Option<String>,
) -> Result<bool> {
    let shape = ModelShape::parse(shape)?;
    let scheme = QuantScheme::parse(scheme)?;
    check_memory(shape, tokens, experts)?;
    let started = Instant::now();
    let p = problem(shape, scheme, tokens, seed, experts, true)?;
    let c = &p.config;
    outln!(
        "shape     {}: {} experts, top-{}, H {}, I {}, {}, {}{}{}",
        shape.name(),
        c.num_experts,
        c.top_k,
        c.hidden,
        c.intermediate,
        c.activation.name(),
        c.routing.name(),
        if c.has_bias { ", biases" } else { "" },
        c.shared_intermediate
            .map(|i| format!(", shared expert I {i}"))
            .unwrap_or_default(),
    );
    outln!(
        "scheme    {scheme} ({:.1} MiB of expert weights)",
        p.weights.bytes_per_expert() as f64 * c.num_experts as f64 / (1 << 20) as f64
    );

    let target = Target::detect();
    let extras = LayerExtras {
        shared: p.shared.clone().map(|weights| SharedExpertWeights {
            weights,
            gate: None,
        }),
        lora: None,
        backend: backend.as_deref().map(BackendId::parse).transpose()?,
    };
    let layer = {
        let _step = progress::step(format!(
            "layout and upload for {}",
            target.capabilities().name
        ));
        MoeLayer::new(c.clone(), &p.weights, &target, extras)?
    };
    outln!("device    {}", target.capabilities());
    outln!(
        "backend   {}{}",
        layer.selection().chosen,
        if layer.selection().is_fallback() {
            " (fallback; `fleetmoe explain` says why)"
        } else {
            ""
        }
    );
    if let Some(b) = layer.shared_backend() {
        outln!("shared    {b}");
    }
    outln!(
        "setup     {:.2} s (random weights, quantization, calibration, layout)",
        started.elapsed().as_secs_f64()
    );

    let routing = RoutingInput::Logits(&p.logits);
    let (y, mut times) = {
        let mut bar = progress::bar(format!("forward: one warm-up and {reps} timed"), reps + 1);
        let mut y = layer.forward(&p.x, routing, None)?;
        bar.inc();
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            y = layer.forward(&p.x, routing, None)?;
            times.push(t.elapsed().as_secs_f64());
            bar.inc();
        }
        (y, times)
    };
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        outln!(
            "forward   {:.3} ms for {tokens} tokens (median of {reps}, after one warm-up)",
            median * 1e3
        );
    }

    let topk = Router::new(c)?.route(&p.logits, tokens)?;
    let (same, truth) = {
        let mut bar = progress::bar("f64 reference of the quantized weights", 2);
        let same = rel_l2(&y, &reference(&p, &topk, false)?);
        bar.inc();
        bar.working_on("f64 reference of the weights before quantization");
        let truth = rel_l2(&y, &reference(&p, &topk, true)?);
        bar.inc();
        (same, truth)
    };
    outln!("error     {same:.2e} rel L2 vs an f64 forward of the same quantized weights and activation rounding (parity tolerance {:.0e})", scheme.parity_tolerance());
    outln!("          {truth:.2e} rel L2 vs an f64 forward of the weights before quantization (bf16) with exact activations (the cost of {scheme})");
    let within = same <= scheme.parity_tolerance();
    if !within {
        eprintln!("FAIL: the forward is off its own reference by more than the scheme's tolerance");
    }
    Ok(within)
}
