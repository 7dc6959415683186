//! `Unmet`: one need of a backend that this platform, scheme, layer or build does not meet,
//! carrying both sides so the reason printed is specific ("needs ≥ 8.9, this is 8.0").

use super::gap::Gap;
use crate::device::Vendor;
use crate::moe::Activation;
use crate::quant::{Fp8Flavor, QuantScheme};
use std::fmt;

/// Why a backend cannot run here; `Display` gives a one-line reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmet {
    /// The backend runs on another vendor's devices.
    Vendor {
        needed: Vendor,
        found: Vendor,
        arch: String,
    },
    /// The NVIDIA device is older than the backend needs.
    ComputeCapability {
        needed: (u32, u32),
        found: Option<(u32, u32)>,
    },
    /// The AMD device is not one of the architectures the backend has code for.
    Arch {
        needed: &'static [&'static str],
        found: String,
    },
    /// The backend implements other quantization schemes: `runs` says which, in words.
    Scheme {
        scheme: QuantScheme,
        runs: &'static str,
    },
    /// The backend could do what is asked on this hardware, but the code is not written:
    /// a scheme of its kind, or a layer feature (LoRA).
    NotImplemented(&'static Gap),
    /// The backend feeds fp8 to matrix units the device does not have.
    NoFp8 { vendor: Vendor, arch: String },
    /// The checkpoint's fp8 flavour cannot be turned into the device's without
    /// requantizing (e4m3fnuz's 0x7F = 240 is a NaN code in e4m3fn).
    Fp8Flavor {
        checkpoint: Fp8Flavor,
        device: Fp8Flavor,
    },
    /// The backend uses native MX block-scaled instructions the device lacks.
    Mx { arch: String },
    /// The layer's activation is not one the backend implements.
    Activation(Activation),
    /// The layer's experts have biases and the backend cannot add them.
    Bias,
    /// The layer scales the input by the router weight, which the backend cannot do.
    RouterWeightOnInput,
    /// The backend exists but this binary was built without its cargo feature.
    NotBuilt { feature: &'static str },
    /// The backend is declared but its code has not landed.
    Planned(&'static str),
}

impl Unmet {
    /// Whether this is about the build rather than the platform, scheme or layer: the
    /// backend would run here once built or written.
    pub fn is_availability(&self) -> bool {
        matches!(self, Unmet::NotBuilt { .. } | Unmet::Planned(_))
    }

    /// Whether the backend is for another vendor's devices altogether.
    pub fn is_vendor(&self) -> bool {
        matches!(self, Unmet::Vendor { .. })
    }
}

/// The encoding's usual name.
pub(crate) fn flavor_name(flavor: Fp8Flavor) -> &'static str {
    match flavor {
        Fp8Flavor::E4M3Fn => "e4m3fn",
        Fp8Flavor::E4M3Fnuz => "e4m3fnuz",
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::Vendor {
                needed,
                found,
                arch,
            } if *needed == Vendor::Other => write!(
                f,
                "needs a device opened through wgpu (`Target::wgpu`), this is {} {arch}",
                match found {
                    Vendor::Cpu => "the host CPU",
                    Vendor::Nvidia => "an NVIDIA GPU opened through CUDA,",
                    Vendor::Amd => "an AMD GPU opened through HIP,",
                    Vendor::Other => "another device",
                }
            ),
            Unmet::Vendor {
                needed,
                found,
                arch,
            } => match found {
                Vendor::Cpu => write!(f, "needs an {needed} GPU, this is a CPU ({arch})"),
                Vendor::Other => write!(
                    f,
                    "needs an {needed} GPU opened through its own runtime, this is a device \
                     opened through wgpu ({arch})"
                ),
                Vendor::Nvidia | Vendor::Amd => {
                    write!(f, "needs an {needed} GPU, this is {found} {arch}")
                }
            },
            Unmet::ComputeCapability { needed, found } => {
                write!(f, "needs compute capability ≥ {}.{}, ", needed.0, needed.1)?;
                match found {
                    Some((ma, mi)) => write!(f, "this is {ma}.{mi}"),
                    None => write!(f, "this device reports none"),
                }
            }
            Unmet::Arch { needed, found } => {
                write!(f, "needs {}, this is {found}", needed.join(" or "))
            }
            Unmet::Scheme { runs, .. } => write!(f, "runs only {runs}"),
            Unmet::NotImplemented(gap) => write!(f, "{gap}"),
            Unmet::NoFp8 { vendor, arch } => match vendor {
                Vendor::Nvidia => {
                    write!(f, "needs fp8 e4m3fn tensor cores (sm_89+), {arch} has none")
                }
                Vendor::Amd => write!(f, "needs fp8 MFMA (gfx942 / gfx950), {arch} has none"),
                Vendor::Cpu | Vendor::Other => {
                    write!(f, "needs fp8 matrix units, {arch} has none")
                }
            },
            Unmet::Fp8Flavor { checkpoint, device } => write!(
                f,
                "checkpoint is {} but the device's fp8 is {}",
                flavor_name(*checkpoint),
                flavor_name(*device)
            ),
            Unmet::Mx { arch } => {
                write!(f, "needs native MX (gfx950 / sm_100), {arch} has none")
            }
            Unmet::Activation(act) => write!(f, "activation {} not supported", act.name()),
            Unmet::Bias => write!(f, "expert biases not supported"),
            Unmet::RouterWeightOnInput => {
                write!(f, "router weight applied on the input not supported")
            }
            Unmet::NotBuilt { feature } => {
                write!(
                    f,
                    "built without feature `{feature}`: rebuild with --features {feature}"
                )
            }
            Unmet::Planned(what) => write!(f, "planned: {what}"),
        }
    }
}
