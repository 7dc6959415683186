//! Builds the AMD code objects of `kernels-hip/*.hip` when feature `rocm` is on.
//!
//! AMD GPUs load ahead-of-time code objects (Debian's hiprtc aborts on gfx942, so nothing
//! is compiled at run time). With `rocm`, each kernel file is compiled by clang
//! (`$FLEETMOE_HIP_CLANG`, else `clang-22`, else `clang`; `none` builds none) for gfx90a, gfx942 and gfx950 with
//! `-x hip --cuda-device-only -nogpuinc -nogpulib` — the kernels include only their own
//! `prelude.h` — and embedded into the crate. Without a usable clang the build still
//! succeeds, with a warning, and embeds no code objects: AMD GPUs then run the emulation
//! (`HipDevice::load_module` says why). `FLEETMOE_REQUIRE_HIP_CLANG=1` (CI) turns that into
//! an error. A kernel that fails to compile with a clang that was found is always an error.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: &[&str] = &["gfx90a", "gfx942", "gfx950"];
const FILES: &[&str] = &["align", "route", "quant", "gemm", "lora"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels-hip");
    println!("cargo:rerun-if-changed=kernels-common");
    println!("cargo:rerun-if-env-changed=FLEETMOE_HIP_CLANG");
    println!("cargo:rerun-if-env-changed=FLEETMOE_REQUIRE_HIP_CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("hip");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/hip");
    if std::env::var_os("CARGO_FEATURE_ROCM").is_none() {
        // The AMD backend's Rust is always built; without the feature it embeds no code.
        let mut table = String::from("pub const CODE_OBJECTS: &[(&str, &[CodeObject])] = &[\n");
        for file in FILES {
            table.push_str(&format!("    (\"{file}\", &[]),\n"));
        }
        table.push_str("];\npub const BUILD_NOTE: &str = \"not built: feature rocm is off\";\n");
        std::fs::write(out.join("code_objects.rs"), table).expect("write code_objects.rs");
        return;
    }
    let clang = find_clang();
    let mut table = String::from(
        "/// `(file, [(gfx target, code object)])` for every kernels-hip file.\n\
         pub const CODE_OBJECTS: &[(&str, &[CodeObject])] = &[\n",
    );
    let note = match &clang {
        Some((path, version)) => {
            let jobs: Vec<_> = FILES
                .iter()
                .flat_map(|f| TARGETS.iter().map(move |t| (*f, *t)))
                .map(|(file, target)| {
                    let (path, out) = (path.clone(), out.clone());
                    std::thread::spawn(move || compile(&path, file, target, &out))
                })
                .collect();
            for j in jobs {
                if let Err(e) = j.join().expect("compile thread") {
                    panic!("{e}");
                }
            }
            format!("built by {version}")
        }
        None => {
            // `fleetmoe info` prints the note: say which of the two it was.
            let asked = std::env::var("FLEETMOE_HIP_CLANG").as_deref() == Ok("none");
            let (found, note) = if asked {
                (
                    "FLEETMOE_HIP_CLANG=none",
                    "not built: FLEETMOE_HIP_CLANG=none asked for none",
                )
            } else {
                (
                    "no clang with AMDGPU support found (install clang-22 and lld-22, or set \
                     FLEETMOE_HIP_CLANG)",
                    "not built: no clang with AMDGPU support was found",
                )
            };
            let why = format!(
                "{found}: HIP code objects are not built and AMD GPUs will run the emulation"
            );
            if std::env::var_os("FLEETMOE_REQUIRE_HIP_CLANG").is_some() {
                panic!("FLEETMOE_REQUIRE_HIP_CLANG is set but {why}");
            }
            println!("cargo:warning=fleetmoe: {why}");
            note.to_string()
        }
    };
    for file in FILES {
        table.push_str(&format!("    (\"{file}\", &["));
        if clang.is_some() {
            for t in TARGETS {
                let co = out.join(format!("{file}-{t}.co"));
                table.push_str(&format!("(\"{t}\", include_bytes!({:?})), ", co.display()));
            }
        }
        table.push_str("]),\n");
    }
    table.push_str("];\n");
    table.push_str(&format!(
        "/// How the code objects were made.\npub const BUILD_NOTE: &str = {note:?};\n"
    ));
    std::fs::write(out.join("code_objects.rs"), table).expect("write code_objects.rs");
}

/// A clang that compiles HIP device code for every target, with its version line.
fn find_clang() -> Option<(String, String)> {
    if std::env::var("FLEETMOE_HIP_CLANG").as_deref() == Ok("none") {
        return None;
    }
    let candidates: Vec<String> = std::env::var("FLEETMOE_HIP_CLANG")
        .ok()
        .into_iter()
        .chain(["clang-22".to_string(), "clang".to_string()])
        .collect();
    for c in candidates {
        let Ok(o) = Command::new(&c).arg("--version").output() else {
            continue;
        };
        if !o.status.success() {
            continue;
        }
        let version = String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        // gfx950 needs LLVM 20 or newer.
        let major = version
            .split("version ")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if major >= 20 {
            return Some((c, version));
        }
    }
    None
}

fn compile(clang: &str, file: &str, target: &str, out: &Path) -> Result<(), String> {
    let src = Path::new("kernels-hip").join(format!("{file}.hip"));
    let dst = out.join(format!("{file}-{target}.co"));
    let o = Command::new(clang)
        .args(hip_flags(target))
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .output()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "kernels-hip/{file}.hip failed to compile for {target}:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

/// The clang flags for one target (`.ci/rocm` uses the same through `cargo build`).
fn hip_flags(target: &str) -> Vec<String> {
    [
        "-x",
        "hip",
        "--cuda-device-only",
        "--no-gpu-bundle-output",
        "-nogpuinc",
        "-nogpulib",
        "-O3",
        "-Wall",
        "-Werror",
        // Code object v5: read by the ROCm 5.x late, 6.x and 7.x runtimes.
        "-mcode-object-version=5",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--offload-arch={target}")])
    .collect()
}
