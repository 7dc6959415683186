//! `Capabilities`: everything the oracle needs to know about a device, buildable by hand so
//! every platform can be asked about on every machine.

use crate::error::{Error, Result};
use crate::quant::Fp8Flavor;
use std::fmt;

/// Who made the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Nvidia,
    Amd,
    Cpu,
    /// A device reached through a portable API (wgpu) whose vendor does not matter.
    Other,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Nvidia => "NVIDIA",
            Vendor::Amd => "AMD",
            Vendor::Cpu => "CPU",
            Vendor::Other => "other",
        })
    }
}

/// What a device can do.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub vendor: Vendor,
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compiler target: `sm_90a`, `gfx942`, or the host CPU architecture (`x86_64`).
    pub arch: String,
    /// NVIDIA compute capability (major, minor).
    pub compute_capability: Option<(u32, u32)>,
    /// The fp8 encoding the matrix units take natively, if they take fp8 at all.
    pub fp8: Option<Fp8Flavor>,
    /// Native OCP MX block-scaled matrix instructions (sm_100, gfx950).
    pub supports_mx: bool,
    /// Native NVFP4 tensor cores (sm_100+).
    pub fp4_tensor_cores: bool,
    /// bf16 matrix units (tensor cores / MFMA).
    pub bf16_tensor_cores: bool,
    /// Device memory in bytes (host memory for the CPU).
    pub memory_bytes: u64,
    /// Streaming multiprocessors / compute units / host threads.
    pub multiprocessors: u32,
    /// Shared memory (LDS) a block may use, in bytes.
    pub shared_mem_per_block: u32,
    /// Threads per warp / wavefront (1 for the CPU).
    pub warp_size: u32,
}

const GIB: u64 = 1 << 30;

impl Capabilities {
    /// Names accepted by [`Capabilities::preset`].
    pub const PRESETS: &'static [&'static str] = &[
        "h100", "h200", "b200", "mi250x", "mi300x", "mi355x", "lavapipe", "cpu",
    ];

    /// A preset platform by name (see [`Capabilities::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "h100" => Ok(Self::h100()),
            "h200" => Ok(Self::h200()),
            "b200" => Ok(Self::b200()),
            "mi250x" | "mi200" => Ok(Self::mi250x()),
            "mi300x" => Ok(Self::mi300x()),
            "mi355x" => Ok(Self::mi355x()),
            "lavapipe" | "wgpu" => Ok(Self::lavapipe()),
            "cpu" | "cpu-only" => Ok(Self::cpu_only()),
            _ => Err(Error::UnknownPlatform {
                name: name.to_string(),
                known: Self::PRESETS.join(", "),
            }),
        }
    }

    fn nvidia(name: &str, cc: (u32, u32), memory_gib: u64, sms: u32) -> Self {
        let arch = match cc {
            (9, 0) => "sm_90a".to_string(),
            (10, 0) => "sm_100a".to_string(),
            (ma, mi) => format!("sm_{ma}{mi}"),
        };
        Capabilities {
            vendor: Vendor::Nvidia,
            name: name.to_string(),
            arch,
            compute_capability: Some(cc),
            fp8: (cc >= (8, 9)).then_some(Fp8Flavor::E4M3Fn),
            supports_mx: cc.0 >= 10,
            fp4_tensor_cores: cc.0 >= 10,
            bf16_tensor_cores: cc >= (8, 0),
            memory_bytes: memory_gib * GIB,
            multiprocessors: sms,
            shared_mem_per_block: if cc.0 >= 9 { 227 * 1024 } else { 163 * 1024 },
            warp_size: 32,
        }
    }

    fn amd(name: &str, arch: &str, memory_gib: u64, cus: u32) -> Self {
        let gfx950 = arch == "gfx950";
        Capabilities {
            vendor: Vendor::Amd,
            name: name.to_string(),
            arch: arch.to_string(),
            compute_capability: None,
            fp8: match arch {
                "gfx942" => Some(Fp8Flavor::E4M3Fnuz),
                "gfx950" => Some(Fp8Flavor::E4M3Fn),
                _ => None,
            },
            supports_mx: gfx950,
            fp4_tensor_cores: gfx950,
            bf16_tensor_cores: true,
            memory_bytes: memory_gib * GIB,
            multiprocessors: cus,
            shared_mem_per_block: if gfx950 { 160 * 1024 } else { 64 * 1024 },
            warp_size: 64,
        }
    }

    /// NVIDIA H100 SXM (sm_90a, 132 SMs, 80 GB).
    pub fn h100() -> Self {
        Self::nvidia("NVIDIA H100 80GB HBM3", (9, 0), 80, 132)
    }
    /// NVIDIA H200 (sm_90a, 132 SMs, 141 GB).
    pub fn h200() -> Self {
        Self::nvidia("NVIDIA H200", (9, 0), 141, 132)
    }
    /// NVIDIA B200 (sm_100a: MX and NVFP4 tensor cores).
    pub fn b200() -> Self {
        Self::nvidia("NVIDIA B200", (10, 0), 180, 148)
    }
    /// One GCD of an AMD Instinct MI250X, as HIP opens it (gfx90a: bf16 / f16 MFMA, no fp8
    /// or MX; 110 CUs, 64 GB).
    pub fn mi250x() -> Self {
        Self::amd("AMD Instinct MI250X", "gfx90a", 64, 110)
    }
    /// AMD Instinct MI300X (gfx942: fp8 is e4m3fnuz, no MX).
    pub fn mi300x() -> Self {
        Self::amd("AMD Instinct MI300X", "gfx942", 192, 304)
    }
    /// AMD Instinct MI355X (gfx950: OCP fp8, native MX).
    pub fn mi355x() -> Self {
        Self::amd("AMD Instinct MI355X", "gfx950", 288, 256)
    }
    /// Mesa's lavapipe (llvmpipe, a software Vulkan on the host CPU) through wgpu: what
    /// CI runs the wgpu backend on. wgpu reports every adapter as `Vendor::Other`, so this
    /// stands for any wgpu adapter when asking the oracle.
    pub fn lavapipe() -> Self {
        Capabilities {
            vendor: Vendor::Other,
            name: "llvmpipe (LLVM, 256 bits) through Vulkan (wgpu)".to_string(),
            arch: "wgpu-vulkan".to_string(),
            compute_capability: None,
            fp8: None,
            supports_mx: false,
            fp4_tensor_cores: false,
            bf16_tensor_cores: false,
            memory_bytes: 0,
            multiprocessors: 1,
            shared_mem_per_block: 32 * 1024,
            warp_size: 8,
        }
    }

    /// A machine with no accelerator.
    pub fn cpu_only() -> Self {
        Capabilities {
            vendor: Vendor::Cpu,
            name: "host CPU".to_string(),
            arch: std::env::consts::ARCH.to_string(),
            compute_capability: None,
            fp8: None,
            supports_mx: false,
            fp4_tensor_cores: false,
            bf16_tensor_cores: false,
            memory_bytes: 0,
            multiprocessors: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            shared_mem_per_block: 0,
            warp_size: 1,
        }
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.vendor, self.arch)?;
        if let Some((ma, mi)) = self.compute_capability {
            write!(f, ", compute capability {ma}.{mi}")?;
        }
        match self.fp8 {
            Some(Fp8Flavor::E4M3Fn) => write!(f, ", fp8 e4m3fn")?,
            Some(Fp8Flavor::E4M3Fnuz) => write!(f, ", fp8 e4m3fnuz")?,
            None => write!(f, ", no fp8 matrix units")?,
        }
        if self.supports_mx {
            write!(f, ", MX")?;
        }
        if self.fp4_tensor_cores {
            write!(f, ", NVFP4")?;
        }
        if self.memory_bytes > 0 {
            write!(f, ", {:.0} GiB", self.memory_bytes as f64 / GIB as f64)?;
        }
        write!(
            f,
            ", {} {}",
            self.multiprocessors,
            if self.vendor == Vendor::Cpu {
                "threads"
            } else {
                "compute units"
            }
        )
    }
}
