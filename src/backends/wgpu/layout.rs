//! The wgpu experts' weight layout: one form for every scheme, so one GEMM shader
//! (`kernels-wgsl/gemm.wgsl`) decodes them all with no per-format branch. Weights stay
//! quantized on the device:
//!
//! - codes packed in `u32` words, row-major `[expert][n][k]`, each row starting on a word,
//!   4, 8 or 16 bits per element (MX fp6 is repacked to one byte per element at load, the
//!   6-bit packing straddles words);
//! - 4- and 8-bit codes decoded through a lookup table of f32 values built here from
//!   `crate::formats`; 16-bit codes are bf16 or f16 bits decoded directly;
//! - `w = ((lut[code] − zero) · s1[e, n / gn, k / gk])`, rounded to bf16 where the
//!   weight-only integer kernels round (`quant::int::dequantize_bf16`), `· s2[e, n / gn2]`:
//!   the same two f32 products, in the same order, as the emulation's dequantization, so the
//!   shader multiplies exactly the emulation's weights.

use crate::error::{Error, Result};
use crate::formats::{
    unpack_int4_i32, F8E4M3Fnuz, MiniFloat, E8M0, F4E2M1, F6E2M3, F6E3M2, F8E4M3,
};
use crate::quant::{
    fp8, int, mx, nvfp4, Fp8Flavor, Fp8WeightScale, IntBits, MxElem, QuantScheme, QuantTensor,
    WeightData,
};

/// One projection (w13 or w2) of every expert in the shader's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedProjection {
    pub experts: usize,
    /// Output features (N) and input features (K).
    pub rows: usize,
    pub cols: usize,
    /// Bits per code: 4, 8 or 16.
    pub bits: u32,
    /// 16-bit codes: 1 bf16, 2 f16; 0: decoded through `lut`.
    pub float16: u32,
    pub words_per_row: usize,
    pub codes: Vec<u32>,
    /// `2^bits` values (one dummy entry for 16-bit codes).
    pub lut: Vec<f32>,
    /// s1 `[E, ceil(N / group_n), ceil(K / group_k)]`.
    pub scales: Vec<f32>,
    pub group_n: usize,
    pub group_k: usize,
    /// Zero points in the shape of `scales` (asymmetric integers); else `zero`.
    pub zeros: Option<Vec<f32>>,
    pub zero: f32,
    /// Act-order: each column's group `[E, K]`, replacing `k / group_k`.
    pub g_idx: Option<Vec<u32>>,
    /// Round `(lut − zero) · s1` to bf16 (integer weight-only kernels expand to bf16).
    pub round_bf16: bool,
    /// s2 `[E, ceil(N / outer_group_n)]` (NVFP4's global scale, W4A8's channel scales).
    pub outer: Option<Vec<f32>>,
    pub outer_group_n: usize,
}

fn lut<T: MiniFloat>(bits: u32) -> Vec<f32> {
    (0..1u32 << bits)
        .map(|c| T::from_bits(c as u8).to_f32())
        .collect()
}

fn fp8_lut(flavor: Fp8Flavor) -> Vec<f32> {
    match flavor {
        Fp8Flavor::E4M3Fn => lut::<F8E4M3>(8),
        Fp8Flavor::E4M3Fnuz => lut::<F8E4M3Fnuz>(8),
    }
}

/// Codes in K order, `cols` per row, packed `32 / bits` per word.
fn pack_codes(codes: impl Iterator<Item = u32>, rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    let per = (32 / bits) as usize;
    let wpr = cols.div_ceil(per);
    let mut out = vec![0u32; rows * wpr];
    let mask = if bits == 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    for (i, c) in codes.enumerate() {
        let (r, k) = (i / cols, i % cols);
        out[r * wpr + k / per] |= (c & mask) << ((k % per) as u32 * bits);
    }
    out
}

impl PackedProjection {
    /// Converts one projection of `scheme` (already validated) into the shader's layout.
    pub fn new(scheme: &QuantScheme, t: &QuantTensor) -> Result<Self> {
        let (e, n, k) = (t.experts, t.rows, t.cols);
        let all_rows = e * n;
        let mut p = PackedProjection {
            experts: e,
            rows: n,
            cols: k,
            bits: 8,
            float16: 0,
            words_per_row: 0,
            codes: Vec::new(),
            lut: vec![0.0],
            scales: vec![1.0; e],
            group_n: n,
            group_k: k,
            zeros: None,
            zero: 0.0,
            g_idx: None,
            round_bf16: false,
            outer: None,
            outer_group_n: n,
        };
        match (&t.data, *scheme) {
            (WeightData::Bf16(v), _) => {
                p.bits = 16;
                p.float16 = 1;
                p.codes = pack_codes(v.iter().map(|x| x.to_bits() as u32), all_rows, k, 16);
            }
            (WeightData::F16(v), _) => {
                p.bits = 16;
                p.float16 = 2;
                p.codes = pack_codes(v.iter().map(|x| x.to_bits() as u32), all_rows, k, 16);
            }
            (WeightData::Fp8 { codes, scales }, QuantScheme::Fp8 { flavor, weight, .. }) => {
                p.codes = pack_codes(codes.iter().map(|&c| c as u32), all_rows, k, 8);
                p.lut = fp8_lut(flavor);
                p.scales = scales.clone();
                (p.group_n, p.group_k) = match weight {
                    Fp8WeightScale::PerTensor => (n, k),
                    Fp8WeightScale::PerChannel => (1, k),
                    Fp8WeightScale::Block128 => (fp8::BLOCK, fp8::BLOCK),
                };
            }
            (
                WeightData::Nvfp4 {
                    packed,
                    block_scales,
                    global_scales,
                },
                _,
            ) => {
                let codes = crate::formats::unpack_fp4(packed);
                p.bits = 4;
                p.codes = pack_codes(codes.iter().map(|&c| c as u32), all_rows, k, 4);
                p.lut = lut::<F4E2M1>(4);
                p.scales = block_scales
                    .iter()
                    .map(|&b| F8E4M3::from_bits(b).to_f32())
                    .collect();
                (p.group_n, p.group_k) = (1, nvfp4::BLOCK);
                p.outer = Some(global_scales.clone());
            }
            (WeightData::Mx { packed, scales }, QuantScheme::Mx { elem, .. }) => {
                let codes = mx::unpack(elem, packed)?;
                (p.bits, p.lut) = match elem {
                    MxElem::Fp4E2M1 => (4, lut::<F4E2M1>(4)),
                    // One byte per 6-bit element; codes ≥ 64 never occur.
                    MxElem::Fp6E3M2 => (8, lut6::<F6E3M2>()),
                    MxElem::Fp6E2M3 => (8, lut6::<F6E2M3>()),
                };
                p.codes = pack_codes(codes.iter().map(|&c| c as u32), all_rows, k, p.bits);
                p.scales = scales
                    .iter()
                    .map(|&s| E8M0::from_bits(s).to_f32())
                    .collect();
                (p.group_n, p.group_k) = (1, mx::BLOCK);
            }
            (WeightData::Int(iw), _) => {
                let codes: Vec<u8> = match iw.bits {
                    IntBits::Int4 => unpack_int4_i32(&iw.packed4),
                    IntBits::Int8 => iw.bytes.clone(),
                };
                p.bits = iw.bits.bits() as u32;
                p.codes = pack_codes(codes.iter().map(|&c| c as u32), all_rows, k, p.bits);
                p.lut = (0..1u32 << p.bits).map(|c| c as f32).collect();
                let weight_only = matches!(scheme, QuantScheme::IntWeightOnly { .. });
                p.round_bf16 = weight_only;
                p.scales = if weight_only {
                    iw.scales
                        .iter()
                        .map(|&s| half::bf16::from_f32(s).to_f32())
                        .collect()
                } else {
                    iw.scales.clone()
                };
                (p.group_n, p.group_k) = (1, iw.group);
                p.zero = int::mid_code(iw.bits) as f32;
                p.zeros = iw
                    .zeros
                    .as_ref()
                    .map(|z| z.iter().map(|&v| v as f32).collect());
                p.g_idx = iw.g_idx.clone();
                if let Some(cs) = &iw.channel_scales {
                    p.outer = Some(cs.clone());
                    p.outer_group_n = 1;
                }
            }
            (data, scheme) => {
                return Err(Error::Config(format!(
                    "wgpu layout: weights stored as {} do not belong to scheme {scheme}",
                    data_name(data)
                )))
            }
        }
        p.words_per_row = k.div_ceil((32 / p.bits) as usize);
        p.check()?;
        Ok(p)
    }

    /// Every table the right length, so the shader never reads past one.
    fn check(&self) -> Result<()> {
        let (e, n, k) = (self.experts, self.rows, self.cols);
        let want = |what: &str, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(Error::shape(format!("wgpu layout {what}"), expected, got))
            }
        };
        want("codes", self.codes.len(), e * n * self.words_per_row)?;
        let groups = e * n.div_ceil(self.group_n) * k.div_ceil(self.group_k);
        if self.g_idx.is_none() {
            want("scales", self.scales.len(), groups)?;
        }
        if let Some(z) = &self.zeros {
            want("zero points", z.len(), self.scales.len())?;
        }
        if let Some(g) = &self.g_idx {
            want("act-order groups", g.len(), e * k)?;
            let per = self.scales.len() / (e * n).max(1);
            if g.iter().any(|&v| v as usize >= per) {
                return Err(Error::Config(
                    "wgpu layout: an act-order group index is past the group scales".into(),
                ));
            }
        }
        if let Some(o) = &self.outer {
            want("outer scales", o.len(), e * n.div_ceil(self.outer_group_n))?;
        }
        Ok(())
    }

    /// Scale groups per row of one expert along K (the act-order table's range).
    pub fn k_groups(&self) -> usize {
        match &self.g_idx {
            Some(_) => self.scales.len() / (self.experts * self.rows).max(1),
            None => self.cols.div_ceil(self.group_k),
        }
    }

    /// Element (e, n, k) as the shader decodes it (`gemm.wgsl`'s `weight`).
    pub fn decode(&self, e: usize, n: usize, k: usize) -> f32 {
        let per = (32 / self.bits) as usize;
        let word = self.codes[(e * self.rows + n) * self.words_per_row + k / per];
        let mask = if self.bits == 32 {
            u32::MAX
        } else {
            (1u32 << self.bits) - 1
        };
        let code = (word >> ((k % per) as u32 * self.bits)) & mask;
        let value = match self.float16 {
            1 => f32::from_bits(code << 16),
            2 => half::f16::from_bits(code as u16).to_f32(),
            _ => self.lut[code as usize],
        };
        let kg = match &self.g_idx {
            Some(g) => g[e * self.cols + k] as usize,
            None => k / self.group_k,
        };
        let s = (e * self.rows.div_ceil(self.group_n) + n / self.group_n) * self.k_groups() + kg;
        let zero = self.zeros.as_ref().map_or(self.zero, |z| z[s]);
        let mut v = (value - zero) * self.scales[s];
        if self.round_bf16 {
            v = half::bf16::from_f32(v).to_f32();
        }
        match &self.outer {
            Some(o) => v * o[e * self.rows.div_ceil(self.outer_group_n) + n / self.outer_group_n],
            None => v,
        }
    }
}

fn lut6<T: MiniFloat>() -> Vec<f32> {
    (0..256u32)
        .map(|c| T::from_bits((c & 63) as u8).to_f32())
        .collect()
}

fn data_name(d: &WeightData) -> &'static str {
    match d {
        WeightData::Bf16(_) => "bf16",
        WeightData::F16(_) => "f16",
        WeightData::Fp8 { .. } => "fp8 codes",
        WeightData::Nvfp4 { .. } => "NVFP4",
        WeightData::Mx { .. } => "MX",
        WeightData::Int(_) => "integers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::{Activation, LayerConfig};
    use crate::quant::{DenseExperts, ExpertWeights};

    /// Decoding the packed form gives, bit for bit, the weights the emulation multiplies,
    /// for every representative scheme, with K a multiple of 128 and of nothing larger.
    #[test]
    fn the_packed_form_decodes_to_the_emulations_weights() {
        for (h, i) in [(128, 96), (256, 384)] {
            let config = LayerConfig {
                activation: Activation::SiluAndMul,
                ..LayerConfig::new(3, 2, h, i)
            };
            let dense = DenseExperts::random(&config, 11);
            for scheme in QuantScheme::all_representative() {
                let Ok(w) = ExpertWeights::quantize(&dense, scheme) else {
                    continue;
                };
                let w13 = PackedProjection::new(&scheme, &w.w13).unwrap();
                let w2 = PackedProjection::new(&scheme, &w.w2).unwrap();
                for e in 0..3 {
                    let (a, b) = w.dequantize_expert_as_kernels(e).unwrap();
                    for (p, want) in [(&w13, &a), (&w2, &b)] {
                        for n in 0..p.rows {
                            for k in 0..p.cols {
                                let got = p.decode(e, n, k);
                                let exp = want[n * p.cols + k];
                                assert!(
                                    got.to_bits() == exp.to_bits()
                                        || (got.is_nan() && exp.is_nan()),
                                    "{scheme} H={h} expert {e} ({n}, {k}): {got} vs {exp}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn weights_of_another_scheme_are_an_error() {
        let config = LayerConfig::new(2, 1, 64, 32);
        let dense = DenseExperts::random(&config, 3);
        let w = ExpertWeights::quantize(&dense, QuantScheme::parse("fp8").unwrap()).unwrap();
        let wrong = QuantScheme::parse("mxfp4").unwrap();
        assert!(PackedProjection::new(&wrong, &w.w13).is_err());
    }
}
