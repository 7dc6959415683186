//! Runs mutants on worker threads: catches panics (with their location), times each
//! mutant (a watchdog aborts with the reproducing index if one hangs), reads the largest
//! allocation, and tallies verdicts into a report that names a reproducing mutant for
//! every distinct failure.

use super::check::{judge, reset_dir, run_model, Verdict};
use super::files::Model;
use super::{api, apimut, mutate, seeds};
use fleetmoe::moe::Target;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub struct Limits {
    /// A mutant slower than this fails as `slow`.
    pub slow: Duration,
    /// A mutant still running after this aborts the process (after printing it).
    pub hang: Duration,
    /// One allocation request above this fails as `huge-alloc`.
    pub alloc: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            slow: Duration::from_secs(2),
            hang: Duration::from_secs(60),
            alloc: 256 << 20,
        }
    }
}

pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

thread_local! {
    static IN_MUTANT: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// "mutant N: ..." of the running mutant, for the allocator to print before aborting.
    static CURRENT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A panic on a pool thread (rayon) inside a mutant.
static FOREIGN: Mutex<Option<String>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info
                .location()
                .map_or("?".into(), |l| format!("{}:{}", l.file(), l.line()));
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let text = format!("{}|{loc}: {msg}", crate_frame());
            if IN_MUTANT.with(|m| m.get()) {
                PANIC.with(|p| *p.borrow_mut() = Some(text));
            } else if std::thread::current().name().is_none() {
                *FOREIGN.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
            } else {
                default(info);
            }
        }));
    });
}

/// The innermost fleetmoe function on the stack (with its line when the build has line
/// tables), since std's panics (clamp, slicing, overflow) name std's own location.
fn crate_frame() -> String {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let (mut name, mut named) = ("", None);
    for l in bt.lines().map(str::trim) {
        if let Some(at) = l.strip_prefix("at ") {
            // the crate's own sources, as line tables name them
            if at.starts_with("./src/")
                || (at.contains("/src/")
                    && !at.contains("/rustc/")
                    && !at.contains("/.cargo/")
                    && !at.contains("tests/"))
            {
                return format!("{name} ({at})");
            }
        } else if let Some((_, n)) = l.split_once(": ") {
            name = n;
            if named.is_none() && n.starts_with("fleetmoe::") {
                named = Some(n.to_string());
            }
        }
    }
    named.unwrap_or_else(|| "no fleetmoe frame".into())
}

/// Called by the allocator before refusing a request: names the mutant, allocating nothing.
pub fn print_current_mutant(size: usize) {
    let _ = CURRENT.try_with(|c| {
        if let Ok(c) = c.try_borrow() {
            let mut e = std::io::stderr();
            let _ = e.write_all(b"\nfuzz: allocation request over the hard limit by ");
            let _ = e.write_all(&c);
            let _ = e.write_all(if size > 0 { b" (aborting)\n" } else { b"\n" });
        }
    });
}

pub struct Failure {
    pub count: u64,
    pub first: u64,
    pub desc: String,
    pub symptom: String,
}

#[derive(Default)]
pub struct Report {
    pub mutants: u64,
    pub ok: u64,
    pub refused: BTreeMap<String, u64>,
    /// Distinct failures: "class | where".
    pub failures: BTreeMap<String, Failure>,
    pub seconds: f64,
}

impl Report {
    pub fn failed(&self) -> u64 {
        self.failures.values().map(|f| f.count).sum()
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "fuzz: {} mutants in {:.1} s ({:.0}/s): {} ran cleanly, {} refused, {} failed\n",
            self.mutants,
            self.seconds,
            self.mutants as f64 / self.seconds.max(1e-9),
            self.ok,
            self.refused.values().sum::<u64>(),
            self.failed()
        );
        for (v, n) in &self.refused {
            s += &format!("  refused {v}: {n}\n");
        }
        let mut classes: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        for (k, f) in &self.failures {
            let c = classes
                .entry(k.split(" | ").next().unwrap_or(""))
                .or_default();
            *c = (c.0 + f.count, c.1 + 1);
        }
        for (c, (n, distinct)) in &classes {
            s += &format!("  failed {c}: {n} mutants, {distinct} distinct\n");
        }
        // every panic; the five most frequent of each other class
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_count: Vec<_> = self.failures.iter().collect();
        by_count.sort_by_key(|(k, f)| (!k.starts_with("panic"), std::cmp::Reverse(f.count)));
        for (k, f) in by_count {
            let n = shown
                .entry(k.split(" | ").next().unwrap_or(""))
                .or_default();
            *n += 1;
            if k.starts_with("panic") || *n <= 5 {
                s += &format!(
                    "  FAIL {k}: {} mutants, first {} ({})\n      {}\n",
                    f.count, f.first, f.symptom, f.desc
                );
            }
        }
        s
    }

    fn add(&mut self, n: u64, desc: &str, v: Verdict) {
        self.mutants += 1;
        match v {
            Verdict::Ok => self.ok += 1,
            Verdict::Refused(e, _) => *self.refused.entry(e).or_default() += 1,
            Verdict::Fail(class, symptom) => {
                let key = failure_key(class, desc, &symptom);
                let f = self.failures.entry(key).or_insert(Failure {
                    count: 0,
                    first: n,
                    desc: desc.to_string(),
                    symptom,
                });
                f.count += 1;
                if n < f.first {
                    (f.first, f.desc) = (n, desc.to_string());
                }
            }
        }
    }
}

/// Panics group by location; other failures by class, seed and what the first mutation
/// touched, digits and values left out.
fn failure_key(class: &str, desc: &str, symptom: &str) -> String {
    if class == "panic" {
        // "frame|file:line: message": the frame and the location, not the message
        let place = symptom.split_once(": ").map_or(symptom, |(p, _)| p);
        return format!("panic | {place}");
    }
    let (seed, muts) = desc.split_once(" | ").unwrap_or((desc, ""));
    let first = muts.split("; ").next().unwrap_or("");
    let cut = [" = ", " element", " every", " ->", ": "]
        .iter()
        .filter_map(|p| first.find(p))
        .min()
        .unwrap_or(first.len());
    let mut what = String::new();
    for c in first[..cut].chars() {
        if !c.is_ascii_digit() {
            what.push(c);
        } else if !what.ends_with('N') {
            what.push('N');
        }
    }
    format!("{class} | {seed} | {what}")
}

/// A mutant ready to run: its result, and what it must refuse.
type Run<'a> = Box<dyn FnOnce() -> (fleetmoe::Result<Vec<f32>>, Option<String>) + 'a>;

pub struct Runner {
    /// This runner's own scratch directory (tests run concurrently in one process).
    base: PathBuf,
    models: Vec<Model>,
    cases: Vec<api::ApiCase>,
    limits: Limits,
}

fn base_dir() -> PathBuf {
    static RUNNERS: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let k = RUNNERS.fetch_add(1, Ordering::Relaxed);
    base.join(format!("fleetmoe-fuzz-{}-{k}", std::process::id()))
}

/// Sets the flag when dropped, so the watchdog stops even if a worker panicked.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Runner {
    pub fn new(limits: Limits) -> Self {
        install_hook();
        Runner {
            base: base_dir(),
            models: seeds::models(),
            cases: api::seeds(),
            limits,
        }
    }

    fn seeds(&self) -> u64 {
        (self.models.len() + self.cases.len()) as u64
    }

    /// Mutant `n`: its description and how it ended.
    fn one(&self, n: u64, dir: &Path, target: &Target) -> (String, Verdict) {
        let mut r = ChaCha8Rng::seed_from_u64(n);
        let s = (n % self.seeds()) as usize;
        CURRENT.with(|c| {
            let text = format!("mutant {n}: (while mutating seed {s})").into_bytes();
            let _ = c.replace(text);
        });
        let (desc, run): (String, Box<dyn FnOnce() -> _>) = if s < self.models.len() {
            let mu = mutate::mutate(&self.models[s], &mut r);
            let desc = format!("{} | {}", mu.model.label, mu.log.join("; "));
            reset_dir(dir);
            mu.model.write(dir).expect("write the mutant");
            let (refuse, tensor) = (mu.refuse, mu.refuse_tensor);
            let m = mu.model;
            (
                desc,
                Box::new(move || {
                    let (out, read) = run_model(dir, &m, target);
                    let refuse = refuse.filter(|_| tensor.is_none_or(|t| read.contains(&t)));
                    (out, refuse)
                }),
            )
        } else {
            let mut c = self.cases[s - self.models.len()].clone();
            let (mut log, mut refuse) = (Vec::new(), None);
            // A second mutation can undo what the first made invalid (replace the routing
            // that held a NaN bias, change the scheme under an fp8 code), so only the last
            // one's claim stands; non-finite output is a failure either way.
            for _ in 0..1 + usize::from(r.random_bool(0.25)) {
                let (d, bad) = apimut::mutate(&mut c, &mut r);
                log.push(d);
                refuse = bad;
            }
            let desc = format!("{} | {}", c.label, log.join("; "));
            (desc, Box::new(move || (api::run(&c, target), refuse)))
        };
        (desc.clone(), self.judge_run(n, &desc, run))
    }

    fn judge_run(&self, n: u64, desc: &str, run: Run<'_>) -> Verdict {
        CURRENT.with(|c| {
            let text = format!("mutant {n}: {desc}").into_bytes();
            let _ = c.replace(text);
        });
        let started = (Instant::now(), desc.to_string());
        STARTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, started);
        super::take_largest_alloc();
        IN_MUTANT.with(|m| m.set(true));
        let t0 = Instant::now();
        let got = catch_unwind(AssertUnwindSafe(run));
        let took = t0.elapsed();
        IN_MUTANT.with(|m| m.set(false));
        STARTS.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
        let largest = super::take_largest_alloc();
        let verdict = match got {
            Ok((r, refuse)) => judge(r, refuse.as_deref()),
            Err(_) => {
                let text = PANIC
                    .with(|p| p.borrow_mut().take())
                    .or_else(|| FOREIGN.lock().ok().and_then(|mut f| f.take()))
                    .unwrap_or_else(|| "?|panic without a message".into());
                Verdict::Fail("panic", text)
            }
        };
        match verdict {
            Verdict::Fail(..) => verdict,
            _ if took > self.limits.slow => Verdict::Fail("slow", format!("took {took:?}")),
            _ if largest > self.limits.alloc => Verdict::Fail(
                "huge-alloc",
                format!("asked for {} MiB at once", largest >> 20),
            ),
            v => v,
        }
    }

    /// Every seed, unmutated, through the same oracle.
    pub fn seed_verdicts(&self) -> Vec<(String, Verdict)> {
        let dir = self.base.join("seeds");
        let target = Target::cpu();
        let mut out = Vec::new();
        for m in &self.models {
            reset_dir(&dir);
            m.write(&dir).expect("write the seed");
            let v = self.judge_run(
                0,
                m.label,
                Box::new(|| (run_model(&dir, m, &target).0, None)),
            );
            out.push((m.label.to_string(), v));
        }
        for c in &self.cases {
            let v = self.judge_run(0, c.label, Box::new(|| (api::run(c, &target), None)));
            out.push((c.label.to_string(), v));
        }
        let _ = std::fs::remove_dir_all(&self.base);
        out
    }

    pub fn replay(&self, n: u64) -> (String, Verdict) {
        let dir = self.base.join("replay");
        let got = self.one(n, &dir, &Target::cpu());
        println!("mutant files left in {}", dir.display());
        got
    }

    /// Mutants `start..start + count` on `threads` workers.
    pub fn run(&self, start: u64, count: u64, threads: usize, progress: u64) -> Report {
        let next = AtomicU64::new(0);
        let report = Mutex::new(Report::default());
        let done = AtomicBool::new(false);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| self.watchdog(&done));
            let _stop = SetOnDrop(&done);
            let workers: Vec<_> = (0..threads)
                .map(|w| {
                    let (next, report) = (&next, &report);
                    std::thread::Builder::new()
                        .name(format!("fuzz-{w}"))
                        .spawn_scoped(s, move || {
                            let dir = self.base.join(format!("w{w}"));
                            let target = Target::cpu();
                            loop {
                                let k = next.fetch_add(1, Ordering::Relaxed);
                                if k >= count {
                                    break;
                                }
                                let (desc, v) = self.one(start + k, &dir, &target);
                                let mut rep = report.lock().unwrap();
                                rep.add(start + k, &desc, v);
                                if progress > 0 && rep.mutants % progress == 0 {
                                    let secs = t0.elapsed().as_secs_f64();
                                    eprintln!(
                                        "fuzz: {} mutants, {:.0}/s, {} failed ({} distinct)",
                                        rep.mutants,
                                        rep.mutants as f64 / secs,
                                        rep.failed(),
                                        rep.failures.len()
                                    );
                                }
                            }
                        })
                        .expect("spawn a fuzz worker")
                })
                .collect();
            for w in workers {
                w.join().expect("fuzz worker");
            }
        });
        let _ = std::fs::remove_dir_all(&self.base);
        let mut rep = report.into_inner().unwrap();
        rep.seconds = t0.elapsed().as_secs_f64();
        rep
    }

    fn watchdog(&self, done: &AtomicBool) {
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let starts = STARTS.lock().unwrap_or_else(|e| e.into_inner());
            let hung = starts.iter().find_map(|(n, (t, d))| {
                (t.elapsed() > self.limits.hang).then(|| format!("mutant {n}: {d}"))
            });
            if let Some(m) = hung {
                eprintln!("\nfuzz: HANG over {:?}: {m}", self.limits.hang);
                std::process::abort();
            }
        }
    }
}

static STARTS: Mutex<BTreeMap<u64, (Instant, String)>> = Mutex::new(BTreeMap::new());
