//! NVFP4 weights: e2m1 two per byte along K (element 2i in the low nibble) `[out, in/2]`,
//! e4m3 block scales `[out, in/16]`, one f32 global scale.
//! ModelOpt: `weight`, `weight_scale`, `weight_scale_2` with `w = fp4 · block · scale_2`.
//! compressed-tensors `nvfp4-pack-quantized`: `weight_packed`, `weight_scale`,
//! `weight_global_scale` with `w = fp4 · block / global` (vLLM
//! `CompressedTensorsW4A4Fp4` inverts it at load); we store `1 / global`, which is exact
//! when the global scale is a power of two and otherwise off by one f32 rounding.

use super::{positive, reciprocal, tensor};
use crate::checkpoint::config::QuantFormat;
use crate::checkpoint::shards::Shards;
use crate::error::Result;
use crate::formats::MiniFloat;
use crate::quant::WeightData;
use safetensors::Dtype;

pub(super) fn load(
    format: &QuantFormat,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let ct = matches!(format, QuantFormat::CtNvfp4 { .. });
    let wname = if ct {
        format!("{base}.weight_packed")
    } else {
        format!("{base}.weight")
    };
    if cols % 16 != 0 {
        return Err(crate::Error::checkpoint(
            "",
            &wname,
            format!("group size 16 does not divide the input dimension {cols}"),
        ));
    }
    let packed = tensor(shards, &wname, &[rows, cols / 2], &[Dtype::U8, Dtype::I8])?.data;
    let bname = format!("{base}.weight_scale");
    let bt = tensor(
        shards,
        &bname,
        &[rows, cols / 16],
        &[Dtype::F8_E4M3, Dtype::U8],
    )?;
    // e4m3fn: sign bit set is negative (or -0), 0x7f / 0xff is NaN.
    if let Some(&bad) = bt.data.iter().find(|&&b| b & 0x80 != 0 || b & 0x7f == 0x7f) {
        return Err(crate::Error::checkpoint(
            &bt.file,
            &bname,
            format!(
                "block scale byte {bad:#04x} ({}): expected a non-negative finite e4m3 value",
                crate::formats::F8E4M3::from_bits(bad).to_f32()
            ),
        ));
    }
    let block_scales = bt.data;
    let global = if ct {
        let t = shards.get(&format!("{base}.weight_global_scale"))?;
        reciprocal(&t, t.scalar()?)?
    } else {
        let t = shards.get(&format!("{base}.weight_scale_2"))?;
        positive(&t, t.scalar()?)?
    };
    Ok(WeightData::Nvfp4 {
        packed,
        block_scales,
        global_scales: vec![global],
    })
}
