//! `Target`: the device a layer runs on, as the oracle sees it (capabilities) and as the
//! GPU driver needs it (a runtime handle). Every variant exists in every build; without
//! feature `cuda` (`rocm`) the CUDA (HIP) device cannot be opened, and says so.

use crate::device::cuda::CudaDevice;
use crate::device::hip::HipDevice;
use crate::device::{Capabilities, Runtime};
use crate::error::Result;
use std::sync::Arc;

/// Where a layer runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// The host CPU (the emulation).
    Cpu(Capabilities),
    /// An NVIDIA GPU.
    Cuda(Arc<CudaDevice>),
    /// An AMD GPU.
    Hip(Arc<HipDevice>),
}

impl Target {
    /// The host CPU.
    pub fn cpu() -> Self {
        Target::Cpu(crate::device::cpu::capabilities())
    }

    /// NVIDIA GPU `ordinal`; `Error::NoDevice` (with the reason) when there is none or
    /// this build has no CUDA support.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Target::Cuda(Arc::new(CudaDevice::new(ordinal)?)))
    }

    /// AMD GPU `ordinal`; `Error::NoDevice` (with the reason) when there is none or this
    /// build has no ROCm support.
    pub fn hip(ordinal: usize) -> Result<Self> {
        Ok(Target::Hip(Arc::new(HipDevice::new(ordinal)?)))
    }

    /// The best device present: a GPU when a backend feature is built and a driver
    /// answers, otherwise the CPU (the reason a GPU was not used is logged).
    pub fn detect() -> Self {
        match Self::cuda(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no CUDA device: {e}"),
        }
        match Self::hip(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no AMD GPU: {e}"),
        }
        Self::cpu()
    }

    pub fn capabilities(&self) -> &Capabilities {
        match self {
            Target::Cpu(c) => c,
            Target::Cuda(d) => d.capabilities(),
            Target::Hip(d) => d.capabilities(),
        }
    }

    /// The CUDA device, when the target is one.
    pub fn cuda_device(&self) -> Option<&Arc<CudaDevice>> {
        match self {
            Target::Cuda(d) => Some(d),
            Target::Cpu(_) | Target::Hip(_) => None,
        }
    }

    /// The AMD device, when the target is one.
    pub fn hip_device(&self) -> Option<&Arc<HipDevice>> {
        match self {
            Target::Hip(d) => Some(d),
            Target::Cpu(_) | Target::Cuda(_) => None,
        }
    }
}
