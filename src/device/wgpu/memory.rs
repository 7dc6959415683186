//! Virtual device addresses for wgpu, which has none: every allocation gets a base of its
//! own, `(id + 1) << 40`, so a `Ptr` anywhere inside it (an offset into a workspace, as
//! the driver passes) resolves to (buffer, offset) by one range lookup.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Address bits of one allocation's span: 1 TiB, more than any adapter's buffers.
const SPAN_BITS: u32 = 40;

/// One live allocation.
#[derive(Clone)]
pub(super) struct Entry {
    pub buffer: ::wgpu::Buffer,
    /// The bytes the caller asked for (the buffer is this rounded up to 4, at least 16).
    pub bytes: u64,
}

/// Base address → allocation, shared by the device and every `WgpuAlloc`.
#[derive(Default)]
pub(super) struct Registry {
    next: u64,
    map: BTreeMap<u64, Entry>,
}

/// A location a pointer resolved to.
pub(super) struct Resolved {
    pub entry: Entry,
    /// Bytes from the allocation's start.
    pub offset: u64,
}

impl Registry {
    /// Registers `entry` and returns its base address.
    pub fn insert(&mut self, entry: Entry) -> Result<u64> {
        let id = self.next;
        if id + 1 >= 1u64 << (64 - SPAN_BITS) {
            return Err(Error::Device {
                call: "alloc".into(),
                message: "the wgpu runtime's virtual address space is exhausted".into(),
            });
        }
        self.next += 1;
        let addr = (id + 1) << SPAN_BITS;
        self.map.insert(addr, entry);
        Ok(addr)
    }

    pub fn remove(&mut self, addr: u64) {
        self.map.remove(&addr);
    }

    /// The allocation holding `[addr, addr + len)` (`len` 0: `addr` itself must lie
    /// inside), or `Error::Handle` naming `what`.
    pub fn resolve(&self, addr: u64, len: u64, what: &str) -> Result<Resolved> {
        let found = self.map.range(..=addr).next_back();
        let Some((&base, entry)) = found else {
            return Err(unknown(addr, what));
        };
        let offset = addr - base;
        let end = offset.checked_add(len.max(1));
        if offset >= entry.bytes.max(1) || end.is_none_or(|e| e > entry.bytes.max(1)) {
            if offset >= 1u64 << SPAN_BITS {
                return Err(unknown(addr, what));
            }
            return Err(Error::Handle(format!(
                "{what}: {len} bytes at offset {offset} of a {}-byte wgpu allocation run past \
                 its end",
                entry.bytes
            )));
        }
        Ok(Resolved {
            entry: entry.clone(),
            offset,
        })
    }
}

fn unknown(addr: u64, what: &str) -> Error {
    Error::Handle(format!(
        "{what}: address {addr:#x} is no live allocation of this wgpu device"
    ))
}

/// Locks the registry; a panic elsewhere while it was held leaves the map consistent.
pub(super) fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// A wgpu allocation: its virtual address, removed from the device's map when dropped (the
/// buffer itself lives on until the GPU work that uses it is done).
pub struct WgpuAlloc {
    addr: u64,
    registry: Arc<Mutex<Registry>>,
}

impl WgpuAlloc {
    pub(super) fn new(addr: u64, registry: Arc<Mutex<Registry>>) -> Self {
        WgpuAlloc { addr, registry }
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl std::fmt::Debug for WgpuAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuAlloc({:#x})", self.addr)
    }
}

impl Drop for WgpuAlloc {
    fn drop(&mut self) {
        lock(&self.registry).remove(self.addr);
    }
}
