//! The MI300X and MI355X presets choose the AMD backends in a `rocm` build (and name the
//! feature otherwise), with the fnuz conversion on gfx942 only.

use fleetmoe::device::Capabilities;
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::oracle::{select, BackendId, Conversion, Unmet};
use fleetmoe::quant::QuantScheme;

fn choose(
    caps: &Capabilities,
    scheme: &str,
    layer: &LayerConfig,
) -> (BackendId, Vec<Conversion>, String) {
    let sel = select(&QuantScheme::parse(scheme).unwrap(), caps, layer, None).unwrap();
    (sel.chosen, sel.conversions.clone(), sel.to_string())
}

#[test]
fn amd_presets_choose_the_aiter_backends() {
    let layer = LayerConfig::new(8, 2, 256, 512);
    let gpt_oss = LayerConfig {
        activation: Activation::GPT_OSS,
        has_bias: true,
        ..layer.clone()
    };
    let (mi300x, mi355x) = (Capabilities::mi300x(), Capabilities::mi355x());
    let cases: &[(&Capabilities, &str, &LayerConfig, BackendId, bool)] = &[
        (&mi300x, "bf16", &layer, BackendId::AiterBf16, false),
        (&mi300x, "fp8", &layer, BackendId::AiterFp8, true),
        (&mi300x, "fp8-channel", &layer, BackendId::AiterFp8, true),
        (
            &mi300x,
            "fp8-block128",
            &layer,
            BackendId::AiterFp8Block128,
            true,
        ),
        (&mi300x, "mxfp4", &gpt_oss, BackendId::AiterMxfp4, false),
        // gfx942 has no scaled MFMA: MX on the fp8 MFMA.
        (
            &mi300x,
            "mxfp4-a-mxfp4",
            &layer,
            BackendId::AiterMxFp8,
            false,
        ),
        (&mi300x, "mxfp4-a-fp8", &layer, BackendId::AiterMxFp8, true),
        (&mi300x, "nvfp4", &layer, BackendId::AiterNvfp4, false),
        (
            &mi300x,
            "w8a8-int8",
            &layer,
            BackendId::AiterW8a8Int8,
            false,
        ),
        // W4A8 on the fp8 MFMA: the e4m3fn activation rule re-read as fnuz on gfx942.
        (&mi300x, "w4a8", &layer, BackendId::AiterW4a8, true),
        (&mi355x, "w4a8", &layer, BackendId::AiterW4a8, false),
        (&mi355x, "nvfp4-a16", &layer, BackendId::AiterNvfp4, false),
        (
            &mi355x,
            "w8a8-int8",
            &layer,
            BackendId::AiterW8a8Int8,
            false,
        ),
        (&mi355x, "fp8", &layer, BackendId::AiterFp8, false),
        (
            &mi355x,
            "fp8-block128",
            &layer,
            BackendId::AiterFp8Block128,
            false,
        ),
        (&mi355x, "mxfp4", &gpt_oss, BackendId::AiterMxfp4, false),
        (
            &mi355x,
            "mxfp4-a-mxfp4",
            &layer,
            BackendId::AiterMxNative,
            false,
        ),
        (
            &mi355x,
            "mxfp4-a-fp8",
            &layer,
            BackendId::AiterMxNative,
            false,
        ),
        (
            &mi355x,
            "mxfp6-e3m2",
            &layer,
            BackendId::AiterMxNative,
            false,
        ),
        (
            &mi355x,
            "mxfp6-e2m3-a-fp8",
            &layer,
            BackendId::AiterMxNative,
            false,
        ),
    ];
    for &(caps, scheme, l, want, fnuz) in cases {
        let (chosen, conversions, explain) = choose(caps, scheme, l);
        if cfg!(feature = "rocm") {
            assert_eq!(chosen, want, "{scheme} on {}:\n{explain}", caps.arch);
            assert_eq!(
                conversions.contains(&Conversion::Fp8FnToFnuz),
                fnuz,
                "{scheme} on {}",
                caps.arch
            );
        } else {
            // Without the feature the same backend is named, lacking only `rocm`.
            assert_eq!(chosen, BackendId::Emulation, "{scheme}");
            let sel = select(&QuantScheme::parse(scheme).unwrap(), caps, l, None).unwrap();
            let r = sel.rejected.iter().find(|r| r.backend == want).unwrap();
            assert_eq!(
                r.unmet,
                vec![Unmet::NotBuilt { feature: "rocm" }],
                "{scheme} on {}",
                caps.arch
            );
        }
    }
}

#[test]
fn the_scaled_mfma_needs_gfx950_and_gfx942_runs_mx_on_the_fp8_mfma() {
    let layer = LayerConfig::new(8, 2, 256, 512);
    let caps = Capabilities::mi300x();
    let (chosen, _, explain) = choose(&caps, "mxfp4-a-mxfp4", &layer);
    let want = if cfg!(feature = "rocm") {
        BackendId::AiterMxFp8
    } else {
        BackendId::Emulation
    };
    assert_eq!(chosen, want, "{explain}");
    let sel = select(
        &QuantScheme::parse("mxfp4-a-mxfp4").unwrap(),
        &caps,
        &layer,
        None,
    )
    .unwrap();
    let native = sel
        .rejected
        .iter()
        .find(|r| r.backend == BackendId::AiterMxNative)
        .unwrap();
    assert!(
        native.unmet.contains(&Unmet::Mx {
            arch: "gfx942".into()
        }),
        "{explain}"
    );
}
