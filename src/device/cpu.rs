//! The host CPU as the oracle sees it. The CPU runs the emulation directly on host
//! memory, so it needs no runtime: only its capabilities.

use super::Capabilities;

/// The host's capabilities, with its memory size read from `/proc/meminfo` where there
/// is one.
pub fn capabilities() -> Capabilities {
    let mut caps = Capabilities::cpu_only();
    caps.memory_bytes = host_memory_bytes().unwrap_or(0);
    caps
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
