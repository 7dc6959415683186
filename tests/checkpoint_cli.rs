//! `fleetmoe inspect DIR` and `fleetmoe run --model DIR` on a small written checkpoint.

mod ckpt;

use ckpt::harness::{config, E, H, I};
use ckpt::{experts, rng, router, write_config, Lin, Writer};
use std::process::Command;

fn fleetmoe(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn inspect_and_run_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(1);
    let mut wr = Writer::default();
    let block = "model.layers.1.mlp";
    experts(
        &mut wr,
        Lin::Fp8Block {
            inv: true,
            ue8m0: false,
        },
        E,
        H,
        I,
        &|e, p| {
            format!(
                "{block}.experts.{e}.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    // A bf16 shared expert beside the fp8 routed experts, as quantizers that exclude it
    // leave it (DeepSeek-V2's default n_shared_experts 2: intermediate 2I).
    experts(
        &mut wr,
        Lin::Bf16,
        1,
        H,
        2 * I,
        &|_, p| {
            format!(
                "{block}.shared_experts.{}",
                ["gate_proj", "up_proj", "down_proj"][p]
            )
        },
        &mut r,
    );
    router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
    wr.write(dir.path(), 1);
    let mut c = config(
        "DeepseekV2ForCausalLM",
        Some(serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]})),
    );
    c["first_k_dense_replace"] = serde_json::json!(1);
    write_config(dir.path(), &c);
    let d = dir.path().to_str().unwrap();
    let (ok, out) = fleetmoe(&["inspect", d]);
    assert!(ok, "{out}");
    for want in [
        "DeepSeek-V2",
        "moe layers   1 of 2: 1",
        "scheme       fp8-block128 on layers 1\n",
        "shared       shared_experts scheme bf16 on layers 1\n",
        "dense        layers 0 (before first_k_dense_replace 1): not MoE, not read\n",
        "grouped-topk",
        "mi300x",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
    let (ok, out) = fleetmoe(&[
        "run", "--model", d, "--layer", "1", "--tokens", "3", "--reps", "2",
    ]);
    assert!(
        ok && out.contains("error ")
            && out.contains("backend ")
            && out.contains("ms for 3 tokens (median of 2, after one warm-up)"),
        "{out}"
    );
    let (ok, out) = fleetmoe(&["run", "--model", d, "--layer", "0"]);
    assert!(!ok && out.contains("not a MoE layer"), "{out}");
    let (ok, out) = fleetmoe(&["inspect", "/nonexistent-fleetmoe-dir"]);
    assert!(!ok && out.contains("config.json"), "{out}");
}

/// A checkpoint `inspect` cannot fully read (a shard the index names is missing, a
/// `hidden_size` the tensors contradict) is reported and exits non-zero, so a script that
/// checks a download before serving it sees the failure.
#[test]
fn inspect_fails_on_a_broken_checkpoint() {
    let write = |shards: usize, hidden: usize| {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rng(2);
        let mut wr = Writer::default();
        let block = "model.layers.1.block_sparse_moe";
        experts(
            &mut wr,
            Lin::Bf16,
            E,
            H,
            I,
            &|e, p| format!("{block}.experts.{e}.w{}", [1, 3, 2][p]),
            &mut r,
        );
        router(&mut wr, &format!("{block}.gate.weight"), E, H, &mut r);
        wr.write(dir.path(), shards);
        let mut c = config("MixtralForCausalLM", None);
        c["hidden_size"] = serde_json::json!(hidden);
        write_config(dir.path(), &c);
        dir
    };
    let good = write(2, H);
    let (ok, out) = fleetmoe(&["inspect", good.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    std::fs::remove_file(good.path().join("model-00002-of-00002.safetensors")).unwrap();
    let (ok, out) = fleetmoe(&["inspect", good.path().to_str().unwrap()]);
    assert!(
        !ok && out.contains("model-00002-of-00002.safetensors"),
        "{out}"
    );
    let wrong = write(1, 2 * H);
    let (ok, out) = fleetmoe(&["inspect", wrong.path().to_str().unwrap()]);
    assert!(!ok && out.contains("hidden_size"), "{out}");
}
