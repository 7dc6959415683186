//! `fleetmoe parity` on a node with a native backend: the HIP stand-in
//! (`kernels-hip/sim`, see tests/rocm_sim.rs) makes this CPU an MI300X, so the command
//! checks the AITER backends against the emulation as it would on a GPU node: every row
//! names its backend, the run exits 0; and, in a build with feature `faults`, a planted
//! layout bug makes it print FAIL and exit non-zero.
#![cfg(feature = "rocm")]

mod fakehip;

use std::process::{Command, Output};

fn parity(lib: &std::ffi::OsStr, fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetmoe"));
    cmd.args([
        "parity",
        "--shapes",
        "small",
        "--schemes",
        "bf16,fp8-channel,mxfp4",
        "--tokens",
        "5",
    ])
    .env("FLEETMOE_HIP_LIB", lib)
    .env_remove("FLEETMOE_FAULT");
    if let Some(f) = fault {
        cmd.env("FLEETMOE_FAULT", f);
    }
    cmd.output().expect("the fleetmoe binary runs")
}

#[test]
fn parity_checks_the_amd_backends_on_the_simulator() {
    let Some((clang, mut stand_ins)) = fakehip::simulator() else {
        return;
    };
    fakehip::use_stand_in(&clang, &mut stand_ins, 942);
    let lib = std::env::var_os("FLEETMOE_HIP_LIB").expect("use_stand_in sets it");
    let o = parity(&lib, None);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    // Under scripts/mutants.sh a fault is planted in this process too: the child then runs
    // without it, so this half must still pass.
    assert!(o.status.success(), "{out}\n{err}");
    for backend in ["aiter-bf16", "aiter-fp8", "aiter-mxfp4"] {
        assert!(
            out.lines()
                .any(|l| l.contains(backend) && l.contains(" ok ")),
            "no passing {backend} row in:\n{out}"
        );
    }
    assert!(out.contains("0 failed"), "{out}");

    if cfg!(feature = "faults") {
        // Each row's per-channel fp8 scale read from the next row: parity must catch it.
        let o = parity(&lib, Some("scale-next-row"));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!o.status.success(), "a planted fault passed parity:\n{out}");
        assert!(out.contains("FAIL"), "{out}");
    } else {
        println!("the planted-fault half needs feature `faults` (scripts/mutants.sh sim)");
    }
}
