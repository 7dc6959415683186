//! `QuantScheme`: what a checkpoint's quantization is, in the terms users know from
//! checkpoints and vLLM, with a short name that parses and prints back unchanged.

use crate::error::{Error, Result};
use std::fmt;

/// The two 8-bit e4m3 encodings. OCP `e4m3fn` (NVIDIA, gfx950) and `e4m3fnuz` (gfx942),
/// whose bias is one larger, so the same byte means half the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Flavor {
    E4M3Fn,
    E4M3Fnuz,
}

impl Fp8Flavor {
    /// Largest finite magnitude: 448 for e4m3fn, 240 for e4m3fnuz.
    pub fn max(self) -> f32 {
        match self {
            Fp8Flavor::E4M3Fn => 448.0,
            Fp8Flavor::E4M3Fnuz => 240.0,
        }
    }
}

/// How FP8 weight scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8WeightScale {
    /// One scale per expert projection.
    PerTensor,
    /// One scale per output row (channel).
    PerChannel,
    /// One scale per 128 × 128 block (DeepSeek-V3 `weight_scale_inv`).
    Block128,
}

/// How FP8 (or INT8) activations are scaled before a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActScale {
    /// amax of each token row.
    DynamicPerToken,
    /// amax of the whole activation tensor.
    DynamicPerTensor,
    /// amax of each token's 128-column group (pairs with block-128 weights).
    DynamicPerGroup128,
    /// A calibrated scale stored in the checkpoint.
    StaticPerTensor,
}

/// OCP MX element types used for weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MxElem {
    Fp4E2M1,
    Fp6E3M2,
    Fp6E2M3,
}

impl MxElem {
    /// Bits per element.
    pub fn bits(self) -> usize {
        match self {
            MxElem::Fp4E2M1 => 4,
            MxElem::Fp6E3M2 | MxElem::Fp6E2M3 => 6,
        }
    }
}

/// What happens to activations in an MX scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MxAct {
    /// Activations stay in bf16 (weight-only, like GPT-OSS).
    Bf16,
    /// Activations are quantized to fp8 e4m3 with a static per-tensor scale (Quark `a_fp8`).
    Fp8Static,
    /// Activations are MX-quantized in the same element type as the weights.
    Mx,
}

/// Weight-only integer width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntBits {
    Int4,
    Int8,
}

impl IntBits {
    pub fn bits(self) -> usize {
        match self {
            IntBits::Int4 => 4,
            IntBits::Int8 => 8,
        }
    }
}

/// Scale grouping along K for integer weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntGroup {
    /// One scale per output channel (the whole K).
    Channel,
    /// One scale per `n` consecutive K elements.
    Size(usize),
}

/// Unquantized weight storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    Bf16,
    F16,
}

/// What a checkpoint's expert weights (and the activations fed to them) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    /// bf16 / f16 weights and activations.
    Unquantized(FloatDtype),
    /// FP8 W8A8. Dynamic activation scales are `max(amax, 1e-12) / fp8_max` and values are
    /// divided by them; vLLM 0.33 clamps the scale to at least `1 / (fp8_max · 512)`,
    /// multiplies by its reciprocal, and takes fp8_max = 224 on e4m3fnuz
    /// (`quant::Numerics::Vllm`; README, "Numerics").
    Fp8 {
        flavor: Fp8Flavor,
        weight: Fp8WeightScale,
        act: ActScale,
    },
    /// NVFP4: e2m1 values, e4m3 scale per 16, f32 global scale. `w4a4` quantizes the
    /// activations to NVFP4 too (static global input scale), as compressed-tensors does:
    /// `x / step` ties to even; vLLM's reference multiplies by a reciprocal and can land on
    /// the other side of an exact tie (`quant::Numerics::Vllm`). Otherwise they stay bf16.
    Nvfp4 { w4a4: bool },
    /// OCP MX weights (block 32, e8m0 scales); MX activations take AMD Quark's "even"
    /// shared exponent (vLLM's own MXFP8 quantizer rounds the scale up instead).
    Mx { elem: MxElem, act: MxAct },
    /// GPTQ / AWQ style weight-only integers with bf16 activations.
    IntWeightOnly {
        bits: IntBits,
        group: IntGroup,
        zero_point: bool,
        act_order: bool,
    },
    /// int4 weights with fp8-representable group scales (group 128) and f32 per-channel
    /// scales; fp8 e4m3 activations, dynamic per token.
    W4A8,
    /// int8 weights with per-channel scales; int8 activations, dynamic per token.
    Int8W8A8,
}

/// The scheme names `parse` accepts, with what each means.
pub const SCHEME_EXAMPLES: &[(&str, &str)] = &[
    ("bf16", "unquantized bf16"),
    ("f16", "unquantized f16"),
    (
        "fp8",
        "fp8 e4m3fn, per-tensor weights, dynamic per-tensor activations",
    ),
    (
        "fp8-channel",
        "fp8, per-channel weights, dynamic per-token activations",
    ),
    (
        "fp8-block128",
        "fp8, 128x128 block weights, per-token 128-group activations",
    ),
    (
        "fp8-static",
        "fp8, per-tensor weights, static per-tensor activations",
    ),
    (
        "fp8-w<tensor|channel|block128>-a<tensor|token|group128|static>[-fnuz]",
        "any fp8 combination; -fnuz for e4m3fnuz",
    ),
    ("nvfp4", "NVFP4 weights and activations (W4A4)"),
    ("nvfp4-a16", "NVFP4 weights, bf16 activations"),
    ("mxfp4", "MXFP4 weights, bf16 activations"),
    ("mxfp4-a-fp8", "MXFP4 weights, static fp8 activations"),
    ("mxfp4-a-mxfp4", "MXFP4 weights and activations"),
    ("mxfp6-e3m2 | mxfp6-e2m3", "MXFP6 weights and activations"),
    (
        "mxfp6-e3m2-a-fp8 | mxfp6-e2m3-a-fp8",
        "MXFP6 weights, static fp8 activations",
    ),
    (
        "w4a16[-g<N>|-channel][-zp][-actorder]",
        "int4 weight-only (GPTQ/AWQ), default group 128 symmetric",
    ),
    ("w8a16[-g<N>|-channel][-zp][-actorder]", "int8 weight-only"),
    (
        "w4a8",
        "int4 weights (group 128 + per-channel scales), fp8 per-token activations",
    ),
    (
        "w8a8-int8",
        "int8 weights per channel, int8 per-token activations",
    ),
];

impl QuantScheme {
    /// Parses a scheme name such as `fp8-block128`, `mxfp4` or `w4a16-g64-zp`.
    pub fn parse(name: &str) -> Result<Self> {
        let unknown = || Error::UnknownScheme {
            name: name.to_string(),
            known: SCHEME_EXAMPLES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        };
        let lower = name.trim().to_ascii_lowercase();
        let s = lower.as_str();
        let fixed = match s {
            "bf16" => Some(QuantScheme::Unquantized(FloatDtype::Bf16)),
            "f16" | "fp16" => Some(QuantScheme::Unquantized(FloatDtype::F16)),
            "nvfp4" => Some(QuantScheme::Nvfp4 { w4a4: true }),
            "nvfp4-a16" => Some(QuantScheme::Nvfp4 { w4a4: false }),
            "mxfp4" => Some(QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                act: MxAct::Bf16,
            }),
            "mxfp4-a-fp8" => Some(QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                act: MxAct::Fp8Static,
            }),
            "mxfp4-a-mxfp4" => Some(QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                act: MxAct::Mx,
            }),
            "mxfp6-e3m2" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E3M2,
                act: MxAct::Mx,
            }),
            "mxfp6-e2m3" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E2M3,
                act: MxAct::Mx,
            }),
            "mxfp6-e3m2-a-fp8" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E3M2,
                act: MxAct::Fp8Static,
            }),
            "mxfp6-e2m3-a-fp8" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E2M3,
                act: MxAct::Fp8Static,
            }),
            "mxfp6-e3m2-a-bf16" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E3M2,
                act: MxAct::Bf16,
            }),
            "mxfp6-e2m3-a-bf16" => Some(QuantScheme::Mx {
                elem: MxElem::Fp6E2M3,
                act: MxAct::Bf16,
            }),
            "w4a8" => Some(QuantScheme::W4A8),
            "w8a8-int8" => Some(QuantScheme::Int8W8A8),
            _ => None,
        };
        if let Some(scheme) = fixed {
            return Ok(scheme);
        }
        if let Some(rest) = s.strip_prefix("fp8") {
            return parse_fp8(rest).ok_or_else(unknown);
        }
        for (prefix, bits) in [("w4a16", IntBits::Int4), ("w8a16", IntBits::Int8)] {
            if let Some(rest) = s.strip_prefix(prefix) {
                return parse_int(rest, bits).ok_or_else(unknown);
            }
        }
        Err(unknown())
    }

    /// The canonical short name; `parse(name())` gives the scheme back.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Whether activations are quantized (rather than kept in bf16/f16) before a GEMM.
    pub fn quantizes_activations(&self) -> bool {
        match self {
            QuantScheme::Unquantized(_) | QuantScheme::IntWeightOnly { .. } => false,
            QuantScheme::Nvfp4 { w4a4 } => *w4a4,
            QuantScheme::Mx { act, .. } => *act != MxAct::Bf16,
            QuantScheme::Fp8 { .. } | QuantScheme::W4A8 | QuantScheme::Int8W8A8 => true,
        }
    }

    /// Whether the scheme needs calibrated static input scales from the checkpoint.
    pub fn needs_static_input_scales(&self) -> bool {
        match self {
            QuantScheme::Fp8 { act, .. } => *act == ActScale::StaticPerTensor,
            QuantScheme::Nvfp4 { w4a4 } => *w4a4,
            QuantScheme::Mx { act, .. } => *act == MxAct::Fp8Static,
            _ => false,
        }
    }

    /// Whether its static input scales may differ per expert: fp8 activations quantize
    /// with each expert's own scale; NVFP4 W4A4 takes one global scale per GEMM input.
    pub fn per_expert_input_scales(&self) -> bool {
        match self {
            QuantScheme::Fp8 { act, .. } => *act == ActScale::StaticPerTensor,
            QuantScheme::Mx { act, .. } => *act == MxAct::Fp8Static,
            _ => false,
        }
    }

    /// The fp8 flavour the scheme stores, if it stores fp8 weights or activations.
    pub fn fp8_flavor(&self) -> Option<Fp8Flavor> {
        match self {
            QuantScheme::Fp8 { flavor, .. } => Some(*flavor),
            QuantScheme::W4A8 => Some(Fp8Flavor::E4M3Fn),
            QuantScheme::Mx {
                act: MxAct::Fp8Static,
                ..
            } => Some(Fp8Flavor::E4M3Fn),
            _ => None,
        }
    }

    /// Bits per stored weight element, scales excluded.
    pub fn weight_bits(&self) -> usize {
        match self {
            QuantScheme::Unquantized(_) => 16,
            QuantScheme::Fp8 { .. } | QuantScheme::Int8W8A8 => 8,
            QuantScheme::Nvfp4 { .. } | QuantScheme::W4A8 => 4,
            QuantScheme::Mx { elem, .. } => elem.bits(),
            QuantScheme::IntWeightOnly { bits, .. } => bits.bits(),
        }
    }

    /// Relative L2 error of dequantized weights against the f32 originals that
    /// quantization may cause on Gaussian-like weights (test bound, with margin).
    pub fn weight_error_bound(&self) -> f64 {
        match self {
            QuantScheme::Unquantized(FloatDtype::Bf16) => 4e-3,
            QuantScheme::Unquantized(FloatDtype::F16) => 5e-4,
            QuantScheme::Fp8 { .. } => 0.05,
            QuantScheme::Int8W8A8
            | QuantScheme::IntWeightOnly {
                bits: IntBits::Int8,
                ..
            } => 0.02,
            QuantScheme::Mx {
                elem: MxElem::Fp6E2M3,
                ..
            } => 0.08,
            QuantScheme::Mx {
                elem: MxElem::Fp6E3M2,
                ..
            } => 0.12,
            QuantScheme::Nvfp4 { .. } => 0.15,
            QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                ..
            } => 0.2,
            QuantScheme::IntWeightOnly {
                bits: IntBits::Int4,
                ..
            }
            | QuantScheme::W4A8 => 0.15,
        }
    }

    /// Relative L2 error a native kernel may show against emulation on the same
    /// quantized weights. The emulation rounds where the kernels round (bf16 hidden
    /// states, gemm1 and activation outputs; integer weights expanded to bf16; activation
    /// codes by the same rule), so what is left is the order of the f32 sums, which now and
    /// then flips a bf16 rounding of an intermediate, and a flipped intermediate can flip a
    /// quantized activation code downstream. Measured maxima over the parity suite on the
    /// H200 (2026-12-02) are in the comments; each tolerance leaves about 5× over them.
    pub fn parity_tolerance(&self) -> f64 {
        match self {
            // bf16 flips only (2^-9 relative each): bf16 2.1e-4, f16 8.5e-5, int
            // weight-only 2.3e-4, NVFP4 / MXFP4 weights with bf16 activations 7.2e-5.
            QuantScheme::Unquantized(_)
            | QuantScheme::IntWeightOnly { .. }
            | QuantScheme::Nvfp4 { w4a4: false }
            | QuantScheme::Mx {
                act: MxAct::Bf16, ..
            } => 1e-3,
            // a flipped intermediate can flip an fp8 activation code (2^-4 relative):
            // fp8 per-tensor 1.0e-3, block-128 7.4e-4, W4A8 2.4e-5, MXFP4 + fp8 1.2e-4.
            QuantScheme::Fp8 { .. }
            | QuantScheme::W4A8
            | QuantScheme::Mx {
                act: MxAct::Fp8Static,
                ..
            } => 5e-3,
            // int8 activation codes flip like fp8's (2^-7 relative each); cuda-w8a8-int8
            // (issue 18) not yet measured on the H200.
            QuantScheme::Int8W8A8 => 2e-2,
            // 4- and 6-bit activation codes: one flip moves a value by up to a third.
            // Native on the AMD simulator only (1.2e-6 there); no hardware measurement.
            QuantScheme::Nvfp4 { w4a4: true } | QuantScheme::Mx { .. } => 3e-2,
        }
    }

    /// Every scheme family once, with representative options, for tests and tables.
    pub fn all_representative() -> Vec<QuantScheme> {
        let names = [
            "bf16",
            "f16",
            "fp8",
            "fp8-channel",
            "fp8-block128",
            "fp8-static",
            "fp8-wtensor-atoken-fnuz",
            "fp8-block128-fnuz",
            "nvfp4",
            "nvfp4-a16",
            "mxfp4",
            "mxfp4-a-fp8",
            "mxfp4-a-mxfp4",
            "mxfp6-e3m2",
            "mxfp6-e2m3",
            "mxfp6-e3m2-a-fp8",
            "w4a16",
            "w4a16-g32-zp",
            "w4a16-g64-actorder",
            "w4a16-channel",
            "w8a16",
            "w8a16-g128-zp",
            "w4a8",
            "w8a8-int8",
        ];
        names
            .iter()
            .map(|n| QuantScheme::parse(n).expect("representative scheme parses"))
            .collect()
    }
}

fn parse_fp8(rest: &str) -> Option<QuantScheme> {
    let (rest, flavor) = match rest.strip_suffix("-fnuz") {
        Some(r) => (r, Fp8Flavor::E4M3Fnuz),
        None => (rest, Fp8Flavor::E4M3Fn),
    };
    let (weight, act) = match rest {
        "" | "-tensor" => (Fp8WeightScale::PerTensor, ActScale::DynamicPerTensor),
        "-channel" => (Fp8WeightScale::PerChannel, ActScale::DynamicPerToken),
        "-block128" => (Fp8WeightScale::Block128, ActScale::DynamicPerGroup128),
        "-static" => (Fp8WeightScale::PerTensor, ActScale::StaticPerTensor),
        _ => {
            let (w, a) = rest.strip_prefix("-w")?.split_once("-a")?;
            let weight = match w {
                "tensor" => Fp8WeightScale::PerTensor,
                "channel" => Fp8WeightScale::PerChannel,
                "block128" => Fp8WeightScale::Block128,
                _ => return None,
            };
            let act = match a {
                "tensor" => ActScale::DynamicPerTensor,
                "token" => ActScale::DynamicPerToken,
                "group128" => ActScale::DynamicPerGroup128,
                "static" => ActScale::StaticPerTensor,
                _ => return None,
            };
            (weight, act)
        }
    };
    Some(QuantScheme::Fp8 {
        flavor,
        weight,
        act,
    })
}

fn parse_int(rest: &str, bits: IntBits) -> Option<QuantScheme> {
    let mut group = IntGroup::Size(128);
    let mut zero_point = false;
    let mut act_order = false;
    for part in rest.split('-').filter(|p| !p.is_empty()) {
        match part {
            "channel" => group = IntGroup::Channel,
            "zp" => zero_point = true,
            "actorder" => act_order = true,
            g => {
                let n: usize = g.strip_prefix('g')?.parse().ok()?;
                if n == 0 {
                    return None;
                }
                group = IntGroup::Size(n);
            }
        }
    }
    Some(QuantScheme::IntWeightOnly {
        bits,
        group,
        zero_point,
        act_order,
    })
}

impl fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantScheme::Unquantized(FloatDtype::Bf16) => write!(f, "bf16"),
            QuantScheme::Unquantized(FloatDtype::F16) => write!(f, "f16"),
            QuantScheme::Fp8 {
                flavor,
                weight,
                act,
            } => {
                let short = match (weight, act) {
                    (Fp8WeightScale::PerTensor, ActScale::DynamicPerTensor) => Some(""),
                    (Fp8WeightScale::PerChannel, ActScale::DynamicPerToken) => Some("-channel"),
                    (Fp8WeightScale::Block128, ActScale::DynamicPerGroup128) => Some("-block128"),
                    (Fp8WeightScale::PerTensor, ActScale::StaticPerTensor) => Some("-static"),
                    _ => None,
                };
                write!(f, "fp8")?;
                match short {
                    Some(s) => write!(f, "{s}")?,
                    None => {
                        let w = match weight {
                            Fp8WeightScale::PerTensor => "tensor",
                            Fp8WeightScale::PerChannel => "channel",
                            Fp8WeightScale::Block128 => "block128",
                        };
                        let a = match act {
                            ActScale::DynamicPerTensor => "tensor",
                            ActScale::DynamicPerToken => "token",
                            ActScale::DynamicPerGroup128 => "group128",
                            ActScale::StaticPerTensor => "static",
                        };
                        write!(f, "-w{w}-a{a}")?;
                    }
                }
                if *flavor == Fp8Flavor::E4M3Fnuz {
                    write!(f, "-fnuz")?;
                }
                Ok(())
            }
            QuantScheme::Nvfp4 { w4a4: true } => write!(f, "nvfp4"),
            QuantScheme::Nvfp4 { w4a4: false } => write!(f, "nvfp4-a16"),
            QuantScheme::Mx { elem, act } => {
                let e = match elem {
                    MxElem::Fp4E2M1 => "mxfp4",
                    MxElem::Fp6E3M2 => "mxfp6-e3m2",
                    MxElem::Fp6E2M3 => "mxfp6-e2m3",
                };
                match (elem, act) {
                    (MxElem::Fp4E2M1, MxAct::Bf16) => write!(f, "{e}"),
                    (MxElem::Fp4E2M1, MxAct::Mx) => write!(f, "{e}-a-mxfp4"),
                    (_, MxAct::Mx) => write!(f, "{e}"),
                    (_, MxAct::Fp8Static) => write!(f, "{e}-a-fp8"),
                    (_, MxAct::Bf16) => write!(f, "{e}-a-bf16"),
                }
            }
            QuantScheme::IntWeightOnly {
                bits,
                group,
                zero_point,
                act_order,
            } => {
                write!(
                    f,
                    "{}",
                    if *bits == IntBits::Int4 {
                        "w4a16"
                    } else {
                        "w8a16"
                    }
                )?;
                match group {
                    IntGroup::Size(128) => {}
                    IntGroup::Size(n) => write!(f, "-g{n}")?,
                    IntGroup::Channel => write!(f, "-channel")?,
                }
                if *zero_point {
                    write!(f, "-zp")?;
                }
                if *act_order {
                    write!(f, "-actorder")?;
                }
                Ok(())
            }
            QuantScheme::W4A8 => write!(f, "w4a8"),
            QuantScheme::Int8W8A8 => write!(f, "w8a8-int8"),
        }
    }
}
