//! Finding wgpu adapters: native backends only (Vulkan, Metal, DX12; never GL), in a
//! stable order (discrete GPUs first), optionally filtered by `FLEETMOE_WGPU_ADAPTER`.

use crate::device::{Capabilities, Vendor};
use ::wgpu::{Adapter, AdapterInfo, Backend, Backends, DeviceType, Instance, InstanceDescriptor};

/// Environment variable: only adapters whose name contains it (case-insensitive) count.
pub const ADAPTER_ENV: &str = "FLEETMOE_WGPU_ADAPTER";

fn backends() -> Backends {
    Backends::VULKAN | Backends::METAL | Backends::DX12
}

/// A wgpu instance on the native backends.
pub(super) fn instance() -> Instance {
    let mut desc = InstanceDescriptor::new_without_display_handle();
    desc.backends = backends();
    Instance::new(desc)
}

/// The backend as people write it.
pub(super) fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Vulkan => "Vulkan",
        Backend::Metal => "Metal",
        Backend::Dx12 => "DX12",
        Backend::Gl => "GL",
        Backend::BrowserWebGpu => "WebGPU",
        Backend::Noop => "noop",
    }
}

fn type_rank(t: DeviceType) -> u8 {
    match t {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    }
}

fn type_name(t: DeviceType) -> &'static str {
    match t {
        DeviceType::DiscreteGpu => "discrete GPU",
        DeviceType::IntegratedGpu => "integrated GPU",
        DeviceType::VirtualGpu => "virtual GPU",
        DeviceType::Other => "other",
        DeviceType::Cpu => "CPU (software)",
    }
}

/// The adapter filter from the environment, lower-cased; `None` when unset or empty.
pub(super) fn filter() -> Option<String> {
    std::env::var(ADAPTER_ENV)
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
}

/// Every adapter `WgpuDevice::new` can open, ordinal order: by kind (discrete, integrated,
/// virtual, other, CPU), then backend, name and PCI bus, so the ordinal of a device does
/// not depend on the order a driver lists it in.
pub(super) fn enumerate(instance: &Instance) -> Vec<Adapter> {
    let mut list = pollster::block_on(instance.enumerate_adapters(backends()));
    list.retain(|a| a.get_info().backend != Backend::Gl);
    if let Some(f) = filter() {
        list.retain(|a| a.get_info().name.to_lowercase().contains(&f));
    }
    list.sort_by_cached_key(|a| {
        let i = a.get_info();
        (
            type_rank(i.device_type),
            backend_name(i.backend),
            i.name,
            i.device_pci_bus_id,
            i.device,
        )
    });
    list
}

/// One line for `fleetmoe info`: name, backend and kind.
pub(super) fn describe(info: &AdapterInfo) -> String {
    format!(
        "{} ({}, {})",
        info.name,
        backend_name(info.backend),
        type_name(info.device_type)
    )
}

/// The adapters `WgpuDevice::new(0..)` would open, in ordinal order, one description each
/// (honouring `FLEETMOE_WGPU_ADAPTER`). Empty when there are none, or when wgpu fails.
pub fn adapters() -> Vec<String> {
    std::panic::catch_unwind(|| {
        let instance = instance();
        enumerate(&instance)
            .iter()
            .map(|a| describe(&a.get_info()))
            .collect()
    })
    .unwrap_or_default()
}

/// What the oracle sees of an adapter: vendor `Other` always (the WGSL backend is the only
/// one it may be offered, whoever made the chip), no fp8 / MX / tensor-core claims.
pub(super) fn capabilities(
    info: &::wgpu::AdapterInfo,
    limits: &::wgpu::Limits,
    features: ::wgpu::Features,
) -> Capabilities {
    let backend = backend_name(info.backend);
    // wgpu cannot say how much memory a GPU has; an integrated GPU or a software adapter
    // shares the host's, which is the estimate then. A discrete GPU reports 0 (unknown).
    let memory_bytes = match info.device_type {
        ::wgpu::DeviceType::Cpu | ::wgpu::DeviceType::IntegratedGpu => {
            crate::device::cpu::capabilities().memory_bytes
        }
        _ => 0,
    };
    Capabilities {
        vendor: Vendor::Other,
        name: format!("{} ({backend})", info.name),
        arch: format!("wgpu-{}", backend.to_lowercase()),
        compute_capability: None,
        fp8: None,
        supports_mx: false,
        fp4_tensor_cores: false,
        bf16_tensor_cores: false,
        memory_bytes,
        // wgpu does not report compute units.
        multiprocessors: 1,
        shared_mem_per_block: limits.max_compute_workgroup_storage_size,
        warp_size: if features.contains(::wgpu::Features::SUBGROUP) {
            info.subgroup_min_size.max(1)
        } else {
            1
        },
    }
}
