//! The CUDA GEMMs' weight layout, checked on the CPU: every prepared element dequantizes to
//! the checkpoint element it came from, and a consumer that pairs rows the way gemm.cu's
//! epilogue does (rows r and r + 8 of each 16-row group) computes the emulation's
//! activation exactly.

use fleetmoe::backends::cuda::layout::{prepare, w13_row_order};
use fleetmoe::moe::{Activation, LayerConfig};
use fleetmoe::quant::{DenseExperts, ExpertWeights, QuantScheme};

const E: usize = 3;
const H: usize = 256;
const I: usize = 384;

#[test]
fn prepared_weights_are_the_checkpoint_reordered() {
    for act in [
        Activation::SiluAndMul,
        Activation::GPT_OSS,
        Activation::Relu2,
    ] {
        let config = LayerConfig {
            activation: act,
            has_bias: true,
            ..LayerConfig::new(E, 2, H, I)
        };
        let dense = DenseExperts::random(&config, 5);
        // w8a8-int8 (issue 18): s8 = code − 128, the per-channel scale per prepared row.
        for name in [
            "bf16",
            "f16",
            "fp8",
            "fp8-channel",
            "fp8-block128",
            "w8a8-int8",
        ] {
            let w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
            let truth = w.dequantize().unwrap();
            let p = prepare(&w, act).unwrap();
            let order = w13_row_order(act, I).unwrap();
            let rows13 = act.w13_rows(I);
            assert_eq!(
                (p.w13.rows, p.w13.cols, p.w2.rows, p.w2.cols),
                (rows13, H, H, I)
            );
            for e in 0..E {
                for (r, &src) in order.iter().enumerate() {
                    for c in (0..H).step_by(7) {
                        let want = truth.w13[(e * rows13 + src) * H + c];
                        assert_eq!(
                            p.w13.value(e, r, c),
                            want,
                            "{name} {} w13 e{e} r{r} c{c}",
                            act.name()
                        );
                    }
                    let bias = p.w13.bias.as_ref().unwrap()[e * rows13 + r];
                    assert_eq!(bias, truth.w13_bias.as_ref().unwrap()[e * rows13 + src]);
                }
                for r in (0..H).step_by(5) {
                    for c in (0..I).step_by(11) {
                        assert_eq!(
                            p.w2.value(e, r, c),
                            truth.w2[(e * H + r) * I + c],
                            "{name} w2"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_epilogue_pairing_gives_the_emulated_activation() {
    for act in [
        Activation::SiluAndMul,
        Activation::GeluAndMul,
        Activation::GPT_OSS,
    ] {
        let order = w13_row_order(act, I).unwrap();
        // A gemm1 output row in checkpoint order.
        let h: Vec<f32> = (0..2 * I)
            .map(|j| ((j * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let mut want = vec![0f32; I];
        act.apply(&h, &mut want);
        for g in 0..I / 8 {
            for j in 0..8 {
                let (gate, up) = (h[order[16 * g + j]], h[order[16 * g + 8 + j]]);
                let mut one = [0f32; 1];
                // A one-feature row: gate then up is the halves layout for I = 1; GPT-OSS
                // interleaves, which for I = 1 is the same two values.
                act.apply(&[gate, up], &mut one);
                assert_eq!(
                    one[0],
                    want[8 * g + j],
                    "{} feature {}",
                    act.name(),
                    8 * g + j
                );
            }
        }
    }
}

#[test]
fn shapes_the_kernels_cannot_tile_are_refused() {
    let config = LayerConfig::new(2, 1, 256, 12);
    let w = ExpertWeights::quantize(
        &DenseExperts::random(&config, 1),
        QuantScheme::parse("bf16").unwrap(),
    )
    .unwrap();
    let err = prepare(&w, Activation::SiluAndMul).unwrap_err().to_string();
    assert!(err.contains("intermediate"), "{err}");
}
