//! Static fp8 input scales calibrated per expert (issue 16): the emulated layer quantizes
//! each expert's inputs with that expert's own scale. Checked against each expert run
//! alone with one scale (no per-row logic shared with the layer), and shown to matter:
//! the maximum of the scales, what fleetmoe used before, gives a clearly different answer.

mod common;

use common::*;
use fleetmoe::moe::{calibrate, EmulatedExperts, Experts, LayerConfig, Router, TopK};
use fleetmoe::quant::dense::gaussian;
use fleetmoe::quant::{DenseExperts, ExpertWeights, InputScales, QuantScheme};

const E: usize = 6;
const K: usize = 2;
const H: usize = 256;
const I: usize = 128;
const TOKENS: usize = 29;

/// The layer against the experts run one at a time: the same f32 operations except the
/// router-weighted sum of each token's two outputs, added here in f64.
const ALONE_BOUND: f64 = 1e-6;
/// How far apart the per-expert answer and the maximum's must be (over 4x the fp8
/// parity tolerance, 5e-3), for scales spread over 1x..4x.
const MAXIMUM_APART: f64 = 2e-2;

fn forward(w: &ExpertWeights, config: &LayerConfig, x: &[f32], topk: &TopK) -> Vec<f32> {
    let mut out = vec![0f32; topk.tokens() * H];
    EmulatedExperts::prepare(w, config)
        .unwrap()
        .forward(x, topk, None, &mut out)
        .unwrap();
    out
}

#[test]
fn each_expert_quantizes_with_its_own_static_scale() {
    let config = LayerConfig::new(E, K, H, I);
    let mut r = rng(61);
    let x = gaussian(&mut r, TOKENS * H, 1.0);
    let logits = gaussian(&mut r, TOKENS * E, 1.0);
    let topk = Router::new(&config)
        .unwrap()
        .route(&logits, TOKENS)
        .unwrap();
    let dense = DenseExperts::random(&config, 62);
    for name in ["fp8-static", "fp8-wchannel-astatic", "mxfp4-a-fp8"] {
        let mut w = ExpertWeights::quantize(&dense, QuantScheme::parse(name).unwrap()).unwrap();
        calibrate(&mut w, &config, &x, &topk).unwrap();
        let s = w.input_scales.clone().unwrap();
        let spread = |v: f32, k: usize| -> Vec<f32> {
            (0..E)
                .map(|e| v * (1.0 + 3.0 * ((e * 5 + k) % E) as f32 / (E - 1) as f32))
                .collect()
        };
        let (s13, s2) = (spread(s.w13[0], 0), spread(s.w2[0], 1));
        w.set_input_scales_per_expert(&s13, &s2).unwrap();
        assert!(w.input_scales.as_ref().unwrap().is_per_expert());
        let got = forward(&w, &config, &x, &topk);

        let mut alone = vec![0f64; TOKENS * H];
        for e in 0..E {
            let mut we = w.clone();
            we.input_scales = Some(InputScales::uniform(s13[e], s2[e]));
            let only = TopK::new(TOKENS, 1, vec![e as u32; TOKENS], vec![1.0; TOKENS], E).unwrap();
            let y = forward(&we, &config, &x, &only);
            for t in 0..TOKENS {
                for j in 0..K {
                    if topk.id(t, j) == e {
                        let wt = topk.weight(t, j) as f64;
                        for n in 0..H {
                            alone[t * H + n] += wt * y[t * H + n] as f64;
                        }
                    }
                }
            }
        }
        let err = rel_l2(&got, &alone);

        let mut wm = w.clone();
        let max = |v: &[f32]| v.iter().copied().fold(0f32, f32::max);
        wm.input_scales = Some(InputScales::uniform(max(&s13), max(&s2)));
        let at_max = forward(&wm, &config, &x, &topk);
        let apart = rel_l2(&got, &at_max.iter().map(|&v| v as f64).collect::<Vec<_>>());
        eprintln!(
            "{name:22} per expert vs alone: rel L2 {err:.1e} (bound {ALONE_BOUND:.0e}); vs the maximum: {apart:.1e} (at least {MAXIMUM_APART:.0e})"
        );
        assert!(err < ALONE_BOUND, "{name}: {err}");
        assert!(apart > MAXIMUM_APART, "{name}: {apart}");
    }
}
