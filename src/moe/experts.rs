//! The `Experts` stage: gemm1 → activation → gemm2 for every (token, expert) pair, summed
//! with the router weights. Each backend implements it on weights it prepared itself.

use super::lora::LoraBatch;
use super::topk::TopK;
use crate::error::Result;
use crate::oracle::BackendId;

/// A routed-experts implementation bound to one layer's weights.
pub trait Experts: Send + Sync {
    /// Which backend this is (as the oracle names it).
    fn backend(&self) -> BackendId;

    /// `out[t] = Σ_j w[t,j] · expert_{id[t,j]}(x[t])` (or with the weight applied to the
    /// input when the layer says so), plus LoRA deltas for tokens that have an adapter.
    /// `x` is `[tokens, hidden]`, `out` is `[tokens, hidden]` and is overwritten.
    fn forward(
        &self,
        x: &[f32],
        topk: &TopK,
        lora: Option<&LoraBatch<'_>>,
        out: &mut [f32],
    ) -> Result<()>;
}
