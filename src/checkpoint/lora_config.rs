//! `adapter_config.json` as PEFT's `LoraConfig` defines it: rank, alpha, rsLoRA, the
//! per-module `rank_pattern` / `alpha_pattern`, `target_parameters`, and the options that
//! change the math (refused). Read by `lora::load_adapter`.

use super::arch::Arch;
use super::fields::Fields;
use crate::error::{Error, Result};
use regex::Regex;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub(super) const PEFT: &str = "PEFT LoraConfig";

/// A JSON object's entries in the file's order: `serde_json::Value` sorts keys, but PEFT
/// takes the first matching pattern key in dict order, which is the order of the file. A
/// repeated key keeps its first place and its last value, as Python's `json` does.
pub(super) struct Ordered(Vec<(String, Value)>);

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
pub(super) struct Patterns {
    #[serde(default)]
    pub(super) rank_pattern: Option<Ordered>,
    #[serde(default)]
    pub(super) alpha_pattern: Option<Ordered>,
}

/// PEFT's `get_pattern_key` test for a key, `re.match(rf"(.*\.)?({key})$", name)`: the key
/// (a regular expression) matches the whole name or a suffix that follows a dot.
pub(super) fn key_regex(key: &str) -> std::result::Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
}

/// `target_parameters` matching (PEFT `_inject_parameters`): the parameter's full name is
/// the target or ends with `.` + the target.
pub(super) fn param_targeted(target: &str, name: &str) -> bool {
    name == target
        || name
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// What `adapter_config.json` says about the math.
pub(super) struct Settings {
    pub(super) path: PathBuf,
    pub(super) rank: usize,
    pub(super) alpha: f64,
    pub(super) rslora: bool,
    pub(super) rank_pattern: Vec<(String, Regex, usize)>,
    pub(super) alpha_pattern: Vec<(String, Regex, f64)>,
    pub(super) target_parameters: Vec<String>,
    /// `peft_version`, as (major, minor, patch), when the file gives one that parses.
    pub(super) peft_version: Option<(u64, u64, u64)>,
}

/// The rank and scaling of one module or parameter, and the field its rank came from.
pub(super) struct Sizing {
    pub(super) rank: usize,
    pub(super) rank_from: String,
    pub(super) scaling: f32,
}

pub(super) fn scaling_of(alpha: f64, rank: usize, rslora: bool) -> f32 {
    if rslora {
        (alpha / (rank as f64).sqrt()) as f32
    } else {
        (alpha / rank as f64) as f32
    }
}

/// `0.19.1`, `0.19.1.dev0`, `0.18.0rc1@abc` → the leading numbers of the first three parts.
pub(super) fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
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
    pub(super) fn read(f: &Fields, text: &str, path: &Path) -> Result<Settings> {
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
    pub(super) fn sizing(&self, name: &str) -> Result<Sizing> {
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
pub(super) fn pattern_key(c: &Fields, key: &str) -> Result<Regex> {
    key_regex(key).map_err(|e| {
        c.err(
            key,
            format!("the key '{key}' is not a regular expression fleetmoe can match: {e}"),
        )
    })
}

/// Whether PEFT `v` reads a fused parameter of `arch` as PEFT ≥ 0.19.1 does: 0.17 / 0.18
/// never swap (right only for `is_transposed` modules), 0.19.0 swaps the other way round.
pub(super) fn version_reads_fused_right(v: (u64, u64, u64), arch: Arch) -> bool {
    if v >= (0, 19, 1) {
        true
    } else if v >= (0, 19, 0) {
        false
    } else {
        arch.fused_transposed()
    }
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
