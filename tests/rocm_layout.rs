//! The AMD weight layouts, checked on the CPU (no AMD GPU has run them): prepare then
//! unprepare gives the checkpoint's bits back, and a consumer that reads the prepared
//! bytes only through the documented index maps (AITER's 16×16 shuffle, its e8m0 scale
//! shuffle) and the fnuz rule computes what the emulation computes.

mod common;

use fleetmoe::backends::rocm::layout::{prepare, unprepare, Elem, HipGemmWeights};
use fleetmoe::backends::rocm::scale_shuffle::{padded_shape, shuffled_index};
use fleetmoe::formats::{MiniFloat, E8M0, F8E4M3};
use fleetmoe::moe::emulation::dot;
use fleetmoe::moe::prepare::prepare as prepare_pairs;
use fleetmoe::moe::{Activation, EmulatedExperts, Experts, LayerConfig};
use fleetmoe::oracle::Conversion;
use fleetmoe::quant::activation::round_to_model_dtype;
use fleetmoe::quant::{
    fp8, int, mx, DenseExperts, ExpertWeights, Fp8Flavor, IntBits, MxElem, QuantScheme, Stage,
    StageQuant, WeightData,
};

const SCHEMES: &[&str] = &[
    "bf16",
    "f16",
    "fp8",
    "fp8-channel",
    "fp8-block128",
    "fp8-static",
    "mxfp4",
    "mxfp4-a-mxfp4",
    "mxfp6-e3m2",
    "mxfp6-e2m3-a-fp8",
    "nvfp4-a16",
    "nvfp4",
    "w4a16",
    "w4a16-g64-zp",
    "w4a16-actorder",
    "w8a16",
    "w8a8-int8",
    "w4a8",
];

/// The two AMD targets: gfx942 takes e4m3fnuz, gfx950 OCP e4m3fn.
const DEVICES: &[(&str, Option<Fp8Flavor>)] = &[
    ("gfx942", Some(Fp8Flavor::E4M3Fnuz)),
    ("gfx950", Some(Fp8Flavor::E4M3Fn)),
];

fn config(act: Activation) -> LayerConfig {
    LayerConfig {
        activation: act,
        has_bias: act == Activation::GPT_OSS,
        // K of both GEMMs a multiple of 128 (MXFP6 and the scaled MFMA need it).
        ..LayerConfig::new(4, 2, 256, 384)
    }
}

fn weights(name: &str, act: Activation, seed: u64) -> (LayerConfig, ExpertWeights) {
    let cfg = config(act);
    let dense = DenseExperts::random(&cfg, seed);
    let mut w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
    if w.scheme.needs_static_input_scales() {
        let mut rng = common::rng(seed);
        let x = common::uniform(&mut rng, 8 * cfg.hidden, 1.0);
        let topk = common::random_topk(&mut rng, 8, cfg.top_k, cfg.num_experts);
        fleetmoe::moe::calibrate(&mut w, &cfg, &x, &topk).unwrap();
    }
    (cfg, w)
}

/// fn → fnuz maps −0 (0x80) to +0; everything else comes back bit for bit.
fn without_negative_zero(d: &WeightData) -> WeightData {
    match d {
        WeightData::Fp8 { codes, scales } => WeightData::Fp8 {
            codes: codes
                .iter()
                .map(|&c| if c == 0x80 { 0 } else { c })
                .collect(),
            scales: scales.clone(),
        },
        other => other.clone(),
    }
}

#[test]
fn prepare_then_unprepare_returns_the_checkpoint_bits() {
    for name in SCHEMES {
        let (_, w) = weights(name, Activation::SiluAndMul, 3);
        for (arch, flavor) in DEVICES {
            let layer = prepare(&w, *flavor).unwrap();
            let (w13, w2) = unprepare(&layer, &w.scheme).unwrap();
            let fnuz = matches!(w.scheme, QuantScheme::Fp8 { .. }) && *arch == "gfx942";
            let expect = |d: &WeightData| {
                if fnuz {
                    without_negative_zero(d)
                } else {
                    d.clone()
                }
            };
            assert!(w13.data == expect(&w.w13.data), "{name} {arch} w13");
            assert!(w2.data == expect(&w.w2.data), "{name} {arch} w2");
            assert_eq!(
                layer.conversions.contains(&Conversion::Fp8FnToFnuz),
                fnuz,
                "{name} {arch}"
            );
            if !matches!(w.scheme, QuantScheme::Unquantized(_)) {
                // The shuffle really moved bytes.
                assert_ne!(layer.w13.data, raw_bytes(&w.w13.data), "{name} {arch}");
            }
        }
    }
}

fn raw_bytes(d: &WeightData) -> Vec<u8> {
    match d {
        WeightData::Fp8 { codes, .. } => codes.clone(),
        WeightData::Mx { packed, .. } | WeightData::Nvfp4 { packed, .. } => packed.clone(),
        WeightData::Int(iw) => match iw.bits {
            IntBits::Int4 => iw.packed4.iter().flat_map(|w| w.to_le_bytes()).collect(),
            IntBits::Int8 => iw.bytes.clone(),
        },
        _ => Vec::new(),
    }
}

/// One element read the way a kernel lane does: its byte(s) through the 16×16 shuffle
/// map, its scale through the checkpoint indexing (fp8, integer groups) or the e8m0
/// shuffle map (MX).
fn consume(w: &HipGemmWeights, e: usize, r: usize, c: usize) -> f32 {
    let shape = w.shuffle_shape();
    let at = |col_unit: usize| shape.shuffled_offset(e, r, col_unit);
    let raw = match w.elem {
        Elem::Int(bits) => {
            let code = match bits {
                IntBits::Int4 => (w.data[at(c / 2)] >> (4 * (c % 2))) & 0xF,
                IntBits::Int8 => w.data[at(c)],
            };
            let g = w.int.as_ref().expect("integer groups");
            let group = match &g.g_idx {
                Some(x) => x[e * w.cols + c] as usize,
                None => c / g.group,
            };
            let gi = (e * w.rows + r) * (w.cols / g.group) + group;
            let zero = g
                .zeros
                .as_ref()
                .map_or(int::mid_code(bits), |z| z[gi] as i32);
            // W4A8 multiplies out exactly (the fp8 MFMA); weight-only rounds to bf16.
            return match &g.channel_scales {
                Some(cs) => (code as i32 - zero) as f32 * g.scales[gi] * cs[e * w.rows + r],
                None => int::bf16_weight(code as f32, zero as f32, g.scales[gi]),
            };
        }
        Elem::Bf16 => half::bf16::from_le_bytes([w.data[at(c)], w.data[at(c) + 1]]).to_f32(),
        Elem::F16 => half::f16::from_le_bytes([w.data[at(c)], w.data[at(c) + 1]]).to_f32(),
        Elem::Fp8(flavor) => fp8::decode(flavor, w.data[at(c)]),
        Elem::S8 => w.data[at(c)] as i8 as f32,
        Elem::Mx(MxElem::Fp4E2M1) | Elem::Nvfp4 => {
            let b = w.data[at(c / 2)];
            mx::decode(MxElem::Fp4E2M1, (b >> (4 * (c % 2))) & 0xF)
        }
        Elem::Mx(m) => {
            // 6-bit codes as an LSB-first bit stream along the row.
            let bit = 6 * c;
            let lo = w.data[at(bit / 8)] as u16;
            let hi = if bit % 8 > 2 {
                w.data[at(bit / 8 + 1)] as u16
            } else {
                0
            };
            mx::decode(m, (((lo | hi << 8) >> (bit % 8)) & 0x3F) as u8)
        }
    };
    let s8 = w.fp8_scales.as_ref().map_or(1.0, |(g, s)| {
        s[e * fp8::scales_per_expert(*g, w.rows, w.cols) + fp8::scale_index(*g, r, c, w.cols)]
    });
    // MX: e8m0 per 32 columns; NVFP4: e4m3fn per 16 and the expert's global scale.
    let block = if w.elem == Elem::Nvfp4 { 16 } else { 32 };
    let sblock = w.block_scales.as_ref().map_or(1.0, |s| {
        let (_, pc) = padded_shape(w.experts * w.rows, w.cols / block);
        let code = s[shuffled_index(pc, e * w.rows + r, c / block)];
        if w.elem == Elem::Nvfp4 {
            F8E4M3::from_bits(code).to_f32()
        } else {
            E8M0::from_bits(code).to_f32()
        }
    });
    let global = w.global_scales.as_ref().map_or(1.0, |g| g[e]);
    let row = w.row_scales.as_ref().map_or(1.0, |s| s[e * w.rows + r]);
    raw * s8 * sblock * global * row
}

fn dense_from(w: &HipGemmWeights, e: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.rows * w.cols);
    for r in 0..w.rows {
        for c in 0..w.cols {
            let v = consume(w, e, r, c);
            assert_eq!(
                v.to_bits(),
                w.value(e, r, c).to_bits(),
                "value() vs the map"
            );
            out.push(v);
        }
    }
    out
}

#[test]
fn a_consumer_of_the_prepared_layout_reproduces_the_emulation() {
    for act in [Activation::SiluAndMul, Activation::GPT_OSS] {
        for name in SCHEMES {
            let (cfg, w) = weights(name, act, 11);
            let mut rng = common::rng(7);
            let tokens = 5;
            let x: Vec<f32> = common::uniform(&mut rng, tokens * cfg.hidden, 2.0)
                .into_iter()
                .map(|v| if v == 0.0 { 0.5 } else { v })
                .collect();
            let topk = common::random_topk(&mut rng, tokens, cfg.top_k, cfg.num_experts);
            let mut want = vec![0f32; tokens * cfg.hidden];
            EmulatedExperts::prepare(&w, &cfg)
                .unwrap()
                .forward(&x, &topk, None, &mut want)
                .unwrap();
            // The values the kernels multiply (integer weights rounded to bf16 as
            // every weight-only kernel expands them; every other scheme exactly).
            let truth = w.dequantize_as_kernels().unwrap();
            for (arch, flavor) in DEVICES {
                let layer = prepare(&w, *flavor).unwrap();
                let (h, i) = (cfg.hidden, cfg.intermediate);
                let rows13 = act.w13_rows(i);
                let a1 =
                    StageQuant::for_scheme(&w.scheme, Stage::W13, w.input_scales.as_ref()).unwrap();
                let a2 =
                    StageQuant::for_scheme(&w.scheme, Stage::W2, w.input_scales.as_ref()).unwrap();
                let w13: Vec<Vec<f32>> = (0..cfg.num_experts)
                    .map(|e| dense_from(&layer.w13, e))
                    .collect();
                let w2: Vec<Vec<f32>> = (0..cfg.num_experts)
                    .map(|e| dense_from(&layer.w2, e))
                    .collect();
                for e in 0..cfg.num_experts {
                    let t = &truth.w13[e * rows13 * h..(e + 1) * rows13 * h];
                    assert!(
                        w13[e].iter().zip(t).all(|(a, b)| a == b),
                        "{name} {arch} w13 e{e}"
                    );
                }
                // The routing prepare of the layer (pairs, gemm1 input quantization), then
                // the experts computed from the consumed weights.
                let pairs =
                    prepare_pairs(&w.scheme, &a1, &x, h, &topk, cfg.num_experts, false).unwrap();
                let n = pairs.experts.len();
                let mut a = vec![0f32; n * i];
                for p in 0..n {
                    let e = pairs.experts[p];
                    let xin = &pairs.inputs[p * h..(p + 1) * h];
                    let mut g: Vec<f32> = (0..rows13)
                        .map(|r| dot(&w13[e][r * h..(r + 1) * h], xin))
                        .collect();
                    if let Some(b) = &layer.w13.bias {
                        g.iter_mut()
                            .zip(&b[e * rows13..])
                            .for_each(|(v, b)| *v += b);
                    }
                    round_to_model_dtype(&w.scheme, &mut g);
                    act.apply(&g, &mut a[p * i..(p + 1) * i]);
                }
                round_to_model_dtype(&w.scheme, &mut a);
                a2.apply(&mut a, i, &pairs.experts).unwrap();
                let mut got = vec![0f32; tokens * h];
                for p in 0..n {
                    let (e, t, j) = (pairs.experts[p], p / cfg.top_k, p % cfg.top_k);
                    for r in 0..h {
                        let mut y = dot(&w2[e][r * i..(r + 1) * i], &a[p * i..(p + 1) * i]);
                        if let Some(b) = &layer.w2.bias {
                            y += b[e * h + r];
                        }
                        got[t * h + r] += topk.weight(t, j) * y;
                    }
                }
                let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                let err = common::rel_l2(&got, &want64);
                assert!(want.iter().any(|v| *v != 0.0));
                assert!(err < 1e-5, "{name} {} {arch}: rel L2 {err:e}", act.name());
            }
        }
    }
}

#[test]
fn fnuz_codes_times_doubled_scales_are_the_checkpoint_values() {
    let (_, w) = weights("fp8-channel", Activation::SiluAndMul, 5);
    let layer = prepare(&w, Some(Fp8Flavor::E4M3Fnuz)).unwrap();
    assert_eq!(layer.w13.elem, Elem::Fp8(Fp8Flavor::E4M3Fnuz));
    let (WeightData::Fp8 { scales, .. }, Some((_, doubled))) = (&w.w13.data, &layer.w13.fp8_scales)
    else {
        panic!("fp8 weights expected")
    };
    assert!(scales.iter().zip(doubled).all(|(s, d)| *d == 2.0 * s));
    // No byte of the prepared data is the fnuz NaN.
    assert!(!layer.w13.data.contains(&0x80) && !layer.w2.data.contains(&0x80));
}

#[test]
fn shapes_the_shuffle_cannot_tile_are_errors() {
    // H = 24: w2 has 24 rows, not a multiple of the 16-row tile.
    let w = ExpertWeights::quantize(
        &DenseExperts::random(&LayerConfig::new(2, 1, 24, 64), 1),
        QuantScheme::parse("bf16").unwrap(),
    )
    .unwrap();
    let err = prepare(&w, None).unwrap_err().to_string();
    assert!(err.contains("16×16"), "{err}");
}
