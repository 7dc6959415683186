//! The `Device` trait — what fleetmoe needs from a GPU runtime or the host — and its
//! implementations. The trait speaks in opaque handles (buffers, streams, modules) rather
//! than raw pointers, so CUDA, HIP and a WGSL/wgpu backend (buffers bound to pipelines)
//! all fit it unchanged.

pub mod caps;

pub use caps::{Capabilities, Vendor};

use crate::error::Result;

/// A device allocation. Only the device that made it can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// Device-local identifier.
    pub id: u64,
    /// Size in bytes.
    pub bytes: usize,
}

/// An ordered queue of work. `Stream::DEFAULT` always exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream(pub u64);

impl Stream {
    pub const DEFAULT: Stream = Stream(0);
}

/// A loaded kernel module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Module(pub u64);

/// Source of a kernel module; each device accepts the kinds it can load.
#[derive(Debug, Clone, Copy)]
pub enum ModuleSource<'a> {
    /// CUDA C++ compiled at run time by NVRTC for the exact device.
    Cuda { name: &'a str, source: &'a str },
    /// Ahead-of-time AMD code objects, one per gfx target (`("gfx942", bytes)`).
    Hip {
        name: &'a str,
        code_objects: &'a [(&'a str, &'a [u8])],
    },
    /// WGSL compute shader source.
    Wgsl { name: &'a str, source: &'a str },
    /// Host functions, for the CPU device.
    Host(&'a crate::device::cpu::HostModule),
}

impl ModuleSource<'_> {
    pub fn name(&self) -> &str {
        match self {
            ModuleSource::Cuda { name, .. }
            | ModuleSource::Hip { name, .. }
            | ModuleSource::Wgsl { name, .. } => name,
            ModuleSource::Host(m) => m.name,
        }
    }
}

/// Grid, block and dynamic shared memory of a launch (workgroups on wgpu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

/// One kernel argument: a buffer handle (bound or turned into a pointer by the device) or
/// a scalar passed by value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Buffer(Buffer),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
}

impl Arg {
    /// The argument in its own 8-byte little-endian slot, a buffer as its device address
    /// (`device_ptr`): what `cuLaunchKernel` and `hipModuleLaunchKernel` read for 4- and
    /// 8-byte parameters.
    pub fn slot(self, device_ptr: impl Fn(Buffer) -> Result<u64>) -> Result<u64> {
        Ok(match self {
            Arg::Buffer(b) => device_ptr(b)?,
            Arg::U32(v) => v as u64,
            Arg::I32(v) => v as u32 as u64,
            Arg::U64(v) => v,
            Arg::F32(v) => v.to_bits() as u64,
        })
    }
}

/// What fleetmoe needs from a device. Implementations: `cpu::CpuDevice` (always),
/// `cuda::CudaDevice` (feature `cuda`), `hip::HipDevice` (feature `rocm`).
pub trait Device: Send + Sync {
    /// What the device can do; the oracle decides from this alone.
    fn capabilities(&self) -> &Capabilities;
    /// Allocates `bytes` of device memory (contents undefined).
    fn alloc(&self, bytes: usize) -> Result<Buffer>;
    /// Releases a buffer; using it afterwards is an `Error::Handle`.
    fn free(&self, buffer: Buffer) -> Result<()>;
    /// Copies host bytes into `buffer` at `offset`, ordered on `stream`.
    fn write(&self, buffer: Buffer, offset: usize, data: &[u8], stream: Stream) -> Result<()>;
    /// Copies bytes out of `buffer` at `offset`; waits for `stream` first.
    fn read(&self, buffer: Buffer, offset: usize, out: &mut [u8], stream: Stream) -> Result<()>;
    /// Creates another stream, so independent work (shared experts) can overlap.
    fn create_stream(&self) -> Result<Stream>;
    /// Blocks until all work queued on `stream` is done.
    fn synchronize(&self, stream: Stream) -> Result<()>;
    /// Loads (compiling if needed) a module of kernels.
    fn load_module(&self, source: &ModuleSource<'_>) -> Result<Module>;
    /// Queues `kernel` from `module` on `stream`.
    fn launch(
        &self,
        module: Module,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg],
        stream: Stream,
    ) -> Result<()>;
}

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gfx;
#[cfg(feature = "rocm")]
pub mod hip;
