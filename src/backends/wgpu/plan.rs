//! What `act.wgsl` does to one GEMM input, read off the emulation's own `ActQuant` (so
//! the two cannot disagree about the rule): the mode, the extent of a dynamic scale, and
//! the minifloat grid values are rounded to.

use crate::quant::{
    ActQuant, ActScale, Fp8Flavor, InputScales, MxElem, Numerics, QuantScheme, Stage,
};
use crate::{Error, Result};

/// A minifloat grid: stored mantissa bits, smallest normal exponent, largest value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub mbits: i32,
    pub emin: i32,
    pub max: f32,
}

pub const E4M3FN: Grid = Grid {
    mbits: 3,
    emin: -6,
    max: 448.0,
};
pub const E4M3FNUZ: Grid = Grid {
    mbits: 3,
    emin: -7,
    max: 240.0,
};
const E2M1: Grid = Grid {
    mbits: 1,
    emin: 0,
    max: 6.0,
};
const E3M2: Grid = Grid {
    mbits: 2,
    emin: -2,
    max: 28.0,
};
const E2M3: Grid = Grid {
    mbits: 3,
    emin: 0,
    max: 7.5,
};

/// The `fm_qdq` launch parameters of one GEMM input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActPlan {
    /// 0 none, 1 fp8, 2 int8 per token, 3 NVFP4, 4 MX.
    pub mode: i32,
    /// fp8: 0 per tensor, 1 per token, 2 per 128-group, 3 static.
    pub rule: i32,
    pub grid: Grid,
    /// fp8 static scale; NVFP4 the global scale `1 / input_scale`.
    pub scale: f32,
    /// MX: the shared-exponent rule's mantissa bits and emax (`quant::mx::shared_exponent`).
    pub mx_mbits: i32,
    pub mx_emax: i32,
}

impl ActPlan {
    const NONE: ActPlan = ActPlan {
        mode: 0,
        rule: 0,
        grid: E4M3FN,
        scale: 1.0,
        mx_mbits: 0,
        mx_emax: 0,
    };

    /// The plan for `a`; vLLM's numerics are an emulation setting no kernel computes.
    pub fn new(a: &ActQuant) -> Result<Self> {
        Ok(match *a {
            ActQuant::None => Self::NONE,
            ActQuant::Fp8 {
                flavor,
                rule,
                static_scale,
                numerics,
            } => {
                producer(numerics)?;
                let (rule, scale) = match (rule, static_scale) {
                    (ActScale::StaticPerTensor, Some(s)) => (3, s),
                    (ActScale::StaticPerTensor, None) | (ActScale::DynamicPerTensor, _) => (0, 1.0),
                    (ActScale::DynamicPerToken, _) => (1, 1.0),
                    (ActScale::DynamicPerGroup128, _) => (2, 1.0),
                };
                ActPlan {
                    mode: 1,
                    rule,
                    grid: match flavor {
                        Fp8Flavor::E4M3Fn => E4M3FN,
                        Fp8Flavor::E4M3Fnuz => E4M3FNUZ,
                    },
                    scale,
                    ..Self::NONE
                }
            }
            ActQuant::Int8PerToken => ActPlan {
                mode: 2,
                ..Self::NONE
            },
            ActQuant::Nvfp4 {
                input_scale,
                numerics,
            } => {
                producer(numerics)?;
                ActPlan {
                    mode: 3,
                    grid: E2M1,
                    scale: 1.0 / input_scale,
                    ..Self::NONE
                }
            }
            ActQuant::Mx(elem) => {
                let (grid, mx_mbits, mx_emax) = match elem {
                    MxElem::Fp4E2M1 => (E2M1, 1, 2),
                    MxElem::Fp6E3M2 => (E3M2, 2, 4),
                    MxElem::Fp6E2M3 => (E2M3, 3, 2),
                };
                ActPlan {
                    mode: 4,
                    grid,
                    mx_mbits,
                    mx_emax,
                    ..Self::NONE
                }
            }
        })
    }

    /// Whether the input is quantized at all.
    pub fn quantizes(&self) -> bool {
        self.mode != 0
    }

    /// Whether the dynamic scale spans the whole tensor (one extra reduction).
    pub fn per_tensor(&self) -> bool {
        self.mode == 1 && self.rule == 0
    }
}

/// One GEMM input's quantization: one plan for every expert, or (fp8 with static scales
/// calibrated per expert) the fp8 plan with each expert's scale, which `fm_qdq_slots`
/// applies to each slot's row by the slot's expert (`StageQuant`'s rule per pair).
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    pub plan: ActPlan,
    /// One static scale per expert, where they differ.
    pub expert_scales: Option<Vec<f32>>,
}

impl StagePlan {
    /// What `scheme` does at `stage`, read off the emulation's rules.
    pub fn new(
        scheme: &QuantScheme,
        stage: Stage,
        input_scales: Option<&InputScales>,
    ) -> Result<Self> {
        match input_scales.filter(|s| s.shared(stage).is_none()) {
            Some(s) if scheme.per_expert_input_scales() => {
                let plan = ActPlan::new(&ActQuant::for_expert(scheme, stage, Some(s), 0)?)?;
                if plan.mode != 1 || plan.rule != 3 {
                    return Err(Error::Config(format!(
                        "{scheme}: per-expert input scales on a rule that is not static fp8"
                    )));
                }
                Ok(StagePlan {
                    plan,
                    expert_scales: Some(s.stage(stage).to_vec()),
                })
            }
            _ => Ok(StagePlan {
                plan: ActPlan::new(&ActQuant::for_scheme(scheme, stage, input_scales)?)?,
                expert_scales: None,
            }),
        }
    }
}

fn producer(n: Numerics) -> Result<()> {
    match n {
        Numerics::Producer => Ok(()),
        Numerics::Vllm => Err(Error::Config(
            "the wgpu kernels compute the producer's numerics, not vLLM's (an emulation setting)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{F8E4M3Fnuz, MiniFloat, F4E2M1, F6E2M3, F6E3M2, F8E4M3};

    /// The shader's rounding (`act.wgsl`'s `round_grid`), written out in Rust.
    fn round_grid(x: f32, g: Grid) -> f32 {
        let a = x.abs();
        if a == 0.0 || a.is_nan() {
            return x;
        }
        let eb = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
        let e = eb.max(g.emin);
        let q = libm::ldexpf(a, g.mbits - e).round_ties_even();
        let r = libm::ldexpf(q, e - g.mbits).min(g.max);
        r.copysign(x)
    }

    /// Each grid rounds as the format's own encoder does, saturating, across magnitudes.
    #[test]
    fn the_grids_round_as_the_formats_do() {
        let check = |g: Grid, f: &dyn Fn(f32) -> f32, name: &str| {
            let mut x = 1e-4f32;
            while x < 600.0 {
                for v in [x, -x, x * 1.0001, x * 0.9999] {
                    assert_eq!(round_grid(v, g), f(v), "{name} {v}");
                }
                x *= 1.013;
            }
        };
        check(E4M3FN, &|v| F8E4M3::from_f32(v).to_f32(), "e4m3fn");
        check(E4M3FNUZ, &|v| F8E4M3Fnuz::from_f32(v).to_f32(), "e4m3fnuz");
        check(E2M1, &|v| F4E2M1::from_f32(v).to_f32(), "e2m1");
        check(E3M2, &|v| F6E3M2::from_f32(v).to_f32(), "e3m2");
        check(E2M3, &|v| F6E2M3::from_f32(v).to_f32(), "e2m3");
    }
}
