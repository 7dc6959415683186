//! The Finalize stage: each token's expert outputs summed with its router weights, in f32
//! (as vLLM multiplies and sums before the final cast).

use super::topk::TopK;

/// `out[t] = Σ_j w[t,j] · y[t·k+j]`, or the plain sum when the weight was applied to the
/// input. `out` is overwritten.
pub fn combine(y: &[f32], topk: &TopK, hidden: usize, weight_on_input: bool, out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for t in 0..topk.tokens() {
        let o = &mut out[t * hidden..(t + 1) * hidden];
        for j in 0..topk.k() {
            let w = if weight_on_input {
                1.0
            } else {
                topk.weight(t, j)
            };
            let row = &y[(t * topk.k() + j) * hidden..(t * topk.k() + j + 1) * hidden];
            o.iter_mut().zip(row).for_each(|(a, b)| *a += w * b);
        }
    }
}
