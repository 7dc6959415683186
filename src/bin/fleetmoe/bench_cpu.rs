//! `fleetmoe bench --cpu`: the emulation timed on this host, the definition of the right
//! answer and the fallback every platform has, against a floor of its own: the f32 bytes
//! of the experts hit (the emulation holds its experts dequantized) over this host's
//! measured memory copy rate. No matrix-rate term: a CPU's is not measured here.

use crate::bench::{report, Cells};
use crate::problem::{check_memory, fewest_experts, problem};
use crate::progress;
use crate::BenchArgs;
use fleetmoe::bench::roofline::{floor_us, Ceilings};
use fleetmoe::bench::BenchRow;
use fleetmoe::moe::{LayerExtras, MoeLayer, Router, RoutingInput, SharedExpertWeights, Target};
use fleetmoe::Result;
use std::time::Instant;

/// Host memory copy rate, read + write counted (as the GPU's is), bytes per second: the
/// best of a few 256 MiB copies.
fn host_copy_bandwidth() -> f64 {
    let n = 32 << 20; // u64s: 256 MiB
    let src: Vec<u64> = (0..n as u64).collect();
    let mut dst = vec![0u64; n];
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    2.0 * (n * 8) as f64 / best
}

pub fn bench(args: &BenchArgs) -> Result<(Vec<BenchRow>, String)> {
    let cells = Cells::of(args)?;
    let target = Target::cpu();
    let name = target.capabilities().name.clone();
    let copy = {
        let _step = progress::step("measuring this host's memory copy rate");
        host_copy_bandwidth()
    };
    let ceilings = Ceilings {
        device: name.clone(),
        copy_bytes_per_s: copy,
        bf16_flops: f64::INFINITY,
        fp8_flops: f64::INFINITY,
        source: "copy measured now".into(),
    };
    if !args.json {
        outln!("{}", target.capabilities());
        outln!("copy measured now: {:.1} GB/s", copy / 1e9);
        outln!("floor = f32 weight bytes of the experts hit / copy (the emulation's own; no matrix-rate term)");
        outln!("{}", BenchRow::header());
    }
    let m_max = cells.tokens.iter().copied().max().unwrap_or(1);
    let mut all = Vec::new();
    let mut bar = progress::bar("bench", cells.pairs.len() * cells.tokens.len());
    for (done, &(shape, scheme)) in cells.pairs.iter().enumerate() {
        let timed = (|| -> Result<Vec<BenchRow>> {
            let experts = match args.experts {
                Some(n) => n,
                None => fewest_experts(shape)?,
            };
            check_memory(shape, m_max, Some(experts))?;
            bar.working_on(format!(
                "{} {scheme}: random weights ({experts} experts), quantization",
                shape.name()
            ));
            let p = problem(shape, scheme, m_max, 0, Some(experts), false)?;
            let c = &p.config;
            let extras = LayerExtras {
                shared: p.shared.clone().map(|weights| SharedExpertWeights {
                    weights,
                    gate: None,
                }),
                ..LayerExtras::default()
            };
            let layer = MoeLayer::new(c.clone(), &p.weights, &target, extras)?;
            let mut rows = Vec::new();
            for &m in &cells.tokens {
                bar.working_on(format!("{} {scheme}: timing M = {m}", shape.name()));
                let x = &p.x[..m * c.hidden];
                let logits = &p.logits[..m * c.num_experts];
                let routing = RoutingInput::Logits(logits);
                layer.forward(x, routing, None)?;
                let mut times = Vec::with_capacity(args.reps);
                for _ in 0..args.reps.max(1) {
                    let t = Instant::now();
                    layer.forward(x, routing, None)?;
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                }
                times.sort_by(f64::total_cmp);
                let topk = Router::new(c)?.route(logits, m)?;
                let mut hit = topk.ids().to_vec();
                hit.sort_unstable();
                hit.dedup();
                rows.push(BenchRow {
                    shape: shape.name(),
                    scheme: scheme.to_string(),
                    tokens: m,
                    backend: layer.selection().chosen.name().to_string(),
                    us: times[times.len() / 2],
                    floor_us: floor_us(
                        &ceilings,
                        m,
                        c.top_k,
                        c.hidden,
                        c.intermediate,
                        hit.len(),
                        4.0,
                        false,
                    ),
                    lora_us: None,
                    api_us: None,
                    routed_us: None,
                    host_us: None,
                    peers: Vec::new(),
                });
                bar.inc();
            }
            Ok(rows)
        })();
        // A pair that did not run still counts its cells as done.
        bar.advance_to((done + 1) * cells.tokens.len());
        report(args, shape, scheme, timed, &mut all)?;
    }
    Ok((all, name))
}
