//! `Router`: logits `[tokens, experts]` → `TopK`, for every routing kind models use.

use super::config::{GroupScoring, LayerConfig, Routing};
use super::topk::TopK;
use crate::error::{check_finite, check_len, checked_size, Error, Result};
use crate::quant::MAX_WEIGHT_MAGNITUDE;

/// Turns router logits into each token's experts and weights. Its fields are private and
/// checked by `new`, so `route` never divides by a zero group count or asks for more
/// experts than the kept groups hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    routing: Routing,
    top_k: usize,
    num_experts: usize,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let e: Vec<f32> = x.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Indices of the `k` largest scores, largest first; ties go to the lower index.
fn top_indices(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn renormalized(mut w: Vec<f32>) -> Vec<f32> {
    let sum: f32 = w.iter().sum();
    if sum > 0.0 {
        w.iter_mut().for_each(|v| *v /= sum);
    }
    w
}

/// Checks router logits for `tokens` rows of `experts`: the length (by checked
/// arithmetic) and that every logit is finite. Every router (host, CUDA, HIP) calls it.
pub fn check_logits(logits: &[f32], tokens: usize, experts: usize) -> Result<()> {
    let want = checked_size("router logits (tokens × experts)", &[tokens, experts])?;
    check_len("router logits", logits.len(), want)?;
    check_finite("router logits", logits)
}

impl Router {
    /// The router a layer configuration describes, after checking its routing against
    /// the expert count and top-k (`Routing::validate`).
    pub fn new(config: &LayerConfig) -> Result<Self> {
        config.routing.validate(config.num_experts, config.top_k)?;
        Ok(Router {
            routing: config.routing.clone(),
            top_k: config.top_k,
            num_experts: config.num_experts,
        })
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    pub fn top_k(&self) -> usize {
        self.top_k
    }

    pub fn num_experts(&self) -> usize {
        self.num_experts
    }

    /// Routes `tokens` rows of logits. NaN or infinite logits are refused rather than
    /// routed anywhere.
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        let (e, k) = (self.num_experts, self.top_k);
        check_logits(logits, tokens, e)?;
        let mut ids = Vec::with_capacity(tokens * k);
        let mut weights = Vec::with_capacity(tokens * k);
        for row in logits.chunks(e) {
            let (i, w) = self.route_token(row)?;
            ids.extend(i.iter().map(|&x| x as u32));
            weights.extend(w);
        }
        TopK::new(tokens, k, ids, weights, e)
    }

    fn route_token(&self, logits: &[f32]) -> Result<(Vec<usize>, Vec<f32>)> {
        let k = self.top_k;
        Ok(match &self.routing {
            Routing::SoftmaxTopK { renormalize } | Routing::SigmoidTopK { renormalize } => {
                let scores = match self.routing {
                    Routing::SoftmaxTopK { .. } => softmax(logits),
                    _ => logits.iter().map(|&x| sigmoid(x)).collect(),
                };
                let ids = top_indices(&scores, k);
                let w: Vec<f32> = ids.iter().map(|&i| scores[i]).collect();
                (ids, if *renormalize { renormalized(w) } else { w })
            }
            Routing::Grouped {
                num_groups,
                topk_groups,
                scoring,
                correction_bias,
                renormalize,
                routed_scaling_factor,
            } => {
                let scores = match scoring {
                    GroupScoring::Softmax => softmax(logits),
                    GroupScoring::Sigmoid => logits.iter().map(|&x| sigmoid(x)).collect(),
                };
                let choice: Vec<f32> = match correction_bias {
                    Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                    None => scores.clone(),
                };
                let per = logits.len() / num_groups;
                let group_score: Vec<f32> = choice
                    .chunks(per)
                    .map(|g| match correction_bias {
                        Some(_) => top_indices(g, 2.min(per)).iter().map(|&i| g[i]).sum(),
                        None => g.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
                    })
                    .collect();
                let kept = top_indices(&group_score, *topk_groups);
                let masked: Vec<f32> = choice
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        if kept.contains(&(i / per)) {
                            c
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                    .collect();
                let ids = top_indices(&masked, k);
                let w: Vec<f32> = ids.iter().map(|&i| scores[i]).collect();
                let w = if *renormalize { renormalized(w) } else { w };
                (ids, w.iter().map(|v| v * routed_scaling_factor).collect())
            }
            Routing::SigmoidTop1 => {
                let ids = top_indices(logits, 1);
                let w = vec![sigmoid(logits[ids[0]])];
                (ids, w)
            }
            Routing::Given => {
                return Err(Error::Config(
                    "this layer's routing is 'given': pass a TopK instead of logits".into(),
                ));
            }
        })
    }
}

impl Routing {
    /// Checks the routing against a layer of `num_experts` experts choosing `top_k`:
    /// `1 ≤ top_k ≤ num_experts`; for grouped routing at least one group, groups that
    /// split the experts evenly, `1 ≤ topk_groups ≤ num_groups`, top-k no more than the
    /// kept groups hold, a correction bias of one finite value per expert, and a
    /// `routed_scaling_factor` finite, positive and at most `MAX_WEIGHT_MAGNITUDE` (real
    /// models use 1–16; it multiplies every routed output); sigmoid top-1 with top-k 1.
    pub fn validate(&self, num_experts: usize, top_k: usize) -> Result<()> {
        if top_k == 0 || top_k > num_experts {
            return Err(Error::TopK { top_k, num_experts });
        }
        match self {
            Routing::Grouped {
                num_groups,
                topk_groups,
                correction_bias,
                routed_scaling_factor,
                ..
            } => {
                if *num_groups == 0 || num_experts % num_groups != 0 {
                    return Err(Error::Config(format!(
                        "num_groups = {num_groups}: {num_experts} experts cannot be split into {num_groups} equal groups"
                    )));
                }
                if *topk_groups == 0 || topk_groups > num_groups {
                    return Err(Error::Config(format!(
                        "topk_groups = {topk_groups} must be in 1..={num_groups}"
                    )));
                }
                let kept = topk_groups * (num_experts / num_groups);
                if top_k > kept {
                    return Err(Error::Config(format!(
                        "top-k {top_k} exceeds the {kept} experts in the {topk_groups} kept groups"
                    )));
                }
                if let Some(b) = correction_bias {
                    check_len("score correction bias", b.len(), num_experts)?;
                    check_finite("e_score_correction_bias", b)?;
                }
                let f = *routed_scaling_factor;
                if !(f.is_finite() && f > 0.0 && f <= MAX_WEIGHT_MAGNITUDE) {
                    return Err(Error::Value {
                        what: "routed_scaling_factor".into(),
                        value: f,
                        expected: "a finite positive factor of at most 2^16",
                    });
                }
            }
            Routing::SigmoidTop1 if top_k != 1 => {
                return Err(Error::Config(format!(
                    "sigmoid top-1 routing needs top-k 1, got {top_k}"
                )));
            }
            _ => {}
        }
        Ok(())
    }
}
