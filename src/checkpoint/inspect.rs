//! What `fleetmoe inspect DIR` and `fleetmoe run --model DIR` print, built here so the
//! command line only dispatches.

use super::{load_adapter, Checkpoint, LoadedLayer};
use crate::device::Capabilities;
use crate::error::{Error, Result};
use crate::moe::reference::{forward_f64, rel_l2};
use crate::moe::{LayerConfig, LayerExtras, Lora, MoeLayer, Router, RoutingInput, Target, TopK};
use crate::oracle;
use crate::quant::dense::gaussian;
use crate::quant::QuantScheme;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// `(first, last)` runs of consecutive layer indices.
type Runs = Vec<(usize, usize)>;

/// The runs of consecutive values in sorted `v`.
fn runs(v: &[usize]) -> Runs {
    let mut out: Runs = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some((_, last)) if x == *last + 1 => *last = x,
            _ => out.push((x, x)),
        }
    }
    out
}

/// `a-b` ranges of `(first, last)` runs.
fn show_runs(r: &[(usize, usize)]) -> String {
    let out: Vec<String> = r
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("{a}")
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    out.join(", ")
}

/// `a-b` ranges of sorted indices.
fn ranges(v: &[usize]) -> String {
    show_runs(&runs(v))
}

/// The runs of `0..total` that sorted `v` (each below `total`) leaves out, split into those
/// below `k` and those from `k` on; computed from the runs, so a huge `total` costs nothing.
fn gaps(v: &[usize], total: usize, k: usize) -> (Runs, Runs) {
    let mut all = Vec::new();
    let mut next = 0;
    for (a, b) in runs(v) {
        if a > next {
            all.push((next, a - 1));
        }
        next = b + 1;
    }
    if next < total {
        all.push((next, total - 1));
    }
    let (mut below, mut from) = (Vec::new(), Vec::new());
    for (a, b) in all {
        if b < k {
            below.push((a, b));
        } else if a >= k {
            from.push((a, b));
        } else {
            below.push((a, k - 1));
            from.push((k, b));
        }
    }
    (below, from)
}

/// The layer config the oracle is asked about, from `config.json` alone.
fn cheap_config(ck: &Checkpoint) -> LayerConfig {
    let c = &ck.config;
    LayerConfig {
        activation: c.arch.activation(c),
        routing: c.arch.routing(c),
        has_bias: c.arch == super::Arch::GptOss,
        apply_router_weight_on_input: c.arch == super::Arch::Llama4,
        shared_intermediate: c.shared_intermediate,
        ..LayerConfig::new(c.num_experts, c.top_k, c.hidden, c.intermediate)
    }
}

/// What `fleetmoe inspect DIR` found.
pub struct Inspection {
    /// Architecture, sizes, MoE layers, the scheme of each, and the backend the oracle
    /// picks on the detected device and on every preset.
    pub report: String,
    /// What makes the checkpoint unloadable (missing or truncated shards, tensors that
    /// contradict `config.json`, layers whose scheme cannot be read); each is also a
    /// `problem` line of the report, and any of them makes `inspect` exit non-zero.
    pub problems: Vec<String>,
}

/// Inspects `dir` from its configs and shard headers (no tensor data is read); `Err` only
/// where not even `config.json` and the shard list can be read.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let ck = Checkpoint::open(dir)?;
    let c = &ck.config;
    let mut s = String::new();
    let mut problems: Vec<String> = Vec::new();
    if let Err(e) = ck.shards.check() {
        problems.push(e.to_string());
    }
    let _ = writeln!(
        s,
        "model        {} ({}), {} layers",
        c.architecture,
        c.arch.name(),
        c.num_layers
    );
    let _ = writeln!(
        s,
        "experts      {} routed, top-{}, H {}, I {}{}",
        c.num_experts,
        c.top_k,
        c.hidden,
        c.intermediate,
        c.shared_intermediate
            .map(|i| format!(", shared expert I {i}"))
            .unwrap_or_default()
    );
    let cfg = cheap_config(&ck);
    let _ = writeln!(
        s,
        "routing      {}, activation {}",
        cfg.routing.name(),
        cfg.activation.name()
    );
    let _ = writeln!(s, "format       {}", c.quant.describe());
    if let Some(t) = &c.targets {
        for line in t.summary() {
            let _ = writeln!(s, "config group {line}");
        }
    }
    let _ = writeln!(s, "experts      {}", ck.experts.describe());
    // Fused experts: the dtypes and shapes of the weight and scale tensors, from the first
    // MoE layer's headers, so the scheme below can be checked against what is stored.
    if let Some(&first) = ck.moe_layers().first() {
        match super::fused::storage(&ck, first) {
            Ok(Some(line)) => {
                let _ = writeln!(s, "stored       layer {first}: {line}");
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    for set in &c.settings {
        let from = match set.default {
            Some(src) => format!("default of {src}"),
            None => "from the file".to_string(),
        };
        let _ = writeln!(s, "setting      {} = {} ({from})", set.field, set.value);
    }
    let layers = ck.moe_layers();
    let _ = writeln!(
        s,
        "moe layers   {} of {}: {}",
        layers.len(),
        c.num_layers,
        ranges(&layers)
    );
    // The layers without a router: dense MLPs (DeepSeek / GLM `first_k_dense_replace`,
    // Llama 4 `interleave_moe_layer_step`), which fleetmoe does not read.
    let (before_k, no_router) = gaps(&layers, c.num_layers, c.first_k_dense);
    if !before_k.is_empty() {
        let _ = writeln!(
            s,
            "dense        layers {} (before first_k_dense_replace {}): not MoE, not read",
            show_runs(&before_k),
            c.first_k_dense
        );
    }
    if !no_router.is_empty() {
        let _ = writeln!(
            s,
            "dense        layers {} (no {}.{} tensor): not MoE, not read",
            show_runs(&no_router),
            ck.experts.block,
            c.arch.router()
        );
    }
    for &n in &layers {
        if let Err(e) = router_matches_config(&ck, n) {
            problems.push(e.to_string());
        }
    }
    let mut by_scheme: Vec<(String, Vec<usize>)> = Vec::new();
    let mut schemes: Vec<QuantScheme> = Vec::new();
    for &n in &layers {
        let name = match ck.scheme(n) {
            Ok(sc) => {
                if !schemes.contains(&sc) {
                    schemes.push(sc);
                }
                sc.to_string()
            }
            Err(e) => {
                problems.push(format!("layer {n}: {e}"));
                format!("unreadable ({e})")
            }
        };
        match by_scheme.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => v.push(n),
            None => by_scheme.push((name, vec![n])),
        }
    }
    for (name, v) in &by_scheme {
        let _ = writeln!(s, "scheme       {name} on layers {}", ranges(v));
    }
    // The shared expert, decided as loading decides it (its own config group, `ignore`,
    // or float weights beside quantized experts).
    let mut by_shared: Vec<(String, Vec<usize>)> = Vec::new();
    for &n in &layers {
        let name = match ck.shared_scheme(n) {
            Ok(Some(sc)) => sc.to_string(),
            Ok(None) => continue,
            Err(e) => {
                problems.push(format!("layer {n}: {e}"));
                format!("unreadable ({e})")
            }
        };
        match by_shared.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => v.push(n),
            None => by_shared.push((name, vec![n])),
        }
    }
    if let Some(m) = c.arch.shared_module() {
        for (name, v) in &by_shared {
            let _ = writeln!(s, "shared       {m} scheme {name} on layers {}", ranges(v));
        }
    }
    // What loading does to the stored scales: exact conversions, kept approximations.
    let mut by_note: Vec<(String, Vec<usize>)> = Vec::new();
    for &n in &layers {
        let lines = match ck.notes(n) {
            Ok(notes) => notes.lines(),
            Err(e) => {
                problems.push(format!("layer {n}: {e}"));
                vec![format!("unreadable scales ({e})")]
            }
        };
        for line in lines {
            match by_note.iter_mut().find(|(k, _)| *k == line) {
                Some((_, v)) => v.push(n),
                None => by_note.push((line, vec![n])),
            }
        }
    }
    for (line, v) in &by_note {
        let _ = writeln!(s, "note         layers {}: {line}", ranges(v));
    }
    let detected = Target::detect().capabilities().clone();
    let mut platforms = vec![("detected".to_string(), detected)];
    for p in Capabilities::PRESETS {
        platforms.push((p.to_string(), Capabilities::preset(p)?));
    }
    for sc in &schemes {
        let _ = writeln!(s, "oracle for {sc}:");
        for (name, caps) in &platforms {
            let sel = oracle::select(sc, caps, &cfg, None)?;
            let why = sel
                .fallback_reason()
                .map(|why| format!(" (fallback: {why})"));
            let _ = writeln!(s, "  {name:9} {}{}", sel.chosen, why.unwrap_or_default());
        }
    }
    problems.dedup();
    for p in &problems {
        let _ = writeln!(s, "problem      {p}");
    }
    Ok(Inspection {
        report: s,
        problems,
    })
}

/// Layer `n`'s router is `[num_experts, hidden_size]` as `config.json` says: the cheapest
/// header check that the file and the config describe the same model.
fn router_matches_config(ck: &Checkpoint, n: usize) -> Result<()> {
    let name = format!("{}.{}", ck.block(n), ck.config.arch.router());
    let want = [ck.config.num_experts, ck.config.hidden];
    match ck.shards.info(&name)? {
        Some((_, shape)) if shape == want => Ok(()),
        Some((_, shape)) => Err(Error::checkpoint(
            ck.shards.file_of(&name),
            name,
            format!(
                "shape {shape:?}, but config.json's num_experts and hidden_size make it {want:?}"
            ),
        )),
        None => Ok(()),
    }
}

/// Options of `fleetmoe run --model`.
#[derive(Debug, Clone)]
pub struct RunModel {
    pub dir: PathBuf,
    /// The MoE layer; the first one if `None`.
    pub layer: Option<usize>,
    pub loras: Vec<PathBuf>,
    pub tokens: usize,
    pub seed: u64,
    /// Force this backend instead of the oracle's choice.
    pub backend: Option<String>,
    /// Timed forwards after the first (the warm-up); the median is printed. 0: not timed.
    pub reps: usize,
}

/// The f64 output of the routed experts plus the (gated) shared expert: what `run --model`
/// and `fleetmoe parity --model` check the emulation against.
pub fn reference(l: &LoadedLayer, x: &[f32], topk: &TopK) -> Result<Vec<f64>> {
    let mut out = forward_f64(&l.weights, &l.config, x, topk, true)?;
    if let (Some(sh), Some(i)) = (&l.shared, l.config.shared_intermediate) {
        let one = l.config.shared_expert(i);
        let n = topk.tokens();
        let everyone = TopK::new(n, 1, vec![0; n], vec![1.0; n], 1)?;
        let y = forward_f64(&sh.weights, &one, x, &everyone, true)?;
        let h = l.config.hidden;
        for t in 0..topk.tokens() {
            let g = sh.gate.as_ref().map_or(1.0, |g| {
                let d: f64 = x[t * h..(t + 1) * h]
                    .iter()
                    .zip(g)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                1.0 / (1.0 + (-d).exp())
            });
            for k in 0..h {
                out[t * h + k] += g * y[t * h + k];
            }
        }
    }
    Ok(out)
}

/// Loads a real layer, runs it on the best device with random hidden states routed by the
/// checkpoint's own router, and reports the error against an f64 forward of the same
/// quantized weights. Returns the report and whether the error is within tolerance.
pub fn run_model(opts: &RunModel) -> Result<(String, bool)> {
    if opts.tokens == 0 {
        return Err(Error::Config("--tokens must be at least 1".into()));
    }
    let ck = Checkpoint::open(&opts.dir)?;
    let layers = ck.moe_layers();
    let n = match opts.layer {
        Some(n) if layers.contains(&n) => n,
        Some(n) => {
            return Err(Error::Config(format!(
                "layer {n} is not a MoE layer (MoE layers: {})",
                ranges(&layers)
            )))
        }
        None => *layers
            .first()
            .ok_or_else(|| Error::Config("the checkpoint has no MoE layer".into()))?,
    };
    let mut l = ck.load_layer(n)?;
    let mut lora = Lora::default();
    for d in &opts.loras {
        lora.adapters.push(load_adapter(d, &ck, &l)?);
    }
    let mut s = String::new();
    let c = &l.config;
    let _ = writeln!(
        s,
        "model     {} layer {n}: {} experts, top-{}, H {}, I {}, {}, {}",
        ck.config.arch.name(),
        c.num_experts,
        c.top_k,
        c.hidden,
        c.intermediate,
        c.activation.name(),
        c.routing.name()
    );
    let _ = writeln!(
        s,
        "scheme    {} ({})",
        l.weights.scheme,
        ck.config.quant.describe()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let x = gaussian(&mut rng, opts.tokens * c.hidden, 1.0);
    let logits = l.router_logits(&x)?;
    let with_lora = !lora.adapters.is_empty();
    l.config.lora = with_lora;
    let target = Target::detect();
    let extras = LayerExtras {
        shared: l.shared.clone(),
        lora: with_lora.then(|| lora.clone()),
        backend: opts
            .backend
            .as_deref()
            .map(oracle::BackendId::parse)
            .transpose()?,
    };
    let layer = MoeLayer::new(l.config.clone(), &l.weights, &target, extras)?;
    let _ = writeln!(s, "device    {}", target.capabilities());
    let _ = writeln!(s, "backend   {}", layer.selection().chosen);
    let routing = RoutingInput::Logits(&logits);
    let slots = vec![None; opts.tokens];
    let y = layer.forward(&x, routing, with_lora.then_some(&slots[..]))?;
    if opts.reps > 0 {
        let mut ms = Vec::with_capacity(opts.reps);
        for _ in 0..opts.reps {
            let t0 = std::time::Instant::now();
            layer.forward(&x, routing, with_lora.then_some(&slots[..]))?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let _ = writeln!(
            s,
            "forward   {:.3} ms for {} tokens (median of {}, after one warm-up)",
            ms[ms.len() / 2],
            opts.tokens,
            opts.reps
        );
    }
    let topk = Router::new(&l.config)?.route(&logits, opts.tokens)?;
    let err = rel_l2(&y, &reference(&l, &x, &topk)?);
    let tol = l.weights.scheme.parity_tolerance();
    let _ = writeln!(s, "error     {err:.2e} rel L2 vs an f64 forward of the same quantized weights (tolerance {tol:.0e})");
    if with_lora {
        let slots: Vec<Option<usize>> = (0..opts.tokens)
            .map(|t| Some(t % lora.adapters.len()))
            .collect();
        let yl = layer.forward(&x, routing, Some(&slots))?;
        let base: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let _ = writeln!(
            s,
            "lora      {} adapter(s); their deltas change the output by {:.2e} rel L2",
            lora.adapters.len(),
            rel_l2(&yl, &base)
        );
    }
    Ok((s, err <= tol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_at_first_k_dense_and_cost_nothing_for_a_huge_layer_count() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
        // DeepSeek-V3: layers 0-2 dense, 3-60 MoE.
        let moe: Vec<usize> = (3..61).collect();
        assert_eq!(gaps(&moe, 61, 3), (vec![(0, 2)], vec![]));
        // Llama 4 interleaved: every other layer has no router.
        assert_eq!(gaps(&[1, 3], 5, 0), (vec![], vec![(0, 0), (2, 2), (4, 4)]));
        // A run that straddles first_k_dense is split; the tail up to a huge count is one run.
        assert_eq!(
            gaps(&[4], usize::MAX, 2),
            (vec![(0, 1)], vec![(2, 3), (5, usize::MAX - 1)])
        );
        assert_eq!(show_runs(&gaps(&[0, 1], 2, 0).1), "");
    }
}
