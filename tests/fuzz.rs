//! Seeded mutation fuzzing of checkpoint loading and the MoE layer (issue 13). Stable Rust
//! has no libFuzzer, so mutant `n` is fully determined by `n`: seed `n % seeds`, mutations
//! drawn from `ChaCha8Rng(n)`. A mutant fails by panicking, by taking over 2 s, by asking
//! for one allocation over 256 MiB, by returning non-finite output from finite input, or
//! by running on data it should have refused. An `Err` is a pass.
//!
//! Bounded pass: `cargo test --test fuzz`. Long run on all cores:
//! `FLEETMOE_FUZZ_MUTANTS=1000000 FLEETMOE_FUZZ_START=0 cargo test --release --test fuzz -- --ignored --nocapture`.
//! Replay one: `FLEETMOE_FUZZ_REPLAY=N cargo test --test fuzz replay -- --ignored --nocapture`.

#[path = "fuzz/api.rs"]
mod api;
#[path = "fuzz/apimut.rs"]
mod apimut;
#[path = "fuzz/check.rs"]
mod check;
mod ckpt;
#[path = "fuzz/files.rs"]
mod files;
#[path = "fuzz/jsonmut.rs"]
mod jsonmut;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/runner.rs"]
mod runner;
#[path = "fuzz/seeds.rs"]
mod seeds;

use runner::{Limits, Runner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Requests above this abort at once (after printing the mutant), before the OS is asked.
const HARD_ALLOC: usize = 2 << 30;

/// Records each thread's largest allocation request; refuses absurd ones.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) -> bool {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    if size > HARD_ALLOC {
        runner::print_current_mutant(size);
        return false;
    }
    true
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !note(l.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !note(new) {
            return std::ptr::null_mut();
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The largest single request on this thread since the last call, reset to zero.
pub fn take_largest_alloc() -> usize {
    LARGEST.with(|l| l.replace(0))
}

fn env(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_seed_loads_and_runs_cleanly() {
    let r = Runner::new(Limits::default());
    let bad: Vec<String> = r
        .seed_verdicts()
        .into_iter()
        .filter_map(|(label, v)| match v {
            check::Verdict::Ok => None,
            check::Verdict::Refused(variant, msg) => Some(format!("{label}: {variant}: {msg}")),
            v => Some(format!("{label}: {v:?}")),
        })
        .collect();
    assert!(
        bad.is_empty(),
        "seeds that do not run cleanly:\n{}",
        bad.join("\n")
    );
}

/// Mutants 0..N in the debug build, as CI runs it; fails if any mutant fails.
#[test]
fn bounded_fuzz_pass() {
    let n = env("FLEETMOE_FUZZ_BOUNDED", 150_000);
    let r = Runner::new(Limits::default());
    let report = r.run(0, n, runner::threads(), 0);
    println!("{}", report.summary());
    assert!(
        report.failures.is_empty(),
        "{} failing mutants:\n{}",
        report.failed(),
        report.summary()
    );
}

/// The long run: `FLEETMOE_FUZZ_MUTANTS` mutants from `FLEETMOE_FUZZ_START` on all cores.
#[test]
#[ignore]
fn long_fuzz_run() {
    let n = env("FLEETMOE_FUZZ_MUTANTS", 100_000);
    let start = env("FLEETMOE_FUZZ_START", 1 << 32);
    let r = Runner::new(Limits::default());
    let report = r.run(start, n, runner::threads(), 10_000);
    println!("{}", report.summary());
    assert!(
        report.failures.is_empty(),
        "{} failing mutants",
        report.failed()
    );
}

/// Replays mutant `FLEETMOE_FUZZ_REPLAY`, printing its mutations and verdict.
#[test]
#[ignore]
fn replay() {
    let n = env("FLEETMOE_FUZZ_REPLAY", 0);
    let r = Runner::new(Limits::default());
    let (desc, verdict) = r.replay(n);
    println!("mutant {n}: {desc}\n  -> {verdict:?}");
}
