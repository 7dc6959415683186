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
use std::path::Path;

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
    let rank = cfg
        .get("r")
        .and_then(|v| v.as_u64())
        .filter(|&r| r > 0)
        .ok_or_else(|| {
            Error::checkpoint(cpath.display(), "r", "missing or not a positive integer")
        })? as usize;
    let alpha = cfg
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .unwrap_or(8.0); // PEFT `LoraConfig.lora_alpha` default
    let rslora = cfg.get("use_rslora").and_then(|v| v.as_bool()) == Some(true);
    let scaling = if rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    } as f32;
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
            a: a.f32s()?,
            b: b.f32s()?,
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
            &|p| format!("{block}.{}", arch.expert_proj(e, p)),
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
                .any(|&p| rest == arch.expert_proj(e, p))
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
