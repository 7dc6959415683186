//! Bad checkpoints are errors that name the file and tensor, never panics; a fuzz-style
//! test mutates a valid shard's header and data bytes.

mod ckpt;

use ckpt::{experts, rng, router, write_config, Lin, Writer};
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::Error;
use rand::Rng;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::path::Path;

const E: usize = 2;
const H: usize = 64;
const I: usize = 64;

fn config(quant: Option<Value>) -> Value {
    let mut c = json!({"architectures": ["MixtralForCausalLM"], "num_hidden_layers": 1,
        "num_local_experts": E, "num_experts_per_tok": 2, "hidden_size": H, "intermediate_size": I});
    if let Some(q) = quant {
        c["quantization_config"] = q;
    }
    c
}

const BLOCK: &str = "model.layers.0.block_sparse_moe";

fn name(e: usize, p: usize) -> String {
    format!("{BLOCK}.experts.{e}.{}", ["w1", "w3", "w2"][p])
}

fn writer(lin: Lin) -> Writer {
    let mut r = rng(11);
    let mut wr = Writer::default();
    experts(&mut wr, lin, E, H, I, &name, &mut r);
    router(&mut wr, &format!("{BLOCK}.gate.weight"), E, H, &mut r);
    wr
}

fn load(dir: &Path) -> fleetmoe::Result<()> {
    Checkpoint::open(dir)?.load_layer(0).map(|_| ())
}

/// The error names `tensor` and, when given, a path ending in `file`.
fn expect_checkpoint_err(r: fleetmoe::Result<()>, tensor: &str, file: Option<&str>) {
    match r {
        Err(Error::Checkpoint {
            file: f,
            tensor: t,
            why,
        }) => {
            assert!(
                t.contains(tensor),
                "tensor '{t}' should name '{tensor}' ({why})"
            );
            if let Some(file) = file {
                assert!(
                    f.ends_with(file),
                    "file '{f}' should end in '{file}' ({why})"
                );
            }
        }
        other => panic!("expected a checkpoint error naming {tensor}, got {other:?}"),
    }
}

fn fp8_channel() -> Value {
    json!({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}})
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = writer(Lin::Bf16);
    wr.tensors.remove(&format!("{}.weight", name(1, 1)));
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config(None));
    expect_checkpoint_err(load(dir.path()), "experts.1.w3.weight", None);
}

#[test]
fn wrong_dtype_and_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut wr = writer(Lin::Fp8Channel);
    let w = format!("{}.weight", name(0, 2));
    wr.floats(&w, Dtype::BF16, &[H, I], &[0.0; H * I]);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config(Some(fp8_channel())));
    expect_checkpoint_err(
        load(dir.path()),
        "experts.0.w2.weight",
        Some("model.safetensors"),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut wr = writer(Lin::Fp8Channel);
    let s = format!("{}.weight_scale", name(1, 0));
    wr.floats(&s, Dtype::F32, &[I / 2, 1], &[1.0; I / 2]);
    wr.write(dir.path(), 1);
    write_config(dir.path(), &config(Some(fp8_channel())));
    expect_checkpoint_err(
        load(dir.path()),
        "experts.1.w1.weight_scale",
        Some("model.safetensors"),
    );
}

#[test]
fn truncated_and_corrupt_shards() {
    let dir = tempfile::tempdir().unwrap();
    writer(Lin::Bf16).write(dir.path(), 2);
    write_config(dir.path(), &config(None));
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { file, .. } if file.ends_with("model-00002-of-00002.safetensors")),
        "{err}"
    );

    let mut bad = bytes.clone();
    bad[10] = b'#';
    std::fs::write(&shard, &bad).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn unknown_quant_method_and_bad_group() {
    let dir = tempfile::tempdir().unwrap();
    writer(Lin::Bf16).write(dir.path(), 1);
    write_config(
        dir.path(),
        &config(Some(json!({"quant_method": "bitsandbytes-9000"}))),
    );
    let err = Checkpoint::open(dir.path())
        .err()
        .expect("unknown method refused");
    let msg = err.to_string();
    assert!(
        msg.contains("quant_method")
            && msg.contains("bitsandbytes-9000")
            && msg.contains("config.json"),
        "{msg}"
    );

    // group 48 does not divide K = 64
    let dir = tempfile::tempdir().unwrap();
    writer(Lin::CtInt4 {
        group: 32,
        zp: false,
    })
    .write(dir.path(), 1);
    let q = json!({"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {"group_0": {
        "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 48, "symmetric": true}}}});
    write_config(dir.path(), &config(Some(q)));
    match load(dir.path()) {
        Err(e @ Error::Checkpoint { .. }) => {
            assert!(e.to_string().contains("group size 48"), "{e}");
            assert!(
                matches!(&e, Error::Checkpoint { file, .. } if !file.is_empty()),
                "{e}"
            );
        }
        other => panic!("expected a group-size error, got {other:?}"),
    }
}

#[test]
fn out_of_range_layer_and_non_moe_architecture() {
    let dir = tempfile::tempdir().unwrap();
    writer(Lin::Bf16).write(dir.path(), 1);
    write_config(dir.path(), &config(None));
    assert!(Checkpoint::open(dir.path()).unwrap().load_layer(5).is_err());
    let mut c = config(None);
    c["architectures"] = json!(["LlamaForCausalLM"]);
    write_config(dir.path(), &c);
    assert!(matches!(
        Checkpoint::open(dir.path()),
        Err(Error::Checkpoint { .. })
    ));
}

/// Mutates header bytes, data bytes, the length prefix and the file length of a valid
/// shard a few hundred times; the loader must return Ok or Err, never panic.
#[test]
fn fuzzed_shards_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    writer(Lin::Fp8Channel).write(dir.path(), 1);
    write_config(dir.path(), &config(Some(fp8_channel())));
    let path = dir.path().join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize + 8;
    let mut r = rng(2024);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..300 {
        let mut b = good.clone();
        match r.random_range(0..5) {
            0 => {
                for _ in 0..r.random_range(1..4) {
                    let i = r.random_range(8..header);
                    b[i] = r.random();
                }
            }
            1 => {
                // digits in the header: offsets and shapes
                let digits: Vec<usize> = (8..header).filter(|&i| b[i].is_ascii_digit()).collect();
                let i = digits[r.random_range(0..digits.len())];
                b[i] = b'0' + r.random_range(0..10u8);
            }
            2 => {
                for _ in 0..r.random_range(1..50) {
                    let i = r.random_range(header..b.len());
                    b[i] = r.random();
                }
            }
            3 => {
                let i = r.random_range(0..8);
                b[i] = r.random();
            }
            _ => b.truncate(r.random_range(0..b.len())),
        }
        std::fs::write(&path, &b).unwrap();
        let p = dir.path().to_path_buf();
        let outcome = std::panic::catch_unwind(move || load(&p));
        match outcome {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => panic!("the loader panicked on a mutated shard"),
        }
    }
    assert!(
        ok > 0 && err > 0,
        "mutations should both survive and fail: ok {ok}, err {err}"
    );
}
