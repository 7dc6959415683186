//! The host as a `Device` (implementation in progress).

/// A table of host functions that a `CpuDevice` can launch by name.
#[derive(Debug)]
pub struct HostModule {
    pub name: &'static str,
    pub kernels: &'static [(&'static str, HostKernel)],
}

/// A host kernel: gets the launch shape, the arguments, and the bytes of every buffer
/// argument (in argument order, mutable).
pub type HostKernel =
    fn(&super::LaunchConfig, &[super::Arg], &mut [&mut [u8]]) -> crate::Result<()>;
