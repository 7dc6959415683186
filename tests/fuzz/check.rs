//! The oracle: run a mutant the way a user would (open, load every MoE layer, attach the
//! adapter, build the layer on the CPU target, forward finite input) and say how it ended.
//! An `Err` is a pass; a panic, a non-finite output, or accepting data the mutation made
//! invalid is a failure. Time and allocation are judged by the runner.

use super::files::Model;
use fleetmoe::checkpoint::{inspect::inspect, load_adapter, Checkpoint};
use fleetmoe::moe::{LayerExtras, Lora, MoeLayer, RoutingInput, Target};
use fleetmoe::Error;
use std::path::Path;

/// How one mutant ended.
#[derive(Debug)]
pub enum Verdict {
    /// Loaded and ran, finite output.
    Ok,
    /// Refused with an error: the variant name and the message.
    Refused(String, String),
    /// A failure: class and a one-line symptom.
    Fail(&'static str, String),
}

/// The name of an error's variant (`Checkpoint`, `Shape`, ...).
pub fn variant(e: &Error) -> String {
    let d = format!("{e:?}");
    d.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

/// Finite hidden states in [-4, 4], the same for every mutant of a given size.
pub fn input(tokens: usize, hidden: usize) -> Vec<f32> {
    (0..tokens * hidden)
        .map(|k| ((k * 7919 % 1000) as f32 / 125.0 - 4.0) * 0.999)
        .collect()
}

/// Judges a finished run: `refuse` names what the mutation made invalid (non-finite
/// data, duplicate names) so that accepting it is a failure.
pub fn judge(r: fleetmoe::Result<Vec<f32>>, refuse: Option<&str>) -> Verdict {
    match r {
        Err(e) => Verdict::Refused(variant(&e), e.to_string()),
        Ok(y) => {
            if let Some(v) = y.iter().find(|v| !v.is_finite()) {
                // non-finite data in and out (should have been refused), or overflow
                let class = match refuse {
                    Some(_) => "nan-passthrough",
                    None => "non-finite-output",
                };
                Verdict::Fail(class, format!("output holds {v}"))
            } else if let Some(what) = refuse {
                Verdict::Fail("accepted-invalid", format!("loaded and ran with {what}"))
            } else {
                Verdict::Ok
            }
        }
    }
}

/// Opens `dir`, loads up to two MoE layers and runs each (with the adapter when present).
/// Returns the concatenated outputs, and the model tensors the loader read.
pub fn run_model(
    dir: &Path,
    m: &Model,
    target: &Target,
) -> (fleetmoe::Result<Vec<f32>>, Vec<String>) {
    let ck = match Checkpoint::open(dir) {
        Ok(ck) => ck,
        Err(e) => return (Err(e), Vec::new()),
    };
    let out = run_layers(dir, m, target, &ck);
    (out, ck.shards.tensors_read())
}

fn run_layers(
    dir: &Path,
    m: &Model,
    target: &Target,
    ck: &Checkpoint,
) -> fleetmoe::Result<Vec<f32>> {
    let layers = ck.moe_layers();
    if layers.is_empty() {
        return Err(Error::Config("no MoE layer found".into()));
    }
    let mut out = Vec::new();
    for &n in layers.iter().take(2) {
        ck.scheme(n)?;
        let l = ck.load_layer(n)?;
        let mut config = l.config.clone();
        let lora = if m.adapter {
            let ad = load_adapter(&dir.join("adapter"), ck, &l)?;
            config.lora = true;
            Some(Lora { adapters: vec![ad] })
        } else {
            None
        };
        let extras = LayerExtras {
            shared: l.shared.clone(),
            lora,
            backend: None,
        };
        let layer = MoeLayer::new(config, &l.weights, target, extras)?;
        let tokens = 3;
        let x = input(tokens, l.config.hidden);
        let logits = l.router_logits(&x)?;
        let slots = [Some(0), None, Some(0)];
        let slots = m.adapter.then_some(&slots[..]);
        out.extend(layer.forward(&x, RoutingInput::Logits(&logits), slots)?);
    }
    // `inspect` reads the same files again and asks the oracle about presets
    inspect(dir)?;
    Ok(out)
}

/// Empties `dir` (created if missing) for the next mutant.
pub fn reset_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the mutant directory");
}
