//! The `fleetmoe` command: `info` (devices and what they can do), `explain` (the oracle's
//! decision and its reasons) and `run` (one MoE layer of a real model's shape, timed and
//! checked against an f64 reference).

use clap::{Parser, Subcommand};
use fleetmoe::device::Capabilities;
use fleetmoe::moe::reference::{forward_f64, rel_l2};
use fleetmoe::moe::shapes::ModelShape;
use fleetmoe::moe::{
    calibrate, Activation, LayerConfig, LayerExtras, MoeLayer, Router, Routing, RoutingInput,
    SharedExpertWeights, Target, TopK,
};
use fleetmoe::oracle::{self, BackendId};
use fleetmoe::quant::dense::gaussian;
use fleetmoe::quant::{DenseExperts, ExpertWeights, FloatDtype, QuantScheme};
use fleetmoe::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "fleetmoe",
    version,
    about = "Mixture-of-Experts layers from quantized checkpoints on NVIDIA, AMD and CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// Tokens in the batch.
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use fewer routed experts than the model has (emulation holds every expert in f32).
        #[arg(long, conflicts_with = "model")]
        experts: Option<usize>,
        /// Timed repetitions after one warm-up (at least 1); the median is printed.
        #[arg(long, default_value_t = 3, conflicts_with = "model",
              value_parser = clap::value_parser!(u32).range(1..))]
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
}

/// `fleetmoe bench`'s options.
#[derive(clap::Args)]
struct BenchArgs {
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
    /// Also time each cell with two resident LoRA adapters of this rank.
    #[arg(long)]
    lora: Option<usize>,
    /// Also time the embedding path (logits and bf16 in, bf16 out, `forward_device`
    /// captured in a graph on the caller's stream) and the host `forward`.
    #[arg(long)]
    api: bool,
    /// This GPU's dense bf16 matrix rate (TFLOP/s), replacing the table's; required on a
    /// GPU without measured ceilings.
    #[arg(long)]
    bf16_tflops: Option<f64>,
    /// This GPU's dense fp8 matrix rate (TFLOP/s), as `--bf16-tflops`.
    #[arg(long)]
    fp8_tflops: Option<f64>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,fleetmoe::oracle=error"),
    )
    .init();
    let result = match Cli::parse().command {
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
            let _ = (shape, scheme, experts, reps);
            fleetmoe::checkpoint::inspect::run_model(&fleetmoe::checkpoint::inspect::RunModel {
                dir,
                layer,
                loras: lora,
                tokens,
                seed,
                backend,
            })
            .map(|(report, ok)| {
                print!("{report}");
                ok
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
        } => run(
            &shape,
            &scheme,
            tokens,
            seed,
            experts,
            reps as usize,
            backend,
        ),
        // Under --json even a failure is one JSON object, on stdout, for fleet tooling.
        Command::Bench(args) if args.json => match bench(&args) {
            Ok(()) => Ok(true),
            Err(e) => {
                println!("{}", serde_json::json!({ "error": e.to_string() }));
                Ok(false)
            }
        },
        Command::Bench(args) => bench(&args).map(|()| true),
        Command::Inspect { dir } => fleetmoe::checkpoint::inspect::inspect(&dir).map(|r| {
            print!("{}", r.report);
            if !r.problems.is_empty() {
                eprintln!(
                    "error: {} cannot be loaded as it is ({} problem(s) above)",
                    dir.display(),
                    r.problems.len()
                );
            }
            r.problems.is_empty()
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

fn info() -> Result<()> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fleetmoe {} (features: {})",
        env!("CARGO_PKG_VERSION"),
        built_features()
    );
    let _ = writeln!(s, "devices:");
    let _ = writeln!(s, "  {}", Target::detect().capabilities());
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

fn list<T>(s: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(parse)
        .collect()
}

#[cfg(feature = "cuda")]
fn bench(args: &BenchArgs) -> Result<()> {
    use fleetmoe::backends::cuda::bench::{bench_shape, copy_bandwidth};
    use fleetmoe::bench::{peers, roofline::Ceilings, BenchRow};
    let shapes = list(&args.shapes, ModelShape::parse)?;
    let schemes = list(&args.schemes, QuantScheme::parse)?;
    let tokens = list(&args.tokens, |t| {
        t.parse::<usize>()
            .map_err(|_| fleetmoe::Error::Config(format!("'{t}' is not a token count")))
    })?;
    let target = Target::cuda(0)?;
    let dev = target.cuda_device().expect("a CUDA target has a device");
    let name = &target.capabilities().name;
    let copy = copy_bandwidth(dev)?;
    let ceilings = Ceilings::for_device(name, copy, args.bf16_tflops, args.fp8_tflops)?;
    if !args.json {
        println!("{}", target.capabilities());
        println!("ceilings: {}", ceilings.describe());
        println!("copy measured now: {:.2} TB/s", copy / 1e12);
        println!("floor = max(weight bytes of the experts hit / copy, 2*M*k*3*H*I / matrix rate)");
        println!(
            "{}",
            peers::source(name).unwrap_or("no peer figures measured on this GPU")
        );
        println!("{}", BenchRow::header());
    }
    for &shape in &shapes {
        for &scheme in &schemes {
            if shape == ModelShape::DeepseekV3 && !matches!(scheme, QuantScheme::Fp8 { .. }) {
                continue;
            }
            // A shape a scheme cannot take (GPT-OSS's 2880 in groups of 128, say) is
            // reported and the rest of the table still runs.
            match bench_shape(
                dev, &ceilings, shape, scheme, &tokens, args.reps, args.lora, args.api,
            ) {
                Ok(rows) => rows
                    .iter()
                    .for_each(|r| println!("{}", if args.json { r.json() } else { r.line() })),
                Err(e) if args.json => println!(
                    "{}",
                    serde_json::json!({
                        "shape": shape.name(),
                        "scheme": scheme.to_string(),
                        "error": e.to_string(),
                    })
                ),
                Err(e) => eprintln!("{} {scheme}: not run: {e}", shape.name()),
            }
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn bench(args: &BenchArgs) -> Result<()> {
    list(&args.shapes, ModelShape::parse)?;
    list(&args.schemes, QuantScheme::parse)?;
    Err(fleetmoe::Error::NoDevice(
        "`bench` times the GPU backends: build with `--features cuda` and run on an NVIDIA GPU"
            .into(),
    ))
}

fn built_features() -> &'static str {
    match (cfg!(feature = "cuda"), cfg!(feature = "rocm")) {
        (true, true) => "cuda, rocm",
        (true, false) => "cuda",
        (false, true) => "rocm",
        (false, false) => "none (CPU emulation only)",
    }
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
    print!("{}", oracle::select(&scheme, &caps, &config, forced)?);
    Ok(())
}

/// Seeded weights, input, router logits (and bias, shared expert) for a layer.
struct Problem {
    config: LayerConfig,
    weights: ExpertWeights,
    shared: Option<ExpertWeights>,
    x: Vec<f32>,
    logits: Vec<f32>,
    /// The seed the weights were drawn from: the reference draws them again, unquantized.
    seed: u64,
}

/// Host bytes a `run` holds per routed-expert weight: the f32 dense draw, the quantized
/// copy, the emulation's f32 experts and the f64 reference's bf16 copy and f32 dequant.
const RUN_BYTES_PER_WEIGHT: u64 = 16;

/// Refuses a `run` that cannot fit in this machine's available memory (Linux
/// `MemAvailable`), naming the figure and the `--experts` that would fit, before anything
/// is allocated.
fn check_memory(shape: ModelShape, tokens: usize, experts: Option<usize>) -> Result<()> {
    let config = match experts {
        Some(n) => shape.with_experts(n)?,
        None => shape.config(),
    };
    let per_expert = 3 * config.hidden as u64 * config.intermediate as u64 * RUN_BYTES_PER_WEIGHT;
    let per_token = (config.hidden as u64 * 32).saturating_add(config.num_experts as u64 * 8);
    let need = per_expert
        .saturating_mul(config.num_experts as u64)
        .saturating_add(per_token.saturating_mul(tokens as u64));
    let Some(avail) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }) else {
        return Ok(());
    };
    if need <= avail {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let fits = avail.saturating_sub(per_token.saturating_mul(tokens as u64)) / per_expert;
    Err(fleetmoe::Error::Config(format!(
        "this run needs about {:.1} GiB ({} experts × {:.2} GiB, {tokens} tokens × {:.1} KiB) and {:.1} GiB is available: {}",
        gib(need),
        config.num_experts,
        gib(per_expert),
        per_token as f64 / 1024.0,
        gib(avail),
        if fits == 0 {
            "fewer --tokens".to_string()
        } else {
            format!("pass --experts N with N ≤ {fits} (or fewer --tokens)")
        }
    )))
}

fn problem(
    shape: ModelShape,
    scheme: QuantScheme,
    tokens: usize,
    seed: u64,
    experts: Option<usize>,
) -> Result<Problem> {
    let mut config = match experts {
        Some(n) => shape.with_experts(n)?,
        None => shape.config(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if let Routing::Grouped {
        correction_bias: Some(b),
        ..
    } = &mut config.routing
    {
        *b = gaussian(&mut rng, b.len(), 0.1);
    }
    let x = gaussian(&mut rng, tokens * config.hidden, 1.0);
    let logits = gaussian(&mut rng, tokens * config.num_experts, 1.0);
    let mut weights = ExpertWeights::quantize(&DenseExperts::random(&config, seed + 1), scheme)?;
    let topk = Router::new(&config)?.route(&logits, tokens)?;
    calibrate(&mut weights, &config, &x, &topk)?;
    let shared = match config.shared_intermediate {
        Some(i) => {
            let one = LayerConfig {
                num_experts: 1,
                top_k: 1,
                intermediate: i,
                routing: Routing::Given,
                shared_intermediate: None,
                ..config.clone()
            };
            let mut w = ExpertWeights::quantize(&DenseExperts::random(&one, seed + 2), scheme)?;
            calibrate(&mut w, &one, &x, &everyone_to_expert_0(tokens)?)?;
            Some(w)
        }
        None => None,
    };
    Ok(Problem {
        config,
        weights,
        shared,
        x,
        logits,
        seed,
    })
}

/// Every token to expert 0 with weight 1: the shared expert as a one-expert layer.
fn everyone_to_expert_0(tokens: usize) -> Result<TopK> {
    TopK::new(tokens, 1, vec![0; tokens], vec![1.0; tokens], 1)
}

/// The f64 output of the routed (and shared) experts; `truth` uses the weights as drawn,
/// before quantization (rounded to bf16, as a bf16 checkpoint holds them), and exact
/// activations: what the scheme costs, its weight error included.
fn reference(p: &Problem, topk: &TopK, truth: bool) -> Result<Vec<f64>> {
    let f64_of =
        |w: &ExpertWeights, config: &LayerConfig, topk: &TopK, seed: u64| -> Result<Vec<f64>> {
            if truth {
                let bf16 = ExpertWeights::quantize(
                    &DenseExperts::random(config, seed),
                    QuantScheme::Unquantized(FloatDtype::Bf16),
                )?;
                forward_f64(&bf16, config, &p.x, topk, false)
            } else {
                forward_f64(w, config, &p.x, topk, true)
            }
        };
    let mut out = f64_of(&p.weights, &p.config, topk, p.seed + 1)?;
    if let (Some(w), Some(i)) = (&p.shared, p.config.shared_intermediate) {
        let one = LayerConfig {
            num_experts: 1,
            top_k: 1,
            intermediate: i,
            routing: Routing::Given,
            shared_intermediate: None,
            ..p.config.clone()
        };
        let s = f64_of(w, &one, &everyone_to_expert_0(topk.tokens())?, p.seed + 2)?;
        out.iter_mut().zip(s).for_each(|(o, v)| *o += v);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
/// Returns whether the forward matched its reference within the scheme's tolerance.
fn run(
    shape: &str,
    scheme: &str,
    tokens: usize,
    seed: u64,
    experts: Option<usize>,
    reps: usize,
    backend: Option<String>,
) -> Result<bool> {
    let shape = ModelShape::parse(shape)?;
    let scheme = QuantScheme::parse(scheme)?;
    if tokens == 0 {
        return Err(fleetmoe::Error::Config(
            "--tokens must be at least 1".into(),
        ));
    }
    check_memory(shape, tokens, experts)?;
    let started = Instant::now();
    let p = problem(shape, scheme, tokens, seed, experts)?;
    let c = &p.config;
    println!(
        "shape     {}: {} experts, top-{}, H {}, I {}, {}, {}{}{}",
        shape.name(),
        c.num_experts,
        c.top_k,
        c.hidden,
        c.intermediate,
        c.activation.name(),
        c.routing.name(),
        if c.has_bias { ", biases" } else { "" },
        c.shared_intermediate
            .map(|i| format!(", shared expert I {i}"))
            .unwrap_or_default(),
    );
    println!(
        "scheme    {scheme} ({:.1} MiB of expert weights)",
        p.weights.bytes_per_expert() as f64 * c.num_experts as f64 / (1 << 20) as f64
    );

    let target = Target::detect();
    let extras = LayerExtras {
        shared: p.shared.clone().map(|weights| SharedExpertWeights {
            weights,
            gate: None,
        }),
        lora: None,
        backend: backend.as_deref().map(BackendId::parse).transpose()?,
    };
    let layer = MoeLayer::new(c.clone(), &p.weights, &target, extras)?;
    println!("device    {}", target.capabilities());
    println!(
        "backend   {}{}",
        layer.selection().chosen,
        if layer.selection().is_fallback() {
            " (fallback; `fleetmoe explain` says why)"
        } else {
            ""
        }
    );
    if let Some(b) = layer.shared_backend() {
        println!("shared    {b}");
    }
    println!(
        "setup     {:.2} s (random weights, quantization, calibration, layout)",
        started.elapsed().as_secs_f64()
    );

    let routing = RoutingInput::Logits(&p.logits);
    let mut y = layer.forward(&p.x, routing, None)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        y = layer.forward(&p.x, routing, None)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!(
            "forward   {:.3} ms for {tokens} tokens (median of {reps}, after one warm-up)",
            median * 1e3
        );
    }

    let topk = Router::new(c)?.route(&p.logits, tokens)?;
    let same = rel_l2(&y, &reference(&p, &topk, false)?);
    let truth = rel_l2(&y, &reference(&p, &topk, true)?);
    println!("error     {same:.2e} rel L2 vs an f64 forward of the same quantized weights and activation rounding (parity tolerance {:.0e})", scheme.parity_tolerance());
    println!("          {truth:.2e} rel L2 vs an f64 forward of the weights before quantization (bf16) with exact activations (the cost of {scheme})");
    let within = same <= scheme.parity_tolerance();
    if !within {
        eprintln!("FAIL: the forward is off its own reference by more than the scheme's tolerance");
    }
    Ok(within)
}
