//! `HipDevice` on whatever machine runs the tests. No AMD GPU has been available to this
//! project: on a machine without one (with or without the ROCm runtime installed) opening
//! a device must be `Error::NoDevice`, never a panic or another error.
#![cfg(feature = "rocm")]

use fleetmoe::device::hip::HipDevice;
use fleetmoe::device::Runtime;
use fleetmoe::moe::Target;
use fleetmoe::Error;

#[test]
fn opening_an_amd_gpu_is_a_device_or_no_device() {
    match HipDevice::new(0) {
        Ok(dev) => {
            let caps = dev.capabilities();
            println!("AMD GPU found: {caps}");
            assert!(caps.arch.starts_with("gfx"));
            assert_eq!(caps.warp_size, 64, "CDNA wavefronts are 64 wide");
        }
        Err(Error::NoDevice(why)) => println!("skipped the device checks, no AMD GPU: {why}"),
        Err(other) => panic!("expected Error::NoDevice without an AMD GPU, got: {other}"),
    }
}

#[test]
fn a_missing_ordinal_is_no_device() {
    assert!(matches!(HipDevice::new(1 << 20), Err(Error::NoDevice(_))));
}

#[test]
fn detect_falls_back_to_the_cpu_without_a_gpu() {
    let t = Target::detect();
    if t.hip_device().is_none() {
        assert!(t.capabilities().vendor != fleetmoe::device::Vendor::Amd);
    }
}
