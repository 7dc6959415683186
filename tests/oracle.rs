//! The oracle on every preset platform, with checks of single decisions that a wrong
//! comparison (of vendor, compute capability, fp8 flavour, MX, scheme) would flip.

use fleetmoe::device::{Capabilities, Vendor};
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::oracle::{
    backends, select, spec, Assessment, Availability, BackendId, Conversion, Rejection, Selection,
    Unmet,
};
use fleetmoe::quant::{Fp8Flavor, QuantScheme};
use fleetmoe::Error;

const ACTIVATIONS: [Activation; 6] = [
    Activation::SiluAndMul,
    Activation::GeluAndMul,
    Activation::GeluTanhAndMul,
    Activation::GPT_OSS,
    Activation::Relu2,
    Activation::Silu,
];

fn layer() -> LayerConfig {
    LayerConfig::new(8, 2, 256, 128)
}

/// GPT-OSS's experts: swigluoai with biases.
fn gpt_oss_layer() -> LayerConfig {
    LayerConfig {
        activation: Activation::GPT_OSS,
        has_bias: true,
        ..layer()
    }
}

fn presets() -> Vec<Capabilities> {
    Capabilities::PRESETS
        .iter()
        .map(|name| Capabilities::preset(name).unwrap())
        .collect()
}

/// An A100 (sm_80: bf16 tensor cores, no fp8).
fn a100() -> Capabilities {
    Capabilities {
        name: "NVIDIA A100".into(),
        arch: "sm_80".into(),
        compute_capability: Some((8, 0)),
        fp8: None,
        ..Capabilities::h100()
    }
}

/// An L40S (sm_89: fp8 tensor cores, not Hopper).
fn l40s() -> Capabilities {
    Capabilities {
        name: "NVIDIA L40S".into(),
        arch: "sm_89".into(),
        compute_capability: Some((8, 9)),
        ..Capabilities::h100()
    }
}

fn choose(caps: &Capabilities, scheme: &str, layer: &LayerConfig) -> Selection {
    let scheme = QuantScheme::parse(scheme).unwrap();
    select(&scheme, caps, layer, None).unwrap()
}

fn rejection(sel: &Selection, id: BackendId) -> &Rejection {
    sel.rejected
        .iter()
        .find(|r| r.backend == id)
        .unwrap_or_else(|| panic!("{id} was not rejected:\n{sel}"))
}

/// What `id` lacks for this case, straight from its needs, so the checks below stay true
/// when a backend lands and starts being chosen.
fn assess(caps: &Capabilities, scheme: &str, layer: &LayerConfig, id: BackendId) -> Assessment {
    let scheme = QuantScheme::parse(scheme).unwrap();
    spec(id).unwrap().needs.assess(&scheme, caps, layer)
}

fn reasons(a: &Assessment) -> String {
    a.unmet
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `id` lacks at most availability: on this hardware it runs once built.
fn assert_only_availability(caps: &Capabilities, scheme: &str, layer: &LayerConfig, id: BackendId) {
    let a = assess(caps, scheme, layer, id);
    assert!(
        a.unmet.iter().all(Unmet::is_availability),
        "{id} on {} for {scheme} should lack only availability, got: {}",
        caps.name,
        reasons(&a)
    );
}

fn assert_unmet(
    caps: &Capabilities,
    scheme: &str,
    layer: &LayerConfig,
    id: BackendId,
    wanted: &Unmet,
) {
    let a = assess(caps, scheme, layer, id);
    assert!(
        a.unmet.contains(wanted),
        "{id} on {} for {scheme} should be rejected for '{wanted}', got: {}",
        caps.name,
        reasons(&a)
    );
}

fn assert_scheme_refused(caps: &Capabilities, scheme: &str, id: BackendId) {
    let wanted = Unmet::Scheme {
        scheme: QuantScheme::parse(scheme).unwrap(),
        runs: spec(id).unwrap().needs.runs,
    };
    assert_unmet(caps, scheme, &layer(), id, &wanted);
}

#[test]
fn the_priority_list_has_every_backend_once_emulation_last() {
    let ids: Vec<BackendId> = backends().iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), BackendId::ALL.len());
    for id in BackendId::ALL {
        assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id}");
        assert_eq!(spec(*id).unwrap().id, *id);
    }
    assert_eq!(ids.last(), Some(&BackendId::Emulation));
}

#[test]
fn backend_names_parse_back() {
    for id in BackendId::ALL {
        assert_eq!(BackendId::parse(id.name()).unwrap(), *id);
        assert_eq!(BackendId::parse(&id.name().to_uppercase()).unwrap(), *id);
        assert_eq!(id.to_string(), id.name());
    }
    match BackendId::parse("cuda-fp16") {
        Err(Error::Config(msg)) => {
            assert!(msg.contains("cuda-fp16"), "{msg}");
            for id in BackendId::ALL {
                assert!(msg.contains(id.name()), "{msg}");
            }
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn the_cpu_runs_everything_on_emulation() {
    let cpu = Capabilities::cpu_only();
    for scheme in QuantScheme::all_representative() {
        for act in ACTIVATIONS {
            let layer = LayerConfig {
                activation: act,
                ..layer()
            };
            let sel = select(&scheme, &cpu, &layer, None).unwrap();
            assert_eq!(sel.chosen, BackendId::Emulation, "{scheme} {}", act.name());
            assert!(!sel.is_fallback());
            assert_eq!(sel.rejected.len(), backends().len() - 1);
            for r in &sel.rejected {
                assert!(r.is_other_vendor(), "{}: {}", r.backend, r.reasons());
            }
        }
    }
}

#[test]
fn every_preset_and_scheme_gets_an_explained_choice() {
    let layers = [
        layer(),
        gpt_oss_layer(),
        LayerConfig {
            lora: true,
            ..layer()
        },
    ];
    for caps in presets() {
        for scheme in QuantScheme::all_representative() {
            for layer in &layers {
                let sel = select(&scheme, &caps, layer, None).unwrap();
                let chosen = spec(sel.chosen).unwrap();
                assert!(chosen.needs.assess(&scheme, &caps, layer).unmet.is_empty());
                // `rejected` is exactly the backends ahead of the chosen one, in order.
                let ahead: Vec<BackendId> = backends()
                    .iter()
                    .map(|s| s.id)
                    .take_while(|id| *id != sel.chosen)
                    .collect();
                let rejected: Vec<BackendId> = sel.rejected.iter().map(|r| r.backend).collect();
                assert_eq!(rejected, ahead, "{scheme} on {}", caps.name);
                for r in &sel.rejected {
                    assert!(!r.unmet.is_empty());
                    for u in &r.unmet {
                        assert!(!u.to_string().trim().is_empty(), "{u:?}");
                    }
                    // Every native backend of the other vendor says so.
                    let foreign = (r.backend.is_cuda() && caps.vendor != Vendor::Nvidia)
                        || (r.backend.is_aiter() && caps.vendor != Vendor::Amd)
                        || (r.backend.is_wgpu() && caps.vendor != Vendor::Other);
                    assert_eq!(
                        r.is_other_vendor(),
                        foreign,
                        "{}: {}",
                        r.backend,
                        r.reasons()
                    );
                }
                let shown = sel.to_string();
                assert!(shown.contains(sel.chosen.name()), "{shown}");
            }
        }
    }
}

#[test]
fn block_fp8_on_mi300x_converts_to_fnuz() {
    let mi300x = Capabilities::mi300x();
    assert_only_availability(
        &mi300x,
        "fp8-block128",
        &layer(),
        BackendId::AiterFp8Block128,
    );
    let a = assess(
        &mi300x,
        "fp8-block128",
        &layer(),
        BackendId::AiterFp8Block128,
    );
    assert_eq!(a.conversions, vec![Conversion::Fp8FnToFnuz]);
    assert_scheme_refused(&mi300x, "fp8-block128", BackendId::AiterFp8);
    // The selection carries the conversion exactly when the AITER backend is chosen;
    // emulation decodes the checkpoint as it is.
    let sel = choose(&mi300x, "fp8-block128", &layer());
    match sel.chosen {
        BackendId::AiterFp8Block128 => assert_eq!(sel.conversions, vec![Conversion::Fp8FnToFnuz]),
        BackendId::Emulation => {
            assert!(sel.conversions.is_empty());
            assert_eq!(
                rejection(&sel, BackendId::AiterFp8Block128).conversions,
                vec![Conversion::Fp8FnToFnuz]
            );
        }
        other => panic!("{other} chosen for fp8-block128 on MI300X:\n{sel}"),
    }

    // gfx950 speaks e4m3fn, and an fnuz checkpoint is already gfx942's: nothing to convert.
    for (caps, scheme) in [
        (Capabilities::mi355x(), "fp8-block128"),
        (mi300x, "fp8-block128-fnuz"),
    ] {
        assert_only_availability(&caps, scheme, &layer(), BackendId::AiterFp8Block128);
        let a = assess(&caps, scheme, &layer(), BackendId::AiterFp8Block128);
        assert!(a.conversions.is_empty(), "{scheme} on {}", caps.name);
    }
}

#[test]
fn fnuz_checkpoints_do_not_run_on_e4m3fn_devices() {
    let flavour = Unmet::Fp8Flavor {
        checkpoint: Fp8Flavor::E4M3Fnuz,
        device: Fp8Flavor::E4M3Fn,
    };
    let h100 = Capabilities::h100();
    for id in [BackendId::CudaFp8Block128, BackendId::CudaFp8] {
        assert_unmet(&h100, "fp8-block128-fnuz", &layer(), id, &flavour);
    }
    // Block-128 is refused for the flavour (and the build) alone.
    let a = assess(
        &h100,
        "fp8-block128-fnuz",
        &layer(),
        BackendId::CudaFp8Block128,
    );
    assert!(
        a.unmet.iter().all(|u| *u == flavour || u.is_availability()),
        "{}",
        reasons(&a)
    );
    assert!(a.conversions.is_empty());
    assert_eq!(
        flavour.to_string(),
        "checkpoint is e4m3fnuz but the device's fp8 is e4m3fn"
    );
    let sel = choose(&h100, "fp8-block128-fnuz", &layer());
    assert_eq!(sel.chosen, BackendId::Emulation);

    let scheme = "fp8-wtensor-atoken-fnuz";
    assert_unmet(
        &Capabilities::mi355x(),
        scheme,
        &layer(),
        BackendId::AiterFp8,
        &flavour,
    );
    assert_only_availability(
        &Capabilities::mi300x(),
        scheme,
        &layer(),
        BackendId::AiterFp8,
    );
}

#[test]
fn per_tensor_fp8_on_nvidia() {
    let h100 = Capabilities::h100();
    assert_only_availability(&h100, "fp8", &layer(), BackendId::CudaFp8);
    assert!(assess(&h100, "fp8", &layer(), BackendId::CudaFp8)
        .conversions
        .is_empty());
    assert_scheme_refused(&h100, "fp8", BackendId::CudaFp8Block128);
    for scheme in ["fp8-channel", "fp8-static"] {
        assert_only_availability(&Capabilities::h200(), scheme, &layer(), BackendId::CudaFp8);
    }

    // sm_89 has fp8 tensor cores; block-128 wants Hopper.
    assert_only_availability(&l40s(), "fp8", &layer(), BackendId::CudaFp8);
    let hopper = Unmet::ComputeCapability {
        needed: (9, 0),
        found: Some((8, 9)),
    };
    assert_unmet(
        &l40s(),
        "fp8-block128",
        &layer(),
        BackendId::CudaFp8Block128,
        &hopper,
    );

    // sm_80 has none.
    let ada = Unmet::ComputeCapability {
        needed: (8, 9),
        found: Some((8, 0)),
    };
    assert_unmet(&a100(), "fp8", &layer(), BackendId::CudaFp8, &ada);
    assert_eq!(
        ada.to_string(),
        "needs compute capability ≥ 8.9, this is 8.0"
    );
}

#[test]
fn weight_only_fp4_needs_ampere_not_mx() {
    for caps in [a100(), Capabilities::h100()] {
        assert_only_availability(&caps, "mxfp4", &gpt_oss_layer(), BackendId::CudaMxfp4W4a16);
        assert_only_availability(&caps, "nvfp4-a16", &layer(), BackendId::CudaNvfp4W4a16);
    }
    // W4A4 (issue 18): its activation quantize-dequantize is exact in bf16, so the NVFP4
    // weight path runs it after a QDQ kernel on every sm_80+, B200 included (whose fp4
    // tensor cores are not used yet); the other CUDA backends say what they run.
    let b200 = Capabilities::b200();
    for caps in [a100(), Capabilities::h100(), b200.clone()] {
        assert_only_availability(&caps, "nvfp4", &layer(), BackendId::CudaNvfp4W4a16);
    }
    for id in BackendId::ALL
        .iter()
        .copied()
        .filter(|id| id.is_cuda() && *id != BackendId::CudaNvfp4W4a16)
    {
        assert_scheme_refused(&b200, "nvfp4", id);
    }
}

#[test]
fn native_mx_needs_gfx950() {
    let mi300x = Capabilities::mi300x();
    let no_mx = Unmet::Mx {
        arch: "gfx942".into(),
    };
    assert_unmet(
        &mi300x,
        "mxfp4-a-mxfp4",
        &layer(),
        BackendId::AiterMxNative,
        &no_mx,
    );
    assert_scheme_refused(&mi300x, "mxfp4-a-mxfp4", BackendId::AiterMxfp4);
    assert_eq!(
        no_mx.to_string(),
        "needs native MX (gfx950 / sm_100), gfx942 has none"
    );

    for scheme in [
        "mxfp4-a-mxfp4",
        "mxfp4-a-fp8",
        "mxfp6-e3m2",
        "mxfp6-e2m3",
        "mxfp6-e3m2-a-fp8",
    ] {
        assert_only_availability(
            &Capabilities::mi355x(),
            scheme,
            &layer(),
            BackendId::AiterMxNative,
        );
    }

    // bf16 activations go through the dequantizing path, on gfx942 and gfx950 alike,
    // GPT-OSS's activation and biases included.
    for caps in [mi300x, Capabilities::mi355x()] {
        assert_scheme_refused(&caps, "mxfp4", BackendId::AiterMxNative);
        assert_only_availability(&caps, "mxfp4", &gpt_oss_layer(), BackendId::AiterMxfp4);
    }
}

#[test]
fn integer_weight_only_and_w4a8() {
    for scheme in [
        "w4a16",
        "w4a16-g32-zp",
        "w4a16-channel",
        "w8a16",
        "w8a16-g128-zp",
    ] {
        for caps in [Capabilities::h100(), a100()] {
            assert_only_availability(&caps, scheme, &layer(), BackendId::CudaMarlin);
        }
    }
    // No 16-wide groups (a k16 fragment would straddle two).
    for scheme in ["w4a16-g16", "w4a16-g16-actorder"] {
        assert_scheme_refused(&Capabilities::h100(), scheme, BackendId::CudaMarlin);
    }
    // Act-order (issue 18): K permuted at load time, activations gathered in that order.
    for scheme in [
        "w4a16-actorder",
        "w4a16-g64-actorder",
        "w4a16-g32-zp-actorder",
        "w8a16-channel-actorder",
    ] {
        for caps in [Capabilities::h100(), a100()] {
            assert_only_availability(&caps, scheme, &layer(), BackendId::CudaMarlin);
        }
    }

    assert_only_availability(&Capabilities::h100(), "w4a8", &layer(), BackendId::CudaW4a8);
    let hopper = Unmet::ComputeCapability {
        needed: (9, 0),
        found: Some((8, 9)),
    };
    assert_unmet(&l40s(), "w4a8", &layer(), BackendId::CudaW4a8, &hopper);
    // INT8 W8A8 (issue 18): int8 tensor cores, sm_80+.
    for caps in [Capabilities::h100(), a100(), l40s(), Capabilities::b200()] {
        assert_only_availability(&caps, "w8a8-int8", &layer(), BackendId::CudaW8a8Int8);
    }

    // AMD: the weight-only integers run on aiter-wna16 on every AITER target; W4A8 is
    // refused by every AITER backend for its scheme.
    let amd = [
        Capabilities::preset("mi250x").unwrap(),
        Capabilities::mi300x(),
        Capabilities::mi355x(),
    ];
    for scheme in [
        "w4a16",
        "w4a16-g32-zp",
        "w4a16-actorder",
        "w8a16",
        "w8a16-channel",
    ] {
        for caps in &amd {
            assert_only_availability(caps, scheme, &layer(), BackendId::AiterWna16);
        }
    }
    // NVFP4 (weight-only and W4A4) runs on aiter-nvfp4, INT8 W8A8 on aiter-w8a8-int8, on
    // every AITER target.
    for (scheme, id) in [
        ("nvfp4-a16", BackendId::AiterNvfp4),
        ("nvfp4", BackendId::AiterNvfp4),
        ("w8a8-int8", BackendId::AiterW8a8Int8),
    ] {
        for caps in &amd {
            assert_only_availability(caps, scheme, &layer(), id);
        }
    }
    // W4A8 runs on aiter-w4a8 where the fp8 MFMA is (gfx942, gfx950); gfx90a has none, so
    // it stays emulated there and the backend says why.
    for caps in &amd[1..] {
        assert_only_availability(caps, "w4a8", &layer(), BackendId::AiterW4a8);
    }
    for caps in &amd {
        let others = BackendId::ALL.iter().copied();
        for id in others.filter(|id| id.is_aiter() && *id != BackendId::AiterW4a8) {
            assert_scheme_refused(caps, "w4a8", id);
        }
    }
    let mi250x = &amd[0];
    assert_unmet(
        mi250x,
        "w4a8",
        &layer(),
        BackendId::AiterW4a8,
        &Unmet::NoFp8 {
            vendor: mi250x.vendor,
            arch: mi250x.arch.clone(),
        },
    );
    assert_eq!(
        choose(mi250x, "w4a8", &layer()).chosen,
        BackendId::Emulation
    );
}

#[test]
fn layer_features_are_needs_too() {
    let mi300x = Capabilities::mi300x();
    let gelu_tanh = LayerConfig {
        activation: Activation::GeluTanhAndMul,
        ..layer()
    };
    let tanh_unmet = Unmet::Activation(Activation::GeluTanhAndMul);
    assert_unmet(&mi300x, "fp8", &gelu_tanh, BackendId::AiterFp8, &tanh_unmet);
    let lora = LayerConfig {
        lora: true,
        ..layer()
    };
    // The AITER backends take LoRA (kernels-hip/lora.hip), with every scheme they run.
    assert_only_availability(&mi300x, "fp8", &lora, BackendId::AiterFp8);
    assert_only_availability(&mi300x, "bf16", &lora, BackendId::AiterBf16);
    assert_only_availability(&mi300x, "fp8-block128", &lora, BackendId::AiterFp8Block128);
    assert_only_availability(
        &Capabilities::mi355x(),
        "mxfp4-a-mxfp4",
        &lora,
        BackendId::AiterMxNative,
    );
    let gpt_oss = gpt_oss_layer();
    assert_unmet(
        &mi300x,
        "bf16",
        &gpt_oss,
        BackendId::AiterBf16,
        &Unmet::Bias,
    );
    let swiglu = Unmet::Activation(Activation::GPT_OSS);
    assert_unmet(&mi300x, "bf16", &gpt_oss, BackendId::AiterBf16, &swiglu);

    let llama4 = LayerConfig {
        top_k: 1,
        apply_router_weight_on_input: true,
        ..layer()
    };
    let on_input = Unmet::RouterWeightOnInput;
    assert_unmet(
        &mi300x,
        "fp8-block128",
        &llama4,
        BackendId::AiterFp8Block128,
        &on_input,
    );
    assert_only_availability(&mi300x, "fp8", &llama4, BackendId::AiterFp8);

    // The CUDA backends take every activation, biases and LoRA.
    for act in ACTIVATIONS {
        let layer = LayerConfig {
            activation: act,
            has_bias: true,
            lora: true,
            ..layer()
        };
        assert_only_availability(&Capabilities::h100(), "bf16", &layer, BackendId::CudaBf16);
    }

    // Every unmet need is kept, not just the first.
    let everything = LayerConfig {
        lora: true,
        ..gpt_oss_layer()
    };
    let a = assess(
        &Capabilities::h100(),
        "w4a16",
        &everything,
        BackendId::AiterFp8,
    );
    assert!(a.unmet.iter().any(Unmet::is_vendor), "{}", reasons(&a));
    for wanted in [
        Unmet::Scheme {
            scheme: QuantScheme::parse("w4a16").unwrap(),
            runs: spec(BackendId::AiterFp8).unwrap().needs.runs,
        },
        Unmet::Activation(Activation::GPT_OSS),
        Unmet::Bias,
    ] {
        assert!(a.unmet.contains(&wanted), "{wanted}: {}", reasons(&a));
    }
    let built = spec(BackendId::AiterFp8).unwrap().needs.availability == Availability::Built;
    assert_eq!(
        a.unmet.iter().any(Unmet::is_availability),
        !built,
        "{}",
        reasons(&a)
    );
    for (u, text) in [
        (swiglu, "activation swigluoai not supported"),
        (Unmet::Bias, "expert biases not supported"),
    ] {
        assert_eq!(u.to_string(), text);
    }
    assert!(
        !a.unmet
            .iter()
            .any(|u| matches!(u, Unmet::NotImplemented(_))),
        "LoRA is no unmet need of an AITER backend: {}",
        reasons(&a)
    );
}

#[test]
fn vendor_and_availability_reasons_read_well() {
    let sel = choose(&Capabilities::mi300x(), "fp8", &layer());
    let r = rejection(&sel, BackendId::CudaFp8);
    assert!(
        r.reasons()
            .contains("needs an NVIDIA GPU, this is AMD gfx942"),
        "{}",
        r.reasons()
    );
    let sel = choose(&Capabilities::cpu_only(), "fp8", &layer());
    let r = rejection(&sel, BackendId::AiterFp8);
    assert!(
        r.reasons().contains("needs an AMD GPU, this is a CPU"),
        "{}",
        r.reasons()
    );

    assert_eq!(
        Unmet::NotBuilt { feature: "cuda" }.to_string(),
        "built without feature `cuda`: rebuild with --features cuda"
    );
    assert_eq!(
        Unmet::Planned("CUDA backend: not implemented yet").to_string(),
        "planned: CUDA backend: not implemented yet"
    );
    assert_eq!(
        Unmet::Scheme {
            scheme: QuantScheme::parse("mxfp4-a-mxfp4").unwrap(),
            runs: "bf16 / f16",
        }
        .to_string(),
        "runs only bf16 / f16"
    );
}

#[test]
fn forcing_a_backend() {
    let fp8 = QuantScheme::parse("fp8").unwrap();
    match select(
        &fp8,
        &Capabilities::mi300x(),
        &layer(),
        Some(BackendId::CudaFp8),
    ) {
        Err(Error::BackendUnavailable { backend, reasons }) => {
            assert_eq!(backend, "cuda-fp8");
            assert!(
                reasons.contains("needs an NVIDIA GPU, this is AMD gfx942"),
                "{reasons}"
            );
        }
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
    // A backend missing only from this build is refused too, saying so.
    let forced = select(
        &fp8,
        &Capabilities::h100(),
        &layer(),
        Some(BackendId::CudaFp8),
    );
    match spec(BackendId::CudaFp8).unwrap().needs.availability {
        Availability::Built => assert_eq!(forced.unwrap().chosen, BackendId::CudaFp8),
        Availability::NeedsFeature(_) | Availability::Planned(_) => {
            let msg = forced.unwrap_err().to_string();
            assert!(
                msg.contains("built without feature") || msg.contains("planned"),
                "{msg}"
            );
        }
    }

    for caps in presets() {
        for scheme in QuantScheme::all_representative() {
            let sel = select(&scheme, &caps, &gpt_oss_layer(), Some(BackendId::Emulation)).unwrap();
            assert_eq!(sel.chosen, BackendId::Emulation);
            assert!(sel.forced && sel.rejected.is_empty() && sel.conversions.is_empty());
            assert!(sel.to_string().contains("emulation (forced)"));
        }
    }
}

#[test]
fn explain_shows_the_choice_and_every_reason() {
    for (caps, scheme) in [
        (Capabilities::mi300x(), "fp8-block128"),
        (Capabilities::h100(), "fp8-block128-fnuz"),
        (Capabilities::cpu_only(), "mxfp4"),
    ] {
        let sel = choose(&caps, scheme, &gpt_oss_layer());
        let shown = sel.to_string();
        assert!(shown.contains(&caps.name), "{shown}");
        assert!(shown.contains(scheme), "{shown}");
        assert!(
            shown.contains(&format!("backend   {}", sel.chosen)),
            "{shown}"
        );
        for r in &sel.rejected {
            assert!(
                shown.contains(r.backend.name()),
                "{} missing:\n{shown}",
                r.backend
            );
            if r.is_other_vendor() {
                let vendor = r.unmet.iter().find(|u| u.is_vendor()).unwrap();
                assert!(shown.contains(&vendor.to_string()), "{shown}");
            } else {
                assert!(shown.contains(&r.reasons()), "{shown}");
            }
        }
    }
    // No CUDA backend runs W4A8 below sm_90: an L40S falls back, visibly; the CPU just
    // emulates.
    let sel = choose(&l40s(), "w4a8", &layer());
    assert!(sel.is_fallback());
    assert!(sel.to_string().contains("fallback"), "{sel}");
    let sel = choose(&Capabilities::cpu_only(), "w4a8", &layer());
    assert!(!sel.is_fallback());
    assert!(!sel.to_string().contains("fallback"), "{sel}");
}

#[test]
fn conversions_are_shown_when_the_chosen_backend_needs_them() {
    // Until a ROCm backend lands, nothing chosen converts; the data for the rejected one
    // says what would happen, and the text of the conversion is fixed here.
    let text = Conversion::Fp8FnToFnuz.to_string();
    assert!(
        text.contains("e4m3fn → e4m3fnuz") && text.contains("0x80 → 0x00"),
        "{text}"
    );
    assert!(text.contains("doubled"), "{text}");
}

/// The backend a build with every feature would choose: the first in priority order that
/// lacks nothing but availability.
fn chosen_when_built(caps: &Capabilities, scheme: &str, layer: &LayerConfig) -> BackendId {
    backends()
        .iter()
        .find(|s| {
            let scheme = QuantScheme::parse(scheme).unwrap();
            s.needs
                .assess(&scheme, caps, layer)
                .unmet
                .iter()
                .all(Unmet::is_availability)
        })
        .map(|s| s.id)
        .expect("emulation runs everything")
}

#[test]
fn low_bit_schemes_on_every_preset() {
    use BackendId::*;
    let presets = [
        Capabilities::h100(),
        a100(),
        l40s(),
        Capabilities::mi300x(),
        Capabilities::mi355x(),
        Capabilities::cpu_only(),
    ];
    // One row per scheme: H100, A100, L40S, MI300X, MI355X, CPU.
    let table: [(&str, [BackendId; 6]); 11] = [
        (
            "mxfp4",
            [
                CudaMxfp4W4a16,
                CudaMxfp4W4a16,
                CudaMxfp4W4a16,
                AiterMxfp4,
                AiterMxfp4,
                Emulation,
            ],
        ),
        // cuda-w4a8 needs sm_90; the same kernel under cuda-mx-fp8 takes Ada (sm_89).
        (
            "mxfp4-a-fp8",
            [
                CudaW4a8,
                Emulation,
                CudaMxFp8,
                AiterMxFp8,
                AiterMxNative,
                Emulation,
            ],
        ),
        // MX activations and MXFP6 (issue 18): fp8 tensor cores on sm_89+, bf16 ones for
        // bf16 activations on sm_80+.
        (
            "mxfp4-a-mxfp4",
            [
                CudaMxFp8,
                Emulation,
                CudaMxFp8,
                AiterMxFp8,
                AiterMxNative,
                Emulation,
            ],
        ),
        (
            "mxfp6-e2m3-a-bf16",
            [
                CudaMxfp4W4a16,
                CudaMxfp4W4a16,
                CudaMxfp4W4a16,
                AiterMxfp4,
                AiterMxfp4,
                Emulation,
            ],
        ),
        (
            "nvfp4-a16",
            [
                CudaNvfp4W4a16,
                CudaNvfp4W4a16,
                CudaNvfp4W4a16,
                AiterNvfp4,
                AiterNvfp4,
                Emulation,
            ],
        ),
        (
            "w4a16",
            [
                CudaMarlin, CudaMarlin, CudaMarlin, AiterWna16, AiterWna16, Emulation,
            ],
        ),
        (
            "w4a16-g32-zp",
            [
                CudaMarlin, CudaMarlin, CudaMarlin, AiterWna16, AiterWna16, Emulation,
            ],
        ),
        (
            "w4a16-g64-actorder",
            [
                CudaMarlin, CudaMarlin, CudaMarlin, AiterWna16, AiterWna16, Emulation,
            ],
        ),
        (
            "w8a16-g128-zp",
            [
                CudaMarlin, CudaMarlin, CudaMarlin, AiterWna16, AiterWna16, Emulation,
            ],
        ),
        (
            "w4a8",
            [
                CudaW4a8, Emulation, Emulation, AiterW4a8, AiterW4a8, Emulation,
            ],
        ),
        (
            "nvfp4",
            [
                CudaNvfp4W4a16,
                CudaNvfp4W4a16,
                CudaNvfp4W4a16,
                AiterNvfp4,
                AiterNvfp4,
                Emulation,
            ],
        ),
    ];
    for (scheme, want) in table {
        for (caps, want) in presets.iter().zip(want) {
            let layer = if scheme == "mxfp4" {
                gpt_oss_layer()
            } else {
                layer()
            };
            assert_eq!(
                chosen_when_built(caps, scheme, &layer),
                want,
                "{scheme} on {}",
                caps.name
            );
        }
    }
}

/// wgpu adapters (`Vendor::Other`, the `lavapipe` preset) get the wgpu backend for every
/// scheme and layer feature once the feature is built; every vendor backend says it needs
/// its vendor, and on other devices wgpu says it needs a device opened through wgpu.
#[test]
fn wgpu_runs_every_scheme_on_a_wgpu_adapter() {
    let caps = Capabilities::preset("lavapipe").unwrap();
    assert_eq!(caps.vendor, Vendor::Other);
    let layers = [
        layer(),
        gpt_oss_layer(),
        LayerConfig {
            lora: true,
            apply_router_weight_on_input: true,
            top_k: 1,
            ..layer()
        },
    ];
    for scheme in QuantScheme::all_representative() {
        for l in &layers {
            for act in ACTIVATIONS {
                let l = LayerConfig {
                    activation: act,
                    ..l.clone()
                };
                let sel = select(&scheme, &caps, &l, None).unwrap();
                let wgpu = spec(BackendId::Wgpu).unwrap();
                match wgpu.needs.availability {
                    Availability::Built => assert_eq!(sel.chosen, BackendId::Wgpu, "{scheme}"),
                    _ => {
                        assert_eq!(sel.chosen, BackendId::Emulation);
                        let r = rejection(&sel, BackendId::Wgpu);
                        assert_eq!(
                            r.reasons(),
                            "built without feature `wgpu`: rebuild with --features wgpu"
                        );
                    }
                }
                for r in sel.rejected.iter().filter(|r| r.backend != BackendId::Wgpu) {
                    assert!(r.is_other_vendor(), "{}: {}", r.backend, r.reasons());
                }
            }
        }
    }
    // An NVIDIA GPU that falls back (W4A8 on sm_89) lists wgpu among the turned down.
    let sel = choose(&l40s(), "w4a8", &layer());
    let r = rejection(&sel, BackendId::Wgpu);
    assert!(
        r.reasons()
            .contains("needs a device opened through wgpu (`Target::wgpu`), this is an NVIDIA GPU"),
        "{}",
        r.reasons()
    );
    let sel = choose(&Capabilities::cpu_only(), "bf16", &layer());
    assert!(rejection(&sel, BackendId::Wgpu)
        .reasons()
        .contains("this is the host CPU"));
}
