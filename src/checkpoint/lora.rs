//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`) on expert and
//! shared-expert projections. PEFT names a pair
//! `base_model.model.<module>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]`;
//! the delta is `scaling · B A x` with `scaling = lora_alpha / r` (`/ sqrt(r)` with
//! `use_rslora`), as PEFT's `LoraLayer.update_layer` defines it.

use super::arch::{proj_name, Proj};
use super::layer::LoadedLayer;
use super::shards::Shards;
use super::Checkpoint;
use crate::error::{Error, Result};
use crate::moe::{LoraAdapter, LoraExpert, LoraProj};
use std::cell::RefCell;
use std::path::Path;

use super::fields::Fields;
use super::shards::RawTensor;

const PEFT: &str = "PEFT LoraConfig";

/// Rank and scaling from `adapter_config.json`, with PEFT `LoraConfig`'s defaults (r 8,
/// lora_alpha 8, use_rslora false). Fields that change the math in ways fleetmoe does not
/// implement (DoRA, per-module rank or alpha patterns, LoRA biases, transposed weights)
/// are refused rather than ignored.
fn lora_scaling(f: &Fields) -> Result<(usize, f32)> {
    if let Some(t) = f.string("peft_type")? {
        if t != "LORA" {
            return Err(f.err("peft_type", format!("'{t}': only LORA adapters are read")));
        }
    }
    let rank = f.count_or("r", 8, PEFT)?;
    if rank == 0 {
        return Err(f.err("r", "0, expected a positive rank"));
    }
    let alpha = f.number_or("lora_alpha", 8.0, PEFT)?;
    if alpha <= 0.0 {
        return Err(f.err("lora_alpha", format!("{alpha}, expected a positive number")));
    }
    let rslora = f.bool_or("use_rslora", false, PEFT)?;
    for k in ["use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"] {
        if f.bool_or(k, false, PEFT)? {
            return Err(f.err(
                k,
                "true changes the adapter's math, which fleetmoe does not implement",
            ));
        }
    }
    let bias = f.choice_or("bias", &["none", "all", "lora_only"], "none", PEFT)?;
    if bias != "none" {
        return Err(f.err(
            "bias",
            format!("'{bias}': trained biases are not applied by fleetmoe"),
        ));
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if let Some(v) = f.get(k) {
            if v.as_object().is_none_or(|o| !o.is_empty()) {
                return Err(f.err(
                    k,
                    format!("{v}: per-module ranks or alphas are not supported"),
                ));
            }
        }
    }
    for k in ["target_parameters", "layer_replication"] {
        if let Some(v) = f.get(k) {
            if v.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(f.err(k, format!("{v} is not supported")));
            }
        }
    }
    let scaling = if rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    } as f32;
    if !scaling.is_finite() || scaling <= 0.0 {
        return Err(f.err(
            "lora_alpha",
            format!("scaling {scaling} from lora_alpha {alpha} and r {rank}"),
        ));
    }
    Ok((rank, scaling))
}

/// A LoRA factor's values, every one finite.
fn finite(t: &RawTensor) -> Result<Vec<f32>> {
    let v = t.f32s()?;
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(v),
        Some(k) => Err(Error::checkpoint(
            &t.file,
            &t.name,
            format!("value {} at index {k}: expected finite weights", v[k]),
        )),
    }
}

/// Loads the adapter in `dir` for `layer` of `ck`. An error names the file and tensor if
/// a rank or shape does not fit, or if the adapter targets nothing in this layer's MoE.
pub fn load_adapter(dir: &Path, ck: &Checkpoint, layer: &LoadedLayer) -> Result<LoraAdapter> {
    let cpath = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cpath).map_err(|e| Error::Io {
        path: cpath.display().to_string(),
        source: e,
    })?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(cpath.display(), "", format!("not valid JSON: {e}")))?;
    let log = RefCell::new(Vec::new());
    let f = Fields::new(&cpath, &cfg, "", &log);
    let (rank, scaling) = lora_scaling(&f)?;
    let shards = Shards::open_named(dir, "adapter_model.safetensors")?;
    let arch = ck.config.arch;
    let block = ck.block(layer.index);
    let (h, i) = (layer.config.hidden, layer.config.intermediate);
    let read = |module: &str, fan_in: usize, fan_out: usize| -> Result<Option<LoraProj>> {
        let a_name = format!("base_model.model.{module}.lora_A.weight");
        let b_name = format!("base_model.model.{module}.lora_B.weight");
        if !shards.contains(&a_name) && !shards.contains(&b_name) {
            return Ok(None);
        }
        rank.checked_mul(fan_in.max(fan_out)).ok_or_else(|| {
            Error::checkpoint(
                cpath.display(),
                "r",
                format!("r ({rank}) × fan-in ({}) overflows", fan_in.max(fan_out)),
            )
        })?;
        let a = shards.get(&a_name)?;
        let b = shards.get(&b_name)?;
        if a.shape != [rank, fan_in] {
            return Err(Error::checkpoint(
                &a.file,
                &a_name,
                format!("shape {:?}, expected [r = {rank}, {fan_in}]", a.shape),
            ));
        }
        if b.shape != [fan_out, rank] {
            return Err(Error::checkpoint(
                &b.file,
                &b_name,
                format!("shape {:?}, expected [{fan_out}, r = {rank}]", b.shape),
            ));
        }
        Ok(Some(LoraProj {
            a: finite(&a)?,
            b: finite(&b)?,
        }))
    };
    let expert = |module: &dyn Fn(Proj) -> String, inter: usize| -> Result<LoraExpert> {
        Ok(LoraExpert {
            gate: read(&module(Proj::Gate), h, inter)?,
            up: read(&module(Proj::Up), h, inter)?,
            down: read(&module(Proj::Down), inter, h)?,
        })
    };
    let mut experts = Vec::with_capacity(layer.config.num_experts);
    for e in 0..layer.config.num_experts {
        experts.push(expert(
            &|p| format!("{block}.{}", ck.experts.expert_proj(arch, e, p)),
            i,
        )?);
    }
    let shared = match (arch.shared_module(), layer.config.shared_intermediate) {
        (Some(m), Some(si)) => Some(expert(&|p| format!("{block}.{m}.{}", proj_name(p)), si)?)
            .filter(|x| *x != LoraExpert::default()),
        _ => None,
    };
    // Adapter tensors under this block that we did not place (an expert beyond E, a
    // fused-expert parameter, a projection we do not know) mean the adapter does not fit.
    let prefix = format!("base_model.model.{block}.");
    let placed = |n: &str| {
        let m = n
            .trim_end_matches(".lora_A.weight")
            .trim_end_matches(".lora_B.weight");
        let Some(rest) = m.strip_prefix(&format!("base_model.model.{block}.")) else {
            return false;
        };
        (0..layer.config.num_experts).any(|e| {
            [Proj::Gate, Proj::Up, Proj::Down]
                .iter()
                .any(|&p| rest == ck.experts.expert_proj(arch, e, p))
        }) || arch.shared_module().is_some_and(|m| {
            layer.config.shared_intermediate.is_some()
                && [Proj::Gate, Proj::Up, Proj::Down]
                    .iter()
                    .any(|&p| rest == format!("{m}.{}", proj_name(p)))
        })
    };
    if let Some(bad) = shards
        .names()
        .find(|n| n.starts_with(&prefix) && !placed(n))
    {
        return Err(Error::checkpoint(
            dir.join("adapter_model.safetensors").display(),
            bad,
            format!(
                "targets a module this layer's MoE does not have ({} experts)",
                layer.config.num_experts
            ),
        ));
    }
    let any = experts.iter().any(|x| *x != LoraExpert::default()) || shared.is_some();
    if !any {
        return Err(Error::checkpoint(
            dir.join("adapter_model.safetensors").display(),
            format!("{prefix}*"),
            format!(
                "the adapter has no LoRA weights for the experts of layer {}",
                layer.index
            ),
        ));
    }
    Ok(LoraAdapter {
        rank,
        scaling,
        experts,
        shared,
    })
}
