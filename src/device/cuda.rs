//! `CudaDevice`: one NVIDIA GPU through the CUDA driver API (cudarc, loaded at run time),
//! with kernels compiled by NVRTC for the exact device and cached on disk. A machine with no
//! libcuda, no GPU or a broken driver gets `Error::NoDevice`, never a panic.

pub mod graph;
pub mod nvrtc;

use crate::device::Vendor;
use crate::device::{
    Arg, Buffer, Capabilities, Device, LaunchConfig, Module, ModuleSource, Stream,
};
use crate::error::{Error, Result};
use crate::quant::Fp8Flavor;
use cudarc::driver::{result as drv, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

pub use graph::{CudaGraph, CudaTimer};

/// Turns a driver error into `Error::Device` naming the call.
pub(crate) fn drv_err(call: &str) -> impl FnOnce(drv::DriverError) -> Error + '_ {
    move |e| Error::Device {
        call: call.to_string(),
        message: e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0)),
    }
}

struct LoadedModule {
    module: sys::CUmodule,
    functions: HashMap<String, sys::CUfunction>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    buffers: HashMap<u64, (sys::CUdeviceptr, usize)>,
    streams: HashMap<u64, sys::CUstream>,
    modules: HashMap<u64, LoadedModule>,
}

/// One CUDA GPU: its primary context, a default stream, and the buffers, streams and
/// modules handed out through the `Device` trait.
pub struct CudaDevice {
    ordinal: usize,
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    caps: Capabilities,
    state: Mutex<State>,
}

// SAFETY: the driver API is thread-safe; the raw handles are only used after binding the
// context to the calling thread, and the handle tables are behind a mutex.
unsafe impl Send for CudaDevice {}
// SAFETY: as above.
unsafe impl Sync for CudaDevice {}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}: {})", self.ordinal, self.caps)
    }
}

/// Whether libcuda can be loaded at all (no driver call is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the shared library.
    unsafe { sys::is_culib_present() }
}

/// The compiler target for a compute capability: the arch-specific `a` variants where the
/// chip has instructions (wgmma, tcgen05) that only they expose.
pub fn arch_for(cc: (u32, u32)) -> String {
    match cc {
        (9, 0) | (10, _) | (12, _) => format!("sm_{}{}a", cc.0, cc.1),
        (ma, mi) => format!("sm_{ma}{mi}"),
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal`. No libcuda, no GPU, or a driver that fails to initialise →
    /// `Error::NoDevice` with the reason.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        if !driver_present() {
            return Err(Error::NoDevice(
                "libcuda not found (no NVIDIA driver)".into(),
            ));
        }
        let no_dev = |what: &str, e: drv::DriverError| {
            Error::NoDevice(format!("{what}: {}", drv_err(what)(e)))
        };
        drv::init().map_err(|e| no_dev("cuInit", e))?;
        let count = drv::device::get_count().map_err(|e| no_dev("cuDeviceGetCount", e))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoDevice(format!(
                "CUDA device {ordinal} requested, {count} present"
            )));
        }
        let device = drv::device::get(ordinal as i32).map_err(|e| no_dev("cuDeviceGet", e))?;
        // SAFETY: `device` came from cuDeviceGet.
        let ctx = unsafe { drv::primary_ctx::retain(device) }
            .map_err(|e| no_dev("cuDevicePrimaryCtxRetain", e))?;
        // SAFETY: ctx was just retained.
        unsafe { drv::ctx::set_current(ctx) }.map_err(drv_err("cuCtxSetCurrent"))?;
        let attr = |a: sys::CUdevice_attribute| -> Result<i32> {
            // SAFETY: valid device handle.
            unsafe { drv::device::get_attribute(device, a) }
                .map_err(drv_err("cuDeviceGetAttribute"))
        };
        use sys::CUdevice_attribute::*;
        let cc = (
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32,
        );
        let sms = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let smem = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as u32;
        let name = drv::device::get_name(device).map_err(drv_err("cuDeviceGetName"))?;
        // SAFETY: valid device handle.
        let mem = unsafe { drv::device::total_mem(device) }.map_err(drv_err("cuDeviceTotalMem"))?;
        let caps = Capabilities {
            vendor: Vendor::Nvidia,
            name,
            arch: arch_for(cc),
            compute_capability: Some(cc),
            fp8: (cc >= (8, 9)).then_some(Fp8Flavor::E4M3Fn),
            supports_mx: cc.0 >= 10,
            fp4_tensor_cores: cc.0 >= 10,
            bf16_tensor_cores: cc >= (8, 0),
            memory_bytes: mem as u64,
            multiprocessors: sms,
            shared_mem_per_block: smem,
            warp_size: 32,
        };
        let stream = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(drv_err("cuStreamCreate"))?;
        let mut state = State {
            next_id: 1,
            ..Default::default()
        };
        state.streams.insert(Stream::DEFAULT.0, stream);
        Ok(CudaDevice {
            ordinal,
            device,
            ctx,
            caps,
            state: Mutex::new(state),
        })
    }

    /// The device ordinal this was opened with.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Makes this device's context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<()> {
        // SAFETY: the context is retained for the life of `self`.
        unsafe { drv::ctx::set_current(self.ctx) }.map_err(drv_err("cuCtxSetCurrent"))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The raw device address of a buffer.
    pub fn device_ptr(&self, buffer: Buffer) -> Result<u64> {
        self.state()
            .buffers
            .get(&buffer.id)
            .map(|(p, _)| *p)
            .ok_or_else(|| {
                Error::Handle(format!("buffer {} is not live on this device", buffer.id))
            })
    }

    /// The raw driver stream of a `Stream` handle.
    pub fn raw_stream(&self, stream: Stream) -> Result<sys::CUstream> {
        self.state()
            .streams
            .get(&stream.0)
            .copied()
            .ok_or_else(|| Error::Handle(format!("stream {} is not live on this device", stream.0)))
    }

    /// A kernel function of a loaded module.
    pub fn function(&self, module: Module, kernel: &str) -> Result<sys::CUfunction> {
        let mut st = self.state();
        let m = st
            .modules
            .get_mut(&module.0)
            .ok_or_else(|| Error::Handle(format!("module {} is not loaded", module.0)))?;
        if let Some(f) = m.functions.get(kernel) {
            return Ok(*f);
        }
        let cname = CString::new(kernel).map_err(|_| Error::Handle(kernel.to_string()))?;
        self.bind()?;
        // SAFETY: the module is loaded; the name is a C string.
        let f =
            unsafe { drv::module::get_function(m.module, cname) }.map_err(|e| Error::Device {
                call: format!("cuModuleGetFunction({kernel})"),
                message: drv_err("")(e).to_string(),
            })?;
        m.functions.insert(kernel.to_string(), f);
        Ok(f)
    }

    /// Loads a CUBIN image as a module.
    pub fn load_cubin(&self, cubin: &[u8]) -> Result<Module> {
        self.bind()?;
        // SAFETY: the image is a complete CUBIN that outlives the call.
        let module = unsafe { drv::module::load_data(cubin.as_ptr() as *const c_void) }
            .map_err(drv_err("cuModuleLoadData"))?;
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.modules.insert(
            id,
            LoadedModule {
                module,
                functions: HashMap::new(),
            },
        );
        Ok(Module(id))
    }

    /// Allows `kernel` to use more than 48 KiB of dynamic shared memory.
    pub fn set_max_dynamic_smem(&self, module: Module, kernel: &str, bytes: u32) -> Result<()> {
        let f = self.function(module, kernel)?;
        self.bind()?;
        // SAFETY: f is a live function handle.
        unsafe {
            sys::cuFuncSetAttribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
            .result()
        }
        .map_err(drv_err("cuFuncSetAttribute"))
    }

    /// Launches a raw function with raw parameter pointers (each points at one argument).
    ///
    /// # Safety
    /// The parameters must match the kernel's signature and every pointer argument must be
    /// valid for what the kernel does with it.
    pub unsafe fn launch_raw(
        &self,
        f: sys::CUfunction,
        config: LaunchConfig,
        params: &mut [*mut c_void],
        stream: sys::CUstream,
    ) -> Result<()> {
        drv::launch_kernel(
            f,
            config.grid,
            config.block,
            config.shared_mem_bytes,
            stream,
            params,
        )
        .map_err(drv_err("cuLaunchKernel"))
    }

    /// Zeroes a whole buffer, ordered on `stream` (no host synchronisation, so it can be
    /// captured in a graph).
    pub fn zero(&self, buffer: Buffer, stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        let s = self.raw_stream(stream)?;
        if buffer.bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: `ptr` is a live allocation of exactly `buffer.bytes` bytes.
        unsafe { drv::memset_d8_async(ptr, 0, buffer.bytes, s) }.map_err(drv_err("cuMemsetD8Async"))
    }
}

impl Device for CudaDevice {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.bind()?;
        // SAFETY: plain device allocation; at least one byte so the pointer is unique.
        let ptr = unsafe { drv::malloc_sync(bytes.max(1)) }.map_err(drv_err("cuMemAlloc"))?;
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.buffers.insert(id, (ptr, bytes));
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<()> {
        let (ptr, _) =
            self.state().buffers.remove(&buffer.id).ok_or_else(|| {
                Error::Handle(format!("buffer {} freed twice or foreign", buffer.id))
            })?;
        self.bind()?;
        // SAFETY: ptr came from cuMemAlloc and is freed once.
        unsafe { drv::free_sync(ptr) }.map_err(drv_err("cuMemFree"))
    }

    fn write(&self, buffer: Buffer, offset: usize, data: &[u8], stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        check_range(buffer, offset, data.len())?;
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: range checked; the copy completes before return (synchronised below), so
        // the host slice outlives it.
        unsafe {
            drv::memcpy_htod_async(ptr + offset as u64, data, s)
                .map_err(drv_err("cuMemcpyHtoD"))?;
            drv::stream::synchronize(s).map_err(drv_err("cuStreamSynchronize"))
        }
    }

    fn read(&self, buffer: Buffer, offset: usize, out: &mut [u8], stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        check_range(buffer, offset, out.len())?;
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: range checked; synchronised before return.
        unsafe {
            drv::memcpy_dtoh_async(out, ptr + offset as u64, s).map_err(drv_err("cuMemcpyDtoH"))?;
            drv::stream::synchronize(s).map_err(drv_err("cuStreamSynchronize"))
        }
    }

    fn create_stream(&self) -> Result<Stream> {
        self.bind()?;
        let s = drv::stream::create(drv::stream::StreamKind::NonBlocking)
            .map_err(drv_err("cuStreamCreate"))?;
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.streams.insert(id, s);
        Ok(Stream(id))
    }

    fn synchronize(&self, stream: Stream) -> Result<()> {
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: live stream.
        unsafe { drv::stream::synchronize(s) }.map_err(drv_err("cuStreamSynchronize"))
    }

    fn load_module(&self, source: &ModuleSource<'_>) -> Result<Module> {
        match source {
            ModuleSource::Cuda { name, source } => {
                let cubin = nvrtc::compile_cached(name, source, &self.caps.arch)?;
                self.load_cubin(&cubin)
            }
            other => Err(Error::Handle(format!(
                "module '{}' is not CUDA source; a CUDA device loads only CUDA C++",
                other.name()
            ))),
        }
    }

    fn launch(
        &self,
        module: Module,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg],
        stream: Stream,
    ) -> Result<()> {
        let f = self.function(module, kernel)?;
        let s = self.raw_stream(stream)?;
        // Each argument in its own 8-byte slot; the driver reads the kernel's declared size.
        let mut slots = args
            .iter()
            .map(|a| a.slot(|b| self.device_ptr(b)))
            .collect::<Result<Vec<u64>>>()?;
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        self.bind()?;
        // SAFETY: buffers are live device allocations; scalars are passed by value in
        // little-endian slots, which is what the driver reads for 4- and 8-byte params.
        unsafe { self.launch_raw(f, config, &mut params, s) }
    }
}

fn check_range(buffer: Buffer, offset: usize, len: usize) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > buffer.bytes) {
        return Err(Error::shape(
            "device buffer access",
            format!("at most {} bytes", buffer.bytes),
            format!("{len} bytes at offset {offset}"),
        ));
    }
    Ok(())
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        let _ = self.bind();
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        // SAFETY: every handle was created by this device and is released exactly once.
        unsafe {
            for (_, s) in st.streams.drain() {
                let _ = drv::stream::synchronize(s);
                let _ = drv::stream::destroy(s);
            }
            for (_, (p, _)) in st.buffers.drain() {
                let _ = drv::free_sync(p);
            }
            for (_, m) in st.modules.drain() {
                let _ = drv::module::unload(m.module);
            }
            let _ = drv::primary_ctx::release(self.device);
        }
    }
}

/// A device allocation that frees itself: the typed handle the CUDA backend keeps its
/// weights and work space in.
pub struct CudaBuffer {
    dev: Arc<CudaDevice>,
    buf: Buffer,
    ptr: u64,
}

impl CudaBuffer {
    /// Allocates `bytes` bytes (contents undefined).
    pub fn alloc(dev: &Arc<CudaDevice>, bytes: usize) -> Result<CudaBuffer> {
        let buf = dev.alloc(bytes)?;
        let ptr = dev.device_ptr(buf)?;
        Ok(CudaBuffer {
            dev: dev.clone(),
            buf,
            ptr,
        })
    }

    /// Allocates and fills from a host slice of plain values.
    pub fn from_slice<T: Copy>(dev: &Arc<CudaDevice>, data: &[T]) -> Result<CudaBuffer> {
        let bytes = std::mem::size_of_val(data);
        let b = Self::alloc(dev, bytes)?;
        // SAFETY: T is plain data (Copy, no padding in the types used here: u8, u16, u32,
        // f32); viewing it as bytes is sound.
        let raw = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, bytes) };
        dev.write(b.buf, 0, raw, Stream::DEFAULT)?;
        Ok(b)
    }

    /// Copies the whole buffer into a host vector of `T`.
    pub fn to_vec<T: Copy + Default>(&self) -> Result<Vec<T>> {
        let n = self.buf.bytes / std::mem::size_of::<T>();
        let mut out = vec![T::default(); n];
        // SAFETY: as in `from_slice`.
        let raw = unsafe {
            std::slice::from_raw_parts_mut(
                out.as_mut_ptr() as *mut u8,
                n * std::mem::size_of::<T>(),
            )
        };
        self.dev.read(self.buf, 0, raw, Stream::DEFAULT)?;
        Ok(out)
    }

    /// Device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.bytes
    }

    /// The trait-level handle.
    pub fn handle(&self) -> Buffer {
        self.buf
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        let _ = self.dev.free(self.buf);
    }
}
