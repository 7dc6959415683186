//! Shared experts: a dense MLP every token passes through, added to the routed output,
//! optionally scaled by a sigmoid gate (Qwen2-MoE's `shared_expert_gate`).

use super::config::Activation;
use super::emulation::{DenseMlp, PairLora};
use super::lora::{Lora, LoraAdapter, LoraBatch};
use super::prepare::Pairs;
use crate::error::{check_finite, check_len, Error, Result};
use crate::quant::activation::round_to_model_dtype;
use crate::quant::ExpertWeights;
use crate::quant::QuantScheme;

/// The shared expert's weights: an `ExpertWeights` holding one expert (DeepSeek's several
/// shared experts are one MLP of their summed width), in any scheme.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedExpertWeights {
    pub weights: ExpertWeights,
    /// `[hidden]`: when present the output is scaled by `sigmoid(x · gate)`.
    pub gate: Option<Vec<f32>>,
}

/// The shared expert emulated on the host. On a GPU a native shared expert is a
/// one-expert backend inside the GPU layer (`crate::gpu`), every token routed to it with
/// its gate as the router weight.
pub struct SharedExperts {
    mlp: DenseMlp,
    gate: Option<Vec<f32>>,
    scheme: QuantScheme,
    hidden: usize,
    intermediate: usize,
}

/// The one-expert LoRA a native shared expert takes: each adapter's `shared` part (an
/// adapter that leaves the shared expert alone contributes zeros).
pub fn shared_lora(lora: &Lora) -> Lora {
    Lora {
        adapters: lora
            .adapters
            .iter()
            .map(|a| LoraAdapter {
                rank: a.rank,
                scaling: a.scaling,
                experts: vec![a.shared.clone().unwrap_or_default()],
                shared: None,
            })
            .collect(),
    }
}

/// The gate must have one finite weight per hidden element (it only enters a sigmoid, so
/// finite is enough).
fn check_gate(gate: Option<&[f32]>, hidden: usize) -> Result<()> {
    match gate {
        Some(g) => {
            check_len("shared expert gate", g.len(), hidden)?;
            check_finite("shared expert gate", g)
        }
        None => Ok(()),
    }
}

impl SharedExperts {
    /// Prepares the shared expert for a layer with the given activation and hidden size.
    pub fn prepare(
        shared: &SharedExpertWeights,
        activation: Activation,
        hidden: usize,
    ) -> Result<Self> {
        let w = &shared.weights;
        if w.num_experts != 1 || w.hidden != hidden {
            return Err(Error::shape(
                "shared expert weights (experts, hidden)",
                format!("(1, {hidden})"),
                format!("({}, {})", w.num_experts, w.hidden),
            ));
        }
        check_gate(shared.gate.as_deref(), hidden)?;
        Ok(SharedExperts {
            mlp: DenseMlp::new(w, activation)?,
            gate: shared.gate.clone(),
            scheme: w.scheme,
            hidden,
            intermediate: w.intermediate,
        })
    }

    /// Intermediate size of the shared MLP.
    pub fn intermediate(&self) -> usize {
        self.intermediate
    }

    /// Adds the shared expert's output for every token to `out` (`[tokens, hidden]`).
    pub fn add_to(
        &self,
        x: &[f32],
        tokens: usize,
        lora: Option<&LoraBatch<'_>>,
        out: &mut [f32],
    ) -> Result<()> {
        let h = self.hidden;
        let mut inputs = x.to_vec();
        round_to_model_dtype(&self.scheme, &mut inputs);
        let gates: Vec<f32> = match &self.gate {
            Some(g) => inputs
                .chunks(h)
                .map(|row| {
                    1.0 / (1.0 + (-row.iter().zip(g).map(|(a, b)| a * b).sum::<f32>()).exp())
                })
                .collect(),
            None => vec![1.0; tokens],
        };
        let mlp = &self.mlp;
        let unquantized = inputs.clone();
        let experts = vec![0; tokens];
        mlp.a1.apply(&mut inputs, h, &experts)?;
        let pairs = Pairs {
            inputs,
            unquantized,
            experts,
            by_expert: vec![(0..tokens).collect()],
        };
        let lora: Vec<PairLora<'_>> = (0..tokens)
            .map(|t| {
                lora.and_then(|l| l.adapter(t))
                    .and_then(|ad| ad.shared.as_ref().map(|s| (s, ad.rank, ad.scaling)))
            })
            .collect();
        let (y, _) = mlp.run(&pairs, &lora, true)?;
        for (t, g) in gates.iter().enumerate() {
            out[t * h..(t + 1) * h]
                .iter_mut()
                .zip(&y[t * h..(t + 1) * h])
                .for_each(|(o, v)| *o += g * v);
        }
        Ok(())
    }
}
