//! Quantize → dequantize for every scheme within its stated error, activation
//! quantize-dequantize against definitions written here, and the errors bad input gets.

mod common;

use common::*;
use fleetmoe::formats::{F8E4M3Fnuz, MiniFloat, F4E2M1, F8E4M3};
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::quant::*;
use fleetmoe::Error;

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let want: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    rel_l2(a, &want)
}

fn dense(e: usize, h: usize, i: usize, seed: u64) -> DenseExperts {
    let mut cfg = LayerConfig::new(e, 1, h, i);
    cfg.has_bias = true;
    DenseExperts::random(&cfg, seed)
}

#[test]
fn every_scheme_round_trips_within_its_bound() {
    let d = dense(3, 256, 128, 1);
    for scheme in QuantScheme::all_representative() {
        let q = ExpertWeights::quantize(&d, scheme).unwrap();
        let back = q.dequantize().unwrap();
        let (e13, e2) = (rel(&back.w13, &d.w13), rel(&back.w2, &d.w2));
        let bound = scheme.weight_error_bound();
        assert!(
            e13 < bound && e2 < bound,
            "{scheme}: w13 {e13:.4}, w2 {e2:.4} over {bound}"
        );
        // Quantization must lose something for every quantized scheme (a copy would pass
        // the bound trivially) and be at least 10× better than the bound for bf16/f16.
        assert!(
            e13 > 0.0,
            "{scheme}: dequantized weights equal the originals"
        );
        assert_eq!(back.w13_bias, d.w13_bias);
        // Quantizing the dequantized weights again gives the same codes: the grid is stable.
        if !matches!(
            scheme,
            QuantScheme::IntWeightOnly {
                act_order: true,
                ..
            }
        ) {
            let again = ExpertWeights::quantize(&back, scheme)
                .unwrap()
                .dequantize()
                .unwrap();
            let drift = rel(&again.w13, &back.w13);
            assert!(
                drift < bound / 4.0,
                "{scheme}: requantization drift {drift}"
            );
        }
    }
}

#[test]
fn scheme_names_round_trip_and_unknown_names_are_refused() {
    for scheme in QuantScheme::all_representative() {
        assert_eq!(
            QuantScheme::parse(&scheme.name()).unwrap(),
            scheme,
            "{scheme}"
        );
    }
    for bad in [
        "fp9",
        "w4a16-gx",
        "mxfp5",
        "",
        "fp8-wblock64-atoken",
        "w4a16-g0",
    ] {
        match QuantScheme::parse(bad) {
            Err(Error::UnknownScheme { name, known }) => {
                assert_eq!(name, bad);
                assert!(known.contains("fp8-block128"));
            }
            other => panic!("{bad:?} parsed as {other:?}"),
        }
    }
}

#[test]
fn fp8_codes_are_the_nearest_values_of_the_flavour() {
    let d = dense(2, 128, 128, 2);
    for (name, max) in [("fp8", 448.0f32), ("fp8-channel-fnuz", 240.0)] {
        let name = name.replace("fp8-channel-fnuz", "fp8-wchannel-atoken-fnuz");
        let scheme = QuantScheme::parse(&name).unwrap();
        let q = ExpertWeights::quantize(&d, scheme).unwrap();
        let WeightData::Fp8 { codes, scales } = &q.w13.data else {
            panic!("{name}: not fp8 data")
        };
        let s0 = scales[0];
        let decode = |c: u8| {
            if max == 448.0 {
                F8E4M3::from_bits(c).to_f32()
            } else {
                F8E4M3Fnuz::from_bits(c).to_f32()
            }
        };
        // The element with the largest magnitude maps to ±max exactly.
        let row = if scales.len() == 2 {
            &d.w13[..256 * 128]
        } else {
            &d.w13[..128]
        };
        let idx = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        assert_eq!(decode(codes[idx]).abs(), max, "{name}");
        assert!((s0 - row[idx].abs() / max).abs() <= f32::EPSILON * s0);
    }
}

#[test]
fn block128_scales_cover_partial_blocks() {
    let mut cfg = LayerConfig::new(1, 1, 200, 130);
    cfg.activation = Activation::Relu2;
    let d = DenseExperts::random(&cfg, 3);
    let q = ExpertWeights::quantize(&d, QuantScheme::parse("fp8-block128").unwrap()).unwrap();
    let WeightData::Fp8 { scales, .. } = &q.w13.data else {
        panic!()
    };
    assert_eq!(
        scales.len(),
        130usize.div_ceil(128) * 200usize.div_ceil(128)
    );
    assert!(rel(&q.dequantize().unwrap().w13, &d.w13) < 0.05);
}

#[test]
fn activation_fp8_per_token_matches_definition() {
    let mut r = rng(11);
    let x = uniform(&mut r, 4 * 256, 3.0);
    for (rule, flavor) in [
        (ActScale::DynamicPerToken, Fp8Flavor::E4M3Fn),
        (ActScale::DynamicPerGroup128, Fp8Flavor::E4M3Fnuz),
        (ActScale::DynamicPerTensor, Fp8Flavor::E4M3Fn),
    ] {
        let mut got = x.clone();
        ActQuant::Fp8 {
            flavor,
            rule,
            static_scale: None,
            numerics: Numerics::Producer,
        }
        .apply(&mut got, 256)
        .unwrap();
        let extent = match rule {
            ActScale::DynamicPerToken => 256,
            ActScale::DynamicPerGroup128 => 128,
            _ => x.len(),
        };
        for (chunk, out) in x.chunks(extent).zip(got.chunks(extent)) {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = amax / flavor.max();
            for (v, o) in chunk.iter().zip(out) {
                let want = if flavor == Fp8Flavor::E4M3Fn {
                    F8E4M3::from_f32(v / s).to_f32()
                } else {
                    F8E4M3Fnuz::from_f32(v / s).to_f32()
                } * s;
                assert_eq!(*o, want, "{rule:?}");
            }
        }
    }
}

#[test]
fn activation_static_fp8_saturates_and_int8_rounds_per_token() {
    let mut x = vec![0.5f32, 1000.0, -1000.0, 0.001];
    ActQuant::Fp8 {
        flavor: Fp8Flavor::E4M3Fn,
        rule: ActScale::StaticPerTensor,
        static_scale: Some(1.0),
        numerics: Numerics::Producer,
    }
    .apply(&mut x, 4)
    .unwrap();
    assert_eq!(
        x,
        vec![0.5, 448.0, -448.0, F8E4M3::from_f32(0.001).to_f32()]
    );
    let mut y = vec![127.0f32, 1.4, -1.6, 0.5];
    ActQuant::Int8PerToken.apply(&mut y, 4).unwrap();
    assert_eq!(y, vec![127.0, 1.0, -2.0, 0.0]);
}

#[test]
fn activation_mx_uses_quarks_even_scale() {
    // amax 5.5: f32 mantissa 0.375 + half an e2m1 ulp (0.25) stays below 2 → exponent 2,
    // minus emax 2 → scale 1. amax 7.0: 0.75 + 0.25 carries → exponent 3 → scale 2.
    for (amax, scale) in [(5.5f32, 1.0f32), (7.0, 2.0)] {
        let mut x = vec![0.3f32; 32];
        x[0] = amax;
        let orig = x.clone();
        ActQuant::Mx(MxElem::Fp4E2M1).apply(&mut x, 32).unwrap();
        for (o, v) in x.iter().zip(&orig) {
            assert_eq!(
                *o,
                F4E2M1::from_f32(v / scale).to_f32() * scale,
                "amax {amax}"
            );
        }
    }
}

#[test]
fn activation_nvfp4_follows_the_two_level_scale() {
    let mut r = rng(12);
    let x = uniform(&mut r, 64, 2.0);
    let input_scale = 2.0 / (448.0 * 6.0);
    let mut got = x.clone();
    ActQuant::Nvfp4 {
        input_scale,
        numerics: Numerics::Producer,
    }
    .apply(&mut got, 64)
    .unwrap();
    let global = 1.0 / input_scale;
    for (b, o) in x.chunks(16).zip(got.chunks(16)) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = F8E4M3::from_f32(global * (amax / 6.0)).to_f32();
        for (v, g) in b.iter().zip(o) {
            let want = F4E2M1::from_f32((v * global / s).clamp(-6.0, 6.0)).to_f32() * s / global;
            assert!(
                (g - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "{g} vs {want}"
            );
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    let d = dense(2, 96, 64, 4);
    // A group that does not divide K.
    match ExpertWeights::quantize(&d, QuantScheme::parse("w4a16-g64").unwrap()) {
        Err(Error::GroupSize {
            group: 64, dim: 96, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // MX needs K a multiple of 32; 100 is not.
    let d2 = dense(1, 100, 64, 5);
    assert!(matches!(
        ExpertWeights::quantize(&d2, QuantScheme::parse("mxfp4").unwrap()),
        Err(Error::GroupSize { group: 32, .. })
    ));
    // NaN and negative scales.
    let mut q = ExpertWeights::quantize(&d, QuantScheme::parse("fp8-channel").unwrap()).unwrap();
    if let WeightData::Fp8 { scales, .. } = &mut q.w2.data {
        scales[3] = f32::NAN;
    }
    assert!(matches!(q.validate(), Err(Error::Scale { why: "NaN", .. })));
    if let WeightData::Fp8 { scales, .. } = &mut q.w2.data {
        scales[3] = -1.0;
    }
    assert!(matches!(
        q.validate(),
        Err(Error::Scale {
            why: "negative",
            ..
        })
    ));
    // Truncated data.
    let mut q = ExpertWeights::quantize(&d, QuantScheme::parse("bf16").unwrap()).unwrap();
    if let WeightData::Bf16(v) = &mut q.w13.data {
        v.pop();
    }
    assert!(matches!(q.validate(), Err(Error::Shape { .. })));
    // Data of the wrong kind for the scheme.
    let mut q = ExpertWeights::quantize(&d, QuantScheme::parse("bf16").unwrap()).unwrap();
    q.scheme = QuantScheme::parse("fp8").unwrap();
    assert!(matches!(q.validate(), Err(Error::Config(m)) if m.contains("cannot hold bf16")));
    // A static scheme without input scales.
    let q = ExpertWeights::quantize(&d, QuantScheme::parse("fp8-static").unwrap()).unwrap();
    assert!(matches!(q.validate(), Err(Error::Missing { .. })));
}

#[test]
fn per_expert_input_scales_are_kept_for_fp8_and_reduced_for_nvfp4() {
    let d = dense(3, 128, 64, 6);
    let mut q = ExpertWeights::quantize(&d, QuantScheme::parse("fp8-static").unwrap()).unwrap();
    q.set_input_scales_per_expert(&[0.5, 2.0, 1.0], &[0.1, 0.1, 0.1])
        .unwrap();
    // fp8: each expert its own; agreeing values stay one per tensor.
    let want = InputScales {
        w13: vec![0.5, 2.0, 1.0],
        w2: vec![0.1],
    };
    assert_eq!(q.input_scales.as_ref(), Some(&want));
    assert_eq!(want.of(Stage::W13, 1), 2.0);
    assert_eq!(want.of(Stage::W2, 2), 0.1);
    assert!(want.is_per_expert());
    q.validate().unwrap();
    // A count that is neither 1 nor E is refused.
    q.input_scales = Some(InputScales {
        w13: vec![0.5, 2.0],
        w2: vec![0.1],
    });
    assert!(matches!(q.validate(), Err(Error::Shape { .. })));
    // NVFP4 W4A4 takes one global scale per GEMM input: the maximum, and differing ones
    // set by hand are refused.
    let mut n = ExpertWeights::quantize(&d, QuantScheme::parse("nvfp4").unwrap()).unwrap();
    n.set_input_scales_per_expert(&[0.5, 2.0, 1.0], &[0.1, 0.3, 0.2])
        .unwrap();
    assert_eq!(n.input_scales, Some(InputScales::uniform(2.0, 0.3)));
    n.validate().unwrap();
    n.input_scales = Some(InputScales {
        w13: vec![0.5, 2.0, 1.0],
        w2: vec![0.3],
    });
    assert!(matches!(n.validate(), Err(Error::Config(m)) if m.contains("one per tensor")));
    assert!(matches!(
        q.set_input_scales_per_expert(&[0.5, f32::NAN, 1.0], &[0.1; 3]),
        Err(Error::Scale { .. })
    ));
    assert!(matches!(
        q.set_input_scales_per_expert(&[0.5, 1.0], &[0.1; 3]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn int4_codes_pack_in_gptq_order_and_act_order_scatters_groups() {
    let d = dense(1, 256, 128, 7);
    let q = ExpertWeights::quantize(&d, QuantScheme::parse("w4a16-g64-actorder").unwrap()).unwrap();
    let WeightData::Int(iw) = &q.w13.data else {
        panic!()
    };
    let g = iw.g_idx.as_ref().unwrap();
    assert_eq!(g.len(), 256);
    for grp in 0..4u32 {
        assert_eq!(g.iter().filter(|&&x| x == grp).count(), 64);
    }
    assert!(
        g.windows(2)
            .any(|w| w[0] != w[1] && w[1] != w[0] + 1 || w[1] < w[0]),
        "act-order groups should not be contiguous"
    );
    // Word 0 of row 0 holds columns 0..8, column j in bits 4j..4j+3.
    let w0 = iw.packed4[0] as u32;
    for j in 0..8 {
        let code = (w0 >> (4 * j)) & 0xF;
        let grp = g[j] as usize;
        let want = ((d.w13[j] / iw.scales[grp]).round_ties_even() + 8.0).clamp(0.0, 15.0) as u32;
        assert_eq!(code, want, "column {j}");
    }
}

#[test]
fn bytes_per_expert_counts_packed_weights_and_scales() {
    let d = dense(2, 256, 128, 8);
    let bf16 = ExpertWeights::quantize(&d, QuantScheme::parse("bf16").unwrap())
        .unwrap()
        .bytes_per_expert();
    assert_eq!(bf16, 2 * (256 * 256 + 256 * 128));
    let w4 = ExpertWeights::quantize(&d, QuantScheme::parse("w4a16").unwrap())
        .unwrap()
        .bytes_per_expert();
    assert!(w4 > bf16 / 4 && w4 < bf16 / 3, "{w4} vs {bf16}");
}
