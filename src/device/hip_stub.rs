//! `HipDevice` in a build without feature `rocm`: a type with no values, so the one GPU
//! driver and `Target::Hip` compile everywhere, and opening a device says why it cannot.

use super::{Arg, Capabilities, LaunchConfig, ModuleSource, Runtime};
use crate::error::{Error, Result};

/// No ROCm in this build: never constructed.
#[derive(Debug)]
pub enum HipDevice {}

impl HipDevice {
    /// Always `Error::NoDevice`: this build has no ROCm support.
    pub fn new(ordinal: usize) -> Result<HipDevice> {
        Err(Error::NoDevice(format!(
            "AMD GPU {ordinal}: this build of fleetmoe has no ROCm support (build with --features rocm)"
        )))
    }

    pub fn ordinal(&self) -> usize {
        match *self {}
    }
}

/// No kernels without the feature: never constructed.
#[derive(Debug)]
pub enum HipKernels {}

/// No streams without the feature: never constructed.
#[derive(Debug, Clone, Copy)]
pub enum HipStream {}

impl Runtime for HipDevice {
    type Stream = HipStream;
    type Alloc = std::convert::Infallible;
    type Module = HipKernels;

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
