//! The reason table: every refusal the backend declarations can produce is concrete, every
//! declared gap is reachable, and a gap shared by every backend is said once.

use super::*;
use crate::device::Capabilities;
use crate::moe::LayerConfig;
use crate::quant::QuantScheme;

fn native() -> impl Iterator<Item = &'static BackendSpec> {
    backends().iter().filter(|b| b.id != BackendId::Emulation)
}

fn scheme(name: &str) -> QuantScheme {
    QuantScheme::parse(name).unwrap()
}

#[test]
fn every_backend_says_what_it_runs() {
    for b in backends() {
        let runs = b.needs.runs;
        assert!(!runs.trim().is_empty() && runs != "nothing", "{}", b.id);
        // `runs` is the words for `schemes`: a backend that runs nothing is a table slip.
        assert!(
            QuantScheme::all_representative()
                .iter()
                .any(|s| (b.needs.schemes)(s).runs()),
            "{} runs none of the representative schemes",
            b.id
        );
    }
}

#[test]
fn every_gap_is_named_by_a_backend() {
    for gap in GAPS {
        let by_scheme = native().any(|b| {
            QuantScheme::all_representative()
                .iter()
                .any(|s| (b.needs.schemes)(s) == Fit::NotYet(gap))
        });
        let by_lora = native().any(|b| b.needs.lora == Support::NotYet(gap));
        assert!(by_scheme || by_lora, "no backend names gap '{}'", gap.what);
    }
}

#[test]
fn the_gaps_are_where_the_work_is_missing() {
    let fit = |id, s: &str| (spec(id).unwrap().needs.schemes)(&scheme(s));
    // Issue 18: NVFP4 W4A4 (QDQ + the NVFP4 weight path) and act-order (K permuted at
    // load time) are no longer gaps.
    assert_eq!(fit(BackendId::CudaNvfp4W4a16, "nvfp4"), Fit::Runs);
    assert_eq!(fit(BackendId::CudaNvfp4W4a16, "nvfp4-a16"), Fit::Runs);
    for s in [
        "w4a16-actorder",
        "w4a16-g64-actorder",
        "w8a16-channel-actorder",
    ] {
        assert_eq!(fit(BackendId::CudaMarlin, s), Fit::Runs, "{s}");
    }
    // A group Marlin's fragments cannot take is another kind, not work left to do.
    assert_eq!(fit(BackendId::CudaMarlin, "w4a16-g16-actorder"), Fit::Other);
    // Every native backend, AITER included, takes LoRA.
    for b in native() {
        assert_eq!(b.needs.lora, Support::Yes, "{}", b.id);
    }
}

#[test]
fn schemes_with_no_native_backend_anywhere() {
    let nowhere: Vec<String> = QuantScheme::all_representative()
        .iter()
        .filter(|s| NoNative::of(s).is_some())
        .map(ToString::to_string)
        .collect();
    // Since issue 18 (NVFP4 W4A4, act-order, INT8 W8A8 on CUDA) every scheme has one.
    assert!(nowhere.is_empty(), "{nowhere:?}");
    for s in ["nvfp4", "w4a16-actorder", "w8a8-int8"] {
        assert!(NoNative::of(&scheme(s)).is_none(), "{s}");
    }
}

#[test]
fn no_refusal_is_circular() {
    let layer = LayerConfig {
        lora: true,
        ..LayerConfig::new(8, 2, 256, 128)
    };
    for name in Capabilities::PRESETS {
        let caps = Capabilities::preset(name).unwrap();
        for s in QuantScheme::all_representative() {
            let sel = select(&s, &caps, &layer, None).unwrap();
            for r in &sel.rejected {
                let text = r.reasons();
                assert!(!text.contains("does not run"), "{}: {text}", r.backend);
                for u in &r.unmet {
                    if let Unmet::Scheme { runs, .. } = u {
                        assert_eq!(*runs, spec(r.backend).unwrap().needs.runs);
                    }
                }
            }
        }
    }
}

#[test]
fn the_issue_18_schemes_run_natively_on_nvidia() {
    // No gap is shared by every backend any more: NVFP4 W4A4, act-order and INT8 W8A8 run
    // natively (issue 18), so no fallback line names a scheme as native nowhere.
    let layer = LayerConfig::new(8, 2, 256, 128);
    for (s, id) in [
        ("nvfp4", BackendId::CudaNvfp4W4a16),
        ("w4a16-actorder", BackendId::CudaMarlin),
        ("w8a8-int8", BackendId::CudaW8a8Int8),
    ] {
        for caps in [Capabilities::h100(), Capabilities::b200()] {
            let sel = select(&scheme(s), &caps, &layer, None).unwrap();
            assert!(sel.no_native.is_none(), "{s}");
            let own = spec(id).unwrap().needs.assess(&scheme(s), &caps, &layer);
            assert!(own.unmet.iter().all(Unmet::is_availability), "{s}: {own:?}");
            assert!(!sel.to_string().contains("no native backend"), "{sel}");
        }
    }
    // NVFP4 W4A4 on a B200 is the sm_80 path; its fp4 tensor cores are not used yet.
    let cuda = spec(BackendId::CudaNvfp4W4a16).unwrap();
    assert!(cuda.needs.runs.contains("sm_100's fp4 tensor cores"));
}

#[test]
fn wgpu_is_portable_runs_every_scheme_and_comes_just_before_emulation() {
    let ids: Vec<BackendId> = backends().iter().map(|b| b.id).collect();
    assert_eq!(ids[ids.len() - 2], BackendId::Wgpu);
    let wgpu = spec(BackendId::Wgpu).unwrap();
    assert_eq!(wgpu.needs.hardware, Hardware::Portable);
    assert_eq!(wgpu.needs.lora, Support::Yes);
    for s in QuantScheme::all_representative() {
        assert_eq!((wgpu.needs.schemes)(&s), Fit::Runs, "{s}");
    }
    // On every preset but a wgpu adapter, the one reason is the device.
    let layer = LayerConfig::new(8, 2, 256, 128);
    for name in Capabilities::PRESETS {
        let caps = Capabilities::preset(name).unwrap();
        let a = wgpu.needs.assess(&scheme("fp8"), &caps, &layer);
        let foreign = a.unmet.iter().any(Unmet::is_vendor);
        assert_eq!(
            foreign,
            caps.vendor != crate::device::Vendor::Other,
            "{name}"
        );
        assert!(
            a.unmet.iter().all(|u| u.is_vendor() || u.is_availability()),
            "{name}: {a:?}"
        );
    }
}

#[test]
fn amd_integer_weight_only_and_gfx90a_run_natively() {
    let layer = LayerConfig::new(8, 2, 256, 128);
    // What a `--features rocm` build chooses: the first backend held back only by what
    // this build has.
    let pick = |s: &str, caps: &Capabilities| {
        let sel = select(&scheme(s), caps, &layer, None).unwrap();
        let built = sel
            .rejected
            .iter()
            .find(|r| r.unmet.iter().all(Unmet::is_availability))
            .map_or(sel.chosen, |r| r.backend);
        (built, sel)
    };
    for caps in [
        Capabilities::mi250x(),
        Capabilities::mi300x(),
        Capabilities::mi355x(),
    ] {
        for s in ["w4a16", "w4a16-g32-zp", "w4a16-actorder", "w8a16-channel"] {
            let (built, sel) = pick(s, &caps);
            assert_eq!(built, BackendId::AiterWna16, "{s} {}\n{sel}", caps.arch);
        }
        assert_eq!(pick("bf16", &caps).0, BackendId::AiterBf16);
        for s in ["nvfp4-a16", "nvfp4"] {
            assert_eq!(pick(s, &caps).0, BackendId::AiterNvfp4, "{s} {}", caps.arch);
        }
        assert_eq!(pick("w8a8-int8", &caps).0, BackendId::AiterW8a8Int8);
    }
    // W4A8 on the fp8 MFMA (gfx942, gfx950); its fp8 activations are not taken by the
    // weight-only kernel, so gfx90a emulates it.
    assert_eq!(
        pick("w4a8", &Capabilities::mi300x()).0,
        BackendId::AiterW4a8
    );
    assert_eq!(
        pick("w4a8", &Capabilities::mi355x()).0,
        BackendId::AiterW4a8
    );
    // gfx90a has no fp8 or MX matrix cores: those schemes stay emulated there, each
    // AITER backend turned down by the hardware, not by its scheme.
    let mi250 = Capabilities::mi250x();
    for s in ["fp8", "fp8-block128", "mxfp4-a-mxfp4", "w4a8"] {
        let (built, sel) = pick(s, &mi250);
        assert_eq!(built, BackendId::Emulation, "{s}\n{sel}");
    }
    assert_eq!(pick("mxfp4", &mi250).0, BackendId::AiterMxfp4);
}
