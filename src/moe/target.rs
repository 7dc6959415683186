//! `Target`: the device a layer runs on, as the oracle sees it (capabilities) and as the
//! GPU driver needs it (a runtime handle). Every variant exists in every build; without
//! feature `cuda` (`rocm`, `wgpu`) the CUDA (HIP, wgpu) device cannot be opened, and says
//! so.

use crate::device::cuda::CudaDevice;
use crate::device::hip::HipDevice;
use crate::device::wgpu::WgpuDevice;
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
    /// A device opened through wgpu (Vulkan, Metal, DX12), whoever made it.
    Wgpu(Arc<WgpuDevice>),
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

    /// wgpu adapter `ordinal`; `Error::NoDevice` (with the reason) when there is none or
    /// this build has no wgpu support.
    pub fn wgpu(ordinal: usize) -> Result<Self> {
        Ok(Target::Wgpu(Arc::new(WgpuDevice::new(ordinal)?)))
    }

    /// The best device present: a GPU when a backend feature is built and a driver
    /// answers (CUDA, then HIP, then a wgpu adapter that is not a software rasterizer such
    /// as lavapipe: `Target::wgpu` opens those), otherwise the CPU (the reason a GPU was
    /// not used is logged). Without a feature its device is refused at once, so a build
    /// without `wgpu` never starts a wgpu instance here. `FLEETMOE_DEVICE=cuda|hip|wgpu|cpu`
    /// names the device instead (device 0 of that kind; the CPU, with a warning, when it
    /// cannot be opened), e.g. to run an NVIDIA GPU through Vulkan.
    pub fn detect() -> Self {
        match std::env::var("FLEETMOE_DEVICE").as_deref() {
            Err(_) | Ok("") => {}
            Ok(name) => {
                let opened = match name {
                    "cuda" => Self::cuda(0),
                    "hip" => Self::hip(0),
                    "wgpu" => Self::wgpu(0),
                    "cpu" => Ok(Self::cpu()),
                    other => Err(crate::Error::Config(format!(
                        "unknown device kind `{other}` (cuda, hip, wgpu or cpu)"
                    ))),
                };
                return opened.unwrap_or_else(|e| {
                    log::warn!("FLEETMOE_DEVICE={name}: {e}; running on the CPU");
                    Self::cpu()
                });
            }
        }
        match Self::cuda(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no CUDA device: {e}"),
        }
        match Self::hip(0) {
            Ok(t) => return t,
            Err(e) => log::info!("no AMD GPU: {e}"),
        }
        match WgpuDevice::new(0) {
            Ok(d) if is_software(&d) => log::info!(
                "wgpu adapter {} is a software rasterizer on this CPU: the emulation is faster",
                d.capabilities().name
            ),
            Ok(d) => return Target::Wgpu(Arc::new(d)),
            Err(e) => log::info!("no wgpu adapter: {e}"),
        }
        Self::cpu()
    }

    pub fn capabilities(&self) -> &Capabilities {
        match self {
            Target::Cpu(c) => c,
            Target::Cuda(d) => d.capabilities(),
            Target::Hip(d) => d.capabilities(),
            Target::Wgpu(d) => d.capabilities(),
        }
    }

    /// The CUDA device, when the target is one.
    pub fn cuda_device(&self) -> Option<&Arc<CudaDevice>> {
        match self {
            Target::Cuda(d) => Some(d),
            Target::Cpu(_) | Target::Hip(_) | Target::Wgpu(_) => None,
        }
    }

    /// The AMD device, when the target is one.
    pub fn hip_device(&self) -> Option<&Arc<HipDevice>> {
        match self {
            Target::Hip(d) => Some(d),
            Target::Cpu(_) | Target::Cuda(_) | Target::Wgpu(_) => None,
        }
    }

    /// The wgpu device, when the target is one.
    pub fn wgpu_device(&self) -> Option<&Arc<WgpuDevice>> {
        match self {
            Target::Wgpu(d) => Some(d),
            Target::Cpu(_) | Target::Cuda(_) | Target::Hip(_) => None,
        }
    }
}

/// Whether a wgpu adapter runs on the host CPU (lavapipe, SwiftShader, WARP).
#[cfg(feature = "wgpu")]
fn is_software(d: &WgpuDevice) -> bool {
    d.adapter_info().device_type == ::wgpu::DeviceType::Cpu
}

/// Without feature `wgpu` no adapter opens.
#[cfg(not(feature = "wgpu"))]
fn is_software(d: &WgpuDevice) -> bool {
    match *d {}
}
