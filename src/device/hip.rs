//! `HipDevice`: one AMD GPU through the HIP runtime (opened at run time, `runtime`), with
//! kernels from code objects built ahead of time for its architecture. A machine with no
//! ROCm, no AMD GPU or a runtime that fails to initialise gets `Error::NoDevice`, never a
//! panic. Written against the HIP API; it has not run on an AMD GPU yet.

pub mod runtime;

use super::gfx::{find_arch_name, GfxArch};
use super::{
    Arg, Buffer, Capabilities, Device, LaunchConfig, Module, ModuleSource, Stream, Vendor,
};
use crate::error::{Error, Result};
use runtime::{attr, HipApi, HipFunction, HipModule, HipStream};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, MutexGuard};

struct LoadedModule {
    module: HipModule,
    functions: HashMap<String, HipFunction>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    buffers: HashMap<u64, (u64, usize)>,
    streams: HashMap<u64, HipStream>,
    modules: HashMap<u64, LoadedModule>,
}

/// One AMD GPU: a default stream, and the buffers, streams and modules handed out
/// through the `Device` trait.
pub struct HipDevice {
    api: Arc<HipApi>,
    ordinal: usize,
    arch: GfxArch,
    caps: Capabilities,
    state: Mutex<State>,
}

// SAFETY: the HIP runtime is thread-safe; raw handles are used only after selecting this
// device on the calling thread, and the handle tables are behind a mutex.
unsafe impl Send for HipDevice {}
// SAFETY: as above.
unsafe impl Sync for HipDevice {}

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
        let mut state = State {
            next_id: 1,
            ..Default::default()
        };
        let this = HipDevice {
            api,
            ordinal,
            arch,
            caps,
            state: Mutex::new(State::default()),
        };
        this.bind()?;
        let mut s: HipStream = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        this.check("hipStreamCreateWithFlags", unsafe {
            (this.api.hipStreamCreateWithFlags)(&mut s, runtime::STREAM_NON_BLOCKING)
        })?;
        state.streams.insert(Stream::DEFAULT.0, s);
        *this.state() = state;
        Ok(this)
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

    fn state(&self) -> MutexGuard<'_, State> {
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

    fn raw_stream(&self, stream: Stream) -> Result<HipStream> {
        self.state()
            .streams
            .get(&stream.0)
            .copied()
            .ok_or_else(|| Error::Handle(format!("stream {} is not live on this device", stream.0)))
    }

    fn function(&self, module: Module, kernel: &str) -> Result<HipFunction> {
        let mut st = self.state();
        let m = st
            .modules
            .get_mut(&module.0)
            .ok_or_else(|| Error::Handle(format!("module {} is not loaded", module.0)))?;
        if let Some(f) = m.functions.get(kernel) {
            return Ok(*f);
        }
        let cname = CString::new(kernel).map_err(|_| Error::Handle(kernel.to_string()))?;
        let mut f: HipFunction = std::ptr::null_mut();
        self.bind()?;
        // SAFETY: the module is loaded; the name is a C string.
        self.check(&format!("hipModuleGetFunction({kernel})"), unsafe {
            (self.api.hipModuleGetFunction)(&mut f, m.module, cname.as_ptr())
        })?;
        m.functions.insert(kernel.to_string(), f);
        Ok(f)
    }

    /// Zeroes a whole buffer, ordered on `stream`.
    pub fn zero(&self, buffer: Buffer, stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: `ptr` is a live allocation of `buffer.bytes` bytes.
        self.check("hipMemsetAsync", unsafe {
            (self.api.hipMemsetAsync)(ptr as *mut c_void, 0, buffer.bytes, s)
        })
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

impl Device for HipDevice {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.bind()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: at least one byte, so the pointer is unique.
        self.check("hipMalloc", unsafe {
            (self.api.hipMalloc)(&mut p, bytes.max(1))
        })?;
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        st.buffers.insert(id, (p as u64, bytes));
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<()> {
        let (ptr, _) =
            self.state().buffers.remove(&buffer.id).ok_or_else(|| {
                Error::Handle(format!("buffer {} freed twice or foreign", buffer.id))
            })?;
        self.bind()?;
        // SAFETY: ptr came from hipMalloc and is freed once.
        self.check("hipFree", unsafe { (self.api.hipFree)(ptr as *mut c_void) })
    }

    fn write(&self, buffer: Buffer, offset: usize, data: &[u8], stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        check_range(buffer, offset, data.len())?;
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: range checked; synchronised before return, so the slice outlives the copy.
        unsafe {
            self.check(
                "hipMemcpyHtoDAsync",
                (self.api.hipMemcpyHtoDAsync)(
                    (ptr + offset as u64) as *mut c_void,
                    data.as_ptr() as *const c_void,
                    data.len(),
                    s,
                ),
            )?;
            self.check("hipStreamSynchronize", (self.api.hipStreamSynchronize)(s))
        }
    }

    fn read(&self, buffer: Buffer, offset: usize, out: &mut [u8], stream: Stream) -> Result<()> {
        let ptr = self.device_ptr(buffer)?;
        check_range(buffer, offset, out.len())?;
        let s = self.raw_stream(stream)?;
        self.bind()?;
        // SAFETY: range checked; synchronised before return.
        unsafe {
            self.check(
                "hipMemcpyDtoHAsync",
                (self.api.hipMemcpyDtoHAsync)(
                    out.as_mut_ptr() as *mut c_void,
                    (ptr + offset as u64) as *mut c_void,
                    out.len(),
                    s,
                ),
            )?;
            self.check("hipStreamSynchronize", (self.api.hipStreamSynchronize)(s))
        }
    }

    fn create_stream(&self) -> Result<Stream> {
        self.bind()?;
        let mut s: HipStream = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        self.check("hipStreamCreateWithFlags", unsafe {
            (self.api.hipStreamCreateWithFlags)(&mut s, runtime::STREAM_NON_BLOCKING)
        })?;
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
        self.check("hipStreamSynchronize", unsafe {
            (self.api.hipStreamSynchronize)(s)
        })
    }

    fn load_module(&self, source: &ModuleSource<'_>) -> Result<Module> {
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
        // Each argument in its own 8-byte slot; the runtime reads the kernel's declared size.
        let mut slots = args
            .iter()
            .map(|a| a.slot(|b| self.device_ptr(b)))
            .collect::<Result<Vec<u64>>>()?;
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        self.bind()?;
        let (g, b) = (config.grid, config.block);
        // SAFETY: buffers are live device allocations; scalars are little-endian slots.
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
                s,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
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

impl Drop for HipDevice {
    fn drop(&mut self) {
        let _ = self.bind();
        let api = self.api.clone();
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        // SAFETY: every handle was created by this device and is released exactly once.
        unsafe {
            for (_, s) in st.streams.drain() {
                let _ = (api.hipStreamSynchronize)(s);
                let _ = (api.hipStreamDestroy)(s);
            }
            for (_, (p, _)) in st.buffers.drain() {
                let _ = (api.hipFree)(p as *mut c_void);
            }
            for (_, m) in st.modules.drain() {
                let _ = (api.hipModuleUnload)(m.module);
            }
        }
    }
}

/// A device allocation that frees itself: what the HIP backend keeps weights and work
/// space in.
pub struct HipBuffer {
    dev: Arc<HipDevice>,
    buf: Buffer,
    ptr: u64,
}

impl HipBuffer {
    /// Allocates `bytes` bytes (contents undefined).
    pub fn alloc(dev: &Arc<HipDevice>, bytes: usize) -> Result<HipBuffer> {
        let buf = dev.alloc(bytes)?;
        let ptr = dev.device_ptr(buf)?;
        Ok(HipBuffer {
            dev: dev.clone(),
            buf,
            ptr,
        })
    }

    /// Allocates and fills from host bytes.
    pub fn from_bytes(dev: &Arc<HipDevice>, data: &[u8]) -> Result<HipBuffer> {
        let b = Self::alloc(dev, data.len())?;
        dev.write(b.buf, 0, data, Stream::DEFAULT)?;
        Ok(b)
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn handle(&self) -> Buffer {
        self.buf
    }
}

impl Drop for HipBuffer {
    fn drop(&mut self) {
        let _ = self.dev.free(self.buf);
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
