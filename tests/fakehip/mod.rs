//! The CPU stand-in for the HIP runtime (`kernels-hip/sim/fakehip.cpp`), built per gfx
//! target with clang++ and shared by the simulator tests (`rocm_sim`, `rocm_sim_decode`).
//! Skipped with a message where no clang++ is found, a failure where
//! `FLEETMOE_REQUIRE_HIP_CLANG` is set (CI).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// `HipDevice::new` opens the runtime `FLEETMOE_HIP_LIB` names; the tests of this binary
/// take turns setting it, and share the stand-ins they build (one per gfx target).
static STAND_INS: Mutex<Option<StandIns>> = Mutex::new(None);

/// The stand-in runtime built for each gfx target.
pub type StandIns = HashMap<u32, PathBuf>;

/// The simulator's prerequisites: a clang++ and a build with code objects. `None` (the
/// test is skipped, saying why) only where CI's `FLEETMOE_REQUIRE_HIP_CLANG` is unset.
pub fn simulator() -> Option<(String, MutexGuard<'static, Option<StandIns>>)> {
    let required = std::env::var_os("FLEETMOE_REQUIRE_HIP_CLANG").is_some();
    let Some(clang) = clang() else {
        assert!(
            !required,
            "FLEETMOE_REQUIRE_HIP_CLANG is set but no clang++ was found"
        );
        println!("skipped: no clang++ to build the HIP stand-in (install clang-22)");
        return None;
    };
    if !fleetmoe::backends::rocm::kernels::built() {
        let note = fleetmoe::backends::rocm::kernels::BUILD_NOTE;
        assert!(!required, "FLEETMOE_REQUIRE_HIP_CLANG is set but: {note}");
        println!("skipped: this build embeds no HIP code objects ({note})");
        return None;
    }
    let guard = STAND_INS.lock().unwrap_or_else(|e| e.into_inner());
    Some((clang, guard))
}

/// Points `FLEETMOE_HIP_LIB` at the stand-in for `gfx`, building it on first use.
pub fn use_stand_in(clang: &str, stand_ins: &mut Option<StandIns>, gfx: u32) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fakehip");
    std::fs::create_dir_all(&dir).unwrap();
    let lib = stand_ins
        .get_or_insert_with(HashMap::new)
        .entry(gfx)
        .or_insert_with(|| build_stand_in(clang, gfx, &dir))
        .clone();
    // SAFETY (edition 2021: safe): every test here sets it under the STAND_INS lock.
    std::env::set_var("FLEETMOE_HIP_LIB", lib);
}

fn clang() -> Option<String> {
    ["clang++-22", "clang++"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

/// Builds the stand-in for `gfx`; each test binary builds its own, into its own file, so
/// two binaries running at once never load a library the other is writing.
fn build_stand_in(clang: &str, gfx: u32, dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().expect("the test binary's path");
    let binary = exe.file_stem().expect("a file name").to_string_lossy();
    // A fault planted in kernel code (FLEETMOE_FAULT, feature `faults`) is compiled into
    // its own stand-in.
    let fault = fleetmoe::fault::active();
    let define = fault.and_then(|f| f.kernel_define());
    let tag = fault.map_or(String::new(), |f| format!("-{}", f.name()));
    let out = dir.join(format!("libfakehip-{gfx}-{binary}{tag}.so"));
    let o = Command::new(clang)
        .args(define.map(|d| format!("-D{d}")))
        .args([
            "-std=c++20",
            "-O2",
            "-shared",
            "-fPIC",
            "-Wno-psabi",
            "-DFM_SIM",
        ])
        .arg(format!("-DFM_SIM_GFX={gfx}"))
        .arg("-I")
        .arg(root.join("kernels-hip"))
        .arg(root.join("kernels-hip/sim/fakehip.cpp"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run clang++");
    assert!(
        o.status.success(),
        "the HIP stand-in failed to build:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
