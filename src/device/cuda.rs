//! `CudaDevice`: one NVIDIA GPU through cudarc's safe layer (`CudaContext`, `CudaStream`,
//! `CudaSlice`, the driver loaded at run time), with kernels compiled by NVRTC for the
//! exact device and cached on disk. A machine with no libcuda, no GPU or a broken driver
//! gets `Error::NoDevice`, never a panic.
//!
//! The device opens the GPU's primary context, the one candle and every cudarc user
//! share, so the caller's `Arc<CudaStream>` and device memory work here as they are.

pub mod nvrtc;

use super::{arg_slots, Capabilities, LaunchConfig, ModuleSource, Runtime, Vendor};
use crate::error::{Error, Result};
use crate::quant::Fp8Flavor;
use cudarc::driver::{
    result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use cudarc::driver::{CudaGraph, CudaView, CudaViewMut};

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

/// One CUDA GPU: its primary context and a stream of its own.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    caps: Capabilities,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}: {})", self.ctx.ordinal(), self.caps)
    }
}

/// A loaded module and the functions looked up in it so far, each with the dynamic
/// shared memory it has been allowed.
pub struct CudaKernels {
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, (CudaFunction, u32)>>,
}

/// Whether libcuda can be loaded at all (no driver call is made). cudarc panics when a
/// dynamically loaded driver is missing, so nothing touches it before this says yes.
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
        let ctx = CudaContext::new(ordinal).map_err(|e| no_dev("cuDevicePrimaryCtxRetain", e))?;
        // fleetmoe orders its own work on the streams it is given; cudarc's per-slice
        // events would add records and waits to every launch (and to graph captures).
        // SAFETY: no slice of this context exists yet.
        unsafe { ctx.disable_event_tracking() };
        let attr = |a: sys::CUdevice_attribute| -> Result<i32> {
            ctx.attribute(a).map_err(drv_err("cuDeviceGetAttribute"))
        };
        use sys::CUdevice_attribute::*;
        let cc = (
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32,
        );
        let caps = Capabilities {
            vendor: Vendor::Nvidia,
            name: ctx.name().map_err(drv_err("cuDeviceGetName"))?,
            arch: arch_for(cc),
            compute_capability: Some(cc),
            fp8: (cc >= (8, 9)).then_some(Fp8Flavor::E4M3Fn),
            supports_mx: cc.0 >= 10,
            fp4_tensor_cores: cc.0 >= 10,
            bf16_tensor_cores: cc >= (8, 0),
            memory_bytes: ctx.total_mem().map_err(drv_err("cuDeviceTotalMem"))? as u64,
            multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            shared_mem_per_block: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as u32,
            warp_size: 32,
        };
        let stream = ctx.new_stream().map_err(drv_err("cuStreamCreate"))?;
        Ok(CudaDevice { ctx, stream, caps })
    }

    /// The device ordinal this was opened with.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The context (the GPU's primary context).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// A new stream of this device, for callers that want one besides `stream()`.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        self.ctx.new_stream().map_err(drv_err("cuStreamCreate"))
    }

    /// Captures everything `work` queues on `stream` into a graph (nothing runs during
    /// capture; `work` must not synchronise or copy to the host). The capture is ended
    /// even when `work` fails, so the stream stays usable.
    pub fn capture(
        &self,
        stream: &Arc<CudaStream>,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<CudaGraph> {
        self.check_stream(stream)?;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(drv_err("cuStreamBeginCapture"))?;
        let queued = work();
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        queued?;
        ended
            .map_err(drv_err("cuStreamEndCapture"))?
            .ok_or_else(|| Error::Device {
                call: "cuStreamEndCapture".into(),
                message: "nothing was captured".into(),
            })
    }

    /// Milliseconds `work` takes on `stream`, between two events (waits for the second).
    pub fn time_ms(
        &self,
        stream: &Arc<CudaStream>,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<f32> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = stream
            .record_event(flags)
            .map_err(drv_err("cuEventRecord"))?;
        work()?;
        let stop = stream
            .record_event(flags)
            .map_err(drv_err("cuEventRecord"))?;
        stop.synchronize().map_err(drv_err("cuEventSynchronize"))?;
        start
            .elapsed_ms(&stop)
            .map_err(drv_err("cuEventElapsedTime"))
    }

    /// `kernel` of `module`, allowed `smem` bytes of dynamic shared memory (above 48 KiB
    /// a kernel must opt in, once).
    fn function(&self, module: &CudaKernels, kernel: &str, smem: u32) -> Result<CudaFunction> {
        let mut fns = module.functions.lock().unwrap_or_else(|p| p.into_inner());
        if !fns.contains_key(kernel) {
            let f = module
                .module
                .load_function(kernel)
                .map_err(|e| Error::Device {
                    call: format!("cuModuleGetFunction({kernel})"),
                    message: drv_err("")(e).to_string(),
                })?;
            fns.insert(kernel.to_string(), (f, 48 * 1024));
        }
        let (f, allowed) = fns.get_mut(kernel).expect("inserted above");
        if smem > *allowed {
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(drv_err("cuFuncSetAttribute"))?;
            *allowed = smem;
        }
        Ok(f.clone())
    }
}

impl Runtime for CudaDevice {
    type Stream = Arc<CudaStream>;
    type Alloc = CudaSlice<u8>;
    type Module = CudaKernels;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn check_stream(&self, stream: &Arc<CudaStream>) -> Result<()> {
        if stream.context().cu_ctx() == self.ctx.cu_ctx() {
            Ok(())
        } else {
            Err(Error::Handle(format!(
                "the stream belongs to CUDA device {}, the layer is on device {}",
                stream.context().ordinal(),
                self.ctx.ordinal()
            )))
        }
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: contents undefined is what `alloc` promises; u8 has no invalid values.
        unsafe { self.stream.alloc::<u8>(bytes.max(1)) }.map_err(drv_err("cuMemAlloc"))
    }

    fn address(&self, alloc: &CudaSlice<u8>) -> u64 {
        // Event tracking is off, so this records nothing.
        alloc.device_ptr(&self.stream).0
    }

    fn upload(&self, dst: u64, data: &[u8], stream: &Arc<CudaStream>) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(drv_err("cuCtxSetCurrent"))?;
        // SAFETY: the caller guarantees `dst` holds `data.len()` bytes of this context; a
        // copy from pageable memory has read `data` when the call returns.
        unsafe { drv::memcpy_htod_async(dst, data, stream.cu_stream()) }
            .map_err(drv_err("cuMemcpyHtoDAsync"))
    }

    fn download(&self, src: u64, out: &mut [u8], stream: &Arc<CudaStream>) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(drv_err("cuCtxSetCurrent"))?;
        // SAFETY: the caller guarantees `src` holds `out.len()` bytes; synchronised before
        // return, so `out` outlives the copy.
        unsafe {
            drv::memcpy_dtoh_async(out, src, stream.cu_stream())
                .map_err(drv_err("cuMemcpyDtoHAsync"))?;
        }
        stream.synchronize().map_err(drv_err("cuStreamSynchronize"))
    }

    fn zero(&self, dst: u64, bytes: usize, stream: &Arc<CudaStream>) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(drv_err("cuCtxSetCurrent"))?;
        // SAFETY: the caller guarantees `dst` holds `bytes` bytes of this context.
        unsafe { drv::memset_d8_async(dst, 0, bytes, stream.cu_stream()) }
            .map_err(drv_err("cuMemsetD8Async"))
    }

    fn synchronize(&self, stream: &Arc<CudaStream>) -> Result<()> {
        stream.synchronize().map_err(drv_err("cuStreamSynchronize"))
    }

    fn load(&self, source: &ModuleSource<'_>) -> Result<CudaKernels> {
        let ModuleSource::Cuda { name, source } = source else {
            return Err(Error::Handle(format!(
                "module '{}' is not CUDA source; a CUDA device loads only CUDA C++",
                source.name()
            )));
        };
        let cubin = nvrtc::compile_cached(name, source, &self.caps.arch)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(drv_err("cuModuleLoadData"))?;
        Ok(CudaKernels {
            module,
            functions: Mutex::new(HashMap::new()),
        })
    }

    fn launch(
        &self,
        module: &CudaKernels,
        kernel: &str,
        config: LaunchConfig,
        args: &[super::Arg<'_>],
        stream: &Arc<CudaStream>,
    ) -> Result<()> {
        let f = self.function(module, kernel, config.shared_mem_bytes)?;
        let mut slots = Vec::with_capacity(args.len());
        let mut params = arg_slots(args, &mut slots);
        self.ctx
            .bind_to_thread()
            .map_err(drv_err("cuCtxSetCurrent"))?;
        // SAFETY: the arguments match the kernel's declared parameters (each call site
        // mirrors its kernel's signature) and every address is device memory the caller
        // sized for the launch; `params` points into `slots` and `args`, both alive here.
        unsafe {
            drv::launch_kernel(
                f.cu_function(),
                config.grid,
                config.block,
                config.shared_mem_bytes,
                stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(drv_err(&format!("cuLaunchKernel({kernel})")))
    }
}
