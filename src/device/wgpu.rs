//! `WgpuDevice`: one adapter (a GPU, or lavapipe's software Vulkan) through wgpu on
//! Vulkan, Metal or DX12, running the WGSL kernels of `kernels-wgsl` by the launch
//! convention of kernels-wgsl/README.md. wgpu has no device addresses, so each allocation
//! gets a virtual base address (`memory`); it has one queue, so every stream is that
//! queue. Launches are recorded into one command encoder and submitted in batches, at a
//! synchronize, upload or download, or every `FLUSH_EVERY` dispatches.
//!
//! No wgpu error reaches a panic: validation and out-of-memory errors are caught by error
//! scopes and returned as `Error`; anything uncaptured is logged and returned by the next
//! `synchronize` or `download`.

mod adapter;
pub mod launch;
mod memory;
mod transfer;

pub use adapter::{adapters, ADAPTER_ENV};
pub use memory::WgpuAlloc;

use super::{Arg, Capabilities, LaunchConfig, ModuleSource, Runtime};
use crate::error::{Error, Result};
use launch::{Layouts, PipelineKey};
use memory::{Entry, Registry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of the ring the launches' params live in between two submits.
const RING_BYTES: u64 = 64 * 1024;

/// Ids for devices, so a stream or module of one is refused by another.
static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

/// The queue of a `WgpuDevice`. wgpu has one queue per device, so every stream of a
/// device is ordered with every other; the id only says which device it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuStream {
    device: u64,
}

/// A compiled WGSL module and its pipelines so far, one per (entry point, workgroup
/// size, pointer count).
pub struct WgpuKernels {
    device: u64,
    name: String,
    module: ::wgpu::ShaderModule,
    pipelines: Mutex<HashMap<PipelineKey, ::wgpu::ComputePipeline>>,
}

impl std::fmt::Debug for WgpuKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuKernels({})", self.name)
    }
}

/// Work recorded but not yet submitted.
#[derive(Default)]
struct Pending {
    encoder: Option<::wgpu::CommandEncoder>,
    dispatches: u32,
    /// Bytes of the params ring used by the recorded dispatches.
    ring_used: u64,
}

/// One wgpu adapter, opened.
pub struct WgpuDevice {
    id: u64,
    ordinal: usize,
    info: ::wgpu::AdapterInfo,
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    limits: ::wgpu::Limits,
    caps: Capabilities,
    stream: WgpuStream,
    registry: Arc<Mutex<Registry>>,
    pending: Mutex<Pending>,
    layouts: Layouts,
    ring: ::wgpu::Buffer,
    /// Bound for a null pointer (README rule 2).
    dummy: ::wgpu::Buffer,
    /// Errors no scope caught (the uncaptured-error handler's log), reported later.
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for WgpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuDevice({}: {})", self.ordinal, self.caps)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl WgpuDevice {
    /// Opens adapter `ordinal` of [`adapters`]' list. No adapter (no Vulkan, Metal or
    /// DX12 driver, or none matching `FLEETMOE_WGPU_ADAPTER`) or a device that will not
    /// open → `Error::NoDevice` with the reason.
    pub fn new(ordinal: usize) -> Result<WgpuDevice> {
        let opened = std::panic::catch_unwind(|| Self::open(ordinal));
        opened.unwrap_or_else(|_| {
            Err(Error::NoDevice(format!(
                "wgpu adapter {ordinal}: wgpu panicked while opening it"
            )))
        })
    }

    fn open(ordinal: usize) -> Result<WgpuDevice> {
        let instance = adapter::instance();
        let list = adapter::enumerate(&instance);
        let Some(chosen) = list.into_iter().nth(ordinal) else {
            let found = adapter::enumerate(&instance).len();
            let filter = adapter::filter()
                .map(|f| format!(" matching {ADAPTER_ENV}='{f}'"))
                .unwrap_or_default();
            return Err(Error::NoDevice(format!(
                "wgpu adapter {ordinal} requested, {found} Vulkan / Metal / DX12 adapters \
                 present{filter}"
            )));
        };
        let info = chosen.get_info();
        let limits = chosen.limits();
        let wanted = ::wgpu::Features::SHADER_F16 | ::wgpu::Features::SUBGROUP;
        let features = chosen.features() & wanted;
        let desc = ::wgpu::DeviceDescriptor {
            label: Some("fleetmoe"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(chosen.request_device(&desc)).map_err(|e| {
            Error::NoDevice(format!(
                "wgpu adapter {ordinal} ({}): request_device failed: {e}",
                adapter::describe(&info)
            ))
        })?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: ::wgpu::Error| {
            log::error!("wgpu: {e}");
            lock(&sink).push(e.to_string());
        }));
        device.set_device_lost_callback(|reason, message| {
            log::error!("wgpu device lost ({reason:?}): {message}");
        });
        let storage = ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_DST;
        let buffer = |label, size| {
            device.create_buffer(&::wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: storage,
                mapped_at_creation: false,
            })
        };
        let ring = buffer("fleetmoe params", RING_BYTES);
        let dummy = buffer("fleetmoe null", 16);
        let caps = adapter::capabilities(&info, &limits, features);
        let id = NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed);
        Ok(WgpuDevice {
            id,
            ordinal,
            info,
            device,
            queue,
            limits,
            caps,
            stream: WgpuStream { device: id },
            registry: Arc::default(),
            pending: Mutex::default(),
            layouts: Layouts::default(),
            ring,
            dummy,
            uncaptured,
        })
    }

    /// The ordinal this was opened with.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The adapter: name, backend, driver.
    pub fn adapter_info(&self) -> &::wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &::wgpu::Limits {
        &self.limits
    }

    /// The wgpu device, for callers that record work of their own.
    pub fn device(&self) -> &::wgpu::Device {
        &self.device
    }

    /// A stream of this device (the same queue as `stream()`).
    pub fn new_stream(&self) -> WgpuStream {
        self.stream.clone()
    }

    /// Runs `f` inside validation and out-of-memory error scopes; a caught error becomes
    /// `Error::Device` naming `call`.
    fn scoped<T>(&self, call: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self
            .device
            .push_error_scope(::wgpu::ErrorFilter::OutOfMemory);
        let validation = self
            .device
            .push_error_scope(::wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            None => Ok(out),
            Some(e) => Err(Error::Device {
                call: call.to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// An error no scope caught since the last call, if any.
    fn take_uncaptured(&self) -> Result<()> {
        let mut errs = lock(&self.uncaptured);
        if errs.is_empty() {
            return Ok(());
        }
        let message = errs.join("\n");
        errs.clear();
        Err(Error::Device {
            call: "wgpu (uncaptured)".into(),
            message,
        })
    }

    fn resolve(&self, addr: u64, len: u64, what: &str) -> Result<memory::Resolved> {
        memory::lock(&self.registry).resolve(addr, len, what)
    }

    /// Submits what is recorded. The params ring is free again afterwards: a later
    /// `write_buffer` to it lands in the next submission, after this one's reads.
    fn flush(&self, p: &mut Pending) -> Result<()> {
        p.dispatches = 0;
        p.ring_used = 0;
        let Some(encoder) = p.encoder.take() else {
            return Ok(());
        };
        self.scoped("queue.submit (recorded launches)", || {
            self.queue.submit([encoder.finish()]);
        })
    }

    fn encoder<'p>(&self, p: &'p mut Pending) -> &'p mut ::wgpu::CommandEncoder {
        p.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&::wgpu::CommandEncoderDescriptor {
                    label: Some("fleetmoe"),
                })
        })
    }
}

impl Runtime for WgpuDevice {
    type Stream = WgpuStream;
    type Alloc = WgpuAlloc;
    type Module = WgpuKernels;

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn stream(&self) -> &WgpuStream {
        &self.stream
    }

    fn check_stream(&self, stream: &WgpuStream) -> Result<()> {
        if stream.device == self.id {
            Ok(())
        } else {
            Err(Error::Handle(format!(
                "the stream belongs to another wgpu device than adapter {} ({})",
                self.ordinal, self.caps.name
            )))
        }
    }

    fn alloc(&self, bytes: usize) -> Result<WgpuAlloc> {
        let size = round_up(bytes.max(1) as u64, 4).max(16);
        if size > self.limits.max_buffer_size {
            return Err(Error::Device {
                call: "alloc".into(),
                message: format!(
                    "{bytes} bytes asked; the adapter's largest buffer is {} bytes",
                    self.limits.max_buffer_size
                ),
            });
        }
        let buffer = self.scoped("create_buffer", || {
            self.device.create_buffer(&::wgpu::BufferDescriptor {
                label: None,
                size,
                usage: ::wgpu::BufferUsages::STORAGE
                    | ::wgpu::BufferUsages::COPY_SRC
                    | ::wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let entry = Entry {
            buffer,
            bytes: bytes as u64,
        };
        let addr = memory::lock(&self.registry).insert(entry)?;
        Ok(WgpuAlloc::new(addr, Arc::clone(&self.registry)))
    }

    fn address(&self, alloc: &WgpuAlloc) -> u64 {
        alloc.addr()
    }

    fn upload(&self, dst: u64, data: &[u8], stream: &WgpuStream) -> Result<()> {
        self.check_stream(stream)?;
        if data.is_empty() {
            return Ok(());
        }
        let r = self.resolve(dst, data.len() as u64, "upload")?;
        let mut p = lock(&self.pending);
        self.write(&mut p, &r.entry, r.offset, data)
    }

    fn download(&self, src: u64, out: &mut [u8], stream: &WgpuStream) -> Result<()> {
        self.check_stream(stream)?;
        if out.is_empty() {
            return Ok(());
        }
        let r = self.resolve(src, out.len() as u64, "download")?;
        let start = r.offset / 4 * 4;
        let stop = round_up(r.offset + out.len() as u64, 4);
        let mut p = lock(&self.pending);
        let words = self.read_words(&mut p, &r.entry.buffer, start, stop - start)?;
        let at = (r.offset - start) as usize;
        out.copy_from_slice(&words[at..at + out.len()]);
        Ok(())
    }

    fn zero(&self, dst: u64, bytes: usize, stream: &WgpuStream) -> Result<()> {
        self.check_stream(stream)?;
        if bytes == 0 {
            return Ok(());
        }
        let r = self.resolve(dst, bytes as u64, "zero")?;
        let (off, end) = (r.offset, r.offset + bytes as u64);
        // Whole words are cleared in the recorded stream; the bytes of a partial word at
        // either end are written (merged with their neighbours), in order after it.
        let a0 = round_up(off, 4).min(end);
        let a1 = (end / 4 * 4).max(a0);
        let mut p = lock(&self.pending);
        if a1 > a0 {
            let buffer = r.entry.buffer.clone();
            self.encoder(&mut p)
                .clear_buffer(&buffer, a0, Some(a1 - a0));
        }
        if off < a0 {
            self.write(&mut p, &r.entry, off, &vec![0; (a0 - off) as usize])?;
        }
        if a1 < end {
            self.write(&mut p, &r.entry, a1, &vec![0; (end - a1) as usize])?;
        }
        Ok(())
    }

    fn synchronize(&self, stream: &WgpuStream) -> Result<()> {
        self.check_stream(stream)?;
        {
            let mut p = lock(&self.pending);
            self.flush(&mut p)?;
        }
        self.wait()?;
        self.take_uncaptured()
    }

    fn load(&self, source: &ModuleSource<'_>) -> Result<WgpuKernels> {
        let ModuleSource::Wgsl { name, source } = source else {
            return Err(Error::Handle(format!(
                "module '{}' is not WGSL; a wgpu device loads only WGSL",
                source.name()
            )));
        };
        let module = self
            .scoped("create_shader_module", || {
                self.device
                    .create_shader_module(::wgpu::ShaderModuleDescriptor {
                        label: Some(name),
                        source: ::wgpu::ShaderSource::Wgsl(std::borrow::Cow::Borrowed(source)),
                    })
            })
            .map_err(|e| Error::KernelCompile {
                kernel: name.to_string(),
                target: self.caps.arch.clone(),
                log: match e {
                    Error::Device { message, .. } => message,
                    other => other.to_string(),
                },
            })?;
        Ok(WgpuKernels {
            device: self.id,
            name: name.to_string(),
            module,
            pipelines: Mutex::default(),
        })
    }

    fn launch(
        &self,
        module: &WgpuKernels,
        kernel: &str,
        config: LaunchConfig,
        args: &[Arg<'_>],
        stream: &WgpuStream,
    ) -> Result<()> {
        self.record(module, kernel, config, args, stream)
    }
}
