//! Loading one MoE layer: router, routed experts (split per expert, or fused as
//! transformers 5 holds them: bf16 / f16 / f32, GPT-OSS mxfp4, fine-grained fp8 in
//! `fused`), the shared expert and its gate.

use super::arch::{proj_name, Arch, Proj};
use super::assemble::{concat_rows, stack};
use super::config::QuantFormat;
use super::formats::{gpt_oss_blocks, load_linear, scheme_of, tensor, weight_name, Linear};
use super::naming::ExpertLayout;
use super::representation::{fp8_per_tensor, per_channel};
use super::Checkpoint;
use crate::error::{Error, Result};
use crate::moe::{LayerConfig, Routing, SharedExpertWeights};
use crate::quant::{ExpertWeights, FloatDtype, QuantScheme, QuantTensor, WeightData};
use safetensors::Dtype;

/// One MoE layer as read from a checkpoint.
#[derive(Debug, Clone)]
pub struct LoadedLayer {
    pub index: usize,
    pub config: LayerConfig,
    pub weights: ExpertWeights,
    pub shared: Option<SharedExpertWeights>,
    /// Router weight `[experts, hidden]` (f32).
    pub router: Vec<f32>,
    /// Router bias `[experts]` (GPT-OSS).
    pub router_bias: Option<Vec<f32>>,
}

impl LoadedLayer {
    /// Router logits `[tokens, experts]` for hidden states `[tokens, hidden]`.
    pub fn router_logits(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (h, e) = (self.config.hidden, self.config.num_experts);
        if x.len() % h != 0 {
            return Err(Error::shape(
                "hidden states",
                format!("a multiple of {h}"),
                x.len(),
            ));
        }
        let mut out = Vec::with_capacity(x.len() / h * e);
        for row in x.chunks(h) {
            for j in 0..e {
                let w = &self.router[j * h..(j + 1) * h];
                let dot: f32 = row.iter().zip(w).map(|(a, b)| a * b).sum();
                out.push(dot + self.router_bias.as_ref().map_or(0.0, |b| b[j]));
            }
        }
        Ok(out)
    }
}

/// Every token's hidden size must match; the router tells E and H.
pub(super) fn load(ck: &Checkpoint, n: usize) -> Result<LoadedLayer> {
    let c = &ck.config;
    let arch = c.arch;
    let block = ck.block(n);
    let (e, h, i) = (c.num_experts, c.hidden, c.intermediate);
    let s = &ck.shards;
    let router_name = format!("{block}.{}", arch.router());
    let router = finite(s, &router_name, &[e, h])?;
    let router_bias = match arch {
        Arch::GptOss => Some(finite(s, &format!("{block}.router.bias"), &[e])?),
        _ => None,
    };
    let mut routing = arch.routing(c);
    if let Routing::Grouped {
        correction_bias, ..
    } = &mut routing
    {
        let name = format!("{block}.gate.e_score_correction_bias");
        if s.contains(&name) {
            *correction_bias = Some(finite(s, &name, &[e])?);
        }
    }
    let scheme = ck.stored_scheme(n)?;
    let activation = arch.activation(c);
    let config = LayerConfig {
        activation,
        routing,
        has_bias: arch == Arch::GptOss,
        apply_router_weight_on_input: arch == Arch::Llama4,
        ..LayerConfig::new(e, c.top_k, h, i)
    };
    config.validate()?;
    let quant = ck.experts_format(n)?;
    let fused = format!("{block}.experts.gate_up_proj");
    let weights = if quant == QuantFormat::GptOssMxfp4 {
        let mut w = fused_weights(
            scheme,
            e,
            h,
            i,
            |rows, cols, base| gpt_oss_blocks(s, base, e, rows, cols),
            &block,
        )?;
        w.w13_bias = Some(super::formats::floats(
            s,
            &format!("{fused}_bias"),
            &[e, 2 * i],
        )?);
        w.w2_bias = Some(super::formats::floats(
            s,
            &format!("{block}.experts.down_proj_bias"),
            &[e, h],
        )?);
        w
    } else if let ExpertLayout::Fused { transposed } = ck.experts.layout {
        // `[E, out, in]` (transformers 5's `F.linear`) or `[E, in, out]` (`x @ W`).
        match quant {
            QuantFormat::Unquantized => {}
            QuantFormat::NativeFp8 { .. } => {
                let w = super::fused::fp8(ck, &block, scheme, (e, h, i))?;
                w.validate()?;
                return finish(ck, n, &block, config, w, router, router_bias);
            }
            q => return Err(super::fused::refuse(ck, &fused, &q)),
        }
        let mut w = fused_weights(
            scheme,
            e,
            h,
            i,
            |rows, cols, base| fused_float(s, &scheme, base, e, rows, cols, transposed),
            &block,
        )?;
        if arch == Arch::GptOss {
            w.w13_bias = Some(super::formats::floats(
                s,
                &format!("{fused}_bias"),
                &[e, 2 * i],
            )?);
            w.w2_bias = Some(super::formats::floats(
                s,
                &format!("{block}.experts.down_proj_bias"),
                &[e, h],
            )?);
        }
        w
    } else {
        let base = |ex: usize, p: Proj| format!("{block}.{}", ck.experts.expert_proj(arch, ex, p));
        split_weights(ck, &quant, &scheme, e, h, i, base)?
    };
    weights.validate()?;
    finish(ck, n, &block, config, weights, router, router_bias)
}

/// The rest of layer `n` once its routed experts are read: the shared expert and the
/// layer's final config.
fn finish(
    ck: &Checkpoint,
    n: usize,
    block: &str,
    mut config: LayerConfig,
    weights: ExpertWeights,
    router: Vec<f32>,
    router_bias: Option<Vec<f32>>,
) -> Result<LoadedLayer> {
    let c = &ck.config;
    if config.has_bias && weights.w13_bias.is_none() {
        config.has_bias = false;
    }
    let shared = match (c.arch.shared_module(), c.shared_intermediate) {
        (Some(m), Some(si)) => shared_expert(ck, block, m, si, &mut config)?,
        _ => None,
    };
    config.validate()?;
    Ok(LoadedLayer {
        index: n,
        config,
        weights,
        shared,
        router,
        router_bias,
    })
}

/// The shared expert of `block` (module `m`, intermediate `si`), if the checkpoint has
/// one: all three projections, or none when only a default said it exists.
fn shared_expert(
    ck: &Checkpoint,
    block: &str,
    m: &str,
    si: usize,
    config: &mut LayerConfig,
) -> Result<Option<SharedExpertWeights>> {
    let (s, c) = (&ck.shards, &ck.config);
    let Some((format, sscheme)) = shared_storage(ck, block, m, si)? else {
        return Ok(None);
    };
    let base = |p: Proj| format!("{block}.{m}.{}", proj_name(p));
    let w = split_weights(ck, &format, &sscheme, 1, c.hidden, si, |_, p| base(p))?;
    w.validate()?;
    let gate = match ck.config.arch.shared_gate() {
        Some(g) => Some(finite(s, &format!("{block}.{g}"), &[1, c.hidden])?),
        None => None,
    };
    config.shared_intermediate = Some(si);
    Ok(Some(SharedExpertWeights { weights: w, gate }))
}

/// How the shared expert of `block` (module `m`, intermediate `si`) is stored, from tensor
/// headers only: its format and stored scheme, or `None` when the checkpoint has no
/// shared-expert tensors and only a default said it exists. Loading and `inspect` both
/// decide it here. Errors: projections in different config groups, some of the three
/// projections missing, or none of them where `config.json` says there is one.
pub(super) fn shared_storage(
    ck: &Checkpoint,
    block: &str,
    m: &str,
    si: usize,
) -> Result<Option<(QuantFormat, QuantScheme)>> {
    let (s, c) = (&ck.shards, &ck.config);
    let base = |p: Proj| format!("{block}.{m}.{}", proj_name(p));
    let projs = [Proj::Gate, Proj::Up, Proj::Down];
    // Quantizers often leave the shared expert unquantized (ModelOpt `exclude_modules`,
    // compressed-tensors `ignore`): a float `.weight` says so.
    let mut float = false;
    for p in projs {
        if let Some((Dtype::BF16 | Dtype::F16 | Dtype::F32, _)) =
            s.info(&format!("{}.weight", base(p)))?
        {
            float = true;
        }
    }
    // compressed-tensors says per module (a group of its own, or `ignore`).
    let format = ck.format_of(&base(Proj::Gate));
    for p in [Proj::Up, Proj::Down] {
        let f = ck.format_of(&base(p));
        if f != format {
            return Err(Error::checkpoint(
                ck.dir.display(),
                base(p),
                format!(
                    "config_groups store it as {}, but the shared gate projection as {}",
                    f.describe(),
                    format.describe()
                ),
            ));
        }
    }
    let format = if float {
        QuantFormat::Unquantized
    } else {
        format
    };
    let names = projs.map(|p| weight_name(&format, &base(p)));
    let present = names.iter().filter(|n| s.contains(n)).count();
    if present == 0 && c.shared_is_default {
        return Ok(None);
    }
    if let Some(missing) = names.iter().find(|n| !s.contains(n)) {
        let why = if present == 0 {
            format!("missing: config.json gives the shared expert intermediate size {si}, but the checkpoint has no shared-expert tensors")
        } else {
            format!("missing: the shared expert has {present} of its 3 projections")
        };
        return Err(Error::checkpoint(s.file_of(missing), missing, why));
    }
    let dtype = s.info(&names[2])?.map_or(Dtype::BF16, |(d, _)| d);
    let sscheme = scheme_of(&format, dtype);
    Ok(Some((format, sscheme)))
}

/// A float tensor of `shape` whose every value is finite (a router bias or gate).
fn finite(s: &super::Shards, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let v = super::formats::floats(s, name, shape)?;
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(v),
        Some(k) => Err(Error::checkpoint(
            s.file_of(name),
            name,
            format!("value {} at index {k}: expected finite values", v[k]),
        )),
    }
}

/// Experts stored per expert and per projection. fp8 per-tensor gate and up scales that
/// differ in some expert make the whole layer per-channel fp8, exactly (see
/// `representation`).
fn split_weights(
    ck: &Checkpoint,
    f: &QuantFormat,
    scheme: &QuantScheme,
    e: usize,
    h: usize,
    i: usize,
    base: impl Fn(usize, Proj) -> String,
) -> Result<ExpertWeights> {
    let s = &ck.shards;
    let mut linears = Vec::with_capacity(e);
    for ex in 0..e {
        let gate = load_linear(f, scheme, s, &base(ex, Proj::Gate), i, h)?;
        let up = load_linear(f, scheme, s, &base(ex, Proj::Up), i, h)?;
        let down = load_linear(f, scheme, s, &base(ex, Proj::Down), h, i)?;
        linears.push([gate, up, down]);
    }
    let tensor_scale = |l: &Linear| match &l.t.data {
        WeightData::Fp8 { scales, .. } if scales.len() == 1 => Some(scales[0]),
        _ => None,
    };
    let differ: Vec<usize> = (0..e)
        .filter(|&ex| tensor_scale(&linears[ex][0]) != tensor_scale(&linears[ex][1]))
        .collect();
    let scheme = if fp8_per_tensor(scheme) && !differ.is_empty() {
        log::info!(
            "{}: fp8 gate and up scales differ in expert(s) {differ:?}; loading as per-channel fp8 (exact)",
            base(differ[0], Proj::Gate)
        );
        for l in linears.iter_mut().flatten() {
            let rows = l.t.rows;
            if let WeightData::Fp8 { scales, .. } = &mut l.t.data {
                *scales = vec![scales[0]; rows];
            }
        }
        per_channel(*scheme)
    } else {
        *scheme
    };
    let (mut w13, mut w2) = (Vec::with_capacity(e), Vec::with_capacity(e));
    let (mut in13, mut in2) = (Vec::new(), Vec::new());
    for (ex, [gate, up, down]) in linears.into_iter().enumerate() {
        if let (Some(g), Some(u), Some(d)) = (gate.input_scale, up.input_scale, down.input_scale) {
            // gate and up read the same input: vLLM keeps the larger of the two. Each was
            // checked finite and positive when read.
            in13.push(g.max(u));
            in2.push(d);
        }
        w13.push(concat_rows(&scheme, gate.t, up.t, &base(ex, Proj::Gate))?);
        w2.push(down.t);
    }
    let mut w = ExpertWeights {
        scheme,
        num_experts: e,
        hidden: h,
        intermediate: i,
        gated: true,
        w13: stack(w13, "w13")?,
        w2: stack(w2, "w2")?,
        w13_bias: None,
        w2_bias: None,
        input_scales: None,
    };
    if scheme.needs_static_input_scales() {
        w.set_input_scales_per_expert(&in13, &in2)?;
    }
    Ok(w)
}

/// Experts stored fused over E: `{block}.experts.gate_up_proj*` and `down_proj*`.
fn fused_weights(
    scheme: QuantScheme,
    e: usize,
    h: usize,
    i: usize,
    read: impl Fn(usize, usize, &str) -> Result<WeightData>,
    block: &str,
) -> Result<ExpertWeights> {
    let w13 = read(2 * i, h, &format!("{block}.experts.gate_up_proj"))?;
    let w2 = read(h, i, &format!("{block}.experts.down_proj"))?;
    Ok(ExpertWeights {
        scheme,
        num_experts: e,
        hidden: h,
        intermediate: i,
        gated: true,
        w13: QuantTensor {
            experts: e,
            rows: 2 * i,
            cols: h,
            data: w13,
        },
        w2: QuantTensor {
            experts: e,
            rows: h,
            cols: i,
            data: w2,
        },
        w13_bias: None,
        w2_bias: None,
        input_scales: None,
    })
}

/// A bf16/f16/f32 fused tensor as `[E, rows, cols]`: stored so, or stored `[E, cols,
/// rows]` and transposed.
fn fused_float(
    s: &super::Shards,
    scheme: &QuantScheme,
    name: &str,
    e: usize,
    rows: usize,
    cols: usize,
    transposed: bool,
) -> Result<WeightData> {
    let shape = if transposed {
        [e, cols, rows]
    } else {
        [e, rows, cols]
    };
    let t = tensor(s, name, &shape, &[Dtype::BF16, Dtype::F16, Dtype::F32])?;
    let v = t.f32s()?;
    let out = if transposed {
        let mut out = vec![0f32; v.len()];
        for ex in 0..e {
            for c in 0..cols {
                for r in 0..rows {
                    out[(ex * rows + r) * cols + c] = v[(ex * cols + c) * rows + r];
                }
            }
        }
        out
    } else {
        v
    };
    Ok(match scheme {
        QuantScheme::Unquantized(FloatDtype::F16) => {
            WeightData::F16(out.into_iter().map(half::f16::from_f32).collect())
        }
        _ => WeightData::Bf16(out.into_iter().map(half::bf16::from_f32).collect()),
    })
}
