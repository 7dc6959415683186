//! The HIP runtime (`libamdhip64`), opened at run time with `dlopen`.
//!
//! Why not `hip-sys`: its build script needs `/opt/rocm` or `HIP_PATH` (Debian installs
//! ROCm under `/usr`), and it links `libamdhip64` into the binary, so a `--features rocm`
//! (or `"cuda rocm"`) binary would not even start on a machine without ROCm — the loader
//! fails before `main`, where fleetmoe must answer `Error::NoDevice` and run emulated.
//! Opening the library at run time, as cudarc does for libcuda, keeps one binary for a
//! mixed fleet. Only calls whose C signatures and enum values are the same in ROCm 5.x and
//! 6.x are used (attribute numbers checked against both headers); `hipDeviceProp_t` is
//! never read through a struct layout (see `gfx::find_arch_name`).

use crate::error::{Error, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

pub type HipError = c_int;
pub type HipStream = *mut c_void;
pub type HipModule = *mut c_void;
pub type HipFunction = *mut c_void;

/// `hipDeviceAttribute_t` values (identical in ROCm 5.2 and 6.x headers).
pub mod attr {
    pub const COMPUTE_CAPABILITY_MAJOR: i32 = 23;
    pub const COMPUTE_CAPABILITY_MINOR: i32 = 61;
    pub const MULTIPROCESSOR_COUNT: i32 = 63;
    pub const MAX_SHARED_MEMORY_PER_BLOCK: i32 = 74;
    pub const WARP_SIZE: i32 = 87;
}

/// `hipStreamNonBlocking`.
pub const STREAM_NON_BLOCKING: c_uint = 1;

/// The library names tried, newest first; `$FLEETMOE_HIP_LIB` is tried before them.
const NAMES: &[&str] = &[
    "libamdhip64.so",
    "libamdhip64.so.7",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
];

macro_rules! hip_api {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        /// The runtime entry points fleetmoe calls.
        #[allow(non_snake_case)]
        pub struct HipApi {
            _lib: Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
            /// `hipGetDevicePropertiesR0600` (ROCm 6+) or the older `hipGetDeviceProperties`.
            pub get_properties: unsafe extern "C" fn(*mut c_void, c_int) -> HipError,
        }

        impl HipApi {
            fn from_library(lib: Library) -> Result<HipApi> {
                // SAFETY: each symbol is looked up by its C name and given the signature the
                // HIP headers declare for it.
                unsafe {
                    let get_properties = *lib
                        .get::<unsafe extern "C" fn(*mut c_void, c_int) -> HipError>(b"hipGetDevicePropertiesR0600\0")
                        .or_else(|_| lib.get(b"hipGetDeviceProperties\0"))
                        .map_err(|e| missing("hipGetDeviceProperties", e))?;
                    Ok(HipApi {
                        $($name: *lib
                            .get(concat!(stringify!($name), "\0").as_bytes())
                            .map_err(|e| missing(stringify!($name), e))?,)*
                        get_properties,
                        _lib: lib,
                    })
                }
            }
        }
    };
}

fn missing(symbol: &str, e: libloading::Error) -> Error {
    Error::NoDevice(format!("libamdhip64 lacks {symbol}: {e}"))
}

hip_api! {
    hipInit: fn(c_uint) -> HipError;
    hipGetDeviceCount: fn(*mut c_int) -> HipError;
    hipDeviceGetAttribute: fn(*mut c_int, c_int, c_int) -> HipError;
    hipDeviceGetName: fn(*mut c_char, c_int, c_int) -> HipError;
    hipDeviceTotalMem: fn(*mut usize, c_int) -> HipError;
    hipSetDevice: fn(c_int) -> HipError;
    hipMalloc: fn(*mut *mut c_void, usize) -> HipError;
    hipFree: fn(*mut c_void) -> HipError;
    hipMemcpyHtoDAsync: fn(*mut c_void, *const c_void, usize, HipStream) -> HipError;
    hipMemcpyDtoHAsync: fn(*mut c_void, *mut c_void, usize, HipStream) -> HipError;
    hipMemsetAsync: fn(*mut c_void, c_int, usize, HipStream) -> HipError;
    hipStreamCreateWithFlags: fn(*mut HipStream, c_uint) -> HipError;
    hipStreamSynchronize: fn(HipStream) -> HipError;
    hipStreamDestroy: fn(HipStream) -> HipError;
    hipStreamGetDevice: fn(HipStream, *mut c_int) -> HipError;
    hipModuleLoadData: fn(*mut HipModule, *const c_void) -> HipError;
    hipModuleUnload: fn(HipModule) -> HipError;
    hipModuleGetFunction: fn(*mut HipFunction, HipModule, *const c_char) -> HipError;
    hipModuleLaunchKernel: fn(HipFunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, HipStream, *mut *mut c_void, *mut *mut c_void) -> HipError;
    hipGetErrorString: fn(HipError) -> *const c_char;
}

impl HipApi {
    /// Opens the runtime; no library (or one without these symbols) is `Error::NoDevice`.
    pub fn load() -> Result<HipApi> {
        let custom = std::env::var("FLEETMOE_HIP_LIB").ok();
        let names: Vec<&str> = custom
            .iter()
            .map(String::as_str)
            .chain(NAMES.iter().copied())
            .collect();
        Self::load_from(&names)
    }

    /// Opens the first of `names` that loads.
    pub fn load_from(names: &[&str]) -> Result<HipApi> {
        let mut tried = Vec::new();
        for &name in names {
            // SAFETY: loading the HIP runtime runs its initialisers, which only register
            // the runtime; no fleetmoe state is touched.
            match unsafe { Library::new(name) } {
                Ok(lib) => return HipApi::from_library(lib),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        Err(Error::NoDevice(format!(
            "HIP runtime not found (no AMD ROCm install): {}",
            tried.join("; ")
        )))
    }

    /// The runtime's text for an error code.
    pub fn error_string(&self, code: HipError) -> String {
        // SAFETY: hipGetErrorString returns a static C string for any code.
        let p = unsafe { (self.hipGetErrorString)(code) };
        if p.is_null() {
            format!("HIP error {code}")
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
            format!("{s} ({code})")
        }
    }

    /// `Ok` for `hipSuccess`, else `Error::Device` naming `call`.
    pub fn check(&self, call: &str, code: HipError) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::Device {
                call: call.to_string(),
                message: self.error_string(code),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_library_is_no_device() {
        let err = HipApi::load_from(&["/nonexistent/libamdhip64.so"])
            .err()
            .expect("a missing library must not load");
        assert!(matches!(err, Error::NoDevice(_)), "{err}");
    }
}
