//! `DenseExperts`: expert weights as plain f32, the input of `ExpertWeights::quantize` and
//! the output of `dequantize`.

use crate::moe::LayerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// All experts of a layer in f32, same layout as `ExpertWeights` (w13 `[E, rows13, H]`,
/// w2 `[E, H, I]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseExperts {
    pub num_experts: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub gated: bool,
    pub w13: Vec<f32>,
    pub w2: Vec<f32>,
    pub w13_bias: Option<Vec<f32>>,
    pub w2_bias: Option<Vec<f32>>,
}

impl DenseExperts {
    /// Rows of w13 (2·I gated, I otherwise).
    pub fn w13_rows(&self) -> usize {
        if self.gated {
            2 * self.intermediate
        } else {
            self.intermediate
        }
    }

    /// Seeded Gaussian weights with standard deviation 1/√fan_in (and small biases when
    /// the layer has them), so activations keep a realistic magnitude through the layer.
    pub fn random(config: &LayerConfig, seed: u64) -> Self {
        Self::random_counted(config, seed, || {})
    }

    /// [`DenseExperts::random`], value for value, calling `matrix_done` after each
    /// expert's w13 and w2 (2 E calls), so a caller can show progress over large layers.
    pub fn random_counted(config: &LayerConfig, seed: u64, mut matrix_done: impl FnMut()) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (e, h, i) = (config.num_experts, config.hidden, config.intermediate);
        let rows = config.activation.w13_rows(i);
        // One Gaussian stream: w13 of every expert, then w2 of every expert, then biases.
        let mut draw = |n: usize, std: f32| {
            let mut w = Vec::with_capacity(e * n);
            for _ in 0..e {
                w.extend(gaussian(&mut rng, n, std));
                matrix_done();
            }
            w
        };
        let w13 = draw(rows * h, 1.0 / (h as f32).sqrt());
        let w2 = draw(h * i, 1.0 / (i as f32).sqrt());
        let (w13_bias, w2_bias) = if config.has_bias {
            (
                Some(gaussian(&mut rng, e * rows, 0.1)),
                Some(gaussian(&mut rng, e * h, 0.1)),
            )
        } else {
            (None, None)
        };
        DenseExperts {
            num_experts: e,
            hidden: h,
            intermediate: i,
            gated: config.activation.is_gated(),
            w13,
            w2,
            w13_bias,
            w2_bias,
        }
    }
}

/// `n` samples of N(0, std²) by Box–Muller.
pub fn gaussian(rng: &mut impl Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect()
}
