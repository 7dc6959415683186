//! `fleetmoe parity`: the emulation-parity suite as a node check. Every scheme on every
//! native backend this machine runs, at the model shapes (or a checkpoint's own layers),
//! on fresh random inputs, against the emulation within the scheme's tolerance; a scheme
//! no native backend here runs checks the emulation itself against the f64 reference.
//! One table (or JSON lines), and a non-zero exit on any mismatch: how an operator trusts
//! a new GPU, driver or build before it serves.

use crate::problem::{fewest_experts, problem, reference, Problem};
use crate::progress;
use fleetmoe::checkpoint::Checkpoint;
use fleetmoe::moe::reference::rel_l2;
use fleetmoe::moe::shapes::ModelShape;
use fleetmoe::moe::{
    LayerConfig, LayerExtras, MoeLayer, Router, RoutingInput, SharedExpertWeights, Target,
};
use fleetmoe::oracle::{self, BackendId};
use fleetmoe::quant::dense::gaussian;
use fleetmoe::quant::{ExpertWeights, QuantScheme};
use fleetmoe::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// The schemes `parity` checks by default: one of each family the crate runs.
pub const SCHEMES: &str = "bf16,f16,fp8,fp8-channel,fp8-static,fp8-block128,nvfp4,nvfp4-a16,\
mxfp4,mxfp4-a-fp8,mxfp4-a-mxfp4,mxfp6-e3m2,w4a16,w4a16-g64-zp,w4a16-actorder,w8a16,w4a8,\
w8a8-int8";

/// `fleetmoe parity`'s options.
#[derive(clap::Args)]
pub struct ParityArgs {
    /// Comma-separated model shapes (`small` for a quick check).
    #[arg(
        long,
        default_value = "mixtral-8x7b,qwen3-30b-a3b,deepseek-v3,gpt-oss-120b"
    )]
    shapes: String,
    /// Routed experts per shape; by default the fewest (at least 4) its routing allows,
    /// so the emulation that checks the GPU fits in host memory.
    #[arg(long)]
    experts: Option<usize>,
    /// Comma-separated schemes.
    #[arg(long, default_value = SCHEMES)]
    schemes: String,
    /// Comma-separated token counts M (an odd one finds tile tails).
    #[arg(long, default_value = "1,37")]
    tokens: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Check this checkpoint's MoE layers, in its own scheme, instead of random weights.
    #[arg(long, conflicts_with_all = ["shapes", "schemes", "experts"])]
    model: Option<PathBuf>,
    /// One JSON object per line: shape, scheme, M, backend, rel_l2, tol, ok (or skipped /
    /// error); the last line is the summary.
    #[arg(long)]
    pub json: bool,
}

/// One checked (or skipped) cell.
struct Cell {
    shape: String,
    scheme: String,
    tokens: usize,
    /// The native backend checked, or `emulation` (against the f64 reference).
    backend: String,
    outcome: Outcome,
}

enum Outcome {
    Checked {
        err: f64,
        tol: f64,
    },
    /// Nothing to check: no checkpoint can hold this scheme at this shape.
    Skipped(String),
    /// The backend the oracle accepts here failed to build or run: a failure.
    Failed(String),
}

impl Cell {
    fn ok(&self) -> bool {
        match self.outcome {
            Outcome::Checked { err, tol } => err <= tol,
            Outcome::Skipped(_) => true,
            Outcome::Failed(_) => false,
        }
    }

    fn line(&self) -> String {
        let what = match &self.outcome {
            Outcome::Checked { err, tol } => format!(
                "{:4} rel L2 {err:.2e} (tol {tol:.0e})",
                if err <= tol { "ok" } else { "FAIL" }
            ),
            Outcome::Skipped(why) => format!("skip {why}"),
            Outcome::Failed(e) => format!("FAIL {e}"),
        };
        format!(
            "{:14} {:16} {:5} {:20} {what}",
            self.shape, self.scheme, self.tokens, self.backend
        )
    }

    fn json(&self) -> String {
        let mut v = serde_json::json!({
            "shape": self.shape,
            "scheme": self.scheme,
            "M": self.tokens,
            "backend": self.backend,
        });
        match &self.outcome {
            Outcome::Checked { err, tol } => {
                v["rel_l2"] = (*err).into();
                v["tol"] = (*tol).into();
                v["ok"] = (err <= tol).into();
            }
            Outcome::Skipped(why) => v["skipped"] = why.as_str().into(),
            Outcome::Failed(e) => {
                v["error"] = e.as_str().into();
                v["ok"] = false.into();
            }
        }
        v.to_string()
    }
}

/// The native backends the oracle would let `target` run for `scheme` and `config`.
fn native_backends(target: &Target, scheme: &QuantScheme, config: &LayerConfig) -> Vec<BackendId> {
    BackendId::ALL
        .iter()
        .copied()
        .filter(|&b| b != BackendId::Emulation)
        .filter(|&b| oracle::select(scheme, target.capabilities(), config, Some(b)).is_ok())
        .collect()
}

/// One layer's weights and inputs (drawn for the largest M; each M checks a prefix).
struct Layer<'a> {
    shape: String,
    config: &'a LayerConfig,
    weights: &'a ExpertWeights,
    shared: Option<SharedExpertWeights>,
    x: &'a [f32],
    logits: &'a [f32],
}

/// Checks `layer` at each M of `tokens` on every native backend here against the
/// emulation, or, where there is none, the emulation against `f64_reference(M)`. Each
/// layer is built once.
fn check(
    target: &Target,
    layer: &Layer,
    tokens: &[usize],
    f64_reference: impl Fn(&[f32]) -> Result<Vec<f64>>,
    bar: &mut progress::Bar,
) -> Result<Vec<Cell>> {
    let scheme = layer.weights.scheme;
    let (h, e) = (layer.config.hidden, layer.config.num_experts);
    let tol = scheme.parity_tolerance();
    let build = |t: &Target, backend| {
        MoeLayer::new(
            layer.config.clone(),
            layer.weights,
            t,
            LayerExtras {
                shared: layer.shared.clone(),
                lora: None,
                backend,
            },
        )
    };
    let cell = |tokens, backend: String, outcome| Cell {
        shape: layer.shape.clone(),
        scheme: scheme.to_string(),
        tokens,
        backend,
        outcome,
    };
    bar.working_on(format!("{} {scheme}: emulation layout", layer.shape));
    let emulation = build(&Target::cpu(), Some(BackendId::Emulation))?;
    let natives = native_backends(target, &scheme, layer.config);
    let mut cells = Vec::new();
    let mut emulated = Vec::new();
    for &m in tokens {
        let (x, logits) = (&layer.x[..m * h], &layer.logits[..m * e]);
        bar.working_on(format!("{} {scheme} M={m}: emulation", layer.shape));
        let y = emulation.forward(x, RoutingInput::Logits(logits), None)?;
        if natives.is_empty() {
            bar.working_on(format!("{} {scheme} M={m}: f64 reference", layer.shape));
            let err = rel_l2(&y, &f64_reference(logits)?);
            cells.push(cell(m, "emulation".into(), Outcome::Checked { err, tol }));
        }
        emulated.push(y);
    }
    for b in natives {
        bar.working_on(format!("{} {scheme}: {b} layout and upload", layer.shape));
        let layer_b = build(target, Some(b));
        for (&m, want) in tokens.iter().zip(&emulated) {
            bar.working_on(format!("{} {scheme} M={m}: {b}", layer.shape));
            let (x, logits) = (&layer.x[..m * h], &layer.logits[..m * e]);
            let got = match &layer_b {
                Ok(l) => l.forward(x, RoutingInput::Logits(logits), None),
                Err(e) => Err(Error::Config(e.to_string())),
            };
            let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            cells.push(cell(
                m,
                b.name().into(),
                match got {
                    Ok(y) => Outcome::Checked {
                        err: rel_l2(&y, &want),
                        tol,
                    },
                    Err(e) => Outcome::Failed(e.to_string()),
                },
            ));
        }
    }
    Ok(cells)
}

/// Random-weight cells: every shape × scheme, drawn once at the largest M.
fn random_cells(
    args: &ParityArgs,
    target: &Target,
    emit: &mut dyn FnMut(Cell) -> Result<()>,
) -> Result<()> {
    let shapes = crate::list(&args.shapes, ModelShape::parse)?;
    let schemes = crate::list(&args.schemes, QuantScheme::parse)?;
    let tokens = crate::list(&args.tokens, crate::token_count)?;
    let m_max = tokens.iter().copied().max().unwrap_or(1);
    let mut bar = progress::bar("parity", shapes.len() * schemes.len());
    for &shape in &shapes {
        let experts = match args.experts {
            Some(n) => n,
            None => fewest_experts(shape)?,
        };
        crate::problem::check_memory(shape, m_max, Some(experts))?;
        for &scheme in &schemes {
            bar.working_on(format!(
                "{} {scheme}: random weights ({experts} experts), quantization",
                shape.name()
            ));
            let p: Problem = {
                match problem(shape, scheme, m_max, args.seed, Some(experts), false) {
                    Ok(p) => p,
                    // A group that does not divide the shape (GPT-OSS's 2880 in 128s): no
                    // checkpoint can hold it, so there is nothing to check.
                    Err(e @ Error::GroupSize { .. }) => {
                        for &m in &tokens {
                            emit(Cell {
                                shape: shape.name().into(),
                                scheme: scheme.to_string(),
                                tokens: m,
                                backend: "-".into(),
                                outcome: Outcome::Skipped(e.to_string()),
                            })?;
                        }
                        bar.inc();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let layer = Layer {
                shape: shape.name().into(),
                config: &p.config,
                weights: &p.weights,
                shared: p.shared.clone().map(|weights| SharedExpertWeights {
                    weights,
                    gate: None,
                }),
                x: &p.x,
                logits: &p.logits,
            };
            let router = Router::new(&p.config)?;
            let f64_reference = |logits: &[f32]| {
                let topk = router.route(logits, logits.len() / p.config.num_experts)?;
                reference(&p, &topk, false)
            };
            for c in check(target, &layer, &tokens, f64_reference, &mut bar)? {
                emit(c)?;
            }
            bar.inc();
        }
    }
    Ok(())
}

/// Checkpoint cells: every MoE layer of `dir` × token count, in the checkpoint's scheme.
fn model_cells(
    dir: &std::path::Path,
    args: &ParityArgs,
    target: &Target,
    emit: &mut dyn FnMut(Cell) -> Result<()>,
) -> Result<()> {
    let tokens = crate::list(&args.tokens, crate::token_count)?;
    let ck = Checkpoint::open(dir)?;
    let layers = ck.moe_layers();
    if layers.is_empty() {
        return Err(Error::Config(format!("{} has no MoE layer", dir.display())));
    }
    let mut bar = progress::bar(format!("layers of {}", dir.display()), layers.len());
    for n in layers {
        bar.working_on(format!("loading layer {n} of {}", dir.display()));
        let l = ck.load_layer(n)?;
        let m_max = tokens.iter().copied().max().unwrap_or(1);
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed + n as u64);
        let x = gaussian(&mut rng, m_max * l.config.hidden, 1.0);
        let logits = l.router_logits(&x)?;
        let layer = Layer {
            shape: format!("layer {n}"),
            config: &l.config,
            weights: &l.weights,
            shared: l.shared.clone(),
            x: &x,
            logits: &logits,
        };
        let router = Router::new(&l.config)?;
        let f64_reference = |logits: &[f32]| {
            let m = logits.len() / l.config.num_experts;
            let topk = router.route(logits, m)?;
            fleetmoe::checkpoint::inspect::reference(&l, &x[..m * l.config.hidden], &topk)
        };
        for c in check(target, &layer, &tokens, f64_reference, &mut bar)? {
            emit(c)?;
        }
        bar.inc();
    }
    Ok(())
}

/// Runs the check and prints it; returns whether every cell passed.
pub fn parity(args: &ParityArgs) -> Result<bool> {
    let target = Target::detect();
    let json = args.json;
    if !json {
        outln!("device    {}", target.capabilities());
        outln!(
            "{:14} {:16} {:>5} {:20} result",
            "shape",
            "scheme",
            "M",
            "backend"
        );
    }
    let (mut checked, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut emit = |c: Cell| {
        match c.outcome {
            Outcome::Skipped(_) => skipped += 1,
            _ if c.ok() => checked += 1,
            _ => failed += 1,
        }
        progress::println(&if json { c.json() } else { c.line() })
    };
    match &args.model {
        Some(dir) => model_cells(dir, args, &target, &mut emit)?,
        None => random_cells(args, &target, &mut emit)?,
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({ "passed": checked, "failed": failed, "skipped": skipped, "ok": failed == 0 })
        );
    } else {
        outln!(
            "{}: {checked} passed, {failed} failed, {skipped} skipped (no checkpoint can hold them)",
            if failed == 0 { "ok" } else { "FAIL" }
        );
    }
    Ok(failed == 0)
}
