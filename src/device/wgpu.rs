//! `WgpuDevice`: the wgpu runtime (being written; issue 20).
