//! `HipDevice`: one AMD GPU through the HIP runtime (opened at run time, `runtime`), with
//! kernels from code objects built ahead of time for its architecture. A machine with no
//! ROCm, no AMD GPU or a runtime that fails to initialise gets `Error::NoDevice`, never a
//! panic. Written against the HIP API; it has not run on an AMD GPU yet.

pub mod runtime;

use super::gfx::{find_arch_name, GfxArch};
use super::{arg_slots, Arg, Capabilities, LaunchConfig, ModuleSource, Runtime, Vendor};
use crate::error::{Error, Result};
use runtime::{attr, HipApi, HipFunction, HipModule, HipStream as RawStream};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

/// A `hipStream_t`: the device's own, or one a caller hands in (`HipStream::from_raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HipStream(pub RawStream);

// SAFETY: a HIP stream handle may be used from any thread.
unsafe impl Send for HipStream {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for HipStream {}

impl HipStream {
    /// Wraps a caller's `hipStream_t` (null is the device's null stream).
    ///
    /// # Safety
    /// `raw` must be a live stream (or null) for as long as fleetmoe uses it.
    pub unsafe fn from_raw(raw: *mut c_void) -> HipStream {
        HipStream(raw)
    }
}

/// A `hipMalloc` allocation, freed on drop.
pub struct HipAlloc {
    api: Arc<HipApi>,
    ptr: u64,
}

// SAFETY: device memory may be used and freed from any thread.
unsafe impl Send for HipAlloc {}
// SAFETY: as above.
unsafe impl Sync for HipAlloc {}

impl Drop for HipAlloc {
    fn drop(&mut self) {
        // SAFETY: ptr came from hipMalloc and is freed once.
        unsafe {
            let _ = (self.api.hipFree)(self.ptr as *mut c_void);
        }
    }
}

/// A loaded code object and the functions looked up in it so far.
pub struct HipKernels {
    api: Arc<HipApi>,
    module: HipModule,
    functions: Mutex<HashMap<String, HipFunction>>,
}

// SAFETY: module and function handles may be used from any thread.
unsafe impl Send for HipKernels {}
// SAFETY: the function table is behind a mutex.
unsafe impl Sync for HipKernels {}

impl Drop for HipKernels {
    fn drop(&mut self) {
        // SAFETY: the module was loaded once and is unloaded once.
        unsafe {
            let _ = (self.api.hipModuleUnload)(self.module);
        }
    }
}

/// One AMD GPU and a stream of its own.
pub struct HipDevice {
    api: Arc<HipApi>,
    ordinal: usize,
    arch: GfxArch,
    caps: Capabilities,
    stream: HipStream,
}

impl std::fmt::Debug for HipDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HipDevice({}: {})", self.ordinal, self.caps)
    }
}

/// Size of the buffer `hipGetDeviceProperties` writes into: far above any ROCm's
/// `hipDeviceProp_t` (792 bytes in 5.2, about 1.5 KiB in 6.x).
const PROPS_BYTES: usize = 16 * 1024;

impl HipDevice {
    /// Opens AMD GPU `ordinal`. No runtime, no GPU or a failing `hipInit` →
    /// `Error::NoDevice` with the reason.
    pub fn new(ordinal: usize) -> Result<HipDevice> {
        let api = Arc::new(HipApi::load()?);
        let no_dev =
            |call: &str, code| Error::NoDevice(format!("{call}: {}", api.error_string(code)));
        // SAFETY: plain runtime calls with valid out-pointers.
        unsafe {
            let code = (api.hipInit)(0);
            if code != 0 {
                return Err(no_dev("hipInit", code));
            }
            let mut count = 0;
            let code = (api.hipGetDeviceCount)(&mut count);
            if code != 0 {
                return Err(no_dev("hipGetDeviceCount", code));
            }
            if ordinal >= count.max(0) as usize {
                return Err(Error::NoDevice(format!(
                    "AMD GPU {ordinal} requested, {count} present"
                )));
            }
        }
        let dev = ordinal as i32;
        let attr = |a: i32| -> Result<i32> {
            let mut v = 0;
            // SAFETY: valid out-pointer and device index.
            api.check("hipDeviceGetAttribute", unsafe {
                (api.hipDeviceGetAttribute)(&mut v, a, dev)
            })?;
            Ok(v)
        };
        let mut props = vec![0u8; PROPS_BYTES];
        // SAFETY: the buffer is larger than any hipDeviceProp_t.
        api.check("hipGetDeviceProperties", unsafe {
            (api.get_properties)(props.as_mut_ptr() as *mut c_void, dev)
        })?;
        let arch_name = find_arch_name(&props).ok_or_else(|| Error::Device {
            call: "hipGetDeviceProperties".into(),
            message: "no gcnArchName (gfx…) in the device properties".into(),
        })?;
        let arch = GfxArch::parse(&arch_name)?;
        let mut name = vec![0u8; 256];
        // SAFETY: valid buffer of the given length.
        api.check("hipDeviceGetName", unsafe {
            (api.hipDeviceGetName)(name.as_mut_ptr() as *mut _, name.len() as i32, dev)
        })?;
        let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(0)])
            .into_owned();
        let mut mem = 0usize;
        // SAFETY: valid out-pointer.
        api.check("hipDeviceTotalMem", unsafe {
            (api.hipDeviceTotalMem)(&mut mem, dev)
        })?;
        let caps = Capabilities {
            vendor: Vendor::Amd,
            name: if name.is_empty() {
                arch_name.clone()
            } else {
                name
            },
            arch: arch.processor.clone(),
            compute_capability: None,
            fp8: arch.fp8(),
            supports_mx: arch.supports_mx(),
            fp4_tensor_cores: arch.supports_mx(),
            bf16_tensor_cores: arch.bf16_matrix(),
            memory_bytes: mem as u64,
            multiprocessors: attr(attr::MULTIPROCESSOR_COUNT)? as u32,
            shared_mem_per_block: attr(attr::MAX_SHARED_MEMORY_PER_BLOCK)? as u32,
            warp_size: attr(attr::WARP_SIZE)? as u32,
        };
        api.check("hipSetDevice", unsafe { (api.hipSetDevice)(dev) })?;
        let mut s: RawStream = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        api.check("hipStreamCreateWithFlags", unsafe {
            (api.hipStreamCreateWithFlags)(&mut s, runtime::STREAM_NON_BLOCKING)
        })?;
        Ok(HipDevice {
            api,
            ordinal,
            arch,
            caps,
            stream: HipStream(s),
        })
    }

    /// The parsed architecture (`gcnArchName`).
    pub fn arch(&self) -> &GfxArch {
        &self.arch
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn check(&self, call: &str, code: runtime::HipError) -> Result<()> {
        self.api.check(call, code)
    }

    /// Selects this GPU on the calling thread.
    fn bind(&self) -> Result<()> {
        // SAFETY: plain runtime call.
        self.check("hipSetDevice", unsafe {
            (self.api.hipSetDevice)(self.ordinal as i32)
        })
    }

    /// `kernel` of `module`, looked up once.
    fn function(&self, module: &HipKernels, kernel: &str) -> Result<HipFunction> {
        let mut fns = module.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fns.get(kernel) {
            return Ok(*f);
        }
        let cname = CString::new(kernel).map_err(|_| Error::Handle(kernel.to_string()))?;
        let mut f: HipFunction = std::ptr::null_mut();
        self.bind()?;
        // SAFETY: the module is loaded; the name is a C string.
        self.check(&format!("hipModuleGetFunction({kernel})"), unsafe {
            (self.api.hipModuleGetFunction)(&mut f, module.module, cname.as_ptr())
        })?;
        fns.insert(kernel.to_string(), f);
        Ok(f)
    }
}

/// The code object built for `processor` among a module's, or an error naming those built.
pub fn pick_code_object<'a>(
    module: &str,
    processor: &str,
    code_objects: &[(&str, &'a [u8])],
) -> Result<&'a [u8]> {
    code_objects
        .iter()
        .find(|(target, _)| *target == processor)
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| Error::Missing {
            what: format!("a {processor} code object of HIP module '{module}'"),
            why: if code_objects.is_empty() {
                "this build has no HIP code objects (clang-22 was not found when it was built)"
                    .into()
            } else {
                format!(
                    "it was built for {}",
                    code_objects
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        })
}

impl Runtime for HipDevice {
    type Stream = HipStream;
    type Alloc = HipAlloc;
    type Module = HipKernels;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn stream(&self) -> &HipStream {
        &self.stream
    }

    fn check_stream(&self, stream: &HipStream) -> Result<()> {
        if stream.0.is_null() {
            return Ok(());
        }
        let mut dev = -1;
        // SAFETY: the caller promised a live stream; valid out-pointer.
        self.check("hipStreamGetDevice", unsafe {
            (self.api.hipStreamGetDevice)(stream.0, &mut dev)
        })?;
        if dev as usize == self.ordinal {
            Ok(())
        } else {
            Err(Error::Handle(format!(
                "the stream belongs to AMD GPU {dev}, the layer is on GPU {}",
                self.ordinal
            )))
        }
    }

    fn alloc(&self, bytes: usize) -> Result<HipAlloc> {
        self.bind()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: at least one byte, so the pointer is unique.
        self.check("hipMalloc", unsafe {
            (self.api.hipMalloc)(&mut p, bytes.max(1))
        })?;
        Ok(HipAlloc {
            api: self.api.clone(),
            ptr: p as u64,
        })
    }

    fn address(&self, alloc: &HipAlloc) -> u64 {
        alloc.ptr
    }

    fn upload(&self, dst: u64, data: &[u8], stream: &HipStream) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller guarantees `dst` holds `data.len()` bytes. HIP may read
        // pageable memory after an async copy returns, so wait before `data` is released.
        unsafe {
            self.check(
                "hipMemcpyHtoDAsync",
                (self.api.hipMemcpyHtoDAsync)(
                    dst as *mut c_void,
                    data.as_ptr() as *const c_void,
                    data.len(),
                    stream.0,
                ),
            )?;
            self.check(
                "hipStreamSynchronize",
                (self.api.hipStreamSynchronize)(stream.0),
            )
        }
    }

    fn download(&self, src: u64, out: &mut [u8], stream: &HipStream) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller guarantees `src` holds `out.len()` bytes; synchronised
        // before return.
        unsafe {
            self.check(
                "hipMemcpyDtoHAsync",
                (self.api.hipMemcpyDtoHAsync)(
                    out.as_mut_ptr() as *mut c_void,
                    src as *mut c_void,
                    out.len(),
                    stream.0,
                ),
            )?;
            self.check(
                "hipStreamSynchronize",
                (self.api.hipStreamSynchronize)(stream.0),
            )
        }
    }

    fn zero(&self, dst: u64, bytes: usize, stream: &HipStream) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the caller guarantees `dst` holds `bytes` bytes.
        self.check("hipMemsetAsync", unsafe {
            (self.api.hipMemsetAsync)(dst as *mut c_void, 0, bytes, stream.0)
        })
    }

    fn synchronize(&self, stream: &HipStream) -> Result<()> {
        self.bind()?;
        // SAFETY: live stream.
        self.check("hipStreamSynchronize", unsafe {
            (self.api.hipStreamSynchronize)(stream.0)
        })
    }

    fn load(&self, source: &ModuleSource<'_>) -> Result<HipKernels> {
        let ModuleSource::Hip { name, code_objects } = source else {
            return Err(Error::Handle(format!(
                "module '{}' is not a HIP code object; an AMD device loads only those",
                source.name()
            )));
        };
        let image = pick_code_object(name, &self.arch.processor, code_objects)?;
        self.bind()?;
        let mut module: HipModule = std::ptr::null_mut();
        // SAFETY: `image` is a complete ELF code object that outlives the call.
        self.check(&format!("hipModuleLoadData({name})"), unsafe {
            (self.api.hipModuleLoadData)(&mut module, image.as_ptr() as *const c_void)
        })?;
        Ok(HipKernels {
            api: self.api.clone(),
            module,
            functions: Mutex::new(HashMap::new()),
        })
    }

    fn launch(
        &self,
        module: &HipKernels,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg<'_>],
        stream: &HipStream,
    ) -> Result<()> {
        let f = self.function(module, kernel)?;
        let mut slots = Vec::with_capacity(args.len());
        let mut params = arg_slots(args, &mut slots);
        self.bind()?;
        let (g, b) = (config.grid, config.block);
        // SAFETY: the arguments match the kernel's declared parameters and every address
        // is device memory sized for the launch; `params` points into `slots` and `args`.
        self.check(&format!("hipModuleLaunchKernel({kernel})"), unsafe {
            (self.api.hipModuleLaunchKernel)(
                f,
                g.0,
                g.1,
                g.2,
                b.0,
                b.1,
                b.2,
                config.shared_mem_bytes,
                stream.0,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
    }
}

impl Drop for HipDevice {
    fn drop(&mut self) {
        let _ = self.bind();
        // SAFETY: the device's own stream, created in `new`, destroyed once.
        unsafe {
            let _ = (self.api.hipStreamSynchronize)(self.stream.0);
            let _ = (self.api.hipStreamDestroy)(self.stream.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matching_code_object_is_picked() {
        let objs: [(&str, &[u8]); 2] = [("gfx942", b"a"), ("gfx950", b"b")];
        assert_eq!(pick_code_object("m", "gfx950", &objs).unwrap(), b"b");
        let err = pick_code_object("m", "gfx90a", &objs)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gfx942, gfx950"), "{err}");
        let err = pick_code_object("m", "gfx942", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("clang-22"), "{err}");
    }
}
