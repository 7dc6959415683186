//! The `fleetmoe` command: `info` (devices and what they can do), `explain` (the oracle's
//! decision and its reasons), `run` (one MoE layer of a real model's shape, timed and
//! checked against an f64 reference), `bench`, `inspect` and `parity` (the emulation-parity
//! suite as a node check). One file per command; this one parses and dispatches.

/// `println!` for results on stdout: the line goes above any progress bar
/// (`progress::println`), and a reader that went away (`fleetmoe run | head -3`) is not a
/// panic. Only in functions that return `Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        crate::progress::println(&format!($($arg)*))?
    };
}

mod bench;
mod bench_cpu;
mod parity;
mod problem;
mod progress;
mod run;

use clap::{Parser, Subcommand};
use fleetmoe::device::Capabilities;
use fleetmoe::moe::{Activation, LayerConfig, Target};
use fleetmoe::oracle::{self, BackendId};
use fleetmoe::quant::QuantScheme;
use fleetmoe::Result;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fleetmoe",
    version,
    about = "Mixture-of-Experts layers from quantized checkpoints on NVIDIA, AMD and CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bars or spinners (drawn only when stderr is a terminal anyway;
    /// `FLEETMOE_PROGRESS=lines` writes them as plain lines instead).
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The devices this build can use, and the presets the oracle can be asked about.
    Info,
    /// Which experts backend the oracle picks for a scheme on a platform, and why not the others.
    Explain {
        /// A preset (h100, h200, b200, mi300x, mi355x, cpu); the detected device if omitted.
        #[arg(long)]
        platform: Option<String>,
        /// Quantization scheme, e.g. fp8, fp8-block128, mxfp4, nvfp4, w4a16 (`info` lists them).
        #[arg(long, default_value = "bf16")]
        scheme: String,
        /// silu, gelu, gelu-tanh, swigluoai, relu2, silu-nogate.
        #[arg(long, default_value = "silu")]
        activation: String,
        /// The experts carry biases.
        #[arg(long)]
        bias: bool,
        /// LoRA adapters are attached.
        #[arg(long)]
        lora: bool,
        /// Ask for this backend instead of the oracle's choice.
        #[arg(long)]
        backend: Option<String>,
    },
    /// Build one layer from seeded random weights, run a forward, print backend, time and error.
    Run {
        /// small, mixtral-8x7b, qwen3-30b-a3b, deepseek-v3, gpt-oss-120b.
        #[arg(long, default_value = "small", conflicts_with = "model")]
        shape: String,
        /// The scheme of the random weights (a checkpoint's own with --model).
        #[arg(long, default_value = "fp8", conflicts_with = "model")]
        scheme: String,
        /// Tokens in the batch (at least 1).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
        tokens: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use fewer routed experts than the model has (emulation holds every expert in f32).
        #[arg(long, conflicts_with = "model")]
        experts: Option<usize>,
        /// Timed repetitions after one warm-up (at least 1); the median is printed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        reps: u32,
        /// Ask for this backend instead of the oracle's choice.
        #[arg(long)]
        backend: Option<String>,
        /// Run a real layer of the checkpoint in this directory instead of random weights.
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// With --model: the MoE layer to run (the first one by default).
        #[arg(long, requires = "model")]
        layer: Option<usize>,
        /// With --model: a PEFT LoRA adapter directory (repeatable).
        #[arg(long, requires = "model")]
        lora: Vec<std::path::PathBuf>,
    },
    /// Time the experts of real model shapes on the GPU against the roofline floor and vLLM.
    Bench(BenchArgs),
    /// What a checkpoint directory holds: architecture, MoE layers, schemes, oracle choices.
    Inspect { dir: std::path::PathBuf },
    /// Every scheme on every native backend of this machine against the emulation (the
    /// emulation against an f64 reference where none runs it); exits non-zero on a mismatch.
    Parity(parity::ParityArgs),
}

/// `fleetmoe bench`'s options.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Comma-separated shapes (DeepSeek-V3 runs fp8 schemes only).
    #[arg(
        long,
        default_value = "mixtral-8x7b,qwen3-30b-a3b,deepseek-v3,gpt-oss-120b"
    )]
    shapes: String,
    /// Comma-separated schemes.
    #[arg(long, default_value = "bf16,fp8,fp8-block128")]
    schemes: String,
    /// Comma-separated token counts M.
    #[arg(long, default_value = "1,16,64,256,1024,4096")]
    tokens: String,
    /// Timed runs per cell (median printed).
    #[arg(long, default_value_t = 50)]
    reps: usize,
    /// One JSON object per line: shape, scheme, M, us, floor_us, backend (and lora_us).
    #[arg(long)]
    json: bool,
    /// Also time each cell with resident LoRA adapters of this rank (`--adapters` of them,
    /// the tokens taking them in turn).
    #[arg(long)]
    lora: Option<usize>,
    /// Resident adapters with `--lora` (1-16).
    #[arg(long, default_value_t = 2, requires = "lora", value_parser = clap::value_parser!(u16).range(1..=16))]
    adapters: u16,
    /// Also time the embedding path (logits and bf16 in, bf16 out, `forward_device`
    /// captured in a graph on the caller's stream) and the host `forward`.
    #[arg(long)]
    api: bool,
    /// Static fp8 schemes: give each expert its own input scales, as checkpoints
    /// calibrated per expert do (gemm1's input is then quantized per token slot).
    #[arg(long)]
    per_expert_scales: bool,
    /// This GPU's dense bf16 matrix rate (TFLOP/s), replacing the table's; required on a
    /// GPU without measured ceilings.
    #[arg(long)]
    bf16_tflops: Option<f64>,
    /// This GPU's dense fp8 matrix rate (TFLOP/s), as `--bf16-tflops`.
    #[arg(long)]
    fp8_tflops: Option<f64>,
    /// Time the emulation on this host instead of a GPU (any build, any machine).
    #[arg(long, conflicts_with_all = ["lora", "api", "per_expert_scales", "bf16_tflops", "fp8_tflops"])]
    cpu: bool,
    /// With --cpu: routed experts per shape (the emulation holds its experts in f32); by
    /// default the fewest (at least 4) the shape's routing allows.
    #[arg(long, requires = "cpu")]
    experts: Option<usize>,
    /// Also draw the table as an SVG: time ÷ floor against M per shape, peers dashed.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fleetmoe::oracle=error"),
    )
    .init();
    let cli = Cli::parse();
    progress::set_quiet(cli.quiet);
    let result = match cli.command {
        Command::Info => info().map(|()| true),
        Command::Explain {
            platform,
            scheme,
            activation,
            bias,
            lora,
            backend,
        } => explain(platform, &scheme, &activation, bias, lora, backend).map(|()| true),
        Command::Run {
            shape,
            scheme,
            tokens,
            seed,
            experts,
            reps,
            backend,
            model: Some(dir),
            layer,
            lora,
        } => {
            let _ = (shape, scheme, experts);
            let tokens = usize::try_from(tokens).unwrap_or(usize::MAX);
            problem::check_model_memory(&dir, tokens).and_then(|()| {
                let _step =
                    progress::step(format!("loading and running a layer of {}", dir.display()));
                fleetmoe::checkpoint::inspect::run_model(&fleetmoe::checkpoint::inspect::RunModel {
                    dir,
                    layer,
                    loras: lora,
                    tokens,
                    seed,
                    backend,
                    reps: reps as usize,
                })
                .and_then(|(report, ok)| print_out(&report).map(|()| ok))
            })
        }
        Command::Run {
            shape,
            scheme,
            tokens,
            seed,
            experts,
            reps,
            backend,
            ..
        } => run::run(
            &shape,
            &scheme,
            usize::try_from(tokens).unwrap_or(usize::MAX),
            seed,
            experts,
            reps as usize,
            backend,
        ),
        Command::Bench(args) => json_errors(args.json, bench::bench(&args).map(|()| true)),
        Command::Parity(args) => json_errors(args.json, parity::parity(&args)),
        Command::Inspect { dir } => {
            let _step = progress::step(format!("reading {}", dir.display()));
            fleetmoe::checkpoint::inspect::inspect(&dir)
        }
        .and_then(|r| {
            print_out(&r.report)?;
            if !r.problems.is_empty() {
                eprintln!(
                    "error: {} cannot be loaded as it is ({} problem(s) above)",
                    dir.display(),
                    r.problems.len()
                );
            }
            Ok(r.problems.is_empty())
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Under `--json` even a failure is one JSON object, on stdout, for fleet tooling: an
/// error becomes `{"error": …}` and a failed exit; without `--json` it is left as it is.
fn json_errors(json: bool, result: Result<bool>) -> Result<bool> {
    match result {
        Err(e) if json => {
            print_out(&format!(
                "{}\n",
                serde_json::json!({ "error": e.to_string() })
            ))?;
            Ok(false)
        }
        other => other,
    }
}

fn info() -> Result<()> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fleetmoe {} (features: {})",
        env!("CARGO_PKG_VERSION"),
        built_features()
    );
    if let Some(caveat) = hip_caveat() {
        let _ = writeln!(s, "note: {caveat}");
    }
    if cfg!(feature = "faults") {
        let _ = writeln!(
            s,
            "note: built with `faults`: FLEETMOE_FAULT plants a bug, for the mutation tests only"
        );
    }
    let _ = writeln!(s, "devices:");
    let _ = writeln!(s, "  {}", Target::detect().capabilities());
    for line in wgpu_adapters() {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "presets for `explain --platform`:");
    for name in Capabilities::PRESETS {
        let _ = writeln!(s, "  {name:7} {}", Capabilities::preset(name)?);
    }
    let _ = writeln!(s, "schemes for `--scheme`:");
    for (name, what) in fleetmoe::quant::SCHEME_EXAMPLES {
        let _ = writeln!(s, "  {name:40} {what}");
    }
    let _ = writeln!(
        s,
        "backends: {}",
        BackendId::ALL
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_out(&s)
}

/// Writes `s` to stdout; a reader that went away (`fleetmoe info | head -1`) is not an
/// error, any other write failure is.
fn print_out(s: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(s.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(fleetmoe::Error::Io {
            path: "stdout".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A `--tokens` entry: a count of at least 1.
fn token_count(t: &str) -> Result<usize> {
    match t.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(fleetmoe::Error::Config(format!(
            "'{t}' is not a token count (a whole number of at least 1)"
        ))),
    }
}

fn list<T>(s: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse)
        .collect()
}

/// `info`'s lines on wgpu: the adapters in `WgpuDevice::new` ordinal order, or why there
/// are none.
#[cfg(feature = "wgpu")]
fn wgpu_adapters() -> Vec<String> {
    use fleetmoe::device::wgpu::{adapters, ADAPTER_ENV};
    let list = adapters();
    if list.is_empty() {
        let filter = std::env::var(ADAPTER_ENV)
            .map(|f| format!(" matching {ADAPTER_ENV}='{f}'"))
            .unwrap_or_default();
        return vec![format!(
            "wgpu adapters: none (no Vulkan, Metal or DX12 adapter{filter})"
        )];
    }
    std::iter::once("wgpu adapters:".to_string())
        .chain(list.iter().enumerate().map(|(i, a)| format!("  {i}: {a}")))
        .collect()
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_adapters() -> Vec<String> {
    vec!["wgpu adapters: not listed (built without feature `wgpu`)".to_string()]
}

/// Every cargo feature this binary was built with, or that there are none.
fn built_features() -> String {
    let on: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("rocm", cfg!(feature = "rocm")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("faults", cfg!(feature = "faults")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if on.is_empty() {
        "none (CPU emulation only)".into()
    } else {
        on.join(", ")
    }
}

/// For a `rocm` build whose HIP code objects were not built (`build.rs` found no clang
/// with AMDGPU support): that the AMD backends will run emulated, and why.
fn hip_caveat() -> Option<String> {
    use fleetmoe::backends::rocm::kernels;
    (cfg!(feature = "rocm") && !kernels::built()).then(|| {
        format!(
            "this rocm build has no HIP code objects ({}; build.rs needs clang-22 and lld-22, \
             or $FLEETMOE_HIP_CLANG): the aiter-* backends will run emulated",
            kernels::BUILD_NOTE
        )
    })
}

fn explain(
    platform: Option<String>,
    scheme: &str,
    activation: &str,
    bias: bool,
    lora: bool,
    backend: Option<String>,
) -> Result<()> {
    let caps = match platform {
        Some(name) => Capabilities::preset(&name)?,
        None => Target::detect().capabilities().clone(),
    };
    let scheme = QuantScheme::parse(scheme)?;
    let config = LayerConfig {
        activation: Activation::parse(activation)?,
        has_bias: bias,
        lora,
        ..LayerConfig::new(8, 2, 4096, 14336)
    };
    let forced = backend.as_deref().map(BackendId::parse).transpose()?;
    let selection = oracle::select(&scheme, &caps, &config, forced)?;
    let mut out = String::new();
    for line in selection.to_string().lines() {
        out.push_str(line);
        out.push('\n');
        // Right under the choice: an AITER backend this build cannot load runs emulated.
        if line.starts_with("backend ") && selection.chosen.is_aiter() {
            if let Some(caveat) = hip_caveat() {
                out.push_str(&format!("caveat    {caveat}\n"));
            }
        }
    }
    print_out(&out)
}
