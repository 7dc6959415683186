//! The low-bit CUDA layout (`backends::cuda::packed`), checked on the CPU: packing and
//! unpacking returns the checkpoint's codes and scales bit for bit, every lane of a
//! fragment tile owns a distinct slot, and what the kernel multiplies by is the
//! checkpoint weight (exactly for e2m1 formats and W4A8, within one bf16 rounding for
//! int weight-only, whose scales go to bf16).

use fleetmoe::backends::cuda::layout::{prepare, w13_row_order, GemmWeights};
use fleetmoe::backends::cuda::packed::{
    act_order_perm, entry, unpack_codes, Code, NVFP4_ROW_FACTOR,
};
use fleetmoe::formats::{unpack_fp4, unpack_int4_i32};
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::quant::{
    fp8, mx, DenseExperts, ExpertWeights, Fp8Flavor, MxElem, QuantScheme, QuantTensor, WeightData,
};
use std::collections::HashSet;

const E: usize = 3;

/// Schemes with their hidden and intermediate sizes: K not a multiple of the 64- or
/// 128-column stage appears in each family.
fn cases() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("mxfp4", 256, 160),
        ("mxfp4-a-fp8", 192, 256),
        // MX activations: the same packed e2m1 weights as mxfp4-a-fp8; MXFP6 re-encoded.
        ("mxfp4-a-mxfp4", 160, 96),
        ("mxfp6-e2m3", 256, 160),
        ("mxfp6-e3m2-a-fp8", 192, 224),
        ("mxfp6-e2m3-a-bf16", 224, 160),
        ("nvfp4-a16", 272, 176),
        // W4A4 packs the same weights (its activations are QDQ'd to bf16 on the device).
        ("nvfp4", 160, 96),
        ("w4a16", 384, 256),
        ("w4a16-g32-zp", 160, 96),
        ("w4a16-g64", 320, 192),
        ("w4a16-channel", 200, 136),
        ("w8a16", 256, 128),
        ("w8a16-g128-zp", 384, 256),
        ("w4a8", 384, 256),
    ]
}

/// The checkpoint's codes, one per byte, `[E, rows, cols]` — for MXFP6 (which the fp8
/// kernels take as e4m3 bytes) the e4m3fn byte of each code's value.
fn checkpoint_codes(scheme: &QuantScheme, t: &QuantTensor) -> Vec<u8> {
    match (&t.data, scheme) {
        (
            WeightData::Mx { packed, .. },
            QuantScheme::Mx {
                elem: elem @ (MxElem::Fp6E2M3 | MxElem::Fp6E3M2),
                ..
            },
        ) => mx::unpack(*elem, packed)
            .unwrap()
            .into_iter()
            .map(|c| fp8::encode(Fp8Flavor::E4M3Fn, mx::decode(*elem, c)))
            .collect(),
        (WeightData::Mx { packed, .. } | WeightData::Nvfp4 { packed, .. }, _) => unpack_fp4(packed),
        (WeightData::Int(iw), _) => match iw.bits {
            fleetmoe::quant::IntBits::Int4 => unpack_int4_i32(&iw.packed4),
            fleetmoe::quant::IntBits::Int8 => iw.bytes.clone(),
        },
        _ => unreachable!("packed cases only"),
    }
}

fn check_projection(
    scheme: &QuantScheme,
    name: &str,
    what: &str,
    t: &QuantTensor,
    truth: &[f32],
    p: &GemmWeights,
    order: &[usize],
) {
    let packing = p.packing.as_ref().expect("low-bit weights are packed");
    let (rows, cols) = (t.rows, t.cols);
    // Codes: unpack, undo the row order, compare bit for bit.
    let got = unpack_codes(&p.data, packing, E, rows, cols);
    let want = checkpoint_codes(scheme, t);
    for e in 0..E {
        for (pr, &cr) in order.iter().enumerate() {
            assert_eq!(
                got[(e * rows + pr) * cols..][..cols],
                want[(e * rows + cr) * cols..][..cols],
                "{name} {what}: codes of expert {e} row {pr}"
            );
        }
    }
    // Scales: the entry of every group holds the checkpoint's scale.
    for e in 0..E {
        for (pr, &cr) in order.iter().enumerate().step_by(3) {
            for c in (0..cols).step_by(16) {
                let stored = entry(packing, (E, rows), e, pr, c);
                match &t.data {
                    WeightData::Mx { scales, .. } => {
                        assert_eq!(stored[0], scales[(e * rows + cr) * (cols / 32) + c / 32])
                    }
                    WeightData::Nvfp4 { block_scales, .. } => assert_eq!(
                        stored[0],
                        block_scales[(e * rows + cr) * (cols / 16) + c / 16]
                    ),
                    WeightData::Int(iw) => {
                        let g = (e * rows + cr) * (cols / iw.group) + c / iw.group;
                        let s = if packing.fp8_act {
                            f32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]])
                        } else {
                            half::bf16::from_le_bytes([stored[0], stored[1]]).to_f32()
                        };
                        let want = if packing.fp8_act {
                            iw.scales[g]
                        } else {
                            half::bf16::from_f32(iw.scales[g]).to_f32()
                        };
                        assert_eq!(s, want, "{name} {what}: scale of group {g}");
                    }
                    _ => unreachable!(),
                }
            }
        }
    }
    // Values: what the kernel multiplies by against the dequantized checkpoint.
    let exact = packing.fp8_act || matches!(packing.code, Code::Mxfp4 | Code::Nvfp4);
    for e in 0..E {
        for (pr, &cr) in order.iter().enumerate().step_by(5) {
            for c in (0..cols).step_by(3) {
                let want = truth[(e * rows + cr) * cols + c];
                let got = p.value(e, pr, c);
                let tol = if exact { 1e-6 } else { 8e-3 } * want.abs().max(1e-30);
                assert!(
                    (got - want).abs() <= tol,
                    "{name} {what} e{e} r{pr} c{c}: kernel weight {got}, checkpoint {want}"
                );
            }
        }
    }
}

#[test]
fn packed_weights_round_trip_and_dequantize_to_the_checkpoint() {
    for (name, hidden, inter) in cases() {
        for act in [
            Activation::SiluAndMul,
            Activation::GPT_OSS,
            Activation::Relu2,
        ] {
            let config = LayerConfig {
                activation: act,
                has_bias: true,
                ..LayerConfig::new(E, 2, hidden, inter)
            };
            let dense = DenseExperts::random(&config, 9);
            let scheme = QuantScheme::parse(name).unwrap();
            let w = ExpertWeights::quantize(&dense, scheme).unwrap();
            let truth = w.dequantize().unwrap();
            let p = prepare(&w, act).unwrap_or_else(|e| panic!("{name}: {e}"));
            let order13 = w13_row_order(act, inter).unwrap();
            let order2: Vec<usize> = (0..hidden).collect();
            let s = &w.scheme;
            check_projection(s, name, "w13", &w.w13, &truth.w13, &p.w13, &order13);
            check_projection(s, name, "w2", &w.w2, &truth.w2, &p.w2, &order2);
        }
    }
}

#[test]
fn every_lane_owns_distinct_bits_of_a_fragment_tile() {
    let config = LayerConfig::new(1, 1, 256, 128);
    let dense = DenseExperts::random(&config, 1);
    for name in ["mxfp4", "mxfp4-a-fp8", "mxfp6-e3m2", "w8a16", "w4a8"] {
        let w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
        let p = prepare(&w, Activation::SiluAndMul).unwrap();
        let packing = p.w2.packing.unwrap();
        let bits = packing.code.bits();
        let mut seen = HashSet::new();
        for r in 0..16 {
            for k in 0..packing.kf() {
                let (lane, bit) = packing.position(r, k);
                assert!(
                    lane < 32 && bit + bits <= 8 * packing.lane_bytes(),
                    "{name}"
                );
                assert!(bit % bits == 0, "{name}: unaligned code");
                assert!(seen.insert((lane, bit)), "{name}: r{r} k{k} collides");
            }
        }
        assert_eq!(seen.len() * bits, 32 * 8 * packing.lane_bytes(), "{name}");
    }
}

#[test]
fn groups_the_fragments_cannot_use_are_refused() {
    let config = LayerConfig::new(2, 1, 256, 128);
    let dense = DenseExperts::random(&config, 3);
    for name in ["w4a16-g8", "w4a16-g8-actorder"] {
        let w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
        let err = prepare(&w, Activation::SiluAndMul).unwrap_err().to_string();
        assert!(err.contains("group 8"), "{name}: {err}");
    }
}

/// The act-order int weights of `t`, with their g_idx.
fn int_weights(t: &QuantTensor) -> &fleetmoe::quant::IntWeights {
    match &t.data {
        WeightData::Int(iw) => iw,
        _ => unreachable!("int schemes only"),
    }
}

/// GPTQ act-order (issue 18): each expert's K is sorted by group at load time. The
/// permutation is one per expert and sorts the groups into consecutive runs of `group`
/// columns; the packed codes read back in prepared order are the checkpoint's codes at the
/// permuted columns; every weight the kernel multiplies by is the emulation's weight (the
/// bf16 kernel dequantization) at that column, so the permuted grouped dot product of a
/// gathered activation equals the act-order one.
#[test]
fn act_order_layout_is_the_checkpoint_with_k_sorted_by_group() {
    for (name, hidden, inter) in [
        ("w4a16-g64-actorder", 320, 192),
        ("w4a16-g32-zp-actorder", 160, 96),
        ("w4a16-actorder", 384, 256),
        ("w4a16-channel-actorder", 200, 136),
        ("w8a16-g64-zp-actorder", 256, 128),
        ("w8a16-actorder", 384, 128),
    ] {
        for act in [Activation::SiluAndMul, Activation::Relu2] {
            let config = LayerConfig::new(E, 2, hidden, inter);
            let config = LayerConfig {
                activation: act,
                ..config
            };
            let dense = DenseExperts::random(&config, 21);
            let scheme = QuantScheme::parse(name).unwrap();
            let w = ExpertWeights::quantize(&dense, scheme).unwrap();
            let p = prepare(&w, act).unwrap_or_else(|e| panic!("{name}: {e}"));
            let order13 = w13_row_order(act, inter).unwrap();
            let order2: Vec<usize> = (0..hidden).collect();
            let kernels: Vec<(Vec<f32>, Vec<f32>)> = (0..E)
                .map(|e| w.dequantize_expert_as_kernels(e).unwrap())
                .collect();
            for (what, t, prep, order) in [
                ("w13", &w.w13, &p.w13, &order13),
                ("w2", &w.w2, &p.w2, &order2),
            ] {
                let iw = int_weights(t);
                let g_idx = iw.g_idx.as_ref().expect("act-order weights carry g_idx");
                let packing = prep.packing.as_ref().unwrap();
                let perm = packing
                    .k_perm
                    .as_ref()
                    .expect("act-order layout has a K permutation");
                let (rows, cols) = (t.rows, t.cols);
                assert_eq!(perm.len(), E * cols);
                let got = unpack_codes(&prep.data, packing, E, rows, cols);
                let want = checkpoint_codes(&w.scheme, t);
                let mut rng = 0x2545_f491_4f6c_dd1du64;
                let x: Vec<f32> = (0..cols)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                for e in 0..E {
                    let pe = &perm[e * cols..][..cols];
                    let ge = &g_idx[e * cols..][..cols];
                    // A permutation whose groups are consecutive runs of `group` columns.
                    let mut seen = vec![false; cols];
                    for (k, &c) in pe.iter().enumerate() {
                        assert!(!seen[c as usize], "{name} {what}: column {c} twice");
                        seen[c as usize] = true;
                        assert_eq!(
                            ge[c as usize] as usize,
                            k / iw.group.min(cols),
                            "{name} {what}"
                        );
                    }
                    // Act-order must actually reorder, or this test would not be testing it.
                    if iw.group < cols {
                        assert!(
                            pe.iter().enumerate().any(|(k, &c)| k != c as usize),
                            "{name}"
                        );
                    }
                    let truth = if what == "w13" {
                        &kernels[e].0
                    } else {
                        &kernels[e].1
                    };
                    let gathered: Vec<f32> = pe.iter().map(|&c| x[c as usize]).collect();
                    for (pr, &cr) in order.iter().enumerate() {
                        let row_got = &got[(e * rows + pr) * cols..][..cols];
                        let row_want = &want[(e * rows + cr) * cols..][..cols];
                        for k in 0..cols {
                            assert_eq!(
                                row_got[k], row_want[pe[k] as usize],
                                "{name} {what}: code of e{e} r{pr} k{k}"
                            );
                        }
                        if pr % 7 != 0 {
                            continue;
                        }
                        // The weights the kernel multiplies by, at the permuted columns.
                        let mut dot_perm = 0f64;
                        for (k, &xk) in gathered.iter().enumerate() {
                            let v = prep.value(e, pr, k);
                            assert_eq!(
                                v,
                                truth[cr * cols + pe[k] as usize],
                                "{name} {what}: weight of e{e} r{pr} k{k}"
                            );
                            dot_perm += v as f64 * xk as f64;
                        }
                        let dot: f64 = (0..cols)
                            .map(|c| truth[cr * cols + c] as f64 * x[c] as f64)
                            .sum();
                        assert!(
                            (dot_perm - dot).abs() <= 1e-9 * dot.abs().max(1e-3),
                            "{name} {what}: permuted dot {dot_perm} vs act-order {dot}"
                        );
                    }
                }
            }
        }
    }
}

/// A g_idx whose groups are not all `group` columns wide cannot be sorted into the
/// grouped layout; it is refused (the emulation runs it) rather than laid out wrong.
#[test]
fn act_order_with_uneven_groups_is_refused() {
    let config = LayerConfig::new(2, 1, 256, 128);
    let dense = DenseExperts::random(&config, 4);
    let mut w =
        ExpertWeights::quantize(&dense, QuantScheme::parse("w4a16-g64-actorder").unwrap()).unwrap();
    if let WeightData::Int(iw) = &mut w.w13.data {
        let g = iw.g_idx.as_mut().unwrap();
        // Move one column of group 0 into group 1.
        let c = g.iter().position(|&v| v == 0).unwrap();
        g[c] = 1;
    }
    let err = prepare(&w, Activation::SiluAndMul).unwrap_err().to_string();
    assert!(
        err.contains("act-order") && err.contains("not all 64 columns"),
        "{err}"
    );
    assert_eq!(
        act_order_perm(&[1, 0, 1, 0], 1, 4, 2).unwrap(),
        [1, 3, 0, 2],
        "stable sort by group"
    );
}

/// The NVFP4 row factor is written as a decimal literal (the MSRV has no const
/// `f32::from_bits`); it must be exactly 2^119 or every NVFP4 result is off by a ulp.
#[test]
fn nvfp4_row_factor_is_exactly_two_to_the_119() {
    assert_eq!(NVFP4_ROW_FACTOR, 2f32.powi(119));
}

/// `fm_nvfp4_qdq_rows` (kernels-cuda/quant.cu) rounds to e2m1 by a threshold table instead
/// of the bit-exact codec; the same table here against `F4E2M1::from_f32` (ties to the even
/// code, sign kept) over every multiple of 2^-12 in [-6, 6] and the exact ties.
#[test]
fn the_kernels_e2m1_threshold_table_is_round_to_nearest_even() {
    use fleetmoe::formats::{MiniFloat, F4E2M1};
    let table = |v: f32| -> f32 {
        let a = v.abs();
        let q: f32 = if a <= 0.25 {
            0.0
        } else if a < 0.75 {
            0.5
        } else if a <= 1.25 {
            1.0
        } else if a < 1.75 {
            1.5
        } else if a <= 2.5 {
            2.0
        } else if a < 3.5 {
            3.0
        } else if a <= 5.0 {
            4.0
        } else {
            6.0
        };
        q.copysign(v)
    };
    let n = 6 * 4096;
    for i in -n..=n {
        let v = i as f32 / 4096.0;
        let want = F4E2M1::from_f32(v).to_f32();
        let got = table(v);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{v}: table {got}, codec {want}"
        );
    }
}
