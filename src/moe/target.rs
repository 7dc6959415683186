//! `Target`: the device a layer runs on, as the oracle sees it (capabilities) and as the
//! backends need it (a handle).

use crate::device::{Capabilities, Device};

/// Where a layer runs.
pub struct Target {
    caps: Capabilities,
}

impl Target {
    /// The host CPU.
    pub fn cpu() -> Self {
        Target {
            caps: crate::device::cpu::CpuDevice::new().capabilities().clone(),
        }
    }

    /// The best device present: a GPU when a backend feature is built and a driver
    /// answers, otherwise the CPU.
    pub fn detect() -> Self {
        Self::cpu()
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
}
