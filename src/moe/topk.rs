//! `TopK`: each token's chosen experts and their weights, the router's output.

use crate::error::{Error, Result};

/// Per token, `k` expert ids and weights, row-major `[tokens, k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub tokens: usize,
    pub k: usize,
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

impl TopK {
    /// Caller-supplied routing, checked against the layer's expert count.
    pub fn new(
        tokens: usize,
        k: usize,
        ids: Vec<u32>,
        weights: Vec<f32>,
        num_experts: usize,
    ) -> Result<Self> {
        if k == 0 || k > num_experts {
            return Err(Error::TopK {
                top_k: k,
                num_experts,
            });
        }
        crate::error::check_len("top-k ids", ids.len(), tokens * k)?;
        crate::error::check_len("top-k weights", weights.len(), tokens * k)?;
        if let Some(&bad) = ids.iter().find(|&&e| e as usize >= num_experts) {
            return Err(Error::ExpertId {
                id: bad as usize,
                num_experts,
            });
        }
        if let Some(&w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(Error::Config(format!("top-k weight {w} is not finite")));
        }
        Ok(TopK {
            tokens,
            k,
            ids,
            weights,
        })
    }

    /// Expert id of token `t`'s `j`-th choice.
    pub fn id(&self, t: usize, j: usize) -> usize {
        self.ids[t * self.k + j] as usize
    }

    /// Router weight of token `t`'s `j`-th choice.
    pub fn weight(&self, t: usize, j: usize) -> f32 {
        self.weights[t * self.k + j]
    }
}
