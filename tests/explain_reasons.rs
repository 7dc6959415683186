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

#[test]
fn nvfp4_w4a4_has_no_native_backend_anywhere_said_once() {
    let (_, out) = explain(&["--platform", "b200", "--scheme", "nvfp4"]);
    assert!(
        out.contains(
            "backend   emulation (fallback: nvfp4 has no native backend on any platform yet; \
             it runs emulated)"
        ),
        "{out}"
    );
    assert!(
        out.contains("missing   NVFP4 W4A4 (fp4 activations) not implemented yet ("),
        "{out}"
    );
    assert_eq!(out.matches("not implemented yet").count(), 1, "{out}");
    assert!(!out.contains("does not run"), "{out}");
    // Each CUDA backend says what it runs instead.
    assert!(
        line(&out, "cuda-nvfp4-w4a16").contains("runs only nvfp4-a16"),
        "{out}"
    );
    assert!(
        line(&out, "cuda-bf16").contains("runs only bf16 / f16"),
        "{out}"
    );
}

#[test]
fn act_order_is_named_as_not_implemented_natively() {
    let (_, out) = explain(&["--platform", "h200", "--scheme", "w4a16-actorder"]);
    assert!(
        out.contains("fallback: w4a16-actorder has no native backend on any platform yet"),
        "{out}"
    );
    let missing = out
        .lines()
        .find(|l| l.starts_with("missing"))
        .unwrap_or_else(|| panic!("no missing line in:\n{out}"));
    assert!(
        missing.contains("GPTQ act-order (g_idx) not implemented yet")
            && missing.contains("natively")
            && missing.contains("permute K at load time"),
        "{out}"
    );
    assert!(
        line(&out, "cuda-marlin").contains("runs only int4 / int8 weight-only"),
        "{out}"
    );
    assert!(!out.contains("does not run"), "{out}");
}

#[test]
fn lora_on_amd_is_named_on_every_aiter_backend() {
    let (_, out) = explain(&["--platform", "mi300x", "--scheme", "fp8", "--lora"]);
    // The fallback line names the work: aiter-fp8 fits but for LoRA.
    assert!(
        out.contains(
            "backend   emulation (fallback: aiter-fp8 would run this but for LoRA on the \
             AITER (AMD) backends (not implemented yet))"
        ),
        "{out}"
    );
    for backend in [
        "aiter-mx-native",
        "aiter-fp8-block128",
        "aiter-fp8",
        "aiter-mxfp4",
        "aiter-bf16",
    ] {
        assert!(
            line(&out, backend).contains("LoRA on the AITER (AMD) backends not implemented yet"),
            "{backend}:\n{out}"
        );
    }
    // aiter-fp8 runs fp8 on gfx942: LoRA (and, without `rocm`, the build) is all it lacks.
    let fp8 = line(&out, "aiter-fp8");
    assert!(!fp8.contains("runs only"), "{out}");
    assert_eq!(
        fp8.contains("built without feature `rocm`: rebuild with --features rocm"),
        !cfg!(feature = "rocm"),
        "{out}"
    );
    // A rebuild would not help, so the fallback line does not suggest one.
    assert!(!out.contains("would choose"), "{out}");

    // Without LoRA the same layer runs natively, or would in a rocm build.
    let (_, out) = explain(&["--platform", "mi300x", "--scheme", "fp8"]);
    if cfg!(feature = "rocm") {
        assert!(out.contains("backend   aiter-fp8"), "{out}");
    } else {
        assert!(
            out.contains("fallback: a build with --features rocm would choose aiter-fp8"),
            "{out}"
        );
    }
}
