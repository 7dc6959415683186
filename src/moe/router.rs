//! `Router`: logits `[tokens, experts]` → `TopK`, for every routing kind models use.

use super::config::{GroupScoring, LayerConfig, Routing};
use super::topk::TopK;
use crate::error::{check_len, Error, Result};

/// Turns router logits into each token's experts and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    pub routing: Routing,
    pub top_k: usize,
    pub num_experts: usize,
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

impl Router {
    /// The router a layer configuration describes.
    pub fn new(config: &LayerConfig) -> Self {
        Router {
            routing: config.routing.clone(),
            top_k: config.top_k,
            num_experts: config.num_experts,
        }
    }

    /// Routes `tokens` rows of logits. NaN logits are refused rather than routed anywhere.
    pub fn route(&self, logits: &[f32], tokens: usize) -> Result<TopK> {
        let (e, k) = (self.num_experts, self.top_k);
        if k == 0 || k > e {
            return Err(Error::TopK {
                top_k: k,
                num_experts: e,
            });
        }
        check_len("router logits", logits.len(), tokens * e)?;
        if logits.iter().any(|v| v.is_nan()) {
            return Err(Error::Config("router logits contain NaN".into()));
        }
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
