//! `HipDevice` in a build without feature `rocm` (see `stub.rs`).

super::stub::stub_device!(HipDevice, HipKernels, HipStream, "AMD GPU", "rocm");
