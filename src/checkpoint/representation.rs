//! How a layer's stored scales become fleetmoe's: exactly where we can, and where we keep
//! vLLM's approximation, said so — in the log, in `LayerNotes` and in `fleetmoe inspect`.
//!
//! Exact: fp8 per-tensor gate and up scales that differ in some expert make the layer
//! load as fp8 per-channel (gate rows carry the gate scale, up rows the up scale, down
//! rows their expert's scale), keeping the activation rule; no code is requantized.
//! fp8 static input scales that differ across experts are kept per expert.
//! Approximate, as vLLM: NVFP4 gate and up global scales that differ are folded into the
//! e4m3 block scales of the smaller half (rounded); static input scales that differ
//! between gate and up, and NVFP4's that differ across experts, are replaced by their
//! maximum.

use super::arch::Proj;
use super::config::QuantFormat;
use super::formats::{positive, reciprocal};
use super::Checkpoint;
use crate::error::Result;
use crate::quant::{Fp8WeightScale, QuantScheme};

/// What loading one MoE layer does to its stored scales, read from the scale tensors only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerNotes {
    /// Experts whose fp8 per-tensor gate and up scales differ; non-empty means the layer
    /// loads as fp8 per-channel, exactly.
    pub fp8_per_channel: Vec<usize>,
    /// The approximations kept to match vLLM, one sentence each.
    pub approximations: Vec<String>,
}

impl LayerNotes {
    /// The lines `inspect` prints.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.fp8_per_channel.is_empty() {
            v.push(format!(
                "exact: fp8 gate and up scales differ in {} expert(s); loaded as per-channel fp8",
                self.fp8_per_channel.len()
            ));
        }
        v.extend(
            self.approximations
                .iter()
                .map(|a| format!("approximation: {a}")),
        );
        v
    }
}

/// Whether `scheme` is fp8 with one weight scale per projection.
pub(crate) fn fp8_per_tensor(scheme: &QuantScheme) -> bool {
    matches!(
        scheme,
        QuantScheme::Fp8 {
            weight: Fp8WeightScale::PerTensor,
            ..
        }
    )
}

/// `scheme` with per-channel fp8 weight scales, the activation rule kept.
pub(crate) fn per_channel(scheme: QuantScheme) -> QuantScheme {
    match scheme {
        QuantScheme::Fp8 { flavor, act, .. } => QuantScheme::Fp8 {
            flavor,
            weight: Fp8WeightScale::PerChannel,
            act,
        },
        s => s,
    }
}

/// Reads the per-projection scalars of layer `n` (stored scheme `scheme`) and says what
/// loading will do with them.
pub(crate) fn notes(ck: &Checkpoint, n: usize, scheme: &QuantScheme) -> Result<LayerNotes> {
    let mut out = LayerNotes::default();
    let c = &ck.config;
    if ck.experts.fused() {
        return super::fused::notes(ck, n, scheme);
    }
    let block = ck.block(n);
    let base = |e: usize, p: Proj| format!("{block}.{}", ck.experts.expert_proj(c.arch, e, p));
    let scalar = |name: String, recip: bool| -> Result<f32> {
        let t = ck.shards.get(&name)?;
        let v = t.scalar()?;
        if recip {
            reciprocal(&t, v)
        } else {
            positive(&t, v)
        }
    };
    let e = c.num_experts;
    if fp8_per_tensor(scheme) {
        for ex in 0..e {
            let g = scalar(format!("{}.weight_scale", base(ex, Proj::Gate)), false)?;
            let u = scalar(format!("{}.weight_scale", base(ex, Proj::Up)), false)?;
            if g != u {
                out.fp8_per_channel.push(ex);
            }
        }
    }
    if matches!(scheme, QuantScheme::Nvfp4 { .. }) {
        let ct = matches!(ck.experts_format(n)?, QuantFormat::CtNvfp4 { .. });
        let name = if ct {
            "weight_global_scale"
        } else {
            "weight_scale_2"
        };
        let mut differ = 0;
        for ex in 0..e {
            let g = scalar(format!("{}.{name}", base(ex, Proj::Gate)), ct)?;
            let u = scalar(format!("{}.{name}", base(ex, Proj::Up)), ct)?;
            differ += usize::from(g != u);
        }
        if differ > 0 {
            out.approximations.push(format!(
                "NVFP4 gate and up global scales differ in {differ} of {e} experts; the smaller half's e4m3 block scales are rescaled to the larger (rounded), as vLLM keeps one global scale per w13"
            ));
        }
    }
    if scheme.needs_static_input_scales() {
        let ct = matches!(ck.experts_format(n)?, QuantFormat::CtNvfp4 { .. });
        let name = if ct {
            "input_global_scale"
        } else {
            "input_scale"
        };
        let (mut w13, mut w2, mut gate_up) = (Vec::new(), Vec::new(), 0);
        for ex in 0..e {
            let g = scalar(format!("{}.{name}", base(ex, Proj::Gate)), ct)?;
            let u = scalar(format!("{}.{name}", base(ex, Proj::Up)), ct)?;
            gate_up += usize::from(g != u);
            w13.push(g.max(u));
            w2.push(scalar(format!("{}.{name}", base(ex, Proj::Down)), ct)?);
        }
        if gate_up > 0 {
            out.approximations.push(format!(
                "static gate and up input scales differ in {gate_up} of {e} experts; the larger is used for both, as vLLM"
            ));
        }
        let spread = |v: &[f32]| v.iter().any(|&x| x != v[0]);
        if !scheme.per_expert_input_scales() && (spread(&w13) || spread(&w2)) {
            let max = |v: &[f32]| v.iter().fold(0f32, |m, &x| m.max(x));
            out.approximations.push(format!(
                "static input scales differ across experts; their maximum is used (w13 {}, w2 {}), as the NVFP4 kernels take one global scale per tensor",
                max(&w13),
                max(&w2)
            ));
        }
    }
    Ok(out)
}
