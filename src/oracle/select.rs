//! `select`: walk the priority list and take the first backend whose needs are all met,
//! keeping every earlier backend's reasons; `Selection`'s `Display` is `fleetmoe explain`.

use super::backend::BackendId;
use super::conversion::Conversion;
use super::gap::Gap;
use super::no_native::NoNative;
use super::priority::{backends, spec};
use super::unmet::Unmet;
use crate::device::{Capabilities, Vendor};
use crate::error::{Error, Result};
use crate::moe::LayerConfig;
use crate::quant::QuantScheme;
use std::fmt;

/// A backend turned down, with every need it lacks here.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub backend: BackendId,
    /// Never empty.
    pub unmet: Vec<Unmet>,
    /// Conversions it would have applied had it run (e.g. fn → fnuz for an AMD fp8
    /// backend that is only missing from this build).
    pub conversions: Vec<Conversion>,
}

impl Rejection {
    /// The reasons on one line, `; `-separated.
    pub fn reasons(&self) -> String {
        join(&self.unmet)
    }

    /// Whether the backend is for another vendor's devices; `explain` folds these into
    /// one line per vendor.
    pub fn is_other_vendor(&self) -> bool {
        self.unmet.iter().any(Unmet::is_vendor)
    }
}

/// The oracle's answer: what runs, what it takes to run it, and why nothing faster does.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub chosen: BackendId,
    /// The caller named the backend; nothing else was considered.
    pub forced: bool,
    /// Every backend ahead of `chosen` in priority order, in that order, including those
    /// for other vendors (the data is complete; only `Display` abbreviates them).
    pub rejected: Vec<Rejection>,
    /// Weight conversions `chosen` needs.
    pub conversions: Vec<Conversion>,
    pub scheme: QuantScheme,
    /// The platform, as `Capabilities` prints it.
    pub platform: String,
    pub vendor: Vendor,
    /// Set when no backend on any platform runs `scheme` natively; its gaps are then said
    /// here once and left out of each rejection.
    pub no_native: Option<NoNative>,
}

impl Selection {
    /// Whether a GPU is falling back to emulation.
    pub fn is_fallback(&self) -> bool {
        let gpu = match self.vendor {
            Vendor::Nvidia | Vendor::Amd | Vendor::Other => true,
            Vendor::Cpu => false,
        };
        gpu && self.chosen == BackendId::Emulation
    }

    /// What a build with more cargo features would choose instead of falling back: the
    /// first backend turned down for nothing but a missing feature, and those features.
    pub fn with_more_features(&self) -> Option<(BackendId, Vec<&'static str>)> {
        self.rejected.iter().find_map(|r| {
            let features: Option<Vec<&'static str>> = r
                .unmet
                .iter()
                .map(|u| match u {
                    Unmet::NotBuilt { feature } => Some(*feature),
                    _ => None,
                })
                .collect();
            features.filter(|f| !f.is_empty()).map(|f| (r.backend, f))
        })
    }

    /// Why a GPU falls back to emulation, in one phrase; `None` when it does not.
    pub fn fallback_reason(&self) -> Option<String> {
        if !self.is_fallback() {
            return None;
        }
        Some(match (&self.no_native, self.with_more_features()) {
            (Some(none), _) => none.to_string(),
            (None, Some((id, features))) => format!(
                "a build with --features {} would choose {id}",
                features.join(",")
            ),
            (None, None) => match self.held_back_by_gaps() {
                Some((id, gaps)) => format!(
                    "{id} would run this but for {} (not implemented yet)",
                    gaps.iter().map(|g| g.what).collect::<Vec<_>>().join(", ")
                ),
                None => "no native backend below can run this".to_string(),
            },
        })
    }

    /// The first backend turned down for nothing but gaps (and perhaps the build): the
    /// work that would let this platform run the layer natively.
    fn held_back_by_gaps(&self) -> Option<(BackendId, Vec<&'static Gap>)> {
        self.rejected.iter().find_map(|r| {
            let mut gaps = Vec::new();
            for u in &r.unmet {
                match u {
                    Unmet::NotImplemented(gap) => gaps.push(*gap),
                    u if u.is_availability() => {}
                    _ => return None,
                }
            }
            (!gaps.is_empty()).then_some((r.backend, gaps))
        })
    }
}

fn join(unmet: &[Unmet]) -> String {
    unmet
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Chooses the experts backend for `scheme` on `caps` for `layer`.
///
/// Without `forced` this always succeeds, since emulation runs everything; a fallback to
/// emulation on a GPU is logged as a warning. With `forced`, that backend is used if all
/// its needs are met and otherwise the result is `Error::BackendUnavailable` with every
/// reason.
pub fn select(
    scheme: &QuantScheme,
    caps: &Capabilities,
    layer: &LayerConfig,
    forced: Option<BackendId>,
) -> Result<Selection> {
    let no_native = NoNative::of(scheme);
    let selection = |chosen, forced, rejected, conversions| Selection {
        chosen,
        forced,
        rejected,
        conversions,
        scheme: *scheme,
        platform: caps.to_string(),
        vendor: caps.vendor,
        no_native: no_native.clone(),
    };
    // A gap every backend shares is the selection's to state, once.
    let said_once = |u: &Unmet| match (u, &no_native) {
        (Unmet::NotImplemented(gap), Some(n)) => n.gaps.contains(gap),
        _ => false,
    };

    if let Some(id) = forced {
        let entry = spec(id).ok_or_else(|| {
            Error::Config(format!("backend '{id}' is missing from the priority list"))
        })?;
        let verdict = entry.needs.assess(scheme, caps, layer);
        if !verdict.unmet.is_empty() {
            return Err(Error::BackendUnavailable {
                backend: id.name().to_string(),
                reasons: join(&verdict.unmet),
            });
        }
        return Ok(selection(id, true, Vec::new(), verdict.conversions));
    }

    let mut rejected = Vec::new();
    for entry in backends() {
        let verdict = entry.needs.assess(scheme, caps, layer);
        if verdict.unmet.is_empty() {
            let chosen = selection(entry.id, false, rejected, verdict.conversions);
            if let Some(why) = chosen.fallback_reason() {
                log::warn!(
                    "no native experts backend runs {scheme} on {}; falling back to emulation \
                     ({why}; `fleetmoe explain` says more)",
                    caps.name
                );
            }
            return Ok(chosen);
        }
        rejected.push(Rejection {
            backend: entry.id,
            unmet: verdict
                .unmet
                .into_iter()
                .filter(|u| !said_once(u))
                .collect(),
            conversions: verdict.conversions,
        });
    }
    // Unreachable while emulation needs nothing, but a table edit must not become a panic.
    Err(Error::BackendUnavailable {
        backend: "any".to_string(),
        reasons: rejected
            .iter()
            .map(|r| format!("{}: {}", r.backend, r.reasons()))
            .collect::<Vec<_>>()
            .join(" | "),
    })
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "platform  {}", self.platform)?;
        writeln!(f, "scheme    {}", self.scheme)?;
        write!(f, "backend   {}", self.chosen)?;
        if self.forced {
            write!(f, " (forced)")?;
        } else if let Some(why) = self.fallback_reason() {
            write!(f, " (fallback: {why})")?;
        }
        writeln!(f)?;
        if let Some(none) = &self.no_native {
            if self.is_fallback() && !self.forced {
                for gap in &none.gaps {
                    writeln!(f, "missing   {gap}")?;
                }
            }
        }
        for conversion in &self.conversions {
            writeln!(f, "convert   {conversion}")?;
        }
        if self.rejected.is_empty() {
            return Ok(());
        }

        writeln!(f, "turned down, fastest first:")?;
        let (foreign, here): (Vec<&Rejection>, Vec<&Rejection>) =
            self.rejected.iter().partition(|r| r.is_other_vendor());
        let width = here
            .iter()
            .map(|r| r.backend.name().len())
            .max()
            .unwrap_or(0);
        for r in &here {
            writeln!(f, "  {:width$}  {}", r.backend.name(), r.reasons())?;
        }
        // One line per foreign vendor: the names, then the shared reason.
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for r in foreign {
            let reason = r
                .unmet
                .iter()
                .find(|u| u.is_vendor())
                .map(ToString::to_string)
                .unwrap_or_default();
            match groups.iter_mut().find(|(g, _)| *g == reason) {
                Some((_, names)) => names.push(r.backend.name()),
                None => groups.push((reason, vec![r.backend.name()])),
            }
        }
        for (reason, names) in groups {
            writeln!(f, "  {}: {reason}", names.join(", "))?;
        }
        Ok(())
    }
}
