//! Unquantized bf16 / f16 / f32 weights `[out, in]`. f32 weights are rounded to bf16
//! (fleetmoe has no f32 weight scheme), with a warning.

use super::tensor;
use crate::checkpoint::shards::Shards;
use crate::error::Result;
use crate::quant::{FloatDtype, QuantScheme, WeightData};
use safetensors::Dtype;

pub(super) fn load(
    scheme: &QuantScheme,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let name = format!("{base}.weight");
    let t = tensor(
        shards,
        &name,
        &[rows, cols],
        &[Dtype::BF16, Dtype::F16, Dtype::F32],
    )?;
    let raw16 = |d: &[u8]| -> Vec<u16> {
        d.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    Ok(match (scheme, t.dtype) {
        (QuantScheme::Unquantized(FloatDtype::Bf16), Dtype::BF16) => WeightData::Bf16(
            raw16(&t.data)
                .into_iter()
                .map(half::bf16::from_bits)
                .collect(),
        ),
        (QuantScheme::Unquantized(FloatDtype::F16), Dtype::F16) => WeightData::F16(
            raw16(&t.data)
                .into_iter()
                .map(half::f16::from_bits)
                .collect(),
        ),
        (QuantScheme::Unquantized(FloatDtype::Bf16), _) => {
            if t.dtype == Dtype::F32 {
                log::warn!("{name}: f32 weights rounded to bf16");
            }
            WeightData::Bf16(t.f32s()?.into_iter().map(half::bf16::from_f32).collect())
        }
        (QuantScheme::Unquantized(FloatDtype::F16), _) => {
            WeightData::F16(t.f32s()?.into_iter().map(half::f16::from_f32).collect())
        }
        _ => {
            return Err(crate::Error::checkpoint(
                &t.file,
                &name,
                format!("unquantized weights cannot load as {scheme}"),
            ))
        }
    })
}
