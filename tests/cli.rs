//! The `fleetmoe` binary: `run` prints backend, time and error and passes its own check;
//! `explain` prints a decision with reasons; bad arguments fail with a message.

use std::process::{Command, Output};

fn fleetmoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .args(args)
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
