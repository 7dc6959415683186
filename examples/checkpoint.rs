//! Loading one MoE layer out of a Hugging Face model directory and running it, as the
//! README's "Checkpoints" section describes: `Checkpoint::open` reads `config.json`, the
//! quantization config and the safetensors headers; `load_layer` reads one layer's experts
//! (in the checkpoint's own quantization), shared expert and router.
//!
//! ```sh
//! cargo run --example checkpoint -- path/to/model [LAYER]
//! ```
//!
//! `LAYER` defaults to the first MoE layer. Eight tokens of seeded hidden states are routed
//! by the checkpoint's own router and run through the layer on the best device found (a
//! GPU with `--features cuda` or `rocm`, else the CPU emulation, which holds the experts
//! in f32: a large model's layer needs that much memory; `fleetmoe run --model DIR` checks
//! first and refuses what does not fit).

use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::moe::{LayerExtras, MoeLayer, RoutingInput, Target};
use fleetmoe::Error;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

/// A `fleetmoe::Error` that `main` reports with its message (`Display`) rather than its
/// `Debug` form; `?` converts into it.
struct Report(Error);

impl From<Error> for Report {
    fn from(e: Error) -> Self {
        Report(e)
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

const TOKENS: usize = 8;

fn main() -> Result<ExitCode, Report> {
    env_logger::init();
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: cargo run --example checkpoint -- MODEL_DIR [LAYER]");
        eprintln!("  MODEL_DIR  a Hugging Face model directory (config.json + safetensors)");
        eprintln!("  LAYER      the MoE layer to run (default: the first one)");
        return Ok(ExitCode::from(2));
    };
    let layer_arg = match args.next() {
        Some(s) => {
            let s = s.to_string_lossy().into_owned();
            let n = s.parse::<usize>().map_err(|e| {
                Error::Config(format!("LAYER must be a layer number, got '{s}': {e}"))
            })?;
            Some(n)
        }
        None => None,
    };

    let ckpt = Checkpoint::open(&dir)?;
    let moe_layers = ckpt.moe_layers();
    println!(
        "model     {} in {}: {} layers, MoE layers {:?}",
        ckpt.config.arch.name(),
        dir.display(),
        ckpt.config.num_layers,
        moe_layers
    );
    let n = match layer_arg {
        Some(n) if moe_layers.contains(&n) => n,
        Some(n) => {
            return Err(Error::Config(format!(
                "layer {n} is not a MoE layer (MoE layers: {moe_layers:?})"
            ))
            .into())
        }
        None => *moe_layers
            .first()
            .ok_or_else(|| Error::Config("the checkpoint has no MoE layer".into()))?,
    };

    let loaded = ckpt.load_layer(n)?;
    let c = &loaded.config;
    println!(
        "layer     {n}: {} experts, top-{}, H {}, I {}, {}, {}{}",
        c.num_experts,
        c.top_k,
        c.hidden,
        c.intermediate,
        c.activation.name(),
        c.routing.name(),
        if loaded.shared.is_some() {
            ", shared expert"
        } else {
            ""
        }
    );

    let target = Target::detect();
    let extras = LayerExtras {
        shared: loaded.shared.clone(),
        ..LayerExtras::default()
    };
    let layer = MoeLayer::new(loaded.config.clone(), &loaded.weights, &target, extras)?;
    println!("{}", layer.selection());

    // Seeded hidden states in [-1, 1); the router logits come from the checkpoint's router.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let x: Vec<f32> = (0..TOKENS * c.hidden)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let logits = loaded.router_logits(&x)?;
    let y = layer.forward(&x, RoutingInput::Logits(&logits), None)?;

    let topk = layer.route(&logits, TOKENS)?;
    let k = topk.k();
    for t in 0..TOKENS {
        let row = &y[t * c.hidden..(t + 1) * c.hidden];
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        println!(
            "token {t}: experts {:?}, output L2 norm {norm:.4}",
            &topk.ids()[t * k..(t + 1) * k]
        );
    }
    Ok(ExitCode::SUCCESS)
}
