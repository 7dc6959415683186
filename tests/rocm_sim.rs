//! The AMD path end to end on the CPU: `kernels-hip/sim/fakehip.cpp` stands in for the HIP
//! runtime and runs the kernels through a software simulator (one host thread per lane,
//! matrix instructions computed from the lane layouts the kernels assume). `HipDevice`,
//! `HipExperts`, the layouts, the launch sequence and the kernels' logic then run as on a
//! GPU, and the layer's output is compared with the emulation. What this cannot check is
//! the hardware itself (its MFMA lane layouts, the runtime's behaviour): no AMD GPU has run
//! this code. Needs clang++ (clang-22) to build the stand-in; skipped with a message
//! otherwise.
#![cfg(feature = "rocm")]

mod common;

use fleetmoe::backends::rocm::fnuz;
use fleetmoe::device::hip::HipDevice;
use fleetmoe::device::Device;
use fleetmoe::moe::{Activation, LayerConfig, LayerExtras, MoeLayer, RoutingInput, Target};
use fleetmoe::oracle::BackendId;
use fleetmoe::quant::{DenseExperts, ExpertWeights, Fp8Flavor, QuantScheme, WeightData};
use std::path::{Path, PathBuf};
use std::process::Command;

fn clang() -> Option<String> {
    ["clang++-22", "clang++"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

fn build_stand_in(clang: &str, gfx: u32, dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join(format!("libfakehip-{gfx}.so"));
    let o = Command::new(clang)
        .args([
            "-std=c++20",
            "-O2",
            "-shared",
            "-fPIC",
            "-Wno-psabi",
            "-DFM_SIM",
        ])
        .arg(format!("-DFM_SIM_GFX={gfx}"))
        .arg("-I")
        .arg(root.join("kernels-hip"))
        .arg(root.join("kernels-hip/sim/fakehip.cpp"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run clang++");
    assert!(
        o.status.success(),
        "the HIP stand-in failed to build:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The checkpoint re-read as e4m3fnuz (exact for the weights) with activations quantized
/// natively in e4m3fnuz: what gfx942 would compute had it not kept the e4m3fn rule.
fn as_fnuz(w: &ExpertWeights) -> ExpertWeights {
    let mut f = w.clone();
    if let QuantScheme::Fp8 { flavor, .. } = &mut f.scheme {
        *flavor = Fp8Flavor::E4M3Fnuz;
    }
    for t in [&mut f.w13, &mut f.w2] {
        if let WeightData::Fp8 { codes, scales } = &mut t.data {
            fnuz::fn_to_fnuz(codes, scales).unwrap();
        }
    }
    if let Some(s) = &mut f.input_scales {
        s.w13 = fnuz::fn_to_fnuz_input_scale(s.w13).unwrap();
        s.w2 = fnuz::fn_to_fnuz_input_scale(s.w2).unwrap();
    }
    f
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    common::rel_l2(a, &b64)
}

#[test]
fn the_amd_layer_on_the_simulator_matches_the_emulation() {
    let Some(clang) = clang() else {
        println!("skipped: no clang++ to build the HIP stand-in (install clang-22)");
        return;
    };
    if !fleetmoe::backends::rocm::kernels::built() {
        println!(
            "skipped: this build embeds no HIP code objects ({})",
            fleetmoe::backends::rocm::kernels::BUILD_NOTE
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(u32, &str, Activation, BackendId)] = &[
        (942, "bf16", Activation::SiluAndMul, BackendId::AiterBf16),
        (942, "f16", Activation::GeluAndMul, BackendId::AiterBf16),
        (942, "fp8", Activation::SiluAndMul, BackendId::AiterFp8),
        (
            942,
            "fp8-channel",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            942,
            "fp8-static",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            942,
            "fp8-block128",
            Activation::SiluAndMul,
            BackendId::AiterFp8Block128,
        ),
        (942, "mxfp4", Activation::GPT_OSS, BackendId::AiterMxfp4),
        (
            950,
            "fp8-channel",
            Activation::SiluAndMul,
            BackendId::AiterFp8,
        ),
        (
            950,
            "fp8-block128",
            Activation::SiluAndMul,
            BackendId::AiterFp8Block128,
        ),
        (950, "mxfp4", Activation::GPT_OSS, BackendId::AiterMxfp4),
        (
            950,
            "mxfp4-a-mxfp4",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp4-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp6-e3m2",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
        (
            950,
            "mxfp6-e2m3-a-fp8",
            Activation::SiluAndMul,
            BackendId::AiterMxNative,
        ),
    ];
    let mut libs = std::collections::HashMap::new();
    for &(gfx, name, act, want) in cases {
        let lib = libs
            .entry(gfx)
            .or_insert_with(|| build_stand_in(&clang, gfx, dir.path()))
            .clone();
        // SAFETY (edition 2021: safe): this test is the only one in its binary that reads it.
        std::env::set_var("FLEETMOE_HIP_LIB", &lib);
        let target = Target::hip(0).expect("the stand-in opens as an AMD GPU");
        assert_eq!(target.capabilities().arch, format!("gfx{gfx}"));
        let config = LayerConfig {
            activation: act,
            has_bias: act == Activation::GPT_OSS,
            ..LayerConfig::new(4, 2, 128, 256)
        };
        let dense = DenseExperts::random(&config, 21);
        let mut w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
        let mut rng = common::rng(3);
        let tokens = 6;
        let x = common::uniform(&mut rng, tokens * config.hidden, 1.5);
        let topk = common::random_topk(&mut rng, tokens, config.top_k, config.num_experts);
        if w.scheme.needs_static_input_scales() {
            fleetmoe::moe::calibrate(&mut w, &config, &x, &topk).unwrap();
        }
        let layer = MoeLayer::new(config.clone(), &w, &target, LayerExtras::default()).unwrap();
        assert_eq!(layer.selection().chosen, want, "{name} on gfx{gfx}");
        let got = layer.forward(&x, RoutingInput::TopK(&topk), None).unwrap();
        let emulate = |w: &ExpertWeights| {
            MoeLayer::new(config.clone(), w, &Target::cpu(), LayerExtras::default())
                .unwrap()
                .forward(&x, RoutingInput::TopK(&topk), None)
                .unwrap()
        };
        let reference = emulate(&w);
        let err = rel(&got, &reference);
        let tol = w.scheme.parity_tolerance();
        println!("{name} gfx{gfx}: rel L2 {err:.2e} vs emulation (tolerance {tol:.0e})");
        assert!(
            reference.iter().any(|v| *v != 0.0),
            "{name}: an all-zero reference"
        );
        assert!(err < tol, "{name} gfx{gfx}: rel L2 {err:e} > {tol:e}");
        if gfx == 942 && matches!(w.scheme, QuantScheme::Fp8 { .. }) {
            // What quantizing the activations natively in e4m3fnuz (amax / 240, as
            // AITER does) would have cost instead: reported, not used.
            let native = rel(&emulate(&as_fnuz(&w)), &reference);
            println!("  (native e4m3fnuz activations would differ by {native:.2e})");
        }
    }
    // gfx90a: a device, but no AITER backend runs there.
    std::env::set_var("FLEETMOE_HIP_LIB", build_stand_in(&clang, 90, dir.path()));
    let dev = HipDevice::new(0).unwrap();
    let caps = dev.capabilities();
    assert_eq!(
        (caps.arch.as_str(), caps.fp8, caps.supports_mx),
        ("gfx90a", None, false)
    );
}
