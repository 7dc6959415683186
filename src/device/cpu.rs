//! The host as a `Device`: buffers are byte vectors in a registry, streams are ids (all
//! work runs synchronously on the caller's thread), kernels are host functions. It exists
//! so emulation and every layer above the device run unchanged on a machine with no GPU.

use super::{Arg, Buffer, Capabilities, Device, LaunchConfig, Module, ModuleSource, Stream};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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

/// The host CPU behind the `Device` trait.
#[derive(Debug)]
pub struct CpuDevice {
    caps: Capabilities,
    buffers: Mutex<HashMap<u64, Vec<u8>>>,
    /// Loaded modules; a `HostModule` is only `'static` tables, so a copy is kept.
    modules: Mutex<HashMap<u64, HostModule>>,
    next_buffer: AtomicU64,
    next_module: AtomicU64,
    /// Streams are `0..next_stream`; stream 0 is `Stream::DEFAULT`.
    next_stream: AtomicU64,
}

impl Default for CpuDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuDevice {
    /// The host, with its memory size read from `/proc/meminfo` where there is one.
    pub fn new() -> CpuDevice {
        let mut caps = Capabilities::cpu_only();
        caps.memory_bytes = host_memory_bytes().unwrap_or(0);
        CpuDevice {
            caps,
            buffers: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            next_buffer: AtomicU64::new(1),
            next_module: AtomicU64::new(1),
            next_stream: AtomicU64::new(1),
        }
    }

    fn check_stream(&self, stream: Stream) -> Result<()> {
        if stream.0 < self.next_stream.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Error::Handle(format!(
                "stream {} was not created by this CPU device",
                stream.0
            )))
        }
    }

    fn buffers(&self) -> MutexGuard<'_, HashMap<u64, Vec<u8>>> {
        // Every operation leaves the map consistent, so a panic elsewhere does not spoil it.
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Finds `buffer` in the registry, checking that the handle's size matches the allocation
/// (a handle from another device or a forged one fails here).
fn lookup(map: &mut HashMap<u64, Vec<u8>>, buffer: Buffer) -> Result<&mut Vec<u8>> {
    match map.get_mut(&buffer.id) {
        Some(bytes) if bytes.len() == buffer.bytes => Ok(bytes),
        Some(bytes) => Err(Error::Handle(format!(
            "buffer #{} claims {} bytes but this CPU device allocated {}",
            buffer.id,
            buffer.bytes,
            bytes.len()
        ))),
        None => Err(Error::Handle(format!(
            "buffer #{} is not allocated on this CPU device (freed, or never allocated here)",
            buffer.id
        ))),
    }
}

/// The byte range `offset..offset + len` of `buffer`, or a shape error naming both.
fn range(buffer: Buffer, offset: usize, len: usize, what: &str) -> Result<std::ops::Range<usize>> {
    match offset.checked_add(len) {
        Some(end) if end <= buffer.bytes => Ok(offset..end),
        _ => Err(Error::shape(
            format!("{what} of buffer #{}", buffer.id),
            format!("bytes within 0..{}", buffer.bytes),
            format!("bytes {offset}..{}", offset as u128 + len as u128),
        )),
    }
}

/// Buffers lent to a running kernel; dropping this puts them back in the registry, so
/// they return whether the kernel succeeds, fails or panics.
struct Lent<'d> {
    device: &'d CpuDevice,
    taken: Vec<(u64, Vec<u8>)>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut map = self.device.buffers();
        for (id, bytes) in self.taken.drain(..) {
            map.insert(id, bytes);
        }
    }
}

impl Device for CpuDevice {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let mut data = Vec::new();
        data.try_reserve_exact(bytes).map_err(|e| Error::Device {
            call: "alloc".into(),
            message: format!("cannot allocate {bytes} bytes of host memory: {e}"),
        })?;
        data.resize(bytes, 0);
        let id = self.next_buffer.fetch_add(1, Ordering::Relaxed);
        self.buffers().insert(id, data);
        Ok(Buffer { id, bytes })
    }

    fn free(&self, buffer: Buffer) -> Result<()> {
        let mut map = self.buffers();
        lookup(&mut map, buffer)?;
        map.remove(&buffer.id);
        Ok(())
    }

    fn write(&self, buffer: Buffer, offset: usize, data: &[u8], stream: Stream) -> Result<()> {
        self.check_stream(stream)?;
        let mut map = self.buffers();
        let bytes = lookup(&mut map, buffer)?;
        let r = range(buffer, offset, data.len(), "write")?;
        bytes[r].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, buffer: Buffer, offset: usize, out: &mut [u8], stream: Stream) -> Result<()> {
        self.check_stream(stream)?;
        let mut map = self.buffers();
        let bytes = lookup(&mut map, buffer)?;
        let r = range(buffer, offset, out.len(), "read")?;
        out.copy_from_slice(&bytes[r]);
        Ok(())
    }

    fn create_stream(&self) -> Result<Stream> {
        Ok(Stream(self.next_stream.fetch_add(1, Ordering::Relaxed)))
    }

    fn synchronize(&self, stream: Stream) -> Result<()> {
        // Work ran when it was queued; only the handle needs checking.
        self.check_stream(stream)
    }

    fn load_module(&self, source: &ModuleSource<'_>) -> Result<Module> {
        let ModuleSource::Host(host) = source else {
            let kind = match source {
                ModuleSource::Cuda { .. } => "CUDA",
                ModuleSource::Hip { .. } => "HIP",
                ModuleSource::Wgsl { .. } => "WGSL",
                ModuleSource::Host(_) => "host",
            };
            return Err(Error::Device {
                call: "load_module".into(),
                message: format!(
                    "the CPU device runs host modules only; got a {kind} module '{}'",
                    source.name()
                ),
            });
        };
        let id = self.next_module.fetch_add(1, Ordering::Relaxed);
        let copy = HostModule {
            name: host.name,
            kernels: host.kernels,
        };
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, copy);
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
        self.check_stream(stream)?;
        let function = {
            let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            let host = modules.get(&module.0).ok_or_else(|| {
                Error::Handle(format!(
                    "module {} was not loaded on this CPU device",
                    module.0
                ))
            })?;
            host.kernels
                .iter()
                .find(|(name, _)| *name == kernel)
                .map(|(_, f)| *f)
                .ok_or_else(|| Error::Device {
                    call: "launch".into(),
                    message: format!(
                        "module '{}' has no kernel '{kernel}' (it has: {})",
                        host.name,
                        host.kernels
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?
        };

        let mut lent = Lent {
            device: self,
            taken: Vec::new(),
        };
        {
            let mut map = self.buffers();
            for arg in args {
                let Arg::Buffer(buffer) = arg else { continue };
                if lent.taken.iter().any(|(id, _)| *id == buffer.id) {
                    return Err(Error::Device {
                        call: "launch".into(),
                        message: format!(
                            "kernel '{kernel}' got buffer #{} twice; host kernels take each buffer once",
                            buffer.id
                        ),
                    });
                }
                lookup(&mut map, *buffer)?;
                let bytes = map.remove(&buffer.id).unwrap_or_default();
                lent.taken.push((buffer.id, bytes));
            }
            // `map` is released here, before `lent` can be dropped and lock it again.
        }
        let mut slices: Vec<&mut [u8]> = lent
            .taken
            .iter_mut()
            .map(|(_, bytes)| bytes.as_mut_slice())
            .collect();
        function(&config, args, &mut slices)
    }
}
