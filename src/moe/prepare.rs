//! The Prepare stage: one input row per (token, choice) pair in the scheme's activation
//! precision, and the pairs grouped by expert so each expert's weights are read once.

use super::topk::TopK;
use crate::error::{check_len, checked_size, Result};
use crate::quant::activation::round_to_model_dtype;
use crate::quant::{QuantScheme, StageQuant};

/// Pair `p = t·k + j` is token `t`'s `j`-th choice.
pub struct Pairs {
    /// `[pairs, hidden]`, already quantize-dequantized for gemm1.
    pub inputs: Vec<f32>,
    /// The same rows in the model dtype before activation quantization: what LoRA reads,
    /// since adapters run in bf16 beside the quantized GEMM.
    pub unquantized: Vec<f32>,
    /// Expert of each pair.
    pub experts: Vec<usize>,
    /// Pair indices per expert.
    pub by_expert: Vec<Vec<usize>>,
}

/// Builds the gemm1 inputs. With `weight_on_input` the router weight scales each row
/// before quantization (Llama 4); otherwise rows are copies of the token.
pub fn prepare(
    scheme: &QuantScheme,
    a1: &StageQuant,
    x: &[f32],
    hidden: usize,
    topk: &TopK,
    num_experts: usize,
    weight_on_input: bool,
) -> Result<Pairs> {
    let k = topk.k();
    let rows = checked_size("expert inputs (pairs × hidden)", &[topk.pairs(), hidden])?;
    let tokens_len = checked_size("hidden states (tokens × hidden)", &[topk.tokens(), hidden])?;
    check_len("hidden states", x.len(), tokens_len)?;
    topk.check_experts(num_experts)?;
    let mut inputs = Vec::with_capacity(rows);
    let mut experts = Vec::with_capacity(topk.pairs());
    let mut by_expert = vec![Vec::new(); num_experts];
    for t in 0..topk.tokens() {
        let row = &x[t * hidden..(t + 1) * hidden];
        for j in 0..k {
            let mut r = row.to_vec();
            round_to_model_dtype(scheme, &mut r);
            if weight_on_input {
                let w = topk.weight(t, j);
                r.iter_mut().for_each(|v| *v *= w);
                round_to_model_dtype(scheme, &mut r);
            }
            inputs.extend(r);
            by_expert[topk.id(t, j)].push(experts.len());
            experts.push(topk.id(t, j));
        }
    }
    let unquantized = inputs.clone();
    a1.apply(&mut inputs, hidden, &experts)?;
    Ok(Pairs {
        inputs,
        unquantized,
        experts,
        by_expert,
    })
}
