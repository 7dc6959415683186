//! Native experts backends. Each owns its weight layout (prepared once from
//! `ExpertWeights`) and implements `moe::Experts`.

pub mod cuda;
pub mod rocm;
pub mod wgpu;
