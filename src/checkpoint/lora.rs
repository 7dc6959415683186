//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`) on a layer's
//! experts. PEFT reaches them in two ways:
//!
//! - `target_modules` on linear layers (the per-expert `experts.N.gate_proj`, the shared
//!   expert's projections): a pair `base_model.model.<module>.lora_A.weight` `[r, in]` and
//!   `.lora_B.weight` `[out, r]`; the delta is `scaling · B A x` (`LoraLayer.update_layer`).
//! - `target_parameters` on transformers 5's fused expert parameters
//!   (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`; PEFT's `ParamWrapper`): one pair
//!   per parameter, `lora_A` `[r·E, in]` expert-major (row `e·r + k`) and `lora_B`
//!   `[out, r·E]` with the expert varying fastest (column `k·E + e`), so expert `e`'s delta
//!   is `scaling · B_e A_e` with `A_e = A[e·r .. e·r + r]` and `B_e[:, k] = B[:, k·E + e]`.
//!   The wrappers nest in the order of the module's parameters: with both targeted,
//!   gate_up_proj's pair is `<block>.experts.base_layer.lora_*` and down_proj's
//!   `<block>.experts.lora_*`; with one, `<block>.experts.lora_*` (the parameter's name is
//!   not in the keys). `in` / `out` are the parameter's as PEFT ≥ 0.19.1 reads it
//!   (`[E, out, in]`, or `[E, in, out]` on a module with `is_transposed`: GPT-OSS, Llama 4):
//!   gate_up_proj has in H and out 2I in its own order (gate rows then up rows; GPT-OSS
//!   interleaves them, even rows gate), down_proj in I and out H. Each fused pair is split
//!   here into the per-expert gate / up / down pairs the layer applies. A per-expert
//!   checkpoint is fused too once transformers 5 loads it, so these adapters apply to every
//!   layout the checkpoint may be stored in.
//!
//! `scaling = lora_alpha / r` (`/ sqrt(r)` with `use_rslora`), with `r` and `lora_alpha`
//! per module or parameter from `rank_pattern` / `alpha_pattern` where a key matches.

use super::arch::{proj_name, Arch, Proj};
use super::layer::LoadedLayer;
use super::lora_config::*;
use super::shards::Shards;
use super::Checkpoint;
use crate::error::{Error, Result};
use crate::moe::{LoraAdapter, LoraExpert, LoraProj};
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

use super::fields::Fields;
use super::shards::RawTensor;

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

/// One projection's pair with the rank and scaling PEFT gives it.
struct Ranked {
    proj: LoraProj,
    rank: usize,
    scaling: f32,
    /// The adapter tensor it came from, for errors.
    from: String,
}

/// One of the two fused expert parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fused {
    GateUp,
    Down,
}

impl Fused {
    fn name(self) -> &'static str {
        match self {
            Fused::GateUp => "gate_up_proj",
            Fused::Down => "down_proj",
        }
    }
}

/// Reads the adapter's tensors for one layer, remembering which it used.
struct Reader<'a> {
    shards: &'a Shards,
    settings: &'a Settings,
    file: String,
    used: RefCell<HashSet<String>>,
}

fn pair_names(base: &str) -> (String, String) {
    (
        format!("{base}.lora_A.weight"),
        format!("{base}.lora_B.weight"),
    )
}

impl Reader<'_> {
    fn has(&self, base: &str) -> bool {
        let (a, b) = pair_names(base);
        self.shards.contains(&a) || self.shards.contains(&b)
    }

    fn take(&self, name: &str) -> Result<RawTensor> {
        let t = self.shards.get(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(t)
    }

    fn overflow(&self, field: &str, what: String) -> Error {
        Error::checkpoint(self.settings.path.display(), field, what)
    }

    /// The pair of linear module `module` (`[r, in]`, `[out, r]`), if the adapter has it.
    fn module(&self, module: &str, fan_in: usize, fan_out: usize) -> Result<Option<Ranked>> {
        let base = format!("base_model.model.{module}");
        if !self.has(&base) {
            return Ok(None);
        }
        let s = self.settings.sizing(module)?;
        let rank = s.rank;
        rank.checked_mul(fan_in.max(fan_out)).ok_or_else(|| {
            self.overflow(
                &s.rank_from,
                format!("r ({rank}) × fan-in ({}) overflows", fan_in.max(fan_out)),
            )
        })?;
        let from = if s.rank_from == "r" {
            String::new()
        } else {
            format!(", from {}", s.rank_from)
        };
        let (a_name, b_name) = pair_names(&base);
        let a = self.take(&a_name)?;
        let b = self.take(&b_name)?;
        if a.shape != [rank, fan_in] {
            return Err(Error::checkpoint(
                &a.file,
                &a_name,
                format!("shape {:?}, expected [r = {rank}{from}, {fan_in}]", a.shape),
            ));
        }
        if b.shape != [fan_out, rank] {
            return Err(Error::checkpoint(
                &b.file,
                &b_name,
                format!(
                    "shape {:?}, expected [{fan_out}, r = {rank}{from}]",
                    b.shape
                ),
            ));
        }
        Ok(Some(Ranked {
            proj: LoraProj {
                a: finite(&a)?,
                b: finite(&b)?,
            },
            rank,
            scaling: s.scaling,
            from: a_name,
        }))
    }

    /// The `ParamWrapper` pair named `base` on fused parameter `param` of the experts
    /// module `experts` (the base model's name), split per expert into (projection, pair).
    #[allow(clippy::too_many_arguments)]
    fn fused(
        &self,
        experts: &str,
        base: &str,
        param: Fused,
        e: usize,
        h: usize,
        i: usize,
        interleaved: bool,
    ) -> Result<Vec<Vec<(Proj, Ranked)>>> {
        let pname = format!("{experts}.{}", param.name());
        let s = self.settings.sizing(&pname)?;
        let r = s.rank;
        let (fan_in, fan_out) = match param {
            Fused::GateUp => (h, 2 * i),
            Fused::Down => (i, h),
        };
        let re = r
            .checked_mul(e)
            .filter(|re| re.checked_mul(fan_in.max(fan_out)).is_some())
            .ok_or_else(|| {
                self.overflow(
                    &s.rank_from,
                    format!("r ({r}) × {e} experts × {} overflows", fan_in.max(fan_out)),
                )
            })?;
        let (a_name, b_name) = pair_names(base);
        let a = self.take(&a_name)?;
        let b = self.take(&b_name)?;
        let from = if s.rank_from == "r" {
            String::new()
        } else {
            format!(" from {}", s.rank_from)
        };
        let what = format!(
            "the LoRA of {pname} ({e} experts, r = {r}{from}; PEFT ≥ 0.19.1 reads it as in {fan_in}, out {fan_out})"
        );
        let rows = a.shape.first().copied().unwrap_or(0);
        if a.shape.len() == 2 && a.shape[1] == fan_in && rows % e != 0 {
            return Err(Error::checkpoint(
                &a.file,
                &a_name,
                format!(
                    "shape {:?}: {rows} rows do not divide into the {e} experts (PEFT stores r·E rows, expert-major); {what}",
                    a.shape
                ),
            ));
        }
        let old_reading = fan_in != fan_out && a.shape == [re, fan_out] && b.shape == [fan_in, re];
        if a.shape != [re, fan_in] {
            return Err(Error::checkpoint(
                &a.file,
                &a_name,
                format!(
                    "shape {:?}, expected [r·E = {r}·{e} = {re}, in = {fan_in}]{}: {what}",
                    a.shape,
                    if old_reading { OLD } else { "" }
                ),
            ));
        }
        if b.shape != [fan_out, re] {
            return Err(Error::checkpoint(
                &b.file,
                &b_name,
                format!(
                    "shape {:?}, expected [out = {fan_out}, r·E = {r}·{e} = {re}]: {what}",
                    b.shape
                ),
            ));
        }
        let av = finite(&a)?;
        let bv = &finite(&b)?;
        let mut out = Vec::with_capacity(e);
        for ex in 0..e {
            let a_e = av[ex * r * fan_in..(ex + 1) * r * fan_in].to_vec();
            // B_e [out, r]: B_e[o, k] = B[o, k·E + e] for the rows `rows` of B.
            let b_e = |rows: &mut dyn Iterator<Item = usize>| -> Vec<f32> {
                rows.flat_map(|o| (0..r).map(move |k| bv[o * re + k * e + ex]))
                    .collect()
            };
            let ranked = |proj| Ranked {
                proj,
                rank: r,
                scaling: s.scaling,
                from: a_name.clone(),
            };
            out.push(match param {
                Fused::Down => vec![(
                    Proj::Down,
                    ranked(LoraProj {
                        a: a_e,
                        b: b_e(&mut (0..h)),
                    }),
                )],
                Fused::GateUp => {
                    // out row j of gate_up_proj: gate rows then up rows, or GPT-OSS's
                    // interleave (even j gate row j/2, odd j up row j/2).
                    let (gate, up) = if interleaved {
                        (
                            b_e(&mut (0..i).map(|j| 2 * j)),
                            b_e(&mut (0..i).map(|j| 2 * j + 1)),
                        )
                    } else {
                        (b_e(&mut (0..i)), b_e(&mut (i..2 * i)))
                    };
                    vec![
                        (
                            Proj::Gate,
                            ranked(LoraProj {
                                a: a_e.clone(),
                                b: gate,
                            }),
                        ),
                        (Proj::Up, ranked(LoraProj { a: a_e, b: up })),
                    ]
                }
            });
        }
        Ok(out)
    }
}

const OLD: &str = " (the shapes of PEFT's reading before 0.19.1, in and out swapped: \
                   retrain or convert the adapter with PEFT ≥ 0.19.1)";

/// Projections `[gate, up, down]` of one expert while they are gathered.
type Slots = [Option<Ranked>; 3];

fn slot(p: Proj) -> usize {
    match p {
        Proj::Gate => 0,
        Proj::Up => 1,
        Proj::Down => 2,
    }
}

/// Puts `r` in its slot; two adapters of one projection (a per-expert module and a fused
/// parameter, or the same module under two block names) are an error.
fn place(slots: &mut Slots, p: Proj, r: Ranked, file: &str) -> Result<()> {
    let s = &mut slots[slot(p)];
    if let Some(old) = s {
        return Err(Error::checkpoint(
            file,
            &r.from,
            format!(
                "adapts the {} projection that {} adapts already",
                proj_name(p),
                old.from
            ),
        ));
    }
    *s = Some(r);
    Ok(())
}

/// Loads the adapter in `dir` for `layer` of `ck`. An error names the file and tensor if
/// a rank or shape does not fit, or if the adapter targets nothing in this layer's MoE.
///
/// With `rank_pattern` / `alpha_pattern` the projections may have different ranks and
/// scalings, while [`LoraAdapter`] has one of each: the adapter's rank is then the largest,
/// each smaller pair padded with zero rows of A and zero columns of B (which adds nothing
/// to `B A`), and its scaling the largest, each pair's own scaling folded into its B as the
/// ratio `scaling / adapter.scaling` (≤ 1, so B stays as bounded as it was). Without
/// patterns every pair keeps its values and the adapter `r` and `lora_alpha / r`.
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
    let settings = Settings::read(&f, &text, &cpath)?;
    let shards = Shards::open_named(dir, "adapter_model.safetensors")?;
    let file = dir.join("adapter_model.safetensors").display().to_string();
    let arch = ck.config.arch;
    let (e, h, i) = (
        layer.config.num_experts,
        layer.config.hidden,
        layer.config.intermediate,
    );
    // The names layer n's MoE block may have in an adapter: the checkpoint's own first,
    // then the architecture's other block names (transformers 5 holds Mixtral's
    // `block_sparse_moe` as `mlp`).
    let roots_of = |n: usize| -> Vec<String> {
        let mut v = vec![ck.block(n)];
        for m in arch.moe_modules() {
            let r = format!("{}.{n}.{m}", ck.layers_prefix);
            if !v.contains(&r) {
                v.push(r);
            }
        }
        v
    };
    let roots = roots_of(layer.index);
    check_targets(&settings, ck, &roots_of, arch)?;
    let reader = Reader {
        shards: &shards,
        settings: &settings,
        file: file.clone(),
        used: RefCell::new(HashSet::new()),
    };
    let mut experts: Vec<Slots> = (0..e).map(|_| [None, None, None]).collect();
    let mut shared: Slots = [None, None, None];
    let projs = [Proj::Gate, Proj::Up, Proj::Down];
    let shared_shape = match (arch.shared_module(), layer.config.shared_intermediate) {
        (Some(m), Some(si)) => Some((m, si)),
        _ => None,
    };
    for root in &roots {
        // Linear modules (`target_modules`): per-expert projections and the shared expert.
        for (ex, slots) in experts.iter_mut().enumerate() {
            for p in projs {
                let module = format!("{root}.{}", ck.experts.expert_proj(arch, ex, p));
                let (fi, fo) = if p == Proj::Down { (i, h) } else { (h, i) };
                if let Some(r) = reader.module(&module, fi, fo)? {
                    place(slots, p, r, &reader.file)?;
                }
            }
        }
        if let Some((m, si)) = shared_shape {
            for p in projs {
                let module = format!("{root}.{m}.{}", proj_name(p));
                let (fi, fo) = if p == Proj::Down { (si, h) } else { (h, si) };
                if let Some(r) = reader.module(&module, fi, fo)? {
                    place(&mut shared, p, r, &reader.file)?;
                }
            }
        }
        // Fused parameters (`target_parameters`): the wrapped ones in the module's
        // parameter order, the last outermost.
        let module = format!("{root}.experts");
        let wrapped: Vec<Fused> = [Fused::GateUp, Fused::Down]
            .into_iter()
            .filter(|p| {
                let name = format!("{module}.{}", p.name());
                settings
                    .target_parameters
                    .iter()
                    .any(|t| param_targeted(t, &name))
            })
            .collect();
        for (k, &param) in wrapped.iter().enumerate() {
            let depth = wrapped.len() - 1 - k;
            let base = format!("base_model.model.{module}{}", ".base_layer".repeat(depth));
            if !reader.has(&base) {
                continue;
            }
            if let Some(v) = settings.peft_version {
                if !version_reads_fused_right(v, arch) {
                    return Err(Error::checkpoint(
                        cpath.display(),
                        "peft_version",
                        format!(
                            "{}.{}.{}: this PEFT reads {}'s fused {module}.{} with in and out swapped against PEFT ≥ 0.19.1, which fleetmoe follows",
                            v.0, v.1, v.2, arch.name(), param.name()
                        ),
                    ));
                }
            }
            if param == Fused::GateUp && layer.config.activation.gate_up_index(0, i).1.is_none() {
                return Err(Error::checkpoint(
                    &file,
                    format!("{base}.lora_A.weight"),
                    "a gate_up_proj LoRA on a layer whose activation is not gated",
                ));
            }
            let split = reader.fused(&module, &base, param, e, h, i, arch == Arch::GptOss)?;
            for (slots, pairs) in experts.iter_mut().zip(split) {
                for (p, r) in pairs {
                    place(slots, p, r, &reader.file)?;
                }
            }
        }
    }
    // Adapter tensors under this layer's block that were not placed (an expert beyond E,
    // a projection we do not know, a fused pair the config does not account for) mean the
    // adapter does not fit.
    let used = reader.used.into_inner();
    for root in &roots {
        let prefix = format!("base_model.model.{root}.");
        if let Some(bad) = shards
            .names()
            .find(|n| n.starts_with(&prefix) && !used.contains(*n))
        {
            let rest = &bad[prefix.len()..];
            let fused_pair =
                rest.starts_with("experts.lora_") || rest.starts_with("experts.base_layer.");
            let why = if fused_pair {
                format!(
                    "a LoRA on the fused experts that target_parameters ({:?}) does not account for: \
                     with both gate_up_proj and down_proj targeted PEFT names gate_up_proj's pair \
                     experts.base_layer.lora_* and down_proj's experts.lora_*, with one of them experts.lora_*",
                    settings.target_parameters
                )
            } else {
                format!("targets a module this layer's MoE does not have ({e} experts)")
            };
            return Err(Error::checkpoint(&file, bad, why));
        }
    }
    let any = experts
        .iter()
        .chain([&shared])
        .flatten()
        .any(Option::is_some);
    if !any {
        return Err(Error::checkpoint(
            &file,
            format!("base_model.model.{}.*", roots[0]),
            format!(
                "the adapter has no LoRA weights for the experts of layer {}",
                layer.index
            ),
        ));
    }
    let all = || experts.iter().chain([&shared]).flatten().flatten();
    let rank = all().map(|r| r.rank).max().unwrap_or(settings.rank);
    let scaling = all().map(|r| r.scaling).fold(0f32, f32::max);
    let finish = |slots: Slots| -> LoraExpert {
        let [gate, up, down] = slots.map(|s| s.map(|r| fit(r, rank, scaling)));
        LoraExpert { gate, up, down }
    };
    let shared = shared_shape
        .map(|_| finish(shared))
        .filter(|x| *x != LoraExpert::default());
    Ok(LoraAdapter {
        rank,
        scaling,
        experts: experts.into_iter().map(finish).collect(),
        shared,
    })
}

/// `r`'s pair at the adapter's `rank` and `scaling`: A `[r, in]` gains zero rows and B
/// `[out, r]` zero columns, and B takes the ratio of the pair's scaling to the adapter's.
fn fit(r: Ranked, rank: usize, scaling: f32) -> LoraProj {
    let Ranked {
        proj: LoraProj { mut a, b },
        rank: own,
        scaling: s,
        ..
    } = r;
    let ratio = if s == scaling {
        None
    } else {
        Some(f64::from(s) / f64::from(scaling))
    };
    let scale = |x: f32| ratio.map_or(x, |q| (f64::from(x) * q) as f32);
    if own == rank {
        return LoraProj {
            a,
            b: b.into_iter().map(scale).collect(),
        };
    }
    let fan_in = a.len() / own;
    a.resize(rank * fan_in, 0.0);
    let b = b
        .chunks(own)
        .flat_map(|row| {
            row.iter()
                .map(|&x| scale(x))
                .chain(std::iter::repeat_n(0.0, rank - own))
        })
        .collect();
    LoraProj { a, b }
}

/// Every `target_parameters` entry must name the routed experts' fused gate_up_proj or
/// down_proj of some MoE layer: fleetmoe applies parameter LoRAs to those only.
fn check_targets(
    s: &Settings,
    ck: &Checkpoint,
    roots_of: &dyn Fn(usize) -> Vec<String>,
    arch: Arch,
) -> Result<()> {
    let layers = ck.moe_layers();
    for t in &s.target_parameters {
        let hits = layers.iter().any(|&n| {
            roots_of(n).iter().any(|root| {
                [Fused::GateUp, Fused::Down]
                    .iter()
                    .any(|p| param_targeted(t, &format!("{root}.experts.{}", p.name())))
            })
        });
        if !hits {
            return Err(Error::checkpoint(
                s.path.display(),
                "target_parameters",
                format!(
                    "'{t}' is not the routed experts' fused gate_up_proj or down_proj of any MoE layer \
                     ({}.N.{}.experts.gate_up_proj / down_proj in {}): fleetmoe applies target_parameters to those only",
                    ck.layers_prefix,
                    ck.experts.block,
                    arch.name()
                ),
            ));
        }
    }
    Ok(())
}
