//! `WgpuDevice` in a build without feature `wgpu` (see `stub.rs`).

super::stub::stub_device!(WgpuDevice, WgpuKernels, WgpuStream, "wgpu adapter", "wgpu");
