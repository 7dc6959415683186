//! Shared pieces of the validation tests: a one-MoE-layer Qwen3 checkpoint (layer 1) in
//! any storage format, and the assertion that a result is the exact checkpoint error.

use super::harness::{E, H, I};
use super::{experts, rng, router, write_config, Expected, Lin, Writer};
use fleetmoe::checkpoint::{Checkpoint, LoadedLayer};
use fleetmoe::Error;
use serde_json::Value;
use std::path::Path;

pub const QWEN: &str = "Qwen3MoeForCausalLM";
pub const BLOCK: &str = "model.layers.1.mlp";

pub fn proj(e: usize, p: usize) -> String {
    format!(
        "{BLOCK}.experts.{e}.{}",
        ["gate_proj", "up_proj", "down_proj"][p]
    )
}

/// A one-MoE-layer (layer 1) checkpoint in `lin`, before it is written.
pub fn writer(lin: Lin, seed: u64) -> (Writer, Expected) {
    let mut r = rng(seed);
    let mut wr = Writer::default();
    let want = experts(&mut wr, lin, E, H, I, &proj, &mut r);
    router(&mut wr, &format!("{BLOCK}.gate.weight"), E, H, &mut r);
    (wr, want)
}

pub fn write(wr: &Writer, cfg: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    wr.write(dir.path(), 1);
    write_config(dir.path(), cfg);
    dir
}

pub fn load(dir: &Path) -> fleetmoe::Result<LoadedLayer> {
    Checkpoint::open(dir)?.load_layer(1)
}

/// The result is `Error::Checkpoint` whose tensor (or field) contains `what` and whose
/// message contains every one of `says`.
#[track_caller]
pub fn expect<T: std::fmt::Debug>(r: fleetmoe::Result<T>, what: &str, says: &[&str]) {
    match r {
        Err(Error::Checkpoint { tensor, why, file }) => {
            assert!(
                tensor.contains(what),
                "names '{tensor}', expected '{what}' ({why})"
            );
            for s in says {
                assert!(
                    why.contains(s),
                    "'{why}' should say '{s}' ({tensor} in {file})"
                );
            }
        }
        other => panic!("expected a checkpoint error naming {what}, got {other:?}"),
    }
}
