//! How a checkpoint names and stores its routed experts, found from its tensor names when
//! it is opened (nothing is read). The same architecture is written in several ways today:
//!
//! - transformers 4 and the per-expert hub checkpoints: `experts.N.gate_proj / up_proj /
//!   down_proj` (Mixtral: `block_sparse_moe.experts.N.w1 / w3 / w2`). transformers 5 still
//!   saves these (`save_pretrained(save_original_format=True)` is its default and reverts
//!   the load-time conversions: `revert_weight_conversion`, `core_model_loading.py`).
//! - transformers 5's in-memory layout, which exporters that save the model as it is (AMD
//!   Quark 0.13, `save_original_format=False`) write: one `experts.gate_up_proj` `[E, 2I,
//!   H]` and one `experts.down_proj` `[E, H, I]`, used as `F.linear(x, W[e])`, gate the first
//!   half (the `*Experts` modules of mixtral, qwen2_moe, qwen3_moe, deepseek_v3 and glm4_moe
//!   in transformers 5.25). GPT-OSS and Llama 4 store `[E, H, 2I]` /
//!   `[E, I, H]` used as `x @ W[e]` (GPT-OSS with gate and up interleaved).
//! - transformers 5 renames Mixtral's block `block_sparse_moe` to `mlp` (conversion mapping
//!   `WeightRenaming(".block_sparse_moe.", ".mlp.")`); llm-compressor 0.14 linearises fused
//!   experts into `experts.N.gate_proj / up_proj / down_proj` (`LinearExperts2D`), so a
//!   Mixtral it writes may carry either block name with the `gate_proj` names.

use super::arch::{Arch, Proj};

/// Where a layer's routed experts live and how they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertNaming {
    /// The MoE block's module inside a decoder layer (`mlp`, `block_sparse_moe`,
    /// `feed_forward`).
    pub block: &'static str,
    pub layout: ExpertLayout,
}

/// Per expert, or fused over the expert dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertLayout {
    /// `experts.N.{gate}`, `experts.N.{up}`, `experts.N.{down}`, each a linear layer.
    PerExpert { names: [&'static str; 3] },
    /// `experts.gate_up_proj` and `experts.down_proj` over E: `[E, out, in]`, or
    /// `[E, in, out]` when `transposed` (GPT-OSS, Llama 4).
    Fused { transposed: bool },
}

impl ExpertNaming {
    /// Finds the naming from the tensor names of a checkpoint whose decoder layers are
    /// `{layers_prefix}.N`. Where nothing says otherwise, the architecture's first
    /// (transformers 4) names.
    pub fn detect<'a>(
        arch: Arch,
        layers_prefix: &str,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> ExpertNaming {
        let prefix = format!("{layers_prefix}.");
        // What follows `{layers_prefix}.N.` in each name.
        let in_layer = move |n: &'a str| {
            let rest = n.strip_prefix(prefix.as_str())?;
            let (index, rest) = rest.split_once('.')?;
            index.bytes().all(|b| b.is_ascii_digit()).then_some(rest)
        };
        let blocks = arch.moe_modules();
        let router = arch.router();
        let block = blocks
            .iter()
            .copied()
            .find(|m| {
                let want = format!("{m}.{router}");
                names.clone().filter_map(&in_layer).any(|r| r == want)
            })
            .unwrap_or(blocks[0]);
        let fused = format!("{block}.experts.gate_up_proj");
        let layout = if names
            .clone()
            .filter_map(&in_layer)
            .any(|r| r.starts_with(&fused))
        {
            ExpertLayout::Fused {
                transposed: arch.fused_transposed(),
            }
        } else {
            let candidates = arch.per_expert_names();
            let names_used = candidates
                .iter()
                .copied()
                .find(|[gate, _, _]| {
                    let want = format!("{block}.experts.0.{gate}.");
                    names
                        .clone()
                        .filter_map(&in_layer)
                        .any(|r| r.starts_with(&want))
                })
                .unwrap_or(candidates[0]);
            ExpertLayout::PerExpert { names: names_used }
        };
        ExpertNaming { block, layout }
    }

    /// A routed expert projection's module (without `.weight`), relative to the block,
    /// in the per-expert names (PEFT adapters and per-expert checkpoints use them).
    pub fn expert_proj(&self, arch: Arch, e: usize, p: Proj) -> String {
        let names = match self.layout {
            ExpertLayout::PerExpert { names } => names,
            ExpertLayout::Fused { .. } => arch.per_expert_names()[0],
        };
        let k = match p {
            Proj::Gate => 0,
            Proj::Up => 1,
            Proj::Down => 2,
        };
        format!("experts.{e}.{}", names[k])
    }

    /// Whether the experts are stored fused over E.
    pub fn fused(&self) -> bool {
        matches!(self.layout, ExpertLayout::Fused { .. })
    }

    /// One line for `inspect`.
    pub fn describe(&self) -> String {
        match self.layout {
            ExpertLayout::PerExpert { names: [g, u, d] } => {
                format!("per expert: {}.experts.N.{g} / {u} / {d}", self.block)
            }
            ExpertLayout::Fused { transposed: false } => format!(
                "fused: {}.experts.gate_up_proj [E, 2I, H] and down_proj [E, H, I] (transformers 5)",
                self.block
            ),
            ExpertLayout::Fused { transposed: true } => format!(
                "fused: {}.experts.gate_up_proj [E, H, 2I] and down_proj [E, I, H]",
                self.block
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(arch: Arch, names: &[&str]) -> ExpertNaming {
        ExpertNaming::detect(arch, "model.layers", names.iter().copied())
    }

    #[test]
    fn each_writer_of_mixtral_is_recognised() {
        let v4 = detect(
            Arch::Mixtral,
            &[
                "model.layers.0.block_sparse_moe.gate.weight",
                "model.layers.0.block_sparse_moe.experts.0.w1.weight",
            ],
        );
        assert_eq!(v4.block, "block_sparse_moe");
        assert_eq!(v4.expert_proj(Arch::Mixtral, 3, Proj::Up), "experts.3.w3");
        let llmc = detect(
            Arch::Mixtral,
            &[
                "model.layers.0.mlp.gate.weight",
                "model.layers.0.mlp.experts.0.gate_proj.weight_packed",
            ],
        );
        assert_eq!(llmc.block, "mlp");
        assert_eq!(
            llmc.expert_proj(Arch::Mixtral, 1, Proj::Down),
            "experts.1.down_proj"
        );
        let hybrid = detect(
            Arch::Mixtral,
            &[
                "model.layers.2.block_sparse_moe.gate.weight",
                "model.layers.2.block_sparse_moe.experts.0.gate_proj.weight",
            ],
        );
        assert_eq!(hybrid.block, "block_sparse_moe");
        assert_eq!(
            hybrid.expert_proj(Arch::Mixtral, 0, Proj::Gate),
            "experts.0.gate_proj"
        );
        let fused = detect(
            Arch::Mixtral,
            &[
                "model.layers.0.mlp.gate.weight",
                "model.layers.0.mlp.experts.gate_up_proj",
                "model.layers.0.mlp.experts.down_proj",
            ],
        );
        assert_eq!(fused.layout, ExpertLayout::Fused { transposed: false });
    }

    #[test]
    fn fused_orientation_follows_the_architecture() {
        for (arch, transposed) in [
            (Arch::Qwen3Moe, false),
            (Arch::DeepseekV3, false),
            (Arch::GptOss, true),
        ] {
            let block = arch.moe_modules()[0];
            let router = format!("model.layers.0.{block}.{}", arch.router());
            let fused = format!("model.layers.0.{block}.experts.gate_up_proj");
            let n = detect(arch, &[&router, &fused]);
            assert_eq!(n.layout, ExpertLayout::Fused { transposed }, "{arch:?}");
        }
        // A name that only looks like a layer (`layers.x`) does not count.
        let n = detect(Arch::Qwen3Moe, &["model.layers.x.mlp.experts.gate_up_proj"]);
        assert!(!n.fused());
    }
}
