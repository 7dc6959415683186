//! NVRTC: CUDA C++ source → CUBIN for one exact GPU architecture, with a disk cache keyed
//! by a hash of the source, the options, the target and the NVRTC version. A CUBIN (not
//! PTX) is asked for so that a newer NVRTC never hands the driver PTX it cannot read.

use crate::error::{Error, Result};
use cudarc::nvrtc::sys;
use std::ffi::{c_char, CString};
use std::path::PathBuf;

/// Whether libnvrtc can be loaded (checked before any NVRTC call, which would panic).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the shared library.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(Error::NoDevice("libnvrtc not found".into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(rc, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(rc: sys::nvrtcResult, call: &str) -> Result<()> {
    if rc == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device {
            call: call.to_string(),
            message: format!("{rc:?}"),
        })
    }
}

/// The options every fleetmoe kernel is compiled with for `arch` (e.g. `sm_90a`).
pub fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "--device-as-default-execution-space".to_string(),
        "-lineinfo".to_string(),
    ]
}

/// Compiles `source` (named `name` in messages) into a CUBIN for `arch`, no cache.
pub fn compile_cubin(name: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    if !nvrtc_available() {
        return Err(Error::NoDevice("libnvrtc not found".into()));
    }
    let compile_err = |log: String| Error::KernelCompile {
        kernel: name.to_string(),
        target: arch.to_string(),
        log,
    };
    let src = CString::new(source).map_err(|_| compile_err("source contains a NUL byte".into()))?;
    let cname = CString::new(name).map_err(|_| compile_err("name contains a NUL byte".into()))?;
    let opts: Vec<CString> = options(arch)
        .into_iter()
        .map(|o| CString::new(o).expect("options have no NUL"))
        .collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid C strings that outlive the program; no headers.
    unsafe {
        check(
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            ),
            "nvrtcCreateProgram",
        )?;
    }
    // SAFETY: `prog` was created above and is destroyed exactly once below.
    let result = unsafe {
        let rc = sys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr());
        let log = program_log(prog);
        if rc != sys::nvrtcResult::NVRTC_SUCCESS {
            Err(compile_err(format!("{rc:?}\n{log}")))
        } else {
            let mut size = 0usize;
            check(sys::nvrtcGetCUBINSize(prog, &mut size), "nvrtcGetCUBINSize").and_then(|_| {
                let mut cubin = vec![0u8; size];
                check(
                    sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char),
                    "nvrtcGetCUBIN",
                )
                .map(|_| cubin)
            })
        }
    };
    // SAFETY: destroys the program created above.
    unsafe {
        sys::nvrtcDestroyProgram(&mut prog);
    }
    let cubin = result?;
    if cubin.is_empty() {
        return Err(compile_err("NVRTC returned an empty CUBIN".into()));
    }
    Ok(cubin)
}

unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if sys::nvrtcGetProgramLogSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS || size == 0
    {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char)
        != sys::nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string()
}

/// Where compiled CUBINs are kept: `$FLEETMOE_CACHE_DIR`, else `$XDG_CACHE_HOME/fleetmoe`,
/// else `~/.cache/fleetmoe`, else a folder under the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLEETMOE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("fleetmoe");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache").join("fleetmoe");
    }
    std::env::temp_dir().join("fleetmoe-cache")
}

/// FNV-1a, 64 bits: stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache key of one compilation.
pub fn cache_key(name: &str, source: &str, arch: &str) -> String {
    let version = nvrtc_version().unwrap_or((0, 0));
    let opts = options(arch).join(" ");
    let ver = format!("{}.{}", version.0, version.1);
    let h1 = fnv1a(&[
        source.as_bytes(),
        opts.as_bytes(),
        arch.as_bytes(),
        ver.as_bytes(),
    ]);
    let h2 = fnv1a(&[
        ver.as_bytes(),
        arch.as_bytes(),
        opts.as_bytes(),
        source.as_bytes(),
    ]);
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{safe}-{arch}-{h1:016x}{h2:016x}.cubin")
}

/// Compiles through the disk cache: a hit reads the CUBIN, a miss compiles and writes it
/// (atomically, through a temporary file). A cache that cannot be written is not an error.
pub fn compile_cached(name: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    let dir = cache_dir();
    let path = dir.join(cache_key(name, source, arch));
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok(bytes);
        }
    }
    let cubin = compile_cubin(name, source, arch)?;
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            cache_key(name, source, arch),
            std::process::id()
        ));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(cubin)
}
