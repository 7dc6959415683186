//! `Target`: the device a layer runs on, as the oracle sees it (capabilities) and as the
//! backends need it (a handle).

use crate::device::{Capabilities, Device};
#[cfg(any(feature = "cuda", feature = "rocm"))]
use crate::error::Result;

/// Where a layer runs.
pub struct Target {
    caps: Capabilities,
    #[cfg(feature = "cuda")]
    cuda: Option<std::sync::Arc<crate::device::cuda::CudaDevice>>,
    #[cfg(feature = "rocm")]
    hip: Option<std::sync::Arc<crate::device::hip::HipDevice>>,
}

impl Target {
    /// The host CPU.
    pub fn cpu() -> Self {
        Target {
            caps: crate::device::cpu::CpuDevice::new().capabilities().clone(),
            #[cfg(feature = "cuda")]
            cuda: None,
            #[cfg(feature = "rocm")]
            hip: None,
        }
    }

    /// NVIDIA GPU `ordinal`; `Error::NoDevice` (with the reason) when there is none.
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize) -> Result<Self> {
        let dev = crate::device::cuda::CudaDevice::new(ordinal)?;
        Ok(Target {
            caps: dev.capabilities().clone(),
            cuda: Some(std::sync::Arc::new(dev)),
            #[cfg(feature = "rocm")]
            hip: None,
        })
    }

    /// AMD GPU `ordinal`; `Error::NoDevice` (with the reason) when there is none.
    #[cfg(feature = "rocm")]
    pub fn hip(ordinal: usize) -> Result<Self> {
        let dev = crate::device::hip::HipDevice::new(ordinal)?;
        Ok(Target {
            caps: dev.capabilities().clone(),
            #[cfg(feature = "cuda")]
            cuda: None,
            hip: Some(std::sync::Arc::new(dev)),
        })
    }

    /// The AMD device, when the target is one.
    #[cfg(feature = "rocm")]
    pub fn hip_device(&self) -> Option<&std::sync::Arc<crate::device::hip::HipDevice>> {
        self.hip.as_ref()
    }

    /// The best device present: a GPU when a backend feature is built and a driver
    /// answers, otherwise the CPU (the reason a GPU was not used is logged).
    pub fn detect() -> Self {
        #[cfg(feature = "cuda")]
        match Self::cuda(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no CUDA device: {e}"),
        }
        #[cfg(feature = "rocm")]
        match Self::hip(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no AMD GPU: {e}"),
        }
        Self::cpu()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The CUDA device, when the target is one.
    #[cfg(feature = "cuda")]
    pub fn cuda_device(&self) -> Option<&std::sync::Arc<crate::device::cuda::CudaDevice>> {
        self.cuda.as_ref()
    }
}
