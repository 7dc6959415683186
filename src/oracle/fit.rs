//! `Fit` and `Support`: a backend's answer to "do you run this scheme?" and "do you do this
//! for the layer?", with the gap named when the answer is "not yet".

use super::gap::Gap;

/// How a backend stands to a scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The backend implements it.
    Runs,
    /// Another kind of scheme altogether; the backend's `runs` says what it takes.
    Other,
    /// A scheme of the backend's kind whose code has not been written.
    NotYet(&'static Gap),
}

impl Fit {
    /// `Runs` when `ok`, else `Other`.
    pub const fn runs_if(ok: bool) -> Fit {
        if ok {
            Fit::Runs
        } else {
            Fit::Other
        }
    }

    pub fn runs(self) -> bool {
        matches!(self, Fit::Runs)
    }
}

/// Whether a backend does one thing a layer may ask for (LoRA deltas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Yes,
    NotYet(&'static Gap),
}
