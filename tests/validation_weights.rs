//! Nothing malformed gets through, the weights' part: an `ExpertWeights` whose lengths
//! disagree is refused by every consumer, and so is one holding a NaN or infinite weight,
//! an fp8 NaN code, a scale that is NaN, infinite, zero, negative or lets a code exceed
//! `MAX_WEIGHT_MAGNITUDE`, a bias out of range, or a bad static input scale. Each error
//! names the field and the value.

mod refusals;

use fleetmoe::moe::*;
use fleetmoe::quant::{InputScales, WeightData};
use fleetmoe::Error;
use refusals::*;

// ---- 2. Inconsistent weights are an error wherever they are consumed ----

#[test]
fn inconsistent_weights_are_refused_by_every_consumer() {
    let c = config();
    let mut w = weights(&c, "fp8-channel");
    if let WeightData::Fp8 { scales, .. } = &mut w.w2.data {
        scales.truncate(3);
    }
    let is_scales_shape = |e: &Error| {
        matches!(e, Error::Shape { what, expected, got }
            if what == "w2 weight scales" && expected == &format!("{} elements", E * H) && got == "3 elements")
    };
    assert!(is_scales_shape(&w.validate().unwrap_err()));
    assert!(is_scales_shape(&w.dequantize().unwrap_err()));
    assert!(is_scales_shape(&w.dequantize_expert(3).err().unwrap()));
    assert!(is_scales_shape(
        &EmulatedExperts::prepare(&w, &c).err().unwrap()
    ));
    assert!(is_scales_shape(
        &layer(c.clone(), &w, LayerExtras::default()).err().unwrap()
    ));
    // As a shared expert.
    let one = LayerConfig {
        num_experts: 1,
        top_k: 1,
        ..config()
    };
    let mut sw = weights(&one, "bf16");
    if let WeightData::Bf16(v) = &mut sw.w13.data {
        v.truncate(10);
    }
    let shared = SharedExpertWeights {
        weights: sw,
        gate: None,
    };
    assert!(matches!(
        SharedExperts::prepare(&shared, Activation::SiluAndMul, H),
        Err(Error::Shape { what, .. }) if what == "w13"
    ));
    // An expert that does not exist.
    let w = weights(&c, "bf16");
    assert!(matches!(
        w.dequantize_expert(E),
        Err(Error::ExpertId {
            id: 4,
            num_experts: 4
        })
    ));
}

// ---- 3. Bad values in the weights ----

#[test]
fn float_weights_that_are_not_finite_or_too_large_are_refused() {
    let c = config();
    for (bad, scheme) in [(f32::NAN, "bf16"), (f32::INFINITY, "bf16"), (1e6, "bf16")] {
        let mut w = weights(&c, scheme);
        if let WeightData::Bf16(v) = &mut w.w13.data {
            v[2 * H * I + 5] = half::bf16::from_f32(bad);
        }
        let want = half::bf16::from_f32(bad).to_f32();
        assert_value(w.validate(), "w13 of expert 1: bf16 weight [5]", want);
        assert_value(
            w.dequantize_expert(1),
            "w13 of expert 1: bf16 weight [5]",
            want,
        );
        assert_value(
            layer(c.clone(), &w, LayerExtras::default()),
            "w13 of expert 1: bf16 weight [5]",
            want,
        );
    }
    let mut w = weights(&c, "f16");
    if let WeightData::F16(v) = &mut w.w2.data {
        v[7] = half::f16::NEG_INFINITY;
    }
    assert_value(
        w.validate(),
        "w2 of expert 0: f16 weight [7]",
        f32::NEG_INFINITY,
    );
}

#[test]
fn fp8_nan_codes_are_refused() {
    let c = config();
    for (scheme, code) in [("fp8", 0x7Fu8), ("fp8", 0xFF), ("fp8-block128-fnuz", 0x80)] {
        let mut w = weights(&c, scheme);
        if let WeightData::Fp8 { codes, .. } = &mut w.w2.data {
            codes[H * I + 9] = code;
        }
        let m = assert_value(
            w.validate(),
            &format!("w2 of expert 1: fp8 code 0x{code:02X} [9]"),
            f32::NAN,
        );
        assert!(m.contains("not NaN"), "{m}");
        assert!(layer(c.clone(), &w, LayerExtras::default()).is_err());
    }
    // 0x80 is an ordinary code (−0) in e4m3fn, 0x7F an ordinary one (240) in fnuz.
    for (scheme, code) in [("fp8", 0x80u8), ("fp8-block128-fnuz", 0x7F)] {
        let mut w = weights(&c, scheme);
        if let WeightData::Fp8 { codes, .. } = &mut w.w2.data {
            codes[9] = code;
        }
        w.validate().unwrap();
    }
}

#[test]
fn fp8_and_int_scales_must_be_finite_positive_and_bounded() {
    let c = config();
    let fp8 = |s: f32| {
        let mut w = weights(&c, "fp8-channel");
        if let WeightData::Fp8 { scales, .. } = &mut w.w13.data {
            scales[2 * I + 3] = s;
        }
        w.validate()
    };
    let at = "w13 of expert 1: weight scale [3]";
    assert_scale(fp8(f32::NAN), at, f32::NAN, "NaN");
    assert_scale(fp8(f32::INFINITY), at, f32::INFINITY, "infinite");
    assert_scale(fp8(0.0), at, 0.0, "zero");
    assert_scale(fp8(-0.5), at, -0.5, "negative");
    // 448 · 147 > 2^16 ≥ 448 · 146.
    assert_scale(fp8(147.0), at, 147.0, "MAX_WEIGHT_MAGNITUDE");
    assert!(fp8(146.0).is_ok());

    let int = |scheme: &str, s: f32| {
        let mut w = weights(&c, scheme);
        if let WeightData::Int(iw) = &mut w.w2.data {
            iw.scales[1] = s;
        }
        w.validate()
    };
    let at = "w2 of expert 0: group scale [1]";
    assert_scale(int("w4a16", f32::NAN), at, f32::NAN, "NaN");
    assert_scale(int("w8a16", 0.0), at, 0.0, "zero");
    // Symmetric int4 codes are 8 from their zero point: 8 · 8193 > 2^16 ≥ 8 · 8192.
    assert_scale(int("w4a16", 8193.0), at, 8193.0, "MAX_WEIGHT_MAGNITUDE");
    assert!(int("w4a16", 8192.0).is_ok());
    // int8: 128 from the zero point.
    assert_scale(int("w8a8-int8", 513.0), at, 513.0, "MAX_WEIGHT_MAGNITUDE");
    assert!(int("w8a8-int8", 512.0).is_ok());

    // W4A8: group scale times channel scale.
    let mut w = weights(&c, "w4a8");
    if let WeightData::Int(iw) = &mut w.w13.data {
        iw.channel_scales.as_mut().unwrap()[2] = -1.0;
    }
    assert_scale(
        w.validate(),
        "w13 of expert 0: channel scale [2]",
        -1.0,
        "negative",
    );
    let mut w = weights(&c, "w4a8");
    if let WeightData::Int(iw) = &mut w.w13.data {
        iw.channel_scales.as_mut().unwrap()[0] = 1e6;
    }
    match w.validate() {
        Err(Error::Scale { what, why, .. }) => {
            assert!(what.contains("w13 of expert 0: group scale [0]"), "{what}");
            assert!(why.contains("MAX_WEIGHT_MAGNITUDE"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nvfp4_and_mx_scales_must_be_valid_and_bounded() {
    let c = config();
    let nv = |f: &dyn Fn(&mut Vec<u8>, &mut Vec<f32>)| {
        let mut w = weights(&c, "nvfp4-a16");
        if let WeightData::Nvfp4 {
            block_scales,
            global_scales,
            ..
        } = &mut w.w2.data
        {
            f(block_scales, global_scales);
        }
        w.validate()
    };
    assert_scale(
        nv(&|_, g| g[2] = 0.0),
        "w2 of expert 2: global scale",
        0.0,
        "zero",
    );
    assert_scale(
        nv(&|_, g| g[1] = f32::NAN),
        "w2 of expert 1: global scale",
        f32::NAN,
        "NaN",
    );
    assert_scale(
        nv(&|b, _| b[4] = 0x7F),
        "w2 of expert 0: e4m3 block scale [4]",
        f32::NAN,
        "NaN",
    );
    assert_scale(
        nv(&|b, _| b[4] = 0xB8),
        "w2 of expert 0: e4m3 block scale [4]",
        -1.0,
        "negative",
    );
    // A global scale that lets the largest block scale (448) times e2m1's 6 pass 2^16.
    match nv(&|b, g| {
        b[0] = 0x7E;
        g[0] = 25.0;
    }) {
        Err(Error::Scale { what, why, .. }) => {
            assert!(
                what.contains("w2 of expert 0: e4m3 block scale [0]"),
                "{what}"
            );
            assert!(why.contains("MAX_WEIGHT_MAGNITUDE"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // An all-zero block is written with a zero block scale, and stays allowed.
    assert!(nv(&|b, _| b[4] = 0x00).is_ok());

    // MXFP4 with e8m0 scales 2^120 and 2^127 made weights infinite (or the output
    // overflow); 2^13 · 6 is within the bound, 2^14 · 6 is not.
    for (exp, ok) in [(120, false), (127, false), (14, false), (13, true)] {
        let mut w = weights(&c, "mxfp4");
        if let WeightData::Mx { scales, .. } = &mut w.w13.data {
            scales[6] = (exp + 127) as u8;
        }
        let r = w.validate();
        if ok {
            r.unwrap();
        } else {
            assert_scale(
                r,
                "w13 of expert 0: e8m0 scale [6]",
                (exp as f32).exp2(),
                "MAX_WEIGHT_MAGNITUDE",
            );
        }
    }
    let mut w = weights(&c, "mxfp6-e3m2");
    if let WeightData::Mx { scales, .. } = &mut w.w2.data {
        scales[0] = 0xFF;
    }
    assert_scale(
        w.validate(),
        "w2 of expert 0: e8m0 scale [0]",
        f32::NAN,
        "NaN",
    );
}

#[test]
fn biases_must_be_finite_and_bounded() {
    let c = LayerConfig {
        has_bias: true,
        ..config()
    };
    for (bad, at) in [(f32::NAN, 3), (f32::NEG_INFINITY, 7), (-1e5, 9)] {
        let mut w = weights(&c, "mxfp4");
        w.w2_bias.as_mut().unwrap()[at] = bad;
        assert_value(w.validate(), &format!("w2 bias [{at}]"), bad);
        assert_value(
            layer(c.clone(), &w, LayerExtras::default()),
            &format!("w2 bias [{at}]"),
            bad,
        );
    }
}

#[test]
fn input_scales_must_be_finite_and_positive() {
    let c = config();
    let mut w = weights(&c, "fp8-static");
    for (bad, why) in [(0.0, "zero"), (-2.0, "negative"), (f32::NAN, "NaN")] {
        assert_scale(
            w.set_input_scales_per_expert(&[0.5, 1.0, bad, 1.0], &[0.1; E]),
            "w13 input scale of expert 2",
            bad,
            why,
        );
        assert_scale(
            w.set_input_scales_per_expert(&[0.5; E], &[bad, 0.1, 0.1, 0.1]),
            "w2 input scale of expert 0",
            bad,
            why,
        );
    }
    w.input_scales = Some(InputScales::uniform(f32::INFINITY, 0.1));
    assert_scale(w.validate(), "w13 input scale", f32::INFINITY, "infinite");
    assert_scale(
        layer(c, &w, LayerExtras::default()),
        "w13 input scale",
        f32::INFINITY,
        "infinite",
    );
    // Kept per expert, each is checked and named.
    w.input_scales = Some(InputScales {
        w13: vec![0.5; E],
        w2: vec![0.1, 0.2, -0.3, 0.1],
    });
    assert_scale(w.validate(), "w2 input scale of expert 2", -0.3, "negative");
}
