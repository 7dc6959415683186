//! Applying the expert activation to one gemm1 output row.

use super::config::Activation;

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

impl Activation {
    /// Position of intermediate element `j`'s gate and up values in the gemm1 output
    /// (`None` for up when the activation is not gated).
    pub fn gate_up_index(&self, j: usize, intermediate: usize) -> (usize, Option<usize>) {
        match self {
            Activation::SwigluOai { .. } => (2 * j, Some(2 * j + 1)),
            Activation::SiluAndMul | Activation::GeluAndMul | Activation::GeluTanhAndMul => {
                (j, Some(intermediate + j))
            }
            Activation::Relu2 | Activation::Silu => (j, None),
        }
    }

    /// `out[j] = act(h)` for one row; `h` has `w13_rows(out.len())` values.
    pub fn apply(&self, h: &[f32], out: &mut [f32]) {
        let i = out.len();
        for (j, o) in out.iter_mut().enumerate() {
            *o = match *self {
                Activation::SiluAndMul => silu(h[j]) * h[i + j],
                Activation::GeluAndMul => gelu(h[j]) * h[i + j],
                Activation::GeluTanhAndMul => gelu_tanh(h[j]) * h[i + j],
                Activation::SwigluOai { alpha, limit } => {
                    let g = h[2 * j].min(limit);
                    let u = h[2 * j + 1].clamp(-limit, limit);
                    (u + 1.0) * g / (1.0 + (-alpha * g).exp())
                }
                Activation::Relu2 => h[j].max(0.0).powi(2),
                Activation::Silu => silu(h[j]),
            };
        }
    }
}
