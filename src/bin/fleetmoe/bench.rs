//! `fleetmoe bench`: the experts of real model shapes timed against the roofline floor,
//! on the GPU (with the peers measured on that GPU) or, with `--cpu`, the emulation on
//! this host; `--plot FILE.svg` draws the table (`fleetmoe::bench::plot`).

use crate::progress;
use crate::{list, BenchArgs};
use fleetmoe::bench::BenchRow;
use fleetmoe::moe::shapes::ModelShape;
use fleetmoe::quant::QuantScheme;
use fleetmoe::Result;

/// The cells a run times: shapes × schemes (DeepSeek-V3 in fp8 only) and the M list.
pub struct Cells {
    pub pairs: Vec<(ModelShape, QuantScheme)>,
    pub tokens: Vec<usize>,
}

impl Cells {
    pub fn of(args: &BenchArgs) -> Result<Cells> {
        let shapes = list(&args.shapes, ModelShape::parse)?;
        let schemes = list(&args.schemes, QuantScheme::parse)?;
        let tokens = list(&args.tokens, crate::token_count)?;
        let pairs = shapes
            .iter()
            .flat_map(|&shape| schemes.iter().map(move |&scheme| (shape, scheme)))
            .filter(|(shape, scheme)| {
                *shape != ModelShape::DeepseekV3 || matches!(scheme, QuantScheme::Fp8 { .. })
            })
            .collect();
        Ok(Cells { pairs, tokens })
    }
}

/// Prints one shape × scheme's rows (or why it did not run, which does not stop the
/// table) and keeps them for the plot.
pub fn report(
    args: &BenchArgs,
    shape: ModelShape,
    scheme: QuantScheme,
    timed: Result<Vec<BenchRow>>,
    all: &mut Vec<BenchRow>,
) -> Result<()> {
    match timed {
        Ok(rows) => {
            for r in &rows {
                progress::println(&if args.json { r.json() } else { r.line() })?;
            }
            all.extend(rows);
        }
        Err(e) if args.json => progress::println(
            &serde_json::json!({
                "shape": shape.name(),
                "scheme": scheme.to_string(),
                "error": e.to_string(),
            })
            .to_string(),
        )?,
        Err(e) => eprintln!("{} {scheme}: not run: {e}", shape.name()),
    }
    Ok(())
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let (rows, device) = if args.cpu {
        crate::bench_cpu::bench(args)?
    } else {
        gpu(args)?
    };
    if let Some(path) = &args.plot {
        let title = format!(
            "fleetmoe bench on {device}: time ÷ floor (peers dashed), {}",
            utc_date()
        );
        let svg = fleetmoe::bench::plot::roofline_svg(&rows, &title);
        std::fs::write(path, svg).map_err(|e| fleetmoe::Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        if !args.json {
            outln!("plot      {} ({} cells)", path.display(), rows.len());
        }
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, for the plot's title: the figures carry their date.
fn utc_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(feature = "cuda")]
fn gpu(args: &BenchArgs) -> Result<(Vec<BenchRow>, String)> {
    use fleetmoe::backends::cuda::bench::{bench_shape, copy_bandwidth};
    use fleetmoe::bench::{peers, roofline::Ceilings};
    use fleetmoe::moe::Target;
    let cells = Cells::of(args)?;
    let target = Target::cuda(0)?;
    let dev = target.cuda_device().expect("a CUDA target has a device");
    let name = &target.capabilities().name;
    let copy = copy_bandwidth(dev)?;
    let ceilings = Ceilings::for_device(name, copy, args.bf16_tflops, args.fp8_tflops)?;
    if !args.json {
        outln!("{}", target.capabilities());
        outln!("ceilings: {}", ceilings.describe());
        outln!("copy measured now: {:.2} TB/s", copy / 1e12);
        outln!("floor = max(weight bytes of the experts hit / copy, 2*M*k*3*H*I / matrix rate)");
        outln!(
            "{}",
            peers::source(name).unwrap_or("no peer figures measured on this GPU")
        );
        outln!("{}", BenchRow::header());
    }
    let mut all = Vec::new();
    let mut bar = progress::bar("bench", cells.pairs.len());
    for &(shape, scheme) in &cells.pairs {
        // A shape a scheme cannot take (GPT-OSS's 2880 in groups of 128, say) is
        // reported and the rest of the table still runs.
        let timed = {
            bar.working_on(format!(
                "{} {scheme}: preparing and timing M = {}",
                shape.name(),
                args.tokens
            ));
            bench_shape(
                dev,
                &ceilings,
                shape,
                scheme,
                &cells.tokens,
                args.reps,
                args.lora.map(|rank| (rank, args.adapters as usize)),
                args.api,
                args.per_expert_scales,
            )
        };
        bar.inc();
        report(args, shape, scheme, timed, &mut all)?;
    }
    Ok((all, name.clone()))
}

#[cfg(not(feature = "cuda"))]
fn gpu(args: &BenchArgs) -> Result<(Vec<BenchRow>, String)> {
    Cells::of(args)?;
    Err(fleetmoe::Error::NoDevice(
        "`bench` times the GPU backends: build with `--features cuda` and run on an NVIDIA \
         GPU, or pass --cpu to time the emulation on this host"
            .into(),
    ))
}
