//! Joining per-expert, per-projection tensors into `ExpertWeights`' layout: gate rows then
//! up rows for w13 (`concat_rows`), then experts one after another (`stack`).

use crate::error::{Error, Result};
use crate::formats::{MiniFloat, F8E4M3};
use crate::quant::fp8;
use crate::quant::{Fp8WeightScale, QuantScheme, QuantTensor, WeightData};

fn kind_mismatch(what: &str) -> Error {
    Error::Config(format!(
        "{what}: projections of one layer are stored in different formats"
    ))
}

/// Appends every per-expert vector of `src` to `dst`. `rows` joins two projections of
/// one expert (g_idx must agree and is kept once); otherwise experts are stacked.
fn append(dst: &mut WeightData, src: WeightData, rows: bool, what: &str) -> Result<()> {
    match (dst, src) {
        (WeightData::Bf16(a), WeightData::Bf16(b)) => a.extend(b),
        (WeightData::F16(a), WeightData::F16(b)) => a.extend(b),
        (
            WeightData::Fp8 { codes, scales },
            WeightData::Fp8 {
                codes: c,
                scales: s,
            },
        ) => {
            codes.extend(c);
            scales.extend(s);
        }
        (
            WeightData::Nvfp4 {
                packed,
                block_scales,
                global_scales,
            },
            WeightData::Nvfp4 {
                packed: p,
                block_scales: b,
                global_scales: g,
            },
        ) => {
            packed.extend(p);
            block_scales.extend(b);
            if !rows {
                global_scales.extend(g);
            }
        }
        (
            WeightData::Mx { packed, scales },
            WeightData::Mx {
                packed: p,
                scales: s,
            },
        ) => {
            packed.extend(p);
            scales.extend(s);
        }
        (WeightData::Int(a), WeightData::Int(b)) => {
            if a.bits != b.bits || a.group != b.group || a.zeros.is_some() != b.zeros.is_some() {
                return Err(kind_mismatch(what));
            }
            a.packed4.extend(b.packed4);
            a.bytes.extend(b.bytes);
            a.scales.extend(b.scales);
            if let (Some(z), Some(y)) = (a.zeros.as_mut(), b.zeros) {
                z.extend(y);
            }
            match (a.g_idx.as_mut(), b.g_idx) {
                (Some(g), Some(h)) if rows => {
                    if *g != h {
                        return Err(Error::Config(format!(
                            "{what}: gate and up have different act-order g_idx; fleetmoe (like vLLM) keeps one per expert"
                        )));
                    }
                }
                (Some(g), Some(h)) => g.extend(h),
                (None, None) => {}
                _ => return Err(kind_mismatch(what)),
            }
            match (a.channel_scales.as_mut(), b.channel_scales) {
                (Some(c), Some(d)) => c.extend(d),
                (None, None) => {}
                _ => return Err(kind_mismatch(what)),
            }
        }
        _ => return Err(kind_mismatch(what)),
    }
    Ok(())
}

/// Gate rows then up rows of one expert (both one-expert tensors with the same cols).
pub fn concat_rows(
    scheme: &QuantScheme,
    mut gate: QuantTensor,
    mut up: QuantTensor,
    what: &str,
) -> Result<QuantTensor> {
    if gate.cols != up.cols || gate.experts != 1 || up.experts != 1 {
        return Err(Error::shape(
            what,
            format!("gate and up with {} input columns", gate.cols),
            format!("{} and {}", gate.cols, up.cols),
        ));
    }
    match (scheme, &mut gate.data, &mut up.data) {
        (
            QuantScheme::Fp8 {
                weight: Fp8WeightScale::PerTensor,
                ..
            },
            WeightData::Fp8 { scales: gs, .. },
            WeightData::Fp8 { scales: us, .. },
        ) if gs != us => {
            // The loader makes such a layer per-channel (exact) before joining rows.
            return Err(Error::Config(format!(
                "{what}: per-tensor fp8 gate and up scales differ ({} vs {}); they need per-channel scales",
                gs[0], us[0]
            )));
        }
        (QuantScheme::Fp8 { .. }, WeightData::Fp8 { scales, .. }, _) if scales.len() == 1 => {}
        (
            QuantScheme::Fp8 {
                weight: Fp8WeightScale::Block128,
                ..
            },
            _,
            _,
        ) if gate.rows % fp8::BLOCK != 0 => {
            return Err(Error::shape(
                what,
                "an intermediate size that is a multiple of 128 for block fp8",
                gate.rows,
            ))
        }
        (
            _,
            WeightData::Nvfp4 {
                block_scales: gb,
                global_scales: gg,
                ..
            },
            WeightData::Nvfp4 {
                block_scales: ub,
                global_scales: ug,
                ..
            },
        ) if gg != ug => {
            // One global scale per w13: fold the ratio into the smaller half's e4m3 block
            // scales (rounding them), with a warning; vLLM keeps gate's and warns.
            let max = gg[0].max(ug[0]);
            log::warn!("{what}: gate and up NVFP4 global scales differ ({} vs {}); rescaling block scales to {max}", gg[0], ug[0]);
            for (b, g) in [(gb, gg[0]), (ub, ug[0])] {
                b.iter_mut().for_each(|s| {
                    *s = F8E4M3::from_f32(F8E4M3::from_bits(*s).to_f32() * g / max).to_bits();
                });
            }
            *gg = vec![max];
            *ug = vec![max];
        }
        _ => {}
    }
    let rows = gate.rows + up.rows;
    let mut data = gate.data;
    let fp8_per_tensor = matches!(
        scheme,
        QuantScheme::Fp8 {
            weight: Fp8WeightScale::PerTensor,
            ..
        }
    );
    match (&mut data, up.data) {
        (WeightData::Fp8 { codes, .. }, WeightData::Fp8 { codes: c, .. }) if fp8_per_tensor => {
            codes.extend(c)
        }
        (d, u) => append(d, u, true, what)?,
    }
    Ok(QuantTensor {
        experts: 1,
        rows,
        cols: gate.cols,
        data,
    })
}

/// Experts one after another.
pub fn stack(parts: Vec<QuantTensor>, what: &str) -> Result<QuantTensor> {
    let mut it = parts.into_iter();
    let mut first = it
        .next()
        .ok_or_else(|| Error::Config(format!("{what}: no experts")))?;
    for p in it {
        if (p.rows, p.cols) != (first.rows, first.cols) {
            return Err(Error::shape(
                what,
                format!("[{}, {}] for every expert", first.rows, first.cols),
                format!("[{}, {}]", p.rows, p.cols),
            ));
        }
        append(&mut first.data, p.data, false, what)?;
        first.experts += p.experts;
    }
    Ok(first)
}
