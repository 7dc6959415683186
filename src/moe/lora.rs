//! LoRA on MoE: per-expert low-rank deltas for the gate, up and down projections (and the
//! shared expert's), several adapters resident, one adapter slot (or none) per token.

use crate::error::{check_bounded, check_len, checked_size, Error, Result};
use crate::quant::MAX_WEIGHT_MAGNITUDE;

/// One projection's low-rank pair: `delta(x) = scaling · B (A x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraProj {
    /// `[rank, in]`.
    pub a: Vec<f32>,
    /// `[out, rank]`.
    pub b: Vec<f32>,
}

impl LoraProj {
    /// Adds `scaling · B (A x)` to `out`.
    pub fn add_delta(&self, rank: usize, scaling: f32, x: &[f32], out: &mut [f32]) {
        let inner: Vec<f32> = self
            .a
            .chunks(x.len())
            .take(rank)
            .map(|row| dot(row, x))
            .collect();
        for (o, brow) in out.iter_mut().zip(self.b.chunks(rank)) {
            *o += scaling * dot(brow, &inner);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The adapters of one expert (routed or shared). A non-gated layer's single w13
/// projection is `up`; it has no `gate`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoraExpert {
    pub gate: Option<LoraProj>,
    pub up: Option<LoraProj>,
    pub down: Option<LoraProj>,
}

/// One fine-tune: rank, scaling (alpha / rank), and per-expert projections.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    pub rank: usize,
    pub scaling: f32,
    /// One entry per routed expert.
    pub experts: Vec<LoraExpert>,
    /// The shared expert's adapter, if the layer has one and the adapter targets it.
    pub shared: Option<LoraExpert>,
}

/// The adapters resident for a layer; tokens pick one by index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lora {
    pub adapters: Vec<LoraAdapter>,
}

/// One forward's view: the resident adapters and each token's slot.
#[derive(Debug, Clone, Copy)]
pub struct LoraBatch<'a> {
    pub lora: &'a Lora,
    pub slots: &'a [Option<usize>],
}

impl<'a> LoraBatch<'a> {
    /// Checks the slots against the tokens and the resident adapters.
    pub fn new(lora: &'a Lora, slots: &'a [Option<usize>], tokens: usize) -> Result<Self> {
        check_len("LoRA adapter slots", slots.len(), tokens)?;
        if let Some(&bad) = slots.iter().flatten().find(|&&s| s >= lora.adapters.len()) {
            return Err(Error::AdapterIndex {
                index: bad,
                loaded: lora.adapters.len(),
            });
        }
        Ok(LoraBatch { lora, slots })
    }

    /// Token `t`'s adapter, if any.
    pub fn adapter(&self, t: usize) -> Option<&'a LoraAdapter> {
        self.slots[t].map(|s| &self.lora.adapters[s])
    }
}

/// Sizes an adapter's projections must have.
#[derive(Debug, Clone, Copy)]
pub struct LoraShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub gated: bool,
}

impl LoraExpert {
    fn validate(&self, rank: usize, shape: LoraShape, what: &str) -> Result<()> {
        let (h, i) = (shape.hidden, shape.intermediate);
        if self.gate.is_some() && !shape.gated {
            return Err(Error::Config(format!(
                "{what}: a gate LoRA on a non-gated layer (its w13 projection is 'up')"
            )));
        }
        for (name, proj, fan_in, fan_out) in [
            ("gate", &self.gate, h, i),
            ("up", &self.up, h, i),
            ("down", &self.down, i, h),
        ] {
            if let Some(p) = proj {
                for (m, v, dims) in [("A", &p.a, [rank, fan_in]), ("B", &p.b, [fan_out, rank])] {
                    let m = format!("{what} {name} LoRA {m}");
                    check_len(&m, v.len(), checked_size(&m, &dims)?)?;
                    check_bounded(
                        &m,
                        v,
                        MAX_WEIGHT_MAGNITUDE,
                        "a finite adapter value of magnitude at most 2^16",
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl Lora {
    /// Checks every adapter against the layer: expert count, ranks, shapes (by checked
    /// arithmetic), values and scaling finite and within `MAX_WEIGHT_MAGNITUDE` (adapters
    /// are weights), and that a shared-expert adapter has a shared expert to attach to.
    pub fn validate(
        &self,
        num_experts: usize,
        routed: LoraShape,
        shared: Option<LoraShape>,
    ) -> Result<()> {
        for (n, ad) in self.adapters.iter().enumerate() {
            if ad.rank == 0 {
                return Err(Error::Config(format!(
                    "adapter {n}: rank = 0, expected a positive rank"
                )));
            }
            if !(ad.scaling.is_finite() && ad.scaling.abs() <= MAX_WEIGHT_MAGNITUDE) {
                return Err(Error::Value {
                    what: format!("adapter {n} scaling"),
                    value: ad.scaling,
                    expected: "a finite scaling of magnitude at most 2^16",
                });
            }
            check_len(
                &format!("adapter {n} experts"),
                ad.experts.len(),
                num_experts,
            )?;
            for (e, ex) in ad.experts.iter().enumerate() {
                ex.validate(ad.rank, routed, &format!("adapter {n} expert {e}"))?;
            }
            match (&ad.shared, shared) {
                (Some(sh), Some(shape)) => {
                    sh.validate(ad.rank, shape, &format!("adapter {n} shared expert"))?
                }
                (Some(_), None) => {
                    return Err(Error::Config(format!(
                        "adapter {n} targets a shared expert the layer does not have"
                    )))
                }
                (None, _) => {}
            }
        }
        Ok(())
    }
}
