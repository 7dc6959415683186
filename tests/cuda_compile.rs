//! CI compile check without a GPU: every `kernels-cuda/*.cu` (with the prelude, and every
//! GEMM variant) must compile with NVRTC for sm_80, sm_89, sm_90a and sm_100a. Skips with a
//! printed reason when libnvrtc is not installed (`pip install nvidia-cuda-nvrtc` and put
//! its `nvidia/cu13/lib` on `LD_LIBRARY_PATH`).
#![cfg(feature = "cuda")]

use fleetmoe::backends::cuda::kernels::{module_source, GemmVariant, SOURCES};
use fleetmoe::device::cuda::nvrtc;

const ARCHS: &[&str] = &["sm_80", "sm_89", "sm_90a", "sm_100a"];

#[test]
fn every_kernel_compiles_for_every_target() {
    if !nvrtc::nvrtc_available() {
        // CI installs NVRTC and sets FLEETMOE_REQUIRE_NVRTC, so there a missing library fails.
        assert!(
            std::env::var_os("FLEETMOE_REQUIRE_NVRTC").is_none(),
            "FLEETMOE_REQUIRE_NVRTC is set but libnvrtc was not found (LD_LIBRARY_PATH?)"
        );
        println!("skipped: libnvrtc not found");
        return;
    }
    let (ma, mi) = nvrtc::nvrtc_version().expect("nvrtc version");
    println!("NVRTC {ma}.{mi}");
    let mut failures = Vec::new();
    for arch in ARCHS {
        for (file, _) in SOURCES {
            let variants: Vec<Option<GemmVariant>> = if *file == "gemm.cu" {
                GemmVariant::ALL.iter().copied().map(Some).collect()
            } else {
                vec![None]
            };
            for v in variants {
                let defines = v
                    .map(|v| vec![("FM_VARIANT", (v as u32).to_string())])
                    .unwrap_or_default();
                let defs: Vec<(&str, &str)> =
                    defines.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let src = module_source(file, &defs).expect("known file");
                let t = std::time::Instant::now();
                match nvrtc::compile_cubin(file, &src, arch) {
                    Ok(cubin) => println!(
                        "ok   {arch:8} {file} {v:?}: {} bytes in {:.1}s",
                        cubin.len(),
                        t.elapsed().as_secs_f32()
                    ),
                    Err(e) => {
                        println!("FAIL {arch:8} {file} {v:?}: {e}");
                        failures.push(format!("{arch} {file} {v:?}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "kernels failed to compile: {failures:?}"
    );
}
