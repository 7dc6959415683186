//! `CudaDevice` in a build without feature `cuda`: a type with no values, so the one GPU
//! driver and `Target::Cuda` compile everywhere, and opening a device says why it cannot.

use super::{Arg, Capabilities, LaunchConfig, ModuleSource, Runtime};
use crate::error::{Error, Result};

/// No CUDA in this build: never constructed.
#[derive(Debug)]
pub enum CudaDevice {}

/// Whether libcuda can be loaded: never, without feature `cuda`.
pub fn driver_present() -> bool {
    false
}

impl CudaDevice {
    /// Always `Error::NoDevice`: this build has no CUDA support.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        Err(Error::NoDevice(format!(
            "CUDA device {ordinal}: this build of fleetmoe has no CUDA support (build with --features cuda)"
        )))
    }

    pub fn ordinal(&self) -> usize {
        match *self {}
    }
}

/// No kernels without the feature: never constructed.
#[derive(Debug)]
pub enum CudaKernels {}

impl Runtime for CudaDevice {
    type Stream = std::convert::Infallible;
    type Alloc = std::convert::Infallible;
    type Module = CudaKernels;

    fn capabilities(&self) -> &Capabilities {
        match *self {}
    }
    fn stream(&self) -> &Self::Stream {
        match *self {}
    }
    fn check_stream(&self, _: &Self::Stream) -> Result<()> {
        match *self {}
    }
    fn alloc(&self, _: usize) -> Result<Self::Alloc> {
        match *self {}
    }
    fn address(&self, _: &Self::Alloc) -> u64 {
        match *self {}
    }
    fn upload(&self, _: u64, _: &[u8], _: &Self::Stream) -> Result<()> {
        match *self {}
    }
    fn download(&self, _: u64, _: &mut [u8], _: &Self::Stream) -> Result<()> {
        match *self {}
    }
    fn zero(&self, _: u64, _: usize, _: &Self::Stream) -> Result<()> {
        match *self {}
    }
    fn synchronize(&self, _: &Self::Stream) -> Result<()> {
        match *self {}
    }
    fn load(&self, _: &ModuleSource<'_>) -> Result<Self::Module> {
        match *self {}
    }
    fn launch(
        &self,
        _: &Self::Module,
        _: &str,
        _: LaunchConfig,
        _: &[Arg<'_>],
        _: &Self::Stream,
    ) -> Result<()> {
        match *self {}
    }
}
