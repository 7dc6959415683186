//! The emulated experts: weights dequantized exactly once, activations quantize-dequantized
//! exactly as the scheme prescribes, f32 accumulation. This defines the right answer every
//! native backend is checked against.

use super::config::{Activation, LayerConfig};
use super::experts::Experts;
use super::finalize::combine;
use super::lora::{LoraBatch, LoraExpert};
use super::prepare::{prepare, Pairs};
use super::topk::TopK;
use crate::error::{check_len, checked_size, Error, Result};
use crate::oracle::BackendId;
use crate::quant::activation::round_to_model_dtype;
use crate::quant::{ExpertWeights, Numerics, QuantScheme, Stage, StageQuant};
use rayon::prelude::*;

/// Dequantized experts: the emulation backend's own layout.
pub struct DenseMlp {
    pub scheme: QuantScheme,
    pub activation: Activation,
    pub hidden: usize,
    pub intermediate: usize,
    /// Per expert `[rows13, H]`.
    w13: Vec<Vec<f32>>,
    /// Per expert `[H, I]`.
    w2: Vec<Vec<f32>>,
    w13_bias: Option<Vec<f32>>,
    w2_bias: Option<Vec<f32>>,
    /// The gemm1 and gemm2 input rules (per expert where static scales differ).
    pub a1: StageQuant,
    pub a2: StageQuant,
}

/// A pair's LoRA: the expert's projections, rank and scaling.
pub type PairLora<'a> = Option<(&'a LoraExpert, usize, f32)>;

/// The emulation's dot product: eight partial sums, then the tail. Public so that tests
/// which rebuild a GEMM by hand add in the same order (and round the same f32 values).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// `out[p] = W · in[p]` for the pairs of one expert, rows split across threads.
fn matmul(w: &[f32], rows: usize, cols: usize, inputs: &[f32], pairs: &[usize], out: &mut [f32]) {
    let results: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(32))
        .into_par_iter()
        .map(|chunk| {
            let r0 = chunk * 32;
            let r1 = (r0 + 32).min(rows);
            let mut vals = Vec::with_capacity((r1 - r0) * pairs.len());
            for &p in pairs {
                let x = &inputs[p * cols..(p + 1) * cols];
                vals.extend((r0..r1).map(|r| dot(&w[r * cols..(r + 1) * cols], x)));
            }
            (r0, vals)
        })
        .collect();
    for (r0, vals) in results {
        let n = vals.len() / pairs.len().max(1);
        for (pi, &p) in pairs.iter().enumerate() {
            out[p * rows + r0..p * rows + r0 + n].copy_from_slice(&vals[pi * n..(pi + 1) * n]);
        }
    }
}

impl DenseMlp {
    /// Dequantizes every expert of `weights` and fixes the activation rules.
    pub fn new(weights: &ExpertWeights, activation: Activation) -> Result<Self> {
        activation.validate()?;
        weights.validate()?;
        if weights.gated != activation.is_gated() {
            return Err(Error::Config(format!(
                "activation {} wants {} w13, the weights are {}",
                activation.name(),
                if activation.is_gated() {
                    "gated (2·I rows)"
                } else {
                    "non-gated (I rows)"
                },
                if weights.gated { "gated" } else { "non-gated" }
            )));
        }
        let (w13, w2): (Vec<_>, Vec<_>) = (0..weights.num_experts)
            .map(|e| weights.dequantize_expert_as_kernels(e))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        Ok(DenseMlp {
            scheme: weights.scheme,
            activation,
            hidden: weights.hidden,
            intermediate: weights.intermediate,
            w13,
            w2,
            w13_bias: weights.w13_bias.clone(),
            w2_bias: weights.w2_bias.clone(),
            a1: StageQuant::for_scheme(&weights.scheme, Stage::W13, weights.input_scales.as_ref())?,
            a2: StageQuant::for_scheme(&weights.scheme, Stage::W2, weights.input_scales.as_ref())?,
        })
    }

    pub fn num_experts(&self) -> usize {
        self.w13.len()
    }

    /// gemm1 → activation → gemm2 for prepared pairs; returns `[pairs, H]` and the amax of
    /// the w2 input before its quantization (for calibration). `quantize_w2_input` false
    /// skips the w2 activation quantization (calibration runs).
    pub fn run(
        &self,
        pairs: &Pairs,
        lora: &[PairLora<'_>],
        quantize_w2_input: bool,
    ) -> Result<(Vec<f32>, f32)> {
        let (h, i) = (self.hidden, self.intermediate);
        let rows13 = self.activation.w13_rows(i);
        let n = pairs.experts.len();
        let mut g1 = vec![0f32; n * rows13];
        for (e, ps) in pairs
            .by_expert
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
        {
            matmul(&self.w13[e], rows13, h, &pairs.inputs, ps, &mut g1);
        }
        let mut act = vec![0f32; n * i];
        for p in 0..n {
            let e = pairs.experts[p];
            let row = &mut g1[p * rows13..(p + 1) * rows13];
            if let Some(b) = &self.w13_bias {
                row.iter_mut()
                    .zip(&b[e * rows13..(e + 1) * rows13])
                    .for_each(|(v, b)| *v += b);
            }
            if let Some((ad, rank, scaling)) = lora[p] {
                self.add_gate_up_delta(
                    ad,
                    rank,
                    scaling,
                    &pairs.unquantized[p * h..(p + 1) * h],
                    row,
                );
            }
            round_to_model_dtype(&self.scheme, row);
            self.activation.apply(row, &mut act[p * i..(p + 1) * i]);
        }
        round_to_model_dtype(&self.scheme, &mut act);
        let amax2 = act.iter().fold(0f32, |m, v| m.max(v.abs()));
        let lora_input = if lora.iter().any(Option::is_some) {
            act.clone()
        } else {
            Vec::new()
        };
        if quantize_w2_input {
            self.a2.apply(&mut act, i, &pairs.experts)?;
        }
        let mut y = vec![0f32; n * h];
        for (e, ps) in pairs
            .by_expert
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
        {
            matmul(&self.w2[e], h, i, &act, ps, &mut y);
        }
        for p in 0..n {
            let e = pairs.experts[p];
            let row = &mut y[p * h..(p + 1) * h];
            if let Some(b) = &self.w2_bias {
                row.iter_mut()
                    .zip(&b[e * h..(e + 1) * h])
                    .for_each(|(v, b)| *v += b);
            }
            if let Some((ad, rank, scaling)) = lora[p] {
                if let Some(down) = &ad.down {
                    down.add_delta(rank, scaling, &lora_input[p * i..(p + 1) * i], row);
                }
            }
        }
        Ok((y, amax2))
    }

    /// LoRA deltas of gate and up go where the activation reads them.
    fn add_gate_up_delta(
        &self,
        ad: &LoraExpert,
        rank: usize,
        scaling: f32,
        x: &[f32],
        row: &mut [f32],
    ) {
        let i = self.intermediate;
        let mut delta = vec![0f32; i];
        for (proj, is_gate) in [(&ad.gate, true), (&ad.up, false)] {
            let Some(proj) = proj else { continue };
            delta.iter_mut().for_each(|v| *v = 0.0);
            proj.add_delta(rank, scaling, x, &mut delta);
            for (j, d) in delta.iter().enumerate() {
                let (g, u) = self.activation.gate_up_index(j, i);
                // A non-gated layer's single projection is "up" and sits where gate would.
                let at = if is_gate { g } else { u.unwrap_or(g) };
                row[at] += d;
            }
        }
    }
}

/// The emulation backend for routed experts.
pub struct EmulatedExperts {
    mlp: DenseMlp,
    weight_on_input: bool,
}

impl EmulatedExperts {
    /// Prepares (dequantizes) `weights` for a layer described by `config`.
    pub fn prepare(weights: &ExpertWeights, config: &LayerConfig) -> Result<Self> {
        check_weights_match(weights, config)?;
        Ok(EmulatedExperts {
            mlp: DenseMlp::new(weights, config.activation)?,
            weight_on_input: config.apply_router_weight_on_input,
        })
    }

    /// The same experts with the activation rounding of `numerics` (`Numerics::Vllm`
    /// reproduces vLLM's fp8 and NVFP4 rules for comparing with a vLLM run; the default,
    /// `Numerics::Producer`, is what the native kernels compute).
    pub fn with_numerics(mut self, numerics: Numerics) -> Self {
        self.mlp.a1 = self.mlp.a1.clone().with_numerics(numerics);
        self.mlp.a2 = self.mlp.a2.clone().with_numerics(numerics);
        self
    }

    /// The forward with calibration hooks: returns the output, the amax of the gemm1 input
    /// and of the gemm2 input (before their quantization).
    pub fn forward_with_stats(
        &self,
        x: &[f32],
        topk: &TopK,
        lora: Option<&LoraBatch<'_>>,
        quantize_inputs: bool,
    ) -> Result<(Vec<f32>, f32, f32)> {
        // `prepare` checks the hidden states and the expert ids; the widest buffer is ours.
        let h = self.mlp.hidden;
        let rows13 = self.mlp.activation.w13_rows(self.mlp.intermediate);
        checked_size(
            "expert inputs and outputs (pairs × width)",
            &[topk.pairs(), h.max(rows13)],
        )?;
        let none = StageQuant::none();
        let a1 = if quantize_inputs { &self.mlp.a1 } else { &none };
        let pairs = prepare(
            &self.mlp.scheme,
            a1,
            x,
            h,
            topk,
            self.mlp.num_experts(),
            self.weight_on_input,
        )?;
        let amax1 = pairs.inputs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let pair_lora: Vec<PairLora<'_>> = (0..pairs.experts.len())
            .map(|p| {
                lora.and_then(|l| l.adapter(p / topk.k()))
                    .map(|ad| (&ad.experts[pairs.experts[p]], ad.rank, ad.scaling))
            })
            .collect();
        let (y, amax2) = self.mlp.run(&pairs, &pair_lora, quantize_inputs)?;
        let mut out = vec![0f32; topk.tokens() * h];
        combine(&y, topk, h, self.weight_on_input, &mut out);
        Ok((out, amax1, amax2))
    }
}

impl Experts for EmulatedExperts {
    fn backend(&self) -> BackendId {
        BackendId::Emulation
    }

    fn forward(
        &self,
        x: &[f32],
        topk: &TopK,
        lora: Option<&LoraBatch<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        check_len("output", out.len(), topk.tokens() * self.mlp.hidden)?;
        let (y, _, _) = self.forward_with_stats(x, topk, lora, true)?;
        out.copy_from_slice(&y);
        Ok(())
    }
}

/// The weights must be the layer the config describes.
pub fn check_weights_match(weights: &ExpertWeights, config: &LayerConfig) -> Result<()> {
    config.validate()?;
    let want = (
        config.num_experts,
        config.hidden,
        config.intermediate,
        config.activation.is_gated(),
    );
    let have = (
        weights.num_experts,
        weights.hidden,
        weights.intermediate,
        weights.gated,
    );
    if want != have {
        return Err(Error::shape(
            "expert weights (experts, hidden, intermediate, gated)",
            format!("{want:?} from the layer config"),
            format!("{have:?}"),
        ));
    }
    if config.has_bias != (weights.w13_bias.is_some() && weights.w2_bias.is_some()) {
        return Err(Error::Config(format!(
            "layer config says has_bias = {}, the weights {} biases",
            config.has_bias,
            if weights.w13_bias.is_some() || weights.w2_bias.is_some() {
                "carry"
            } else {
                "carry no"
            }
        )));
    }
    Ok(())
}
