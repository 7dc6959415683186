//! Progress on the steps a person waits for, on stderr: a bar with position / length where
//! the work can be counted (random weights per expert, the bench's and parity's cells, the
//! timed forwards, the f64 reference passes), a spinner with the step and its elapsed time
//! where it cannot (quantization, checkpoint loading, layout and upload: one library call).
//! Nothing is drawn when stderr is not a terminal or with `--quiet`, so pipes and logs get
//! only the results. `FLEETMOE_PROGRESS=lines` writes each step and each count as a plain
//! line instead (for a log that wants them; `--quiet` still silences it).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static QUIET: AtomicBool = AtomicBool::new(false);
/// The bar or spinner on screen, so results printed meanwhile go above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// `--quiet`: no progress at all.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// How progress is shown.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Hidden,
    /// indicatif on the terminal.
    Drawn,
    /// `FLEETMOE_PROGRESS=lines`: one plain stderr line per step and per count.
    Lines,
}

fn mode() -> Mode {
    if QUIET.load(Ordering::Relaxed) {
        Mode::Hidden
    } else if std::env::var("FLEETMOE_PROGRESS").as_deref() == Ok("lines") {
        Mode::Lines
    } else if std::io::stderr().is_terminal() {
        Mode::Drawn
    } else {
        Mode::Hidden
    }
}

fn show(bar: &ProgressBar) {
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = Some(bar.clone());
    }
}

fn clear(bar: ProgressBar) {
    bar.finish_and_clear();
    if let Ok(mut shown) = SHOWN.lock() {
        *shown = None;
    }
}

/// A step in progress; cleared from the screen when dropped.
pub struct Step(Option<ProgressBar>);

/// Shows `what` with a spinner and the elapsed time until the returned `Step` drops.
pub fn step(what: impl Into<String>) -> Step {
    let what = what.into();
    match mode() {
        Mode::Hidden => Step(None),
        Mode::Lines => {
            eprintln!("progress  {what}");
            Step(None)
        }
        Mode::Drawn => {
            let bar = ProgressBar::new_spinner().with_message(what);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            show(&bar);
            Step(Some(bar))
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            clear(bar);
        }
    }
}

/// Countable work in progress: `what`, then `position/length`; cleared when dropped.
pub struct Bar {
    bar: Option<ProgressBar>,
    lines: bool,
    what: String,
    pos: u64,
    len: u64,
}

/// A bar for `len` units of `what` (experts, cells, forwards), at 0.
pub fn bar(what: impl Into<String>, len: usize) -> Bar {
    let (what, len) = (what.into(), len as u64);
    let mode = mode();
    let bar = (mode == Mode::Drawn).then(|| {
        let bar = ProgressBar::new(len).with_message(what.clone());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:20}] {pos}/{len} ({elapsed}, eta {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        show(&bar);
        bar
    });
    Bar {
        bar,
        lines: mode == Mode::Lines,
        what,
        pos: 0,
        len,
    }
}

impl Bar {
    /// Says what the current unit is (`deepseek-v3 fp8 M = 64`), keeping the count.
    pub fn working_on(&mut self, what: impl Into<String>) {
        self.what = what.into();
        if let Some(bar) = &self.bar {
            bar.set_message(self.what.clone());
        }
    }

    /// One unit done.
    pub fn inc(&mut self) {
        self.advance_to(self.pos as usize + 1);
    }

    /// Units up to `pos` done (those skipped count too).
    pub fn advance_to(&mut self, pos: usize) {
        let pos = (pos as u64).min(self.len);
        if pos <= self.pos {
            return;
        }
        self.pos = pos;
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
        if self.lines {
            eprintln!("progress  {} {}/{}", self.what, self.pos, self.len);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            clear(bar);
        }
    }
}

/// Prints a result line on stdout (as `print_out` does) without tearing the bar.
pub fn println(line: &str) -> fleetmoe::Result<()> {
    let shown = SHOWN.lock().ok().and_then(|s| s.clone());
    let line = format!("{line}\n");
    match shown {
        Some(bar) => bar.suspend(|| crate::print_out(&line)),
        None => crate::print_out(&line),
    }
}
