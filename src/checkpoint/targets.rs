//! Which compressed-tensors `config_group` quantizes a module, as compressed-tensors itself
//! decides it (`utils/match.py`, `lifecycle/apply.py`, compressed-tensors 0.18):
//!
//! - a target `re:<pattern>` matches a module name by `re.match` (anchored at the start,
//!   not at the end); any other target matches a module name exactly, or the class of the
//!   module (every MoE projection fleetmoe reads is an `nn.Linear`, so `"Linear"`);
//! - candidates are tried exact names first, then `re:` patterns in alphabetical order,
//!   then class names, and the first that matches decides; a target that appears in two
//!   groups belongs to the later one;
//! - a module that an `ignore` entry matches (by the same rules) is not quantized, and
//!   neither is one no group targets.
//!
//! Python's `re` and Rust's `regex` agree on the patterns checkpoints use (`.*`, classes,
//! alternation, anchors); a pattern `regex` cannot compile (look-around, back-references)
//! is refused by name when the config is read.

use super::config::QuantFormat;
use regex::Regex;

/// One `targets` or `ignore` entry.
#[derive(Debug, Clone)]
enum Target {
    Name(String),
    Pattern(String, Regex),
    Class(String),
}

impl Target {
    fn parse(s: &str) -> std::result::Result<Target, String> {
        if let Some(p) = s.strip_prefix("re:") {
            let re = Regex::new(&format!("^(?:{p})"))
                .map_err(|e| format!("'{s}' is not a pattern fleetmoe can match: {e}"))?;
            Ok(Target::Pattern(p.to_string(), re))
        } else if s.contains('.') || s.chars().next().is_some_and(|c| c.is_lowercase()) {
            Ok(Target::Name(s.to_string()))
        } else {
            Ok(Target::Class(s.to_string()))
        }
    }

    /// Whether this entry matches the `nn.Linear` named `module`.
    fn matches_linear(&self, module: &str) -> bool {
        match self {
            Target::Name(n) => n == module,
            Target::Pattern(_, re) => re.is_match(module),
            Target::Class(c) => c == "Linear",
        }
    }

    fn rank(&self) -> (u8, &str) {
        match self {
            Target::Name(n) => (0, n),
            Target::Pattern(p, _) => (1, p),
            Target::Class(c) => (2, c),
        }
    }
}

/// The config groups of a compressed-tensors checkpoint with their targets, and `ignore`.
#[derive(Debug, Clone, Default)]
pub struct QuantTargets {
    /// (target, group name, format), in compressed-tensors' matching order.
    targets: Vec<(Target, String, QuantFormat)>,
    ignore: Vec<Target>,
    /// One line per group and one for `ignore`, for `inspect`.
    summary: Vec<String>,
}

impl QuantTargets {
    /// From each group's (name, targets, format) in config order, and the `ignore` list.
    /// The error names the entry that cannot be matched.
    pub(crate) fn new(
        groups: Vec<(String, Vec<String>, QuantFormat)>,
        ignore: &[String],
    ) -> std::result::Result<QuantTargets, String> {
        let mut summary: Vec<String> = groups
            .iter()
            .map(|(g, names, f)| format!("{g}: {} for {}", f.describe(), names.join(", ")))
            .collect();
        if !ignore.is_empty() {
            summary.push(format!("ignore: {}", ignore.join(", ")));
        }
        let mut targets: Vec<(Target, String, QuantFormat)> = Vec::new();
        for (group, names, format) in groups {
            for n in names {
                // The same target string in a later group replaces the earlier one.
                targets.retain(|(t, _, _)| t.rank().1 != n.trim_start_matches("re:"));
                targets.push((Target::parse(&n)?, group.clone(), format.clone()));
            }
        }
        targets.sort_by(|a, b| a.0.rank().cmp(&b.0.rank()));
        let ignore = ignore
            .iter()
            .map(|s| Target::parse(s))
            .collect::<std::result::Result<_, _>>()?;
        Ok(QuantTargets {
            targets,
            ignore,
            summary,
        })
    }

    /// The format of the linear layer `module` (its full name, e.g.
    /// `model.layers.3.mlp.experts.0.gate_proj`) and the group that gave it; `None` when
    /// it is ignored or no group targets it, so its weights are stored unquantized.
    pub fn format_of(&self, module: &str) -> Option<(&str, &QuantFormat)> {
        if self.ignore.iter().any(|t| t.matches_linear(module)) {
            return None;
        }
        self.targets
            .iter()
            .find(|(t, _, _)| t.matches_linear(module))
            .map(|(_, g, f)| (g.as_str(), f))
    }

    /// The groups and `ignore`, one line each.
    pub fn summary(&self) -> &[String] {
        &self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp8() -> QuantFormat {
        QuantFormat::CtFp8 {
            weight: crate::quant::Fp8WeightScale::PerChannel,
            act: crate::quant::ActScale::DynamicPerToken,
        }
    }

    #[test]
    fn names_then_patterns_then_classes_and_ignore_first() {
        let t = QuantTargets::new(
            vec![
                ("group_0".into(), vec!["Linear".into()], fp8()),
                (
                    "group_1".into(),
                    vec!["re:.*shared_expert\\..*".into()],
                    QuantFormat::Unquantized,
                ),
            ],
            &["lm_head".into(), "re:.*mlp.gate$".into()],
        )
        .unwrap();
        let experts = "model.layers.1.mlp.experts.0.gate_proj";
        assert_eq!(t.format_of(experts).map(|g| g.0), Some("group_0"));
        let shared = "model.layers.1.mlp.shared_expert.up_proj";
        assert_eq!(t.format_of(shared).map(|g| g.0), Some("group_1"));
        assert!(t.format_of("lm_head").is_none());
        assert!(t.format_of("model.layers.1.mlp.gate").is_none());
        // re.match is anchored at the start only: `.*mlp.gate$` does not match `gate_proj`.
        assert!(t.format_of("model.layers.1.mlp.gate_proj").is_some());
    }

    #[test]
    fn a_pattern_is_anchored_at_the_start() {
        let t = QuantTargets::new(
            vec![("g".into(), vec!["re:layers\\.1\\.".into()], fp8())],
            &[],
        )
        .unwrap();
        assert!(t
            .format_of("model.layers.1.mlp.experts.0.up_proj")
            .is_none());
        let t = QuantTargets::new(
            vec![("g".into(), vec!["re:model\\.layers\\.1\\.".into()], fp8())],
            &[],
        )
        .unwrap();
        assert!(t
            .format_of("model.layers.1.mlp.experts.0.up_proj")
            .is_some());
    }

    #[test]
    fn look_around_is_refused_by_name() {
        let e = QuantTargets::new(
            vec![("g".into(), vec!["re:(?!lm_head).*".into()], fp8())],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("re:(?!lm_head).*"), "{e}");
    }
}
