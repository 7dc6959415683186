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
use super::shards::Shards;
use super::Checkpoint;
use crate::error::{Error, Result};
use crate::moe::{LoraAdapter, LoraExpert, LoraProj};
use regex::Regex;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::fields::Fields;
use super::shards::RawTensor;

const PEFT: &str = "PEFT LoraConfig";

/// A JSON object's entries in the file's order: `serde_json::Value` sorts keys, but PEFT
/// takes the first matching pattern key in dict order, which is the order of the file. A
/// repeated key keeps its first place and its last value, as Python's `json` does.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Ordered, M::Error> {
                let mut v: Vec<(String, Value)> = Vec::new();
                while let Some((k, x)) = m.next_entry::<String, Value>()? {
                    match v.iter_mut().find(|(seen, _)| *seen == k) {
                        Some(entry) => entry.1 = x,
                        None => v.push((k, x)),
                    }
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(Entries)
    }
}

#[derive(Deserialize)]
struct Patterns {
    #[serde(default)]
    rank_pattern: Option<Ordered>,
    #[serde(default)]
    alpha_pattern: Option<Ordered>,
}

/// PEFT's `get_pattern_key` test for a key, `re.match(rf"(.*\.)?({key})$", name)`: the key
/// (a regular expression) matches the whole name or a suffix that follows a dot.
fn key_regex(key: &str) -> std::result::Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
}

/// `target_parameters` matching (PEFT `_inject_parameters`): the parameter's full name is
/// the target or ends with `.` + the target.
fn param_targeted(target: &str, name: &str) -> bool {
    name == target
        || name
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// What `adapter_config.json` says about the math.
struct Settings {
    path: PathBuf,
    rank: usize,
    alpha: f64,
    rslora: bool,
    rank_pattern: Vec<(String, Regex, usize)>,
    alpha_pattern: Vec<(String, Regex, f64)>,
    target_parameters: Vec<String>,
    /// `peft_version`, as (major, minor, patch), when the file gives one that parses.
    peft_version: Option<(u64, u64, u64)>,
}

/// The rank and scaling of one module or parameter, and the field its rank came from.
struct Sizing {
    rank: usize,
    rank_from: String,
    scaling: f32,
}

fn scaling_of(alpha: f64, rank: usize, rslora: bool) -> f32 {
    if rslora {
        (alpha / (rank as f64).sqrt()) as f32
    } else {
        (alpha / rank as f64) as f32
    }
}

/// `0.19.1`, `0.19.1.dev0`, `0.18.0rc1@abc` → the leading numbers of the first three parts.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.split(['.', '@', '+']).map(|p| {
        let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u64>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

impl Settings {
    /// Rank, alpha and patterns from `adapter_config.json`, with PEFT `LoraConfig`'s
    /// defaults (r 8, lora_alpha 8, use_rslora false, empty patterns). Fields that change
    /// the math in ways fleetmoe does not implement (DoRA, LoRA biases, transposed weights,
    /// layer replication) are refused rather than ignored; `lora_dropout` only acts in
    /// training and is ignored.
    fn read(f: &Fields, text: &str, path: &Path) -> Result<Settings> {
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
        if let Some(v) = f.get("layer_replication") {
            if v.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(f.err("layer_replication", format!("{v} is not supported")));
            }
        }
        let scaling = scaling_of(alpha, rank, rslora);
        if !scaling.is_finite() || scaling <= 0.0 {
            return Err(f.err(
                "lora_alpha",
                format!("scaling {scaling} from lora_alpha {alpha} and r {rank}"),
            ));
        }
        // The patterns, in the file's order (validated through `Fields` first, so a value
        // of the wrong type is named like any other field).
        for k in ["rank_pattern", "alpha_pattern"] {
            if let Some(v) = f.get(k) {
                if !v.is_object() {
                    return Err(f.err(k, format!("{v} is not an object")));
                }
            }
        }
        let ordered: Patterns =
            if f.get("rank_pattern").is_some() || f.get("alpha_pattern").is_some() {
                serde_json::from_str(text).map_err(|e| {
                    Error::checkpoint(path.display(), "", format!("not valid JSON: {e}"))
                })?
            } else {
                Patterns {
                    rank_pattern: None,
                    alpha_pattern: None,
                }
            };
        let entries = |o: Option<Ordered>| o.map_or_else(Vec::new, |o| o.0);
        let mut rank_pattern = Vec::new();
        if let Some(c) = f.child("rank_pattern")? {
            for (key, _) in entries(ordered.rank_pattern) {
                let re = pattern_key(&c, &key)?;
                match c.count(&key)? {
                    Some(r) if r > 0 => rank_pattern.push((key, re, r)),
                    _ => {
                        return Err(c.err(&key, "expected a positive rank"));
                    }
                }
            }
        }
        let mut alpha_pattern = Vec::new();
        if let Some(c) = f.child("alpha_pattern")? {
            for (key, _) in entries(ordered.alpha_pattern) {
                let re = pattern_key(&c, &key)?;
                match c.get(&key).and_then(Value::as_f64) {
                    Some(a) if a.is_finite() && a > 0.0 => alpha_pattern.push((key, re, a)),
                    _ => {
                        let v = c.get(&key).unwrap_or(&Value::Null);
                        return Err(c.err(&key, format!("{v}, expected a positive number")));
                    }
                }
            }
        }
        let target_parameters = match f.get("target_parameters") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|t| t.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    f.err(
                        "target_parameters",
                        format!("{v} is not a list of parameter names"),
                    )
                })?,
        };
        let peft_version = f.string("peft_version")?.and_then(parse_version);
        Ok(Settings {
            path: path.to_path_buf(),
            rank,
            alpha,
            rslora,
            rank_pattern,
            alpha_pattern,
            target_parameters,
            peft_version,
        })
    }

    /// The rank and scaling PEFT gives module or parameter `name` (the base model's name,
    /// `model.layers.3.mlp.experts.2.gate_proj` or `model.layers.3.mlp.experts.gate_up_proj`):
    /// the first matching key of each pattern, else `r` / `lora_alpha`. Alpha does not
    /// follow the rank's pattern.
    fn sizing(&self, name: &str) -> Result<Sizing> {
        let (rank, rank_from) = match self
            .rank_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(name))
        {
            Some((k, _, r)) => (*r, format!("rank_pattern.{k}")),
            None => (self.rank, "r".to_string()),
        };
        let (alpha, alpha_from) = match self
            .alpha_pattern
            .iter()
            .find(|(_, re, _)| re.is_match(name))
        {
            Some((k, _, a)) => (*a, format!("alpha_pattern.{k}")),
            None => (self.alpha, "lora_alpha".to_string()),
        };
        let scaling = scaling_of(alpha, rank, self.rslora);
        if !scaling.is_finite() || scaling <= 0.0 {
            return Err(Error::checkpoint(
                self.path.display(),
                alpha_from,
                format!(
                    "scaling {scaling} for {name} from alpha {alpha} and r {rank} ({rank_from})"
                ),
            ));
        }
        Ok(Sizing {
            rank,
            rank_from,
            scaling,
        })
    }
}

/// A pattern key, compiled; one Rust's `regex` cannot compile (look-around,
/// back-references, which Python's `re` has) is refused by name.
fn pattern_key(c: &Fields, key: &str) -> Result<Regex> {
    key_regex(key).map_err(|e| {
        c.err(
            key,
            format!("the key '{key}' is not a regular expression fleetmoe can match: {e}"),
        )
    })
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

/// Whether PEFT `v` reads a fused parameter of `arch` as PEFT ≥ 0.19.1 does: 0.17 / 0.18
/// never swap (right only for `is_transposed` modules), 0.19.0 swaps the other way round.
fn version_reads_fused_right(v: (u64, u64, u64), arch: Arch) -> bool {
    if v >= (0, 19, 1) {
        true
    } else if v >= (0, 19, 0) {
        false
    } else {
        arch.fused_transposed()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_keys_match_a_dot_bounded_suffix() {
        let n = "model.layers.3.mlp.experts.12.gate_proj";
        for (key, want) in [
            ("gate_proj", true),
            ("experts.12.gate_proj", true),
            (n, true),
            ("2.gate_proj", false),
            ("ate_proj", false),
            ("experts.1.gate_proj", false),
            ("gate_proj.weight", false),
            // `.` is regex's any character, as in PEFT's re.match
            ("experts.12.gate.proj", true),
            ("layers.3.mlp.experts", false),
            // a real regular expression, as PEFT's users write them
            ("experts\\.\\d+\\.(gate|up)_proj", true),
            ("experts\\.\\d+\\.down_proj", false),
        ] {
            assert_eq!(key_regex(key).unwrap().is_match(n), want, "{key}");
        }
    }

    #[test]
    fn target_parameters_match_the_name_or_a_dotted_suffix() {
        let p = "model.layers.3.mlp.experts.down_proj";
        assert!(param_targeted("mlp.experts.down_proj", p));
        assert!(param_targeted("down_proj", p));
        assert!(param_targeted(p, p));
        assert!(!param_targeted("_proj", p));
        assert!(!param_targeted(
            "experts.down_proj",
            "model.layers.3.mlp.shared_experts.down_proj"
        ));
    }

    #[test]
    fn peft_versions() {
        assert_eq!(parse_version("0.19.1"), Some((0, 19, 1)));
        assert_eq!(parse_version("0.18.1.dev0@abc123"), Some((0, 18, 1)));
        assert_eq!(parse_version("0.20"), Some((0, 20, 0)));
        assert_eq!(parse_version("main"), None);
        assert!(version_reads_fused_right((0, 20, 0), Arch::Qwen3Moe));
        assert!(!version_reads_fused_right((0, 19, 0), Arch::GptOss));
        assert!(!version_reads_fused_right((0, 18, 0), Arch::Mixtral));
        assert!(version_reads_fused_right((0, 17, 1), Arch::Llama4));
    }
}
