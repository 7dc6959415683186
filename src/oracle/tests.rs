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
    assert_eq!(
        fit(BackendId::CudaNvfp4W4a16, "nvfp4"),
        Fit::NotYet(&NVFP4_W4A4)
    );
    assert_eq!(fit(BackendId::CudaNvfp4W4a16, "nvfp4-a16"), Fit::Runs);
    for s in [
        "w4a16-actorder",
        "w4a16-g64-actorder",
        "w8a16-channel-actorder",
    ] {
        assert_eq!(
            fit(BackendId::CudaMarlin, s),
            Fit::NotYet(&ACT_ORDER),
            "{s}"
        );
    }
    // A group Marlin's fragments cannot take is another kind, not work left to do.
    assert_eq!(fit(BackendId::CudaMarlin, "w4a16-g16-actorder"), Fit::Other);
    for b in native() {
        let want = if b.id.is_aiter() {
            Support::NotYet(&AMD_LORA)
        } else {
            Support::Yes
        };
        assert_eq!(b.needs.lora, want, "{}", b.id);
    }
}

#[test]
fn schemes_with_no_native_backend_anywhere() {
    let nowhere: Vec<String> = QuantScheme::all_representative()
        .iter()
        .filter(|s| NoNative::of(s).is_some())
        .map(ToString::to_string)
        .collect();
    assert_eq!(nowhere, ["nvfp4", "w4a16-g64-actorder", "w8a8-int8"]);
    assert_eq!(NoNative::of(&scheme("nvfp4")).unwrap().gaps, [&NVFP4_W4A4]);
    assert_eq!(
        NoNative::of(&scheme("w4a16-actorder")).unwrap().gaps,
        [&ACT_ORDER]
    );
    assert!(NoNative::of(&scheme("w8a8-int8")).unwrap().gaps.is_empty());
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
fn a_gap_every_backend_shares_is_said_once() {
    let b200 = Capabilities::b200();
    let layer = LayerConfig::new(8, 2, 256, 128);
    let sel = select(&scheme("nvfp4"), &b200, &layer, None).unwrap();
    assert_eq!(sel.chosen, BackendId::Emulation);
    assert!(sel
        .rejected
        .iter()
        .all(|r| !r.unmet.contains(&Unmet::NotImplemented(&NVFP4_W4A4))));
    let shown = sel.to_string();
    assert_eq!(shown.matches(NVFP4_W4A4.what).count(), 1, "{shown}");
    assert!(
        shown.contains("nvfp4 has no native backend on any platform yet; it runs emulated"),
        "{shown}"
    );
    // The backend's own assessment still names it: only the selection folds it.
    let own =
        spec(BackendId::CudaNvfp4W4a16)
            .unwrap()
            .needs
            .assess(&scheme("nvfp4"), &b200, &layer);
    assert!(own.unmet.contains(&Unmet::NotImplemented(&NVFP4_W4A4)));
}
