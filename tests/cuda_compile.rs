//! CI compile check without a GPU: every `kernels-cuda/*.cu` (with the prelude, and every
//! GEMM variant) must compile with NVRTC for sm_80, sm_89, sm_90a and sm_100a. Skips with a
//! printed reason when libnvrtc is not installed (`pip install nvidia-cuda-nvrtc` and put
//! its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`); CI sets FLEETMOE_REQUIRE_NVRTC so that
//! there a missing library fails instead.
#![cfg(feature = "cuda")]

use fleetmoe::backends::cuda::kernels::{module_source, GemmVariant, SOURCES};
use fleetmoe::device::cuda::nvrtc;

const ARCHS: &[&str] = &["sm_80", "sm_89", "sm_90a", "sm_100a"];

/// One compilation: file, GEMM variant (for gemm.cu), target.
fn jobs() -> Vec<(&'static str, Option<GemmVariant>, &'static str)> {
    let mut jobs = Vec::new();
    for arch in ARCHS {
        for (file, _) in SOURCES {
            if *file == "gemm.cu" {
                jobs.extend(GemmVariant::ALL.iter().map(|v| (*file, Some(*v), *arch)));
            } else {
                jobs.push((*file, None, *arch));
            }
        }
    }
    jobs
}

fn compile(file: &str, variant: Option<GemmVariant>, arch: &str) -> Result<String, String> {
    let defines = variant
        .map(|v| vec![("FM_VARIANT", (v as u32).to_string())])
        .unwrap_or_default();
    let defs: Vec<(&str, &str)> = defines.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let src = module_source(file, &defs).expect("known file");
    let t = std::time::Instant::now();
    nvrtc::compile_cubin(file, &src, arch)
        .map(|cubin| {
            format!(
                "ok   {arch:8} {file} {variant:?}: {} bytes in {:.1}s",
                cubin.len(),
                t.elapsed().as_secs_f32()
            )
        })
        .map_err(|e| format!("FAIL {arch:8} {file} {variant:?}: {e}"))
}

#[test]
fn every_kernel_compiles_for_every_target() {
    if !nvrtc::nvrtc_available() {
        assert!(
            std::env::var_os("FLEETMOE_REQUIRE_NVRTC").is_none(),
            "FLEETMOE_REQUIRE_NVRTC is set but libnvrtc was not found (LD_LIBRARY_PATH?)"
        );
        println!("skipped: libnvrtc not found");
        return;
    }
    let (ma, mi) = nvrtc::nvrtc_version().expect("nvrtc version");
    println!("NVRTC {ma}.{mi}");
    // NVRTC is thread-safe per program; spread the compilations over the cores.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let jobs = jobs();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(file, variant, arch)) = jobs.get(i) else {
                    break;
                };
                let r = compile(file, variant, arch);
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (_, r) in results {
        match r {
            Ok(line) => println!("{line}"),
            Err(line) => {
                println!("{line}");
                failures.push(line);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} kernels failed to compile",
        failures.len()
    );
}

/// The kernel faults of the mutation tests (`fleetmoe::fault`) compile too, so
/// `scripts/mutants.sh gpu` tests a planted bug rather than a compile error; each define
/// must be tested by some kernel file.
#[test]
fn planted_kernel_faults_compile() {
    if !nvrtc::nvrtc_available() {
        assert!(std::env::var_os("FLEETMOE_REQUIRE_NVRTC").is_none());
        println!("skipped: libnvrtc not found");
        return;
    }
    for fault in fleetmoe::fault::Fault::ALL {
        let Some(define) = fault.kernel_define() else {
            continue;
        };
        let files: Vec<&str> = SOURCES
            .iter()
            .filter(|(_, body)| body.contains(define))
            .map(|(f, _)| *f)
            .collect();
        assert!(!files.is_empty(), "no kernel file tests {define}");
        for file in files {
            let src = format!("#define {define} 1\n{}", module_source(file, &[]).unwrap());
            nvrtc::compile_cubin(file, &src, "sm_90a")
                .unwrap_or_else(|e| panic!("{file} with {define}: {e}"));
            println!("ok   sm_90a   {file} with {define}");
        }
    }
}
