//! Writing a small one-MoE-layer checkpoint and checking what the loader makes of it.

use super::{experts, max_rel, rng, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::inspect::{inspect, run_model, RunModel};
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::quant::QuantScheme;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

pub const E: usize = 4;
pub const H: usize = 128;
pub const I: usize = 128;

pub fn config(arch: &str, quant: Option<Value>) -> Value {
    let mut c = json!({
        "architectures": [arch],
        "num_hidden_layers": 2,
        "num_local_experts": E,
        "num_experts": E,
        "n_routed_experts": E,
        "num_experts_per_tok": 2,
        "hidden_size": H,
        "intermediate_size": I,
        "moe_intermediate_size": I,
    });
    if let Some(q) = quant {
        c["quantization_config"] = q;
    }
    c
}

/// Writes a Mixtral/Qwen-style checkpoint with MoE layer 1 in `lin`, checks it.
pub fn roundtrip(arch: &str, cfg: Value, lin: Lin, shards: usize, scheme: &str) -> Expected {
    roundtrip_tol(arch, cfg, lin, shards, scheme, 1e-6)
}

/// As `roundtrip`, allowing w13 to differ by `w13_tol` (for an approximation the loader
/// keeps, such as NVFP4 gate and up global scales folded into one).
pub fn roundtrip_tol(
    arch: &str,
    cfg: Value,
    lin: Lin,
    shards: usize,
    scheme: &str,
    w13_tol: f32,
) -> Expected {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(7);
    let mut wr = Writer::default();
    let (block, names): (&str, [&str; 3]) = match arch {
        "MixtralForCausalLM" => ("model.layers.1.block_sparse_moe", ["w1", "w3", "w2"]),
        _ => ("model.layers.1.mlp", ["gate_proj", "up_proj", "down_proj"]),
    };
    let want = experts(
        &mut wr,
        lin,
        E,
        H,
        I,
        &|e, p| format!("{block}.experts.{e}.{}", names[p]),
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.floats(
        "model.layers.0.mlp.down_proj.weight",
        Dtype::BF16,
        &[H, 8],
        &[0.0; H * 8],
    );
    wr.write(dir.path(), shards);
    write_config(dir.path(), &cfg);
    check_tol(dir.path(), 1, &want, scheme, w13_tol);
    want
}

pub fn check(dir: &Path, layer: usize, want: &Expected, scheme: &str) {
    check_tol(dir, layer, want, scheme, 1e-6)
}

pub fn check_tol(dir: &Path, layer: usize, want: &Expected, scheme: &str, w13_tol: f32) {
    let ck = Checkpoint::open(dir).unwrap();
    assert_eq!(ck.moe_layers(), vec![layer]);
    let l = ck.load_layer(layer).unwrap();
    assert_eq!(l.weights.scheme, QuantScheme::parse(scheme).unwrap());
    let d = l.weights.dequantize().unwrap();
    assert!(
        max_rel(&d.w13, &want.w13) < w13_tol,
        "w13 differs: {}",
        max_rel(&d.w13, &want.w13)
    );
    assert!(
        max_rel(&d.w2, &want.w2) < 1e-6,
        "w2 differs: {}",
        max_rel(&d.w2, &want.w2)
    );
    let (report, ok) = run_model(&RunModel {
        dir: dir.to_path_buf(),
        layer: Some(layer),
        loras: vec![],
        tokens: 5,
        seed: 3,
        backend: None,
        reps: 1,
    })
    .unwrap();
    assert!(ok, "forward off its reference:\n{report}");
    // `run --model` times its forward too (issue 19).
    assert!(
        report.contains("forward   ") && report.contains("ms for 5 tokens (median of 1"),
        "no forward time:\n{report}"
    );
    let text = inspect(dir).unwrap().report;
    assert!(text.contains(scheme), "{text}");
}
