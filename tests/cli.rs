//! The `fleetmoe` binary: `run` prints backend, time and error and passes its own check;
//! `explain` prints a decision with reasons; bad arguments fail with a message.

use std::process::{Command, Output};

fn fleetmoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(args)
        .output()
        .expect("the fleetmoe binary runs")
}

/// The binary with extra environment variables.
fn fleetmoe_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the fleetmoe binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_prints_backend_time_and_error() {
    let o = fleetmoe(&["run", "--tokens", "4", "--reps", "1"]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for field in [
        "shape     small",
        "backend   emulation",
        "forward ",
        "rel L2 vs an f64 forward",
    ] {
        assert!(out.contains(field), "missing '{field}' in:\n{out}");
    }
}

#[test]
fn run_calibrates_schemes_with_static_input_scales() {
    let o = fleetmoe(&["run", "--scheme", "nvfp4", "--tokens", "4", "--reps", "1"]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("scheme    nvfp4"), "{out}");
}

#[test]
fn explain_gives_the_decision_and_reasons() {
    let o = fleetmoe(&[
        "explain",
        "--platform",
        "mi300x",
        "--scheme",
        "fp8-block128",
    ]);
    let out = stdout(&o);
    assert!(o.status.success());
    if cfg!(feature = "rocm") {
        // A rocm build runs it natively, converting the checkpoint to e4m3fnuz.
        assert!(
            out.contains("backend   aiter-fp8-block128") && out.contains("e4m3fnuz"),
            "{out}"
        );
        return;
    }
    assert!(
        out.contains("backend   emulation")
            && out.contains("turned down")
            && out
                .lines()
                .any(|l| l.trim_start().starts_with("aiter-fp8-block128 ") && l.len() > 30),
        "{out}"
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let o = fleetmoe(&["run", "--scheme", "fp7"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown quantization scheme 'fp7'"));
    let o = fleetmoe(&["explain", "--platform", "tpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown platform"));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Flags that the chosen mode would ignore are refused, not dropped (issue 19).
#[test]
fn flags_a_mode_would_ignore_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, says) in [
        (
            vec!["run", "--model", d, "--scheme", "nope"],
            "cannot be used with",
        ),
        (
            vec!["run", "--model", d, "--experts", "0"],
            "cannot be used with",
        ),
        (vec!["run", "--layer", "1"], "--model"),
        (vec!["run", "--lora", d], "--model"),
        (vec!["run", "--reps", "0"], "--reps"),
    ] {
        let o = fleetmoe(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

/// `--experts` beyond the model, or that its routing cannot split, says which counts work.
#[test]
fn expert_counts_that_cannot_work_name_the_ones_that_do() {
    let o = fleetmoe(&["run", "--shape", "mixtral-8x7b", "--experts", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mixtral-8x7b has 8 routed experts")
            && stderr(&o).contains("counts that work: 2, 3, 4, 5, 6, 7, 8)"),
        "{}",
        stderr(&o)
    );
    let o = fleetmoe(&["run", "--shape", "deepseek-v3", "--experts", "8"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("--experts 8 does not fit deepseek-v3")
            && e.contains("counts that work: 16, 24, 32"),
        "{e}"
    );
}

/// A run larger than the machine is refused before anything is allocated, with the figure.
#[test]
fn a_run_too_large_for_memory_is_refused_with_its_size() {
    let o = fleetmoe(&["run", "--tokens", "99999999999999"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("this run needs about") && stderr(&o).contains("GiB is available"),
        "{}",
        stderr(&o)
    );
}

/// `fleetmoe info | head -1`: a reader that leaves early is not a panic.
#[test]
fn info_into_a_closed_pipe_does_not_panic() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .arg("info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is dropped here: the rest of info's output meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&first, b"fleetmoe");
}

/// The second error line of `run` (the scheme's cost against the unquantized weights).
fn cost(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains("the cost of"))
        .unwrap_or_else(|| panic!("no cost line in:\n{out}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// `run`'s cost line measures against the weights before quantization: 4-bit weights
/// cost many times what bf16 does (it once compared against the quantized weights
/// themselves and printed nearly the same figure for both).
#[test]
fn the_cost_of_a_scheme_includes_its_weight_error() {
    let of = |scheme: &str| {
        let o = fleetmoe(&["run", "--scheme", scheme, "--tokens", "4", "--reps", "1"]);
        assert!(o.status.success(), "{}", stdout(&o));
        cost(&stdout(&o))
    };
    let (bf16, mxfp4, w4a16) = (of("bf16"), of("mxfp4"), of("w4a16"));
    assert!(mxfp4 > 5.0 * bf16, "mxfp4 {mxfp4:.2e} vs bf16 {bf16:.2e}");
    assert!(w4a16 > 5.0 * bf16, "w4a16 {w4a16:.2e} vs bf16 {bf16:.2e}");
}

/// `bench --json` speaks JSON even when it cannot run (here: no GPU, or a build without
/// `cuda`): one object with an `error` on stdout, and a non-zero exit.
#[test]
fn bench_json_reports_failure_as_json() {
    let o = fleetmoe(&["bench", "--json", "--tokens", "1", "--reps", "1"]);
    let out = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"));
    assert!(!o.status.success(), "{out}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{out}");
}

#[test]
fn parity_on_the_cpu_checks_every_scheme_against_the_f64_reference() {
    let schemes = "bf16,fp8-block128,mxfp4,w4a16-g64-zp";
    let o = fleetmoe(&[
        "parity",
        "--shapes",
        "small",
        "--schemes",
        schemes,
        "--tokens",
        "1,7",
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for scheme in schemes.split(',') {
        let rows = out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(scheme))
            .collect::<Vec<_>>();
        assert_eq!(rows.len(), 2, "{scheme}: one row per M in:\n{out}");
        assert!(
            rows.iter()
                .all(|r| r.contains("emulation") && r.contains(" ok ")),
            "{out}"
        );
    }
    assert!(out.contains("ok: 8 passed, 0 failed"), "{out}");
    // Piped, nothing is drawn: no spinner frames on stderr.
    assert!(stderr(&o).trim().is_empty(), "stderr: {}", stderr(&o));
}

#[test]
fn parity_json_is_one_object_per_cell_and_a_summary() {
    let o = fleetmoe(&[
        "parity",
        "--json",
        "--shapes",
        "small,gpt-oss-120b",
        "--experts",
        "4",
        "--schemes",
        "w4a16",
        "--tokens",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    // small checks; GPT-OSS's 2880 is no multiple of 128, so no checkpoint holds w4a16
    // there: skipped, not failed.
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["ok"], true);
    assert!(
        lines[1]["skipped"].as_str().unwrap().contains("group"),
        "{lines:?}"
    );
    assert_eq!(lines[2]["passed"], 1);
    assert_eq!(lines[2]["skipped"], 1);
    assert_eq!(lines[2]["ok"], true);
}

#[test]
fn parity_refuses_bad_arguments_with_a_message() {
    for (args, needle) in [
        (&["parity", "--tokens", "0"][..], "token count"),
        (&["parity", "--schemes", "nope"][..], "nope"),
        (
            &["parity", "--model", "/nonexistent-dir"][..],
            "nonexistent-dir",
        ),
        (
            &["parity", "--model", "/tmp", "--schemes", "bf16"][..],
            "cannot be used with",
        ),
    ] {
        let o = fleetmoe(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn bench_cpu_times_the_emulation_and_plots_the_roofline() {
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("roofline.svg");
    let svg_arg = svg_path.to_str().unwrap();
    let o = fleetmoe(&[
        "bench",
        "--cpu",
        "--shapes",
        "small",
        "--schemes",
        "bf16,fp8",
        "--tokens",
        "1,8",
        "--reps",
        "1",
        "--plot",
        svg_arg,
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("small ")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    for r in &rows {
        let f: Vec<&str> = r.split_whitespace().collect();
        assert_eq!(f[3], "emulation", "{r}");
        let (us, floor): (f64, f64) = (f[4].parse().unwrap(), f[5].parse().unwrap());
        assert!(us > 0.0 && floor > 0.0, "{r}");
    }
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed SVG");
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert_eq!(lines, 2, "one line per scheme:\n{svg}");
    assert!(svg.contains("time ÷ floor"));
}

#[test]
fn bench_flags_that_do_not_fit_the_mode_are_refused() {
    for (args, needle) in [
        (
            &["bench", "--cpu", "--lora", "16"][..],
            "cannot be used with",
        ),
        (&["bench", "--experts", "4"][..], "--cpu"),
        (&["bench", "--cpu", "--tokens", "0"][..], "token count"),
    ] {
        let o = fleetmoe(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn explain_into_a_closed_pipe_does_not_panic() {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(["explain", "--platform", "h200", "--scheme", "fp8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
}

/// The features this test binary (and so the `fleetmoe` binary beside it) was built with.
fn features() -> String {
    let on: Vec<&str> = [
        ("cuda", cfg!(feature = "cuda")),
        ("rocm", cfg!(feature = "rocm")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("faults", cfg!(feature = "faults")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    if on.is_empty() {
        "none (CPU emulation only)".into()
    } else {
        on.join(", ")
    }
}

/// `info` names every feature of the build (it said `cuda` for a "cuda rocm" build,
/// `none` for rocm alone, and never named `faults`); a rocm build whose HIP code objects
/// were not built (no clang-22 when it was compiled) says in `info`, and under an AITER
/// choice in `explain`, that the AMD backends run emulated. Run it under each build:
/// `cargo test --test cli`, `--features rocm,faults` (with and without
/// `FLEETMOE_HIP_CLANG=none`), `--features cuda`.
#[test]
fn info_and_explain_tell_the_truth_about_the_build() {
    let o = fleetmoe(&["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = stdout(&o);
    assert_eq!(
        info.lines().next().unwrap(),
        format!(
            "fleetmoe {} (features: {})",
            env!("CARGO_PKG_VERSION"),
            features()
        )
    );
    assert_eq!(
        info.contains("FLEETMOE_FAULT plants a bug"),
        cfg!(feature = "faults"),
        "{info}"
    );
    let emulated = cfg!(feature = "rocm") && !fleetmoe::backends::rocm::kernels::built();
    let caveat = "no HIP code objects";
    assert_eq!(info.contains(caveat), emulated, "{info}");
    if emulated {
        assert!(
            info.contains(fleetmoe::backends::rocm::kernels::BUILD_NOTE)
                && info.contains("aiter-* backends will run emulated")
                && info.contains("clang-22"),
            "{info}"
        );
    }
    let o = fleetmoe(&["explain", "--platform", "mi300x", "--scheme", "bf16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(
        out.contains("backend   aiter-bf16"),
        cfg!(feature = "rocm"),
        "{out}"
    );
    assert_eq!(out.contains(caveat), emulated, "{out}");
    if emulated {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("backend "))
            .unwrap();
        assert!(
            lines[at + 1].starts_with("caveat    this rocm build has no HIP code objects"),
            "the caveat sits under the choice:\n{out}"
        );
    }
    // An NVIDIA choice never carries it.
    let o = fleetmoe(&["explain", "--platform", "h100", "--scheme", "bf16"]);
    assert!(!stdout(&o).contains(caveat), "{}", stdout(&o));
}

/// The lines of `FLEETMOE_PROGRESS=lines` output that count: `what pos/len`.
fn counts(err: &str) -> Vec<String> {
    err.lines()
        .filter_map(|l| l.strip_prefix("progress  "))
        .filter(|l| {
            l.rsplit(' ').next().is_some_and(|c| {
                c.split_once('/')
                    .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
            })
        })
        .map(str::to_string)
        .collect()
}

/// The steps a person waits for count their work (position / length) where it can be
/// counted: random weights per expert matrix, each timed forward, each f64 reference, each
/// bench and parity cell. `FLEETMOE_PROGRESS=lines` writes the counts as lines (what a
/// terminal shows as bars); `--quiet` silences them, and a pipe without it gets nothing.
#[test]
fn progress_counts_the_work_a_person_waits_for() {
    let lines = [("FLEETMOE_PROGRESS", "lines")];
    let o = fleetmoe_env(&["run", "--tokens", "2", "--reps", "2"], &lines);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = counts(&stderr(&o));
    for want in [
        "random weights of 8 experts, matrix 1/16",
        "random weights of 8 experts, matrix 16/16",
        "forward: one warm-up and 2 timed 3/3",
        "f64 reference of the quantized weights 1/2",
        "f64 reference of the weights before quantization 2/2",
    ] {
        assert!(c.iter().any(|l| l == want), "no '{want}' in {c:#?}");
    }
    // Setup steps that are one library call show as steps, without a count.
    assert!(stderr(&o).contains("progress  quantizing to fp8, calibrating\n"));

    let o = fleetmoe_env(
        &[
            "bench",
            "--cpu",
            "--shapes",
            "small",
            "--schemes",
            "bf16,fp8",
            "--tokens",
            "1,4",
            "--reps",
            "1",
        ],
        &lines,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c = counts(&stderr(&o));
    let ends: Vec<&str> = c.iter().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(ends, ["1/4", "2/4", "3/4", "4/4"], "{c:#?}");
    assert_eq!(c[3], "small fp8: timing M = 4 4/4");

    let o = fleetmoe_env(
        &[
            "parity",
            "--shapes",
            "small",
            "--schemes",
            "bf16,w4a16",
            "--tokens",
            "2",
        ],
        &lines,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c = counts(&stderr(&o));
    assert_eq!(c.len(), 2, "{c:#?}");
    assert!(c[1].ends_with(" 2/2"), "{c:#?}");

    let o = fleetmoe_env(&["--quiet", "run", "--tokens", "2", "--reps", "1"], &lines);
    assert!(o.status.success());
    assert!(stderr(&o).trim().is_empty(), "--quiet: {}", stderr(&o));
    let o = fleetmoe(&["run", "--tokens", "2", "--reps", "1"]);
    assert!(stderr(&o).trim().is_empty(), "piped: {}", stderr(&o));
}

/// `--tokens 0` is a bad argument (exit 2, the flag named), not "an invalid layer
/// configuration", in both modes of `run`.
#[test]
fn zero_tokens_is_a_usage_error() {
    for args in [
        &["run", "--tokens", "0"][..],
        &["run", "--model", "/nonexistent", "--tokens", "0"][..],
    ] {
        let o = fleetmoe(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("invalid value '0' for '--tokens")
                && !stderr(&o).contains("layer configuration"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// `run --model` checks the size from `config.json` before it loads or allocates (a
/// token count that cannot fit once aborted on a failed allocation).
#[test]
fn a_model_run_too_large_for_memory_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["MixtralForCausalLM"], "num_local_experts": 8,
            "num_experts_per_tok": 2, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 2}"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = fleetmoe(&["run", "--model", d, "--tokens", "99999999999"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("this run needs about")
            && stderr(&o).contains("GiB is available: fewer --tokens"),
        "{}",
        stderr(&o)
    );
}

/// `fleetmoe run | head -3` and the like: every command's results go through one writer
/// that treats a reader gone away as the end, not a panic (`run`, `bench`, `parity`
/// once panicked in `println!`).
#[test]
fn results_into_a_closed_pipe_do_not_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    for args in [
        &["run", "--tokens", "2", "--reps", "1"][..],
        &[
            "bench",
            "--cpu",
            "--shapes",
            "small",
            "--schemes",
            "bf16,fp8",
            "--tokens",
            "1,2",
            "--reps",
            "1",
        ][..],
        &[
            "parity",
            "--shapes",
            "small",
            "--schemes",
            "bf16,fp8",
            "--tokens",
            "1,2",
        ][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is gone: every later line meets a closed pipe.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.code().is_some(),
            "{args:?}: killed: {:?}",
            out.status
        );
        assert!(!first.is_empty(), "{args:?}");
    }
}
