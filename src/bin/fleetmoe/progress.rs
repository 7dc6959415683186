//! Progress on the steps a person waits for (random weights and quantization, checkpoint
//! loading, layout and upload, the f64 reference, the bench's cells): a spinner with the
//! step and its elapsed time on stderr. Nothing is drawn when stderr is not a terminal or
//! with `--quiet`, so pipes and logs get only the results.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static QUIET: AtomicBool = AtomicBool::new(false);
/// The spinner on screen, so results printed meanwhile go above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// `--quiet`: no progress at all.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn drawn() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// A step in progress; cleared from the screen when dropped.
pub struct Step(Option<ProgressBar>);

/// Shows `what` with a spinner and the elapsed time until the returned `Step` drops.
pub fn step(what: impl Into<String>) -> Step {
    if !drawn() {
        return Step(None);
    }
    let bar = ProgressBar::new_spinner().with_message(what.into());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = Some(bar.clone());
    }
    Step(Some(bar))
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
            if let Ok(mut shown) = SHOWN.lock() {
                *shown = None;
            }
        }
    }
}

/// Prints a result line on stdout (as `print_out` does) without tearing the spinner.
pub fn println(line: &str) -> fleetmoe::Result<()> {
    let shown = SHOWN.lock().ok().and_then(|s| s.clone());
    let line = format!("{line}\n");
    match shown {
        Some(bar) => bar.suspend(|| crate::print_out(&line)),
        None => crate::print_out(&line),
    }
}
