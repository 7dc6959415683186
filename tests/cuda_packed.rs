//! The low-bit CUDA layout (`backends::cuda::packed`), checked on the CPU: packing and
//! unpacking returns the checkpoint's codes and scales bit for bit, every lane of a
//! fragment tile owns a distinct slot, and what the kernel multiplies by is the
//! checkpoint weight (exactly for e2m1 formats and W4A8, within one bf16 rounding for
//! int weight-only, whose scales go to bf16).

use fleetmoe::backends::cuda::layout::{prepare, w13_row_order, GemmWeights};
use fleetmoe::backends::cuda::packed::{entry, unpack_codes, Code, NVFP4_ROW_FACTOR};
use fleetmoe::formats::{unpack_fp4, unpack_int4_i32};
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme, QuantTensor, WeightData};
use std::collections::HashSet;

const E: usize = 3;

/// Schemes with their hidden and intermediate sizes: K not a multiple of the 64- or
/// 128-column stage appears in each family.
fn cases() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("mxfp4", 256, 160),
        ("mxfp4-a-fp8", 192, 256),
        ("nvfp4-a16", 272, 176),
        ("w4a16", 384, 256),
        ("w4a16-g32-zp", 160, 96),
        ("w4a16-g64", 320, 192),
        ("w4a16-channel", 200, 136),
        ("w8a16", 256, 128),
        ("w8a16-g128-zp", 384, 256),
        ("w4a8", 384, 256),
    ]
}

/// The checkpoint's codes, one per byte, `[E, rows, cols]`.
fn checkpoint_codes(t: &QuantTensor) -> Vec<u8> {
    match &t.data {
        WeightData::Mx { packed, .. } | WeightData::Nvfp4 { packed, .. } => unpack_fp4(packed),
        WeightData::Int(iw) => match iw.bits {
            fleetmoe::quant::IntBits::Int4 => unpack_int4_i32(&iw.packed4),
            fleetmoe::quant::IntBits::Int8 => iw.bytes.clone(),
        },
        _ => unreachable!("packed cases only"),
    }
}

fn check_projection(
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
    let want = checkpoint_codes(t);
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
            check_projection(name, "w13", &w.w13, &truth.w13, &p.w13, &order13);
            check_projection(name, "w2", &w.w2, &truth.w2, &p.w2, &order2);
        }
    }
}

#[test]
fn every_lane_owns_distinct_bits_of_a_fragment_tile() {
    let config = LayerConfig::new(1, 1, 256, 128);
    let dense = DenseExperts::random(&config, 1);
    for name in ["mxfp4", "mxfp4-a-fp8", "w8a16", "w4a8"] {
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
fn act_order_and_groups_the_fragments_cannot_use_are_refused() {
    let config = LayerConfig::new(2, 1, 256, 128);
    let dense = DenseExperts::random(&config, 3);
    let w =
        ExpertWeights::quantize(&dense, QuantScheme::parse("w4a16-g64-actorder").unwrap()).unwrap();
    let err = prepare(&w, Activation::SiluAndMul).unwrap_err().to_string();
    assert!(err.contains("act-order"), "{err}");
    let w = ExpertWeights::quantize(&dense, QuantScheme::parse("w4a16-g8").unwrap()).unwrap();
    let err = prepare(&w, Activation::SiluAndMul).unwrap_err().to_string();
    assert!(err.contains("group 8"), "{err}");
}

/// The NVFP4 row factor is written as a decimal literal (the MSRV has no const
/// `f32::from_bits`); it must be exactly 2^119 or every NVFP4 result is off by a ulp.
#[test]
fn nvfp4_row_factor_is_exactly_two_to_the_119() {
    assert_eq!(NVFP4_ROW_FACTOR, 2f32.powi(119));
}
