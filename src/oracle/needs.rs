//! `Needs`: what one backend requires of the device, the scheme, the layer and the build,
//! as plain data, and the check of all of it against one case.

use super::conversion::Conversion;
use super::fit::{Fit, Support};
use super::unmet::Unmet;
use crate::device::{Capabilities, Vendor};
use crate::moe::{Activation, LayerConfig};
use crate::quant::{Fp8Flavor, QuantScheme};

/// The devices a backend has code for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware {
    /// Any device, the host included.
    Any,
    /// NVIDIA GPUs of at least this compute capability.
    Nvidia { min_cc: (u32, u32) },
    /// AMD GPUs of one of these gfx architectures.
    Amd { archs: &'static [&'static str] },
    /// A device opened through a portable API (wgpu: Vulkan, Metal, DX12), which reports
    /// `Vendor::Other` whoever made the GPU; its kernels are written for no one vendor.
    Portable,
}

/// Whether this binary contains the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Compiled in and usable.
    Built,
    /// Compiled only with this cargo feature, which this build lacks.
    NeedsFeature(&'static str),
    /// Declared, so `explain` can show it, but its code has not landed.
    Planned(&'static str),
}

/// Everything a backend needs; `assess` reports each need not met.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub hardware: Hardware,
    /// The schemes the backend implements, and the gap for one of its kind it does not run
    /// yet (an exhaustive match, so a new scheme forces a decision per backend).
    pub schemes: fn(&QuantScheme) -> Fit,
    /// What `schemes` takes, in words, for `explain`: "bf16 / f16".
    pub runs: &'static str,
    /// The backend feeds fp8 to the matrix units: the device needs them, in the
    /// checkpoint's flavour or one the oracle can convert to exactly.
    pub fp8_matrix: bool,
    /// The backend uses native OCP MX instructions (`Capabilities::supports_mx`).
    pub mx: bool,
    /// The activations the backend implements (an exhaustive match).
    pub activations: fn(&Activation) -> bool,
    /// Adds expert biases.
    pub bias: bool,
    /// Exposes gemm1's output and gemm2's output so LoRA deltas can be added.
    pub lora: Support,
    /// Can scale the input by the router weight (`apply_router_weight_on_input`).
    pub weight_on_input: bool,
    pub availability: Availability,
}

/// The outcome of checking one backend's needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assessment {
    /// Every need not met; empty means the backend can run.
    pub unmet: Vec<Unmet>,
    /// Conversions the backend's weights would need.
    pub conversions: Vec<Conversion>,
}

impl Needs {
    /// Checks every need (not just up to the first unmet one), so `explain` shows the
    /// whole story: a backend can be both unbuilt and wrong for the scheme.
    pub fn assess(
        &self,
        scheme: &QuantScheme,
        caps: &Capabilities,
        layer: &LayerConfig,
    ) -> Assessment {
        let mut out = Assessment::default();
        if let Some(unmet) = self.hardware.check(caps) {
            out.unmet.push(unmet);
        }
        match (self.schemes)(scheme) {
            Fit::Runs => {}
            Fit::Other => out.unmet.push(self.scheme_unmet(scheme)),
            Fit::NotYet(gap) => {
                out.unmet.push(self.scheme_unmet(scheme));
                out.unmet.push(Unmet::NotImplemented(gap));
            }
        }
        if self.fp8_matrix {
            match (caps.fp8, scheme.fp8_flavor()) {
                (None, _) => out.unmet.push(Unmet::NoFp8 {
                    vendor: caps.vendor,
                    arch: caps.arch.clone(),
                }),
                (Some(_), None) => {}
                (Some(device), Some(checkpoint)) => match (checkpoint, device) {
                    (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fn)
                    | (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fnuz) => {}
                    (Fp8Flavor::E4M3Fn, Fp8Flavor::E4M3Fnuz) => {
                        out.conversions.push(Conversion::Fp8FnToFnuz)
                    }
                    (Fp8Flavor::E4M3Fnuz, Fp8Flavor::E4M3Fn) => {
                        out.unmet.push(Unmet::Fp8Flavor { checkpoint, device })
                    }
                },
            }
        }
        if self.mx && !caps.supports_mx {
            out.unmet.push(Unmet::Mx {
                arch: caps.arch.clone(),
            });
        }
        if !(self.activations)(&layer.activation) {
            out.unmet.push(Unmet::Activation(layer.activation));
        }
        if layer.has_bias && !self.bias {
            out.unmet.push(Unmet::Bias);
        }
        match (layer.lora, self.lora) {
            (false, _) | (true, Support::Yes) => {}
            (true, Support::NotYet(gap)) => out.unmet.push(Unmet::NotImplemented(gap)),
        }
        if layer.apply_router_weight_on_input && !self.weight_on_input {
            out.unmet.push(Unmet::RouterWeightOnInput);
        }
        match self.availability {
            Availability::Built => {}
            Availability::NeedsFeature(feature) => out.unmet.push(Unmet::NotBuilt { feature }),
            Availability::Planned(what) => out.unmet.push(Unmet::Planned(what)),
        }
        out
    }

    fn scheme_unmet(&self, scheme: &QuantScheme) -> Unmet {
        Unmet::Scheme {
            scheme: *scheme,
            runs: self.runs,
        }
    }
}

impl Hardware {
    /// The one platform reason, if any: vendor first, then how new the device is.
    fn check(&self, caps: &Capabilities) -> Option<Unmet> {
        let wrong_vendor = |needed| Unmet::Vendor {
            needed,
            found: caps.vendor,
            arch: caps.arch.clone(),
        };
        match *self {
            Hardware::Any => None,
            Hardware::Nvidia { min_cc } => match caps.vendor {
                Vendor::Nvidia => match caps.compute_capability {
                    Some(cc) if cc >= min_cc => None,
                    found => Some(Unmet::ComputeCapability {
                        needed: min_cc,
                        found,
                    }),
                },
                Vendor::Amd | Vendor::Cpu | Vendor::Other => Some(wrong_vendor(Vendor::Nvidia)),
            },
            Hardware::Amd { archs } => match caps.vendor {
                // HIP reports e.g. `gfx942:sramecc+:xnack-`; the target is the first part.
                Vendor::Amd if archs.contains(&caps.arch.split(':').next().unwrap_or("")) => None,
                Vendor::Amd => Some(Unmet::Arch {
                    needed: archs,
                    found: caps.arch.clone(),
                }),
                Vendor::Nvidia | Vendor::Cpu | Vendor::Other => Some(wrong_vendor(Vendor::Amd)),
            },
            Hardware::Portable => match caps.vendor {
                Vendor::Other => None,
                Vendor::Nvidia | Vendor::Amd | Vendor::Cpu => Some(wrong_vendor(Vendor::Other)),
            },
        }
    }
}
