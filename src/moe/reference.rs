//! A naive f64 forward of the routed experts, one expert dequantized at a time, for the
//! command line's error report on shapes too large to hold twice in memory. The test
//! suite has its own independent reference; this one shares the dequantization and the
//! activation-quantization rules with emulation on purpose (it checks accumulation, not
//! the scheme).

use super::config::LayerConfig;
use super::topk::TopK;
use crate::error::{check_len, checked_size, Result};
use crate::quant::activation::round_to_model_dtype;
use crate::quant::{ExpertWeights, Stage, StageQuant};

fn to_f32_rounded(scheme: &crate::quant::QuantScheme, v: &[f64]) -> Vec<f32> {
    let mut f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    round_to_model_dtype(scheme, &mut f);
    f
}

/// `Σ_k w · expert(x)` in f64 over `weights`. With `quantize` false, activations are used
/// exactly (no model-dtype rounding, no activation quantization): the unquantized answer
/// for these weights.
pub fn forward_f64(
    weights: &ExpertWeights,
    config: &LayerConfig,
    x: &[f32],
    topk: &TopK,
    quantize: bool,
) -> Result<Vec<f64>> {
    let (h, i) = (config.hidden, config.intermediate);
    super::emulation::check_weights_match(weights, config)?;
    weights.validate_weights()?;
    topk.check_experts(config.num_experts)?;
    let n = checked_size("hidden states (tokens × hidden)", &[topk.tokens(), h])?;
    check_len("hidden states", x.len(), n)?;
    checked_size(
        "expert inputs and outputs (pairs × width)",
        &[topk.pairs(), h.max(config.activation.w13_rows(i))],
    )?;
    let rows13 = config.activation.w13_rows(i);
    let scheme = &weights.scheme;
    let (a1, a2) = if quantize {
        (
            StageQuant::for_scheme(scheme, Stage::W13, weights.input_scales.as_ref())?,
            StageQuant::for_scheme(scheme, Stage::W2, weights.input_scales.as_ref())?,
        )
    } else {
        (StageQuant::none(), StageQuant::none())
    };
    let pair_experts: Vec<usize> = topk.ids().iter().map(|&e| e as usize).collect();
    let on_input = config.apply_router_weight_on_input;
    let pairs = topk.pairs();
    // gemm1 inputs for every pair, then activation quantization over all of them.
    let mut inputs = Vec::with_capacity(pairs * h);
    for t in 0..topk.tokens() {
        for j in 0..topk.k() {
            let row = &x[t * h..(t + 1) * h];
            let w = if on_input { topk.weight(t, j) } else { 1.0 };
            if quantize {
                let mut r =
                    to_f32_rounded(scheme, &row.iter().map(|&v| v as f64).collect::<Vec<_>>());
                if on_input {
                    r = to_f32_rounded(
                        scheme,
                        &r.iter().map(|&v| (v * w) as f64).collect::<Vec<_>>(),
                    );
                }
                inputs.extend(r);
            } else {
                inputs.extend(row.iter().map(|&v| v * w));
            }
        }
    }
    a1.apply(&mut inputs, h, &pair_experts)?;
    let mut act = vec![0f64; pairs * i];
    let mut y = vec![0f64; pairs * h];
    let mut act_f32 = vec![0f32; pairs * i];
    for pass in 0..2 {
        for e in 0..config.num_experts {
            let members: Vec<usize> = (0..pairs)
                .filter(|&p| topk.ids()[p] as usize == e)
                .collect();
            if members.is_empty() {
                continue;
            }
            let (w13, w2) = weights.dequantize_expert_as_kernels(e)?;
            for &p in &members {
                if pass == 0 {
                    let xin = &inputs[p * h..(p + 1) * h];
                    let mut g: Vec<f64> = (0..rows13)
                        .map(|r| {
                            (0..h)
                                .map(|c| w13[r * h + c] as f64 * xin[c] as f64)
                                .sum::<f64>()
                        })
                        .collect();
                    if let Some(b) = &weights.w13_bias {
                        g.iter_mut()
                            .zip(&b[e * rows13..])
                            .for_each(|(v, b)| *v += *b as f64);
                    }
                    let g32 = if quantize {
                        to_f32_rounded(scheme, &g)
                    } else {
                        g.iter().map(|&v| v as f32).collect()
                    };
                    let mut a = vec![0f32; i];
                    config.activation.apply(&g32, &mut a);
                    act[p * i..(p + 1) * i]
                        .iter_mut()
                        .zip(&a)
                        .for_each(|(o, v)| *o = *v as f64);
                } else {
                    let ain = &act_f32[p * i..(p + 1) * i];
                    for r in 0..h {
                        y[p * h + r] = (0..i)
                            .map(|c| w2[r * i + c] as f64 * ain[c] as f64)
                            .sum::<f64>()
                            + weights
                                .w2_bias
                                .as_ref()
                                .map_or(0.0, |b| b[e * h + r] as f64);
                    }
                }
            }
        }
        if pass == 0 {
            act_f32 = if quantize {
                to_f32_rounded(scheme, &act)
            } else {
                act.iter().map(|&v| v as f32).collect()
            };
            a2.apply(&mut act_f32, i, &pair_experts)?;
        }
    }
    let mut out = vec![0f64; topk.tokens() * h];
    for t in 0..topk.tokens() {
        for j in 0..topk.k() {
            let w = if on_input {
                1.0
            } else {
                topk.weight(t, j) as f64
            };
            for r in 0..h {
                out[t * h + r] += w * y[(t * topk.k() + j) * h + r];
            }
        }
    }
    Ok(out)
}

/// Relative L2 distance of `got` from `want`.
pub fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}
