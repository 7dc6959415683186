//! `fleetmoe explain` gives a concrete reason for every backend it turns down (issue 19):
//! what is not implemented yet, on no platform or on this vendor's backends, rather than
//! "does not run scheme X".

use std::process::{Command, Output};

fn explain(args: &[&str]) -> (Output, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fleetmoe"))
        .arg("explain")
        .args(args)
        .output()
        .expect("the fleetmoe binary runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(0),
        "explain {args:?}: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (o, out)
}

/// The turned-down line of `backend`.
fn line<'a>(out: &'a str, backend: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{backend} ")))
        .unwrap_or_else(|| panic!("no line for {backend} in:\n{out}"))
}

/// The backend line of a CUDA scheme: chosen with feature `cuda`, named as the one a
/// rebuild would choose without it.
fn assert_cuda_chooses(out: &str, backend: &str) {
    if cfg!(feature = "cuda") {
        assert!(out.contains(&format!("backend   {backend}\n")), "{out}");
    } else {
        assert!(
            out.contains(&format!(
                "fallback: a build with --features cuda would choose {backend}"
            )),
            "{out}"
        );
    }
    assert!(!out.contains("no native backend"), "{out}");
    assert!(!out.contains("does not run"), "{out}");
}

#[test]
fn nvfp4_w4a4_runs_on_the_nvfp4_path_on_every_nvidia_preset() {
    // Issue 18: QDQ of the activations to bf16 (exact) + the NVFP4 weight-only GEMM; the
    // A100 (sm_80) is in tests/oracle.rs, which builds capabilities by hand.
    for platform in ["h100", "h200", "b200"] {
        let (_, out) = explain(&["--platform", platform, "--scheme", "nvfp4"]);
        assert_cuda_chooses(&out, "cuda-nvfp4-w4a16");
        // What the faster backends run instead is still said.
        assert!(line(&out, "cuda-fp8").contains("runs only fp8"), "{out}");
    }
}

#[test]
fn act_order_runs_on_cuda_marlin() {
    // Issue 18: K sorted by group at load time, activations gathered in that order.
    for platform in ["h100", "h200", "b200"] {
        let (_, out) = explain(&["--platform", platform, "--scheme", "w4a16-actorder"]);
        assert_cuda_chooses(&out, "cuda-marlin");
        assert!(
            line(&out, "cuda-nvfp4-w4a16").contains("runs only nvfp4-a16"),
            "{out}"
        );
    }
}

#[test]
fn lora_on_amd_runs_on_the_aiter_backends() {
    // The AITER backends take LoRA (kernels-hip/lora.hip): with --lora the choice on an
    // MI300X is the one without it, and no aiter line names LoRA as missing work.
    let (_, with) = explain(&["--platform", "mi300x", "--scheme", "fp8", "--lora"]);
    let (_, without) = explain(&["--platform", "mi300x", "--scheme", "fp8"]);
    let backend = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("backend"))
            .unwrap_or_else(|| panic!("no backend line in:\n{out}"))
            .to_string()
    };
    assert_eq!(backend(&with), backend(&without), "{with}");
    assert!(!with.contains("LoRA"), "{with}");
    if cfg!(feature = "rocm") {
        assert!(with.contains("backend   aiter-fp8"), "{with}");
    } else {
        assert!(
            with.contains("fallback: a build with --features rocm would choose aiter-fp8"),
            "{with}"
        );
    }
}
