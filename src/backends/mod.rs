//! Native experts backends. Each owns its weight layout (prepared once from
//! `ExpertWeights`) and implements `moe::Experts`.

#[cfg(feature = "cuda")]
pub mod cuda;
