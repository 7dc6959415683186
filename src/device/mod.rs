//! The GPU runtime seam: the `Runtime` trait — streams, buffers, kernel modules, launches —
//! that the one GPU driver (`crate::gpu`) is written against, and its implementations:
//! `cuda::CudaDevice` (feature `cuda`: cudarc's safe layer, NVRTC) and `hip::HipDevice`
//! (feature `rocm`: the HIP runtime opened at run time). With a feature off, its device is
//! a stub that cannot be constructed (`Target::cuda` answers `Error::NotBuilt`), so no
//! type above this module carries a cfg'd field. The CPU needs no runtime: `cpu` holds its
//! capabilities.

pub mod caps;
pub mod cpu;
pub mod gfx;
#[cfg(not(all(feature = "cuda", feature = "rocm", feature = "wgpu")))]
mod stub;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_stub.rs"]
pub mod cuda;
#[cfg(feature = "rocm")]
pub mod hip;
#[cfg(not(feature = "rocm"))]
#[path = "hip_stub.rs"]
pub mod hip;
#[cfg(feature = "wgpu")]
pub mod wgpu;
#[cfg(not(feature = "wgpu"))]
#[path = "wgpu_stub.rs"]
pub mod wgpu;

pub use caps::{Capabilities, Vendor};

use crate::error::Result;

/// Source of a kernel module; each runtime accepts its own kind.
#[derive(Debug, Clone, Copy)]
pub enum ModuleSource<'a> {
    /// CUDA C++ compiled at run time by NVRTC for the exact device.
    Cuda { name: &'a str, source: &'a str },
    /// Ahead-of-time AMD code objects, one per gfx target (`("gfx942", bytes)`).
    Hip {
        name: &'a str,
        code_objects: &'a [(&'a str, &'a [u8])],
    },
    /// WGSL, compiled by wgpu for the adapter (`kernels-wgsl/README.md` has the binding
    /// convention every kernel follows).
    Wgsl { name: &'a str, source: &'a str },
}

impl ModuleSource<'_> {
    pub fn name(&self) -> &str {
        match self {
            ModuleSource::Cuda { name, .. }
            | ModuleSource::Hip { name, .. }
            | ModuleSource::Wgsl { name, .. } => name,
        }
    }
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D grid of `blocks` blocks (at least one) of `threads` threads.
    pub fn blocks(blocks: usize, threads: u32, shared_mem_bytes: u32) -> LaunchConfig {
        LaunchConfig {
            grid: (blocks.clamp(1, u32::MAX as usize) as u32, 1, 1),
            block: (threads, 1, 1),
            shared_mem_bytes,
        }
    }
}

/// One kernel argument, passed by value. Device memory travels as its address (`Ptr`,
/// 0 for null); a kernel's by-value struct (gemm.cu's `GemmArgs`) as its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg<'a> {
    Ptr(u64),
    I32(i32),
    I64(i64),
    U32(u32),
    F32(f32),
    Struct(&'a [u8]),
}

/// Each argument in its own slot, as `cuLaunchKernel` and `hipModuleLaunchKernel` read
/// them: scalars and addresses by value in 8 little-endian bytes (the runtime reads the
/// kernel's declared size), a struct as a pointer to its bytes. `params` points into
/// `slots` and `args`; keep all three alive until the launch returns.
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]
pub(crate) fn arg_slots(args: &[Arg<'_>], slots: &mut Vec<u64>) -> Vec<*mut std::ffi::c_void> {
    slots.clear();
    slots.extend(args.iter().map(|a| match *a {
        Arg::Ptr(v) => v,
        Arg::I32(v) => v as u32 as u64,
        Arg::I64(v) => v as u64,
        Arg::U32(v) => v as u64,
        Arg::F32(v) => v.to_bits() as u64,
        Arg::Struct(_) => 0,
    }));
    args.iter()
        .zip(slots.iter_mut())
        .map(|(a, s)| match a {
            Arg::Struct(bytes) => bytes.as_ptr() as *mut std::ffi::c_void,
            _ => s as *mut u64 as *mut std::ffi::c_void,
        })
        .collect()
}

/// What the GPU driver needs from a vendor's runtime. Every CUDA and HIP call fleetmoe
/// makes after a device is open goes through this trait.
///
/// Work is queued on streams and never waits for the host, except `download` and
/// `synchronize`; so everything `crate::gpu` queues for a forward can be captured in a
/// CUDA graph.
pub trait Runtime: Send + Sync + Sized + 'static {
    /// An ordered queue of work: `Arc<cudarc::driver::CudaStream>` on CUDA, a `hipStream_t`
    /// on HIP. Callers hand their own in; the device has one of its own.
    type Stream: Send + Sync;
    /// A device allocation that frees itself when dropped.
    type Alloc: Send + Sync;
    /// A loaded module of kernels.
    type Module: Send + Sync;

    /// What the device can do; the oracle decides from this alone.
    fn capabilities(&self) -> &Capabilities;
    /// The device's own stream: weight uploads and the host `forward` run on it.
    fn stream(&self) -> &Self::Stream;
    /// `Error::Handle` unless `stream` belongs to this device.
    fn check_stream(&self, stream: &Self::Stream) -> Result<()>;
    /// Allocates `bytes` (at least one) of device memory, contents undefined. Not for a
    /// forward: workspace is reserved before.
    fn alloc(&self, bytes: usize) -> Result<Self::Alloc>;
    /// The device address of an allocation.
    fn address(&self, alloc: &Self::Alloc) -> u64;
    /// Copies host bytes to `dst`, ordered on `stream`; `data` may be reused on return.
    fn upload(&self, dst: u64, data: &[u8], stream: &Self::Stream) -> Result<()>;
    /// Copies device bytes at `src` into `out` after the work queued on `stream`; waits.
    fn download(&self, src: u64, out: &mut [u8], stream: &Self::Stream) -> Result<()>;
    /// Sets `bytes` bytes at `dst` to zero, ordered on `stream`.
    fn zero(&self, dst: u64, bytes: usize, stream: &Self::Stream) -> Result<()>;
    /// Blocks until the work queued on `stream` is done.
    fn synchronize(&self, stream: &Self::Stream) -> Result<()>;
    /// Loads (compiling if needed) a module of kernels.
    fn load(&self, source: &ModuleSource<'_>) -> Result<Self::Module>;
    /// Queues `kernel` of `module` on `stream`.
    fn launch(
        &self,
        module: &Self::Module,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg<'_>],
        stream: &Self::Stream,
    ) -> Result<()>;
}

/// A device allocation with its address and size kept beside it, so the driver never
/// asks the runtime again while queueing work.
pub struct Buffer<R: Runtime> {
    _alloc: R::Alloc,
    addr: u64,
    bytes: usize,
}

impl<R: Runtime> Buffer<R> {
    /// Allocates `bytes` (contents undefined).
    pub fn alloc(rt: &R, bytes: usize) -> Result<Self> {
        let alloc = rt.alloc(bytes.max(1))?;
        Ok(Buffer {
            addr: rt.address(&alloc),
            _alloc: alloc,
            bytes,
        })
    }

    /// Allocates and fills from plain values, on the device's stream, and waits (weights
    /// are uploaded once, before any forward).
    pub fn from_slice<T: bytemuck::Pod>(rt: &R, data: &[T]) -> Result<Self> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let b = Self::alloc(rt, bytes.len())?;
        if !bytes.is_empty() {
            rt.upload(b.addr, bytes, rt.stream())?;
            rt.synchronize(rt.stream())?;
        }
        Ok(b)
    }

    /// The whole buffer as plain values, after the device's stream is done.
    pub fn to_vec<T: bytemuck::Pod>(&self, rt: &R) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); self.bytes / std::mem::size_of::<T>()];
        rt.download(self.addr, bytemuck::cast_slice_mut(&mut out), rt.stream())?;
        Ok(out)
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The address of an optional buffer (0: none).
pub fn addr_of<R: Runtime>(b: &Option<Buffer<R>>) -> u64 {
    b.as_ref().map_or(0, Buffer::addr)
}
