//! `ExpertWeights`: all experts' w13 and w2 with their scales, in checkpoint layout.
//! Backends convert from here into their own layouts; emulation dequantizes from here.

use super::activation::Stage;
use super::scheme::{IntBits, QuantScheme};

/// One projection (w13 or w2) of every expert: `[experts, rows, cols]`, rows = output
/// features (N), cols = input features (K), row-major, K fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantTensor {
    pub experts: usize,
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
}

/// Stored codes and scales. Which variant goes with which scheme is fixed by
/// `QuantScheme`; `ExpertWeights::validate` checks the pairing and every length.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightData {
    /// Unquantized bf16.
    Bf16(Vec<half::bf16>),
    /// Unquantized f16.
    F16(Vec<half::f16>),
    /// FP8 codes in the scheme's flavour; `w = code · scale`. Scales are `[E]` (per
    /// tensor), `[E, rows]` (per channel) or `[E, ceil(rows/128), ceil(cols/128)]` (block).
    Fp8 { codes: Vec<u8>, scales: Vec<f32> },
    /// NVFP4: e2m1 codes two per byte `[E, rows, cols/2]`, e4m3 block scales
    /// `[E, rows, cols/16]`, and one f32 per expert; `w = fp4 · block · global`
    /// (ModelOpt's `weight_scale_2` convention).
    Nvfp4 {
        packed: Vec<u8>,
        block_scales: Vec<u8>,
        global_scales: Vec<f32>,
    },
    /// OCP MX: fp4 two per byte `[E, rows, cols/2]` or fp6 four per three bytes
    /// `[E, rows, cols·3/4]`; e8m0 scales `[E, rows, cols/32]`; `w = elem · 2^(s−127)`.
    Mx { packed: Vec<u8>, scales: Vec<u8> },
    /// Integer weights: `w = (code − zero) · scale[group]` (· `channel_scales` for W4A8).
    Int(IntWeights),
}

/// Integer codes are unsigned (0..=15 or 0..=255); a symmetric scheme has the implicit
/// zero point 8 (int4) or 128 (int8), as GPTQ's `uint4b8`; signed int8 checkpoints map
/// in by adding 128.
#[derive(Debug, Clone, PartialEq)]
pub struct IntWeights {
    pub bits: IntBits,
    /// int4: eight per i32 along K (GPTQ order) `[E, rows, cols/8]`; int8: one per byte
    /// `[E, rows, cols]`, stored in `bytes`.
    pub packed4: Vec<i32>,
    pub bytes: Vec<u8>,
    /// Elements of K that share a scale (cols for per-channel).
    pub group: usize,
    /// `[E, rows, cols/group]`.
    pub scales: Vec<f32>,
    /// Explicit zero points `[E, rows, cols/group]` (asymmetric / AWQ).
    pub zeros: Option<Vec<u8>>,
    /// Act-order: the group of each input column `[E, cols]` (GPTQ `g_idx`).
    pub g_idx: Option<Vec<u32>>,
    /// W4A8 per-output-channel f32 scales `[E, rows]`.
    pub channel_scales: Option<Vec<f32>>,
}

/// Static activation scales, `x ≈ code · scale`: one per tensor (length 1) or, for fp8
/// checkpoints calibrated per expert, one per expert (length E). Kept per expert because
/// each expert's calibrated range is its own: reducing them to one scale rounds every
/// expert but the widest on a coarser grid.
#[derive(Debug, Clone, PartialEq)]
pub struct InputScales {
    /// Scales of the hidden states entering w13.
    pub w13: Vec<f32>,
    /// Scales of the activation output entering w2.
    pub w2: Vec<f32>,
}

impl InputScales {
    /// One scale per tensor for each GEMM input.
    pub fn uniform(w13: f32, w2: f32) -> Self {
        InputScales {
            w13: vec![w13],
            w2: vec![w2],
        }
    }

    /// The scales of `stage`'s input: length 1 or one per expert.
    pub fn stage(&self, stage: Stage) -> &[f32] {
        match stage {
            Stage::W13 => &self.w13,
            Stage::W2 => &self.w2,
        }
    }

    /// The scale `expert` uses at `stage` (`validate` has checked the lengths).
    pub fn of(&self, stage: Stage, expert: usize) -> f32 {
        match self.stage(stage) {
            [one] => *one,
            v => v.get(expert).copied().unwrap_or(f32::NAN),
        }
    }

    /// The one scale every expert shares at `stage`, if they do.
    pub fn shared(&self, stage: Stage) -> Option<f32> {
        let v = self.stage(stage);
        v.first().copied().filter(|&f| v.iter().all(|&s| s == f))
    }

    /// Whether some stage's experts use differing scales.
    pub fn is_per_expert(&self) -> bool {
        [Stage::W13, Stage::W2]
            .iter()
            .any(|&st| self.shared(st).is_none())
    }
}

/// All routed experts of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertWeights {
    pub scheme: QuantScheme,
    pub num_experts: usize,
    pub hidden: usize,
    pub intermediate: usize,
    /// w13 has 2·I rows (gate and up) when true, I rows when false.
    pub gated: bool,
    /// `[E, w13_rows, H]`.
    pub w13: QuantTensor,
    /// `[E, H, I]`.
    pub w2: QuantTensor,
    /// `[E, w13_rows]`, f32.
    pub w13_bias: Option<Vec<f32>>,
    /// `[E, H]`, f32.
    pub w2_bias: Option<Vec<f32>>,
    /// Present for schemes with static activation scales.
    pub input_scales: Option<InputScales>,
}
