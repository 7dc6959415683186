//! Quantized experts in transformers 5's fused layout (`{block}.experts.gate_up_proj`
//! `[E, 2I, H]`, gate rows then up rows, and `down_proj` `[E, H, I]`), as the producers that
//! write that layout store them, and a refusal that names the producer for every format that
//! no producer writes fused.
//!
//! What each producer writes for fused experts (read from their source):
//!
//! - transformers 5 fine-grained FP8 (`quant_method: "fp8"`; `FP8Experts` in
//!   `src/transformers/integrations/finegrained_fp8.py`, `FineGrainedExperts` in
//!   `integrations/finegrained.py`, `_alloc_expert_proj`, `Fp8Quantize`): `gate_up_proj` /
//!   `down_proj` F8_E4M3 `[E, out, in]` beside F32 `gate_up_proj_scale_inv` /
//!   `down_proj_scale_inv`, multiplied to dequantize (`Fp8Quantize` stores
//!   `1 / (448 / amax)`). With `weight_block_size` the scales are the block grid over the
//!   fused rows, `[E, ceil(2I/128), ceil(H/128)]` and `[E, ceil(H/128), ceil(I/128)]` — the
//!   same grid fleetmoe keeps for w13, so the fused tensor is w13 as it is. Without a block
//!   size there is one scale per expert, `[E, 1, 1]`, or one per half of gate_up,
//!   `[E, 2, 1]` (`min_scale_out = 2`: gate's then up's); halves that differ load exactly as
//!   per-channel fp8 (gate rows carry gate's scale, up rows up's), as `representation` does
//!   for per-expert checkpoints. `activation_scheme: "static"` adds F32
//!   `gate_up_proj_activation_scale` / `down_proj_activation_scale` `[E]`, reduced to their
//!   maximum as vLLM does. DeepSeek-V3 / Qwen3 block-fp8 checkpoints loaded into these
//!   modules and saved as they are held (`save_original_format=False`) have this layout.
//!   `scale_fmt: "ue8m0"` (DeepSeek-V4 style) stores the scales as UE8M0 exponent bytes
//!   (F8_E8M0, `Fp8Quantize` rounds them up to powers of two), read exactly as 2^(b − 127).
//!   The transposed `[E, in, out]` orientation is refused by name (AMD Quark's
//!   `QuarkFP8Experts` refuses `is_transposed` `FP8Experts` too).
//! - AMD Quark 0.13 (`quark/torch/utils/llm/module_replacement/quark_experts.py`):
//!   `QuarkExperts` slices every `@use_experts_implementation` experts module into
//!   `experts.N.gate_proj / up_proj / down_proj` linear layers before quantizing (and
//!   `QuarkFP8Experts` slices `FP8Experts`, gate_up's block-scale rows split at `I / 128`),
//!   so its quantized experts are per expert; fused parameters it never replaced stay in
//!   the model's float dtype.
//! - llm-compressor 0.14 / compressed-tensors 0.19: `LinearExperts2D` linearises fused
//!   experts into `experts.N.gate_proj / up_proj / down_proj` before quantizing; nothing it
//!   writes is fused.
//! - GPT-OSS MXFP4 (`integrations/mxfp4.py`): `{gate_up,down}_proj_blocks` / `_scales`, read
//!   by `formats::gpt_oss_blocks`.
//!
//! No producer we found writes int4 / int8 packed along the fused axis (GPTQ, AWQ and
//! compressed-tensors `pack-quantized` store one linear layer per projection), so those
//! formats beside fused tensors are refused by name rather than guessed at.

use super::config::QuantFormat;
use super::formats::positive;
use super::naming::ExpertLayout;
use super::representation::{fp8_per_tensor, per_channel, LayerNotes};
use super::shards::{ue8m0, RawTensor, Shards};
use super::Checkpoint;
use crate::error::{Error, Result};
use crate::quant::{ExpertWeights, Fp8WeightScale, QuantScheme, QuantTensor, WeightData};
use safetensors::Dtype;

/// The dtypes transformers stores `_scale_inv` and activation scales in: floats, or UE8M0
/// exponent bytes (`scale_fmt: "ue8m0"`: F8_E8M0, or U8 as `FineGrainedScaleContainer`
/// ships them).
const SCALE_DTYPES: &[Dtype] = &[
    Dtype::F32,
    Dtype::BF16,
    Dtype::F16,
    Dtype::F8_E8M0,
    Dtype::U8,
];

/// Reads layer `block`'s fused fine-grained FP8 experts (stored scheme `scheme`).
pub(super) fn fp8(
    ck: &Checkpoint,
    block: &str,
    scheme: QuantScheme,
    (e, h, i): (usize, usize, usize),
) -> Result<ExpertWeights> {
    let s = &ck.shards;
    let gu = format!("{block}.experts.gate_up_proj");
    let dn = format!("{block}.experts.down_proj");
    if ck.experts.layout != (ExpertLayout::Fused { transposed: false }) {
        return Err(Error::checkpoint(
            s.file_of(&gu),
            &gu,
            "fp8 fused experts stored [E, in, out] (transposed) are not supported: transformers' FP8Experts stores [E, out, in] (finegrained_fp8.py), and AMD Quark refuses transposed FP8Experts too",
        ));
    }
    let QuantScheme::Fp8 { weight, .. } = scheme else {
        return Err(Error::checkpoint(
            "",
            &gu,
            "fused fp8 loader given a non-fp8 scheme",
        ));
    };
    let codes13 = super::formats::tensor(s, &gu, &[e, 2 * i, h], &[Dtype::F8_E4M3])?.data;
    let codes2 = super::formats::tensor(s, &dn, &[e, h, i], &[Dtype::F8_E4M3])?.data;
    let (scheme, s13, s2) = match weight {
        Fp8WeightScale::Block128 => {
            let g = |r: usize, c: usize| [e, r.div_ceil(128), c.div_ceil(128)];
            let s13 = scales(s, &format!("{gu}_scale_inv"), &g(2 * i, h))?;
            let s2 = scales(s, &format!("{dn}_scale_inv"), &g(h, i))?;
            (scheme, s13, s2)
        }
        Fp8WeightScale::PerTensor => {
            let halves = gate_up_halves(s, &gu, e)?;
            let s2 = scales(s, &format!("{dn}_scale_inv"), &[e, 1, 1])?;
            match halves {
                Halves::One(v) => (scheme, v, s2),
                Halves::Two(v) if v.chunks(2).all(|p| p[0] == p[1]) => {
                    (scheme, v.chunks(2).map(|p| p[0]).collect(), s2)
                }
                Halves::Two(v) => {
                    // Exact: every row carries its own half's scale (gate rows 0..I, up
                    // rows I..2I: transformers' fused experts are concatenated, not
                    // interleaved, except GPT-OSS's, which are transposed and refused above).
                    let rows = |v: f32, n: usize| std::iter::repeat_n(v, n);
                    let rows13: Vec<f32> = v
                        .chunks(2)
                        .flat_map(|p| rows(p[0], i).chain(rows(p[1], i)))
                        .collect();
                    let rows2: Vec<f32> = s2.iter().flat_map(|&d| rows(d, h)).collect();
                    log::info!(
                        "{gu}_scale_inv: fp8 gate and up scales differ; loading as per-channel fp8 (exact)"
                    );
                    (per_channel(scheme), rows13, rows2)
                }
            }
        }
        Fp8WeightScale::PerChannel => {
            return Err(Error::checkpoint(
                "",
                &gu,
                "per-channel fp8 fused experts: no producer writes them (transformers' FP8Experts stores blocks or one scale per expert)",
            ))
        }
    };
    let mut w = ExpertWeights {
        scheme,
        num_experts: e,
        hidden: h,
        intermediate: i,
        gated: true,
        w13: QuantTensor {
            experts: e,
            rows: 2 * i,
            cols: h,
            data: WeightData::Fp8 {
                codes: codes13,
                scales: s13,
            },
        },
        w2: QuantTensor {
            experts: e,
            rows: h,
            cols: i,
            data: WeightData::Fp8 {
                codes: codes2,
                scales: s2,
            },
        },
        w13_bias: None,
        w2_bias: None,
        input_scales: None,
    };
    let a13 = format!("{gu}_activation_scale");
    let a2 = format!("{dn}_activation_scale");
    if scheme.needs_static_input_scales() {
        let in13 = scales(s, &a13, &[e])?;
        let in2 = scales(s, &a2, &[e])?;
        w.set_input_scales_per_expert(&in13, &in2)?;
    } else if let Some(name) = [&a13, &a2].into_iter().find(|n| s.contains(n)) {
        return Err(Error::checkpoint(
            s.file_of(name),
            name,
            "a static activation scale, but quantization_config.activation_scheme (\"dynamic\", or absent: the default) says activations are not statically scaled, so it would be ignored",
        ));
    }
    Ok(w)
}

/// gate_up's per-tensor scales: one per expert (`[E, 1, 1]`) or one per half (`[E, 2, 1]`).
enum Halves {
    One(Vec<f32>),
    Two(Vec<f32>),
}

fn gate_up_halves(s: &Shards, gu: &str, e: usize) -> Result<Halves> {
    let name = format!("{gu}_scale_inv");
    let t = s.get(&name)?;
    if t.numel() == 2 * e && e > 0 {
        let v = checked(&t, &[e, 2, 1])?;
        Ok(Halves::Two(v))
    } else {
        Ok(Halves::One(checked(&t, &[e, 1, 1])?))
    }
}

/// A float scale tensor of `shape`, every value finite and positive.
fn scales(s: &Shards, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    checked(&s.get(name)?, shape)
}

fn checked(t: &RawTensor, shape: &[usize]) -> Result<Vec<f32>> {
    t.expect_dtype(SCALE_DTYPES)?;
    t.expect_shape(shape)?;
    let v = match t.dtype {
        // UE8M0 (`scale_fmt: "ue8m0"`): 2^(byte − 127), exact in f32; 0xFF is NaN.
        Dtype::F8_E8M0 | Dtype::U8 => t.data.iter().map(|&b| ue8m0(b)).collect(),
        _ => t.f32s()?,
    };
    for &x in &v {
        positive(t, x)?;
    }
    Ok(v)
}

/// The error for fused experts in a format no producer writes fused, naming the format and
/// where that producer puts its experts instead.
pub(super) fn refuse(ck: &Checkpoint, fused: &str, quant: &QuantFormat) -> Error {
    let why = match quant {
        QuantFormat::CtFp8 { .. }
        | QuantFormat::CtInt { .. }
        | QuantFormat::CtW4A8 { .. }
        | QuantFormat::CtNvfp4 { .. } => {
            "compressed-tensors checkpoints (llm-compressor 0.14) store experts per expert: LinearExperts2D linearises fused experts into experts.N.gate_proj / up_proj / down_proj before quantizing"
        }
        QuantFormat::Quark { .. } => {
            "AMD Quark 0.13 quantizes the per-expert linear layers QuarkExperts slices out (experts.N.gate_proj / up_proj / down_proj); fused quantized experts are not a Quark layout"
        }
        QuantFormat::ModeloptFp8 | QuantFormat::ModeloptNvfp4 => {
            "ModelOpt's fused Llama 4 export (gate_up_proj_weight_scale, _weight_scale_2, _input_scale) is not read by fleetmoe"
        }
        QuantFormat::Gptq { .. } | QuantFormat::Awq { .. } => {
            "GPTQ and AWQ store one qweight per expert projection; int weights packed along the fused axis are written by no producer fleetmoe knows"
        }
        QuantFormat::Unquantized | QuantFormat::NativeFp8 { .. } | QuantFormat::GptOssMxfp4 => {
            "this format's fused experts are read elsewhere"
        }
    };
    Error::checkpoint(
        ck.shards.file_of(fused),
        fused,
        format!(
            "fused experts in {} are not supported: {why}",
            quant.describe()
        ),
    )
}

/// What loading layer `n`'s fused fp8 experts does to their scales (headers and the small
/// scale tensors only): which experts' gate and up halves differ. (Static activation
/// scales that differ across experts are kept per expert: nothing to note.)
pub(super) fn notes(ck: &Checkpoint, n: usize, scheme: &QuantScheme) -> Result<LayerNotes> {
    let mut out = LayerNotes::default();
    if !matches!(ck.experts_format(n)?, QuantFormat::NativeFp8 { .. }) {
        return Ok(out);
    }
    let block = ck.block(n);
    let gu = format!("{block}.experts.gate_up_proj");
    let e = ck.config.num_experts;
    let s = &ck.shards;
    if fp8_per_tensor(scheme) {
        if let Halves::Two(v) = gate_up_halves(s, &gu, e)? {
            out.fp8_per_channel = (0..e).filter(|&x| v[2 * x] != v[2 * x + 1]).collect();
        }
    }
    Ok(out)
}

/// One `inspect` line: the dtypes and shapes the fused experts of layer `n` are stored in.
pub(crate) fn storage(ck: &Checkpoint, n: usize) -> Result<Option<String>> {
    if !ck.experts.fused() {
        return Ok(None);
    }
    let block = ck.block(n);
    let mut parts = Vec::new();
    for p in ["gate_up_proj", "down_proj"] {
        for suffix in ["", "_scale_inv", "_activation_scale", "_blocks", "_scales"] {
            let name = format!("{block}.experts.{p}{suffix}");
            if let Some((d, shape)) = ck.shards.info(&name)? {
                parts.push(format!("{p}{suffix} {d:?} {shape:?}"));
            }
        }
    }
    Ok(Some(parts.join(", ")))
}
