//! `NoNative`: a scheme that no backend runs natively on any platform yet. `explain` says so
//! once, in the fallback line, instead of on every backend it turned down.

use super::backend::BackendId;
use super::fit::Fit;
use super::gap::Gap;
use super::priority::backends;
use crate::quant::QuantScheme;
use std::fmt;

/// The scheme, and what stands in the way as the backends of its kind declare it.
#[derive(Debug, Clone, PartialEq)]
pub struct NoNative {
    pub scheme: QuantScheme,
    /// Each gap once, in priority order of the first backend naming it; empty where no
    /// backend is of the scheme's kind (int8 W8A8).
    pub gaps: Vec<&'static Gap>,
}

impl NoNative {
    /// `Some` when every backend but emulation answers `Other` or `NotYet` for `scheme`,
    /// whatever the platform and the build.
    pub fn of(scheme: &QuantScheme) -> Option<NoNative> {
        let mut gaps: Vec<&'static Gap> = Vec::new();
        for entry in backends().iter().filter(|b| b.id != BackendId::Emulation) {
            match (entry.needs.schemes)(scheme) {
                Fit::Runs => return None,
                Fit::Other => {}
                Fit::NotYet(gap) => {
                    if !gaps.contains(&gap) {
                        gaps.push(gap);
                    }
                }
            }
        }
        Some(NoNative {
            scheme: *scheme,
            gaps,
        })
    }
}

impl fmt::Display for NoNative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has no native backend on any platform yet; it runs emulated",
            self.scheme
        )
    }
}
