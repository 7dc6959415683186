//! Reading MoE layers out of real checkpoints: `config.json` + `quantization_config`,
//! safetensors shards (memory-mapped, lazily), per-architecture tensor names, and one
//! loader per producer's storage format, into `ExpertWeights` + `LayerConfig` (+ the
//! shared expert and the router). PEFT LoRA adapters load into `moe::Lora`.
//!
//! ```no_run
//! let ckpt = fleetmoe::checkpoint::Checkpoint::open("path/to/model".as_ref())?;
//! let layer = ckpt.load_layer(ckpt.moe_layers()[0])?;
//! println!("{} experts in {}", layer.config.num_experts, layer.weights.scheme);
//! # Ok::<(), fleetmoe::Error>(())
//! ```

pub mod arch;
mod assemble;
pub mod config;
mod ct_config;
pub mod fields;
mod formats;
mod fused;
pub mod inspect;
mod layer;
pub mod lora;
mod lora_config;
pub mod naming;
mod quant_config;
mod representation;
pub mod shards;
pub mod targets;

pub use arch::{Arch, Proj};
pub use config::{ModelConfig, QuantFormat};
pub use fields::Setting;
pub use formats::scheme_of;
pub use layer::LoadedLayer;
pub use lora::load_adapter;
pub use naming::{ExpertLayout, ExpertNaming};
pub use representation::LayerNotes;
pub use shards::{RawTensor, Shards};

use crate::error::{Error, Result};
use crate::quant::QuantScheme;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// An opened model directory. Opening reads the configs and shard headers only.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub shards: Shards,
    /// Name prefix of the decoder layers, e.g. `model.layers`.
    pub layers_prefix: String,
    /// How the routed experts are named and stored.
    pub experts: ExpertNaming,
}

impl Checkpoint {
    /// Opens `dir`: `config.json`, the quantization config, and the safetensors index.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::read(dir)?;
        let shards = Shards::open(dir)?;
        let layers_prefix = shards
            .names()
            .find_map(|n| n.find(".layers.").map(|i| n[..i + 7].to_string()))
            .ok_or_else(|| {
                Error::checkpoint(
                    dir.display(),
                    "",
                    "no tensor of a decoder layer (`*.layers.N.*`)",
                )
            })?;
        let experts = ExpertNaming::detect(config.arch, &layers_prefix, shards.names());
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            layers_prefix,
            experts,
        })
    }

    /// The name prefix of layer `n`'s MoE block, e.g. `model.layers.3.mlp`.
    pub fn block(&self, n: usize) -> String {
        format!("{}.{n}.{}", self.layers_prefix, self.experts.block)
    }

    /// The indices of the layers that have a router (the MoE layers), from tensor names
    /// only; nothing is read.
    pub fn moe_layers(&self) -> Vec<usize> {
        let prefix = format!("{}.", self.layers_prefix);
        let suffix = format!(".{}.{}", self.experts.block, self.config.arch.router());
        let mut v: Vec<usize> = self
            .shards
            .names()
            .filter_map(|name| {
                name.strip_prefix(&prefix)?
                    .strip_suffix(&suffix)?
                    .parse()
                    .ok()
            })
            .filter(|&n| n < self.config.num_layers)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The scheme layer `n`'s experts load as: the stored one, except that fp8 per-tensor
    /// gate and up scales that differ load as per-channel fp8 (see [`LayerNotes`]). Reads
    /// tensor headers and, for those formats, the per-projection scalar scales.
    pub fn scheme(&self, n: usize) -> Result<QuantScheme> {
        let stored = self.stored_scheme(n)?;
        if representation::fp8_per_tensor(&stored) && !self.notes(n)?.fp8_per_channel.is_empty() {
            return Ok(representation::per_channel(stored));
        }
        Ok(stored)
    }

    /// What loading layer `n` does to its stored scales: exact conversions and the
    /// approximations kept to match vLLM. Reads only per-projection scalar scales.
    pub fn notes(&self, n: usize) -> Result<LayerNotes> {
        representation::notes(self, n, &self.stored_scheme(n)?)
    }

    /// The scheme layer `n`'s shared expert loads as, or `None` where the architecture
    /// has none or the checkpoint holds none (and only a default said it exists). Decided
    /// as loading decides it (a float `.weight` is unquantized, else
    /// [`format_of`](Self::format_of) the module), from tensor headers and, for fp8
    /// per-tensor, the gate and up scalar scales: when they differ it loads as
    /// per-channel fp8, exactly, as the routed experts do.
    pub fn shared_scheme(&self, n: usize) -> Result<Option<QuantScheme>> {
        let c = &self.config;
        let (Some(m), Some(si)) = (c.arch.shared_module(), c.shared_intermediate) else {
            return Ok(None);
        };
        let block = self.block(n);
        let Some((_, stored)) = layer::shared_storage(self, &block, m, si)? else {
            return Ok(None);
        };
        if representation::fp8_per_tensor(&stored) {
            let scale = |p: Proj| -> Result<f32> {
                let t = self
                    .shards
                    .get(&format!("{block}.{m}.{}.weight_scale", arch::proj_name(p)))?;
                formats::positive(&t, t.scalar()?)
            };
            if scale(Proj::Gate)? != scale(Proj::Up)? {
                return Ok(Some(representation::per_channel(stored)));
            }
        }
        Ok(Some(stored))
    }

    /// The format the linear layer `module` (its full name) is stored in: compressed-tensors
    /// decides by its config groups' `targets` and `ignore` (unmatched or ignored modules
    /// are unquantized); every other producer uses one format throughout.
    pub fn format_of(&self, module: &str) -> QuantFormat {
        match &self.config.targets {
            None => self.config.quant.clone(),
            Some(t) => t
                .format_of(module)
                .map_or(QuantFormat::Unquantized, |(_, f)| f.clone()),
        }
    }

    /// The format of layer `n`'s routed experts, which must be one for all of them.
    pub fn experts_format(&self, n: usize) -> Result<QuantFormat> {
        let block = self.block(n);
        let arch = self.config.arch;
        if self.experts.fused() {
            // Quantizers quantize linear layers: AMD Quark 0.13 unfuses experts into them
            // first (`QuarkExperts`), and fused parameters it never saw stay in the model's
            // float dtype beside a quantization config that does not describe them.
            let fused = format!("{block}.experts.gate_up_proj");
            if let Some((Dtype::BF16 | Dtype::F16 | Dtype::F32, _)) = self.shards.info(&fused)? {
                return Ok(QuantFormat::Unquantized);
            }
            return Ok(self.format_of(&format!("{block}.experts")));
        }
        if self.config.targets.is_none() {
            return Ok(self.config.quant.clone());
        }
        let first_module = format!("{block}.{}", self.experts.expert_proj(arch, 0, Proj::Gate));
        let first = self.format_of(&first_module);
        // Every expert projection the checkpoint holds (`{block}.experts.<e>.<proj>.*`),
        // found from its tensor names, so an absurd expert count in the config costs
        // nothing here.
        let prefix = format!("{block}.experts.");
        let modules: std::collections::BTreeSet<&str> = self
            .shards
            .names()
            .filter_map(|n| {
                let rest = n.strip_prefix(&prefix)?;
                let (e, tail) = rest.split_once('.')?;
                let (p, _) = tail.split_once('.')?;
                let len = prefix.len() + e.len() + 1 + p.len();
                e.bytes().all(|b| b.is_ascii_digit()).then(|| &n[..len])
            })
            .collect();
        for m in modules {
            let f = self.format_of(m);
            if f != first {
                return Err(Error::checkpoint(
                    self.dir.display(),
                    m,
                    format!(
                        "config_groups store it as {}, but {first_module} as {}: routed experts in more than one scheme are not supported",
                        f.describe(),
                        first.describe()
                    ),
                ));
            }
        }
        Ok(first)
    }

    /// The scheme layer `n`'s experts are stored in, from tensor headers only.
    pub fn stored_scheme(&self, n: usize) -> Result<QuantScheme> {
        let block = self.block(n);
        let arch = self.config.arch;
        let quant = self.experts_format(n)?;
        let fused = format!("{block}.experts.gate_up_proj");
        let name = if quant == QuantFormat::GptOssMxfp4 {
            format!("{fused}_blocks")
        } else if self.experts.fused() {
            fused
        } else {
            formats::weight_name(
                &quant,
                &format!("{block}.{}", self.experts.expert_proj(arch, 0, Proj::Gate)),
            )
        };
        let (dtype, _) = self.shards.info(&name)?.ok_or_else(|| {
            Error::checkpoint(self.dir.display(), &name, "tensor not found in checkpoint")
        })?;
        Ok(scheme_of(&quant, dtype))
    }

    /// Every MoE layer, each read only when the iterator reaches it.
    pub fn layers(&self) -> impl Iterator<Item = Result<LoadedLayer>> + '_ {
        self.moe_layers().into_iter().map(|n| self.load_layer(n))
    }

    /// Reads MoE layer `n`: its config, experts, shared expert and router.
    pub fn load_layer(&self, n: usize) -> Result<LoadedLayer> {
        if n >= self.config.num_layers {
            return Err(Error::Config(format!(
                "layer {n} out of range: the model has {} layers",
                self.config.num_layers
            )));
        }
        // Checks that are not about one file (a group size, a shape rule) name the model
        // directory instead.
        layer::load(self, n).map_err(|e| match e {
            Error::Checkpoint { file, tensor, why } if file.is_empty() => Error::Checkpoint {
                file: self.dir.display().to_string(),
                tensor,
                why,
            },
            e => e,
        })
    }
}
