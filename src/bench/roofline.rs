//! The roofline floor of one MoE layer forward, defined as in
//! `../shared/reference/h200-anchors.md` so our ratios and the peers' are comparable:
//! `max(weight bytes of the experts hit ÷ copy bandwidth, 2·M·k·3·H·I ÷ matrix rate)`,
//! with the ceilings of the GPU the run is on.

use crate::error::{Error, Result};

/// The rates a floor divides by, for one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceilings {
    /// The GPU's name, as the driver reports it.
    pub device: String,
    /// Device-to-device copy bandwidth, read + write counted, bytes per second.
    pub copy_bytes_per_s: f64,
    /// Dense bf16 matrix rate, flop/s.
    pub bf16_flops: f64,
    /// Dense fp8 matrix rate, flop/s.
    pub fp8_flops: f64,
    /// Where the figures come from.
    pub source: String,
}

/// Ceilings measured on these exact GPUs: (name, copy B/s, bf16 flop/s, fp8 flop/s, how).
const MEASURED: &[(&str, f64, f64, f64, &str)] = &[
    (
        "NVIDIA H200",
        4.25e12,
        687e12,
        1315e12,
        "measured on the lent H200 2026-12-02: device copy, torch matmul 8192³ (shared/GPU.md)",
    ),
    (
        "NVIDIA H100 80GB HBM3",
        3.0e12,
        726e12,
        1267e12,
        "measured on the lent H100 2026-11-22 (h100-anchors.md)",
    ),
];

impl Ceilings {
    /// The table's ceilings for `device`, if it was measured.
    pub fn lookup(device: &str) -> Option<Ceilings> {
        MEASURED
            .iter()
            .find(|m| m.0 == device)
            .map(|&(name, copy, bf16, fp8, how)| Ceilings {
                device: name.to_string(),
                copy_bytes_per_s: copy,
                bf16_flops: bf16,
                fp8_flops: fp8,
                source: how.to_string(),
            })
    }

    /// The ceilings for `device`: the table's, with any rate given (TFLOP/s) taking the
    /// table's place. A GPU the table lacks needs both matrix rates, and its copy bandwidth
    /// is `measured_copy` (B/s), so no floor is ever divided by another GPU's figures.
    pub fn for_device(
        device: &str,
        measured_copy: f64,
        bf16_tflops: Option<f64>,
        fp8_tflops: Option<f64>,
    ) -> Result<Ceilings> {
        let mut c = match (Ceilings::lookup(device), bf16_tflops, fp8_tflops) {
            (Some(c), _, _) => c,
            (None, Some(_), Some(_)) => Ceilings {
                device: device.to_string(),
                copy_bytes_per_s: measured_copy,
                bf16_flops: 0.0,
                fp8_flops: 0.0,
                source: "copy measured now, matrix rates given".to_string(),
            },
            (None, _, _) => {
                return Err(Error::Config(format!(
                    "no measured ceilings for '{device}': pass --bf16-tflops and --fp8-tflops \
                     (dense GEMM rates measured on this GPU); its copy bandwidth is measured"
                )))
            }
        };
        for (rate, given) in [
            (&mut c.bf16_flops, bf16_tflops),
            (&mut c.fp8_flops, fp8_tflops),
        ] {
            if let Some(t) = given {
                if !(t.is_finite() && t > 0.0) {
                    return Err(Error::Config(format!("a matrix rate of {t} TFLOP/s")));
                }
                *rate = t * 1e12;
            }
        }
        Ok(c)
    }

    /// The matrix rate of a GEMM on fp8 (or else bf16 / f16) tensor cores.
    pub fn flops(&self, fp8: bool) -> f64 {
        if fp8 {
            self.fp8_flops
        } else {
            self.bf16_flops
        }
    }

    /// One line naming the figures, for the bench's header.
    pub fn describe(&self) -> String {
        format!(
            "{}: copy {:.2} TB/s, bf16 {:.0} TFLOP/s, fp8 {:.0} TFLOP/s ({})",
            self.device,
            self.copy_bytes_per_s / 1e12,
            self.bf16_flops / 1e12,
            self.fp8_flops / 1e12,
            self.source
        )
    }
}

/// The floor in microseconds for `tokens` tokens routed to `top_k` experts each, touching
/// `experts_hit` experts of size `hidden × intermediate` (gated: 3 matrices) stored at
/// `weight_bytes` bytes per element, on tensor cores of `flops` per second.
#[allow(clippy::too_many_arguments)]
pub fn floor_us(
    ceilings: &Ceilings,
    tokens: usize,
    top_k: usize,
    hidden: usize,
    intermediate: usize,
    experts_hit: usize,
    weight_bytes: f64,
    fp8: bool,
) -> f64 {
    let matrix = 3.0 * hidden as f64 * intermediate as f64;
    let bytes = experts_hit as f64 * matrix * weight_bytes;
    let work = 2.0 * tokens as f64 * top_k as f64 * matrix;
    (bytes / ceilings.copy_bytes_per_s).max(work / ceilings.flops(fp8)) * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_anchor_tables() {
        let h100 = Ceilings::lookup("NVIDIA H100 80GB HBM3").unwrap();
        // Mixtral-8x7B bf16, M = 1: both experts of the token read once (anchor: 234.7 µs).
        let f = floor_us(&h100, 1, 2, 4096, 14336, 2, 2.0, false);
        assert!((f - 234.9).abs() < 1.0, "{f}");
        // Mixtral fp8 at M = 4096 is compute bound (anchor: 2277.5 µs).
        let f = floor_us(&h100, 4096, 2, 4096, 14336, 8, 1.0, true);
        assert!((f - 2277.5).abs() < 5.0, "{f}");
        let h200 = Ceilings::lookup("NVIDIA H200").unwrap();
        // h200-anchors.md: Mixtral bf16 M = 1 166.0 µs, fp8 M = 4096 2194.5 µs.
        let f = floor_us(&h200, 1, 2, 4096, 14336, 2, 2.0, false);
        assert!((f - 166.0).abs() < 0.5, "{f}");
        let f = floor_us(&h200, 4096, 2, 4096, 14336, 8, 1.0, true);
        assert!((f - 2194.5).abs() < 1.0, "{f}");
    }

    #[test]
    fn an_unmeasured_gpu_needs_its_matrix_rates() {
        let err = Ceilings::for_device("NVIDIA A100-SXM4-80GB", 1.5e12, None, Some(600.0));
        assert!(err.unwrap_err().to_string().contains("--bf16-tflops"));
        let c =
            Ceilings::for_device("NVIDIA A100-SXM4-80GB", 1.5e12, Some(280.0), Some(1.0)).unwrap();
        assert_eq!((c.copy_bytes_per_s, c.bf16_flops), (1.5e12, 280e12));
        // A known GPU keeps its table copy bandwidth; a rate given replaces the table's.
        let c = Ceilings::for_device("NVIDIA H200", 1.0, Some(700.0), None).unwrap();
        assert_eq!(
            (c.copy_bytes_per_s, c.bf16_flops, c.fp8_flops),
            (4.25e12, 700e12, 1315e12)
        );
        assert!(Ceilings::for_device("NVIDIA H200", 1.0, Some(-1.0), None).is_err());
    }
}
