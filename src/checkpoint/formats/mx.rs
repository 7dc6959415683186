//! OCP MX weights. AMD Quark: `weight` packed `[out, packed_len(in)]` and e8m0
//! `weight_scale` `[out, in/32]` (U8). fp4 holds element 2i in the low nibble (Quark /
//! `Pack_fp4`, little endian); fp6 four elements per three bytes as a little-endian 24-bit
//! word, element i in bits 6i.. (Quark `Pack_fp6`, amd-quark 0.10 `torch/utils/pack.py`,
//! the order `formats::pack_fp6` implements). Quark's older dtype "mx" export
//! (`Pack_mxfp4` / `Pack_mxfp6`) interleaves the scale byte with the elements in one
//! tensor; that layout is not read here: its `weight` is wider than `packed_len(in)`, so it
//! fails the shape check instead of loading wrong (we had no such file to confirm with).
//! GPT-OSS: `{gate_up,down}_proj_blocks` `[E, out, in/32, 16]` and `_scales`
//! `[E, out, in/32]` (transformers `Mxfp4GptOssExperts`), same nibble order.

use super::tensor;
use crate::checkpoint::shards::Shards;
use crate::error::Result;
use crate::quant::mx::packed_len;
use crate::quant::{MxElem, WeightData};
use safetensors::Dtype;

pub(super) fn load(
    elem: MxElem,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let wname = format!("{base}.weight");
    if cols % 32 != 0 {
        return Err(crate::Error::checkpoint(
            "",
            &wname,
            format!("group size 32 does not divide the input dimension {cols}"),
        ));
    }
    let packed = tensor(
        shards,
        &wname,
        &[rows, packed_len(elem, cols)],
        &[Dtype::U8, Dtype::I8],
    )?
    .data;
    let scales = tensor(
        shards,
        &format!("{base}.weight_scale"),
        &[rows, cols / 32],
        &[Dtype::U8, Dtype::F8_E8M0],
    )?
    .data;
    Ok(WeightData::Mx { packed, scales })
}

/// GPT-OSS fused experts: (`[E, rows, cols/2]` packed fp4, `[E, rows, cols/32]` e8m0).
pub(crate) fn gpt_oss_blocks(
    shards: &Shards,
    base: &str,
    experts: usize,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let bname = format!("{base}_blocks");
    if cols % 32 != 0 {
        return Err(crate::Error::checkpoint(
            "",
            &bname,
            format!("group size 32 does not divide the input dimension {cols}"),
        ));
    }
    let packed = tensor(
        shards,
        &bname,
        &[experts, rows, cols / 32, 16],
        &[Dtype::U8],
    )?
    .data;
    let scales = tensor(
        shards,
        &format!("{base}_scales"),
        &[experts, rows, cols / 32],
        &[Dtype::U8, Dtype::F8_E8M0],
    )?
    .data;
    Ok(WeightData::Mx { packed, scales })
}
