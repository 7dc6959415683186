//! `TopK`: each token's chosen experts and their weights, the router's output.

use crate::error::{check_len, checked_size, Error, Result};
use crate::quant::MAX_WEIGHT_MAGNITUDE;

/// Per token, `k` expert ids and weights, row-major `[tokens, k]`. The fields are private
/// so that every `TopK` has `tokens · k` ids below the expert count it was built for and
/// as many finite weights: a forward indexes it without checking again.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    tokens: usize,
    k: usize,
    ids: Vec<u32>,
    weights: Vec<f32>,
}

impl TopK {
    /// Caller-supplied routing, checked against the layer's expert count: `1 ≤ k ≤
    /// num_experts`, `tokens · k` ids below `num_experts` and as many weights, each finite
    /// and at most `MAX_WEIGHT_MAGNITUDE` (routers give at most `routed_scaling_factor`).
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
        let pairs = checked_size("top-k pairs (tokens × k)", &[tokens, k])?;
        check_len("top-k ids", ids.len(), pairs)?;
        check_len("top-k weights", weights.len(), pairs)?;
        let topk = TopK {
            tokens,
            k,
            ids,
            weights,
        };
        topk.check_experts(num_experts)?;
        crate::error::check_bounded(
            "top-k weights",
            &topk.weights,
            MAX_WEIGHT_MAGNITUDE,
            "a finite router weight of magnitude at most 2^16",
        )?;
        Ok(topk)
    }

    /// Checks that this routing fits a layer of `num_experts` experts (a `TopK` built for
    /// a larger layer may name experts this one does not have).
    pub fn check_experts(&self, num_experts: usize) -> Result<()> {
        if self.k > num_experts {
            return Err(Error::TopK {
                top_k: self.k,
                num_experts,
            });
        }
        match self.ids.iter().find(|&&e| e as usize >= num_experts) {
            Some(&bad) => Err(Error::ExpertId {
                id: bad as usize,
                num_experts,
            }),
            None => Ok(()),
        }
    }

    /// Tokens routed.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Experts per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Expert ids, `[tokens, k]`.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Router weights, `[tokens, k]`.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// `tokens · k`: the (token, choice) pairs (cannot overflow: checked at construction).
    pub fn pairs(&self) -> usize {
        self.ids.len()
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
