//! compressed-tensors integer weights (and its W4A8 variant), `pack-quantized` or
//! `int-quantized`. `int-quantized` (`IntQuantizationCompressor`, the default format of the
//! W4AFP8 preset) stores `weight` as int8 `[out, in]`, one signed value per element (int4
//! values unpacked), with the same `weight_scale` and unpacked `weight_zero_point`
//! (compressed-tensors `NaiveQuantizationCompressor`, `QuantizationArgs.pytorch_dtype`).
//! `weight_packed` is int32 `[out, in·bits/32]`: `32/bits` values per word along K, value j
//! in bits `bits·j..`, each stored as the signed value plus 2^(bits−1) (compressed-tensors
//! `pack_to_int32`), which is fleetmoe's unsigned code with zero 8 / 128.
//! `weight_scale` `[out, in/group]`; `weight_shape` `[out, in]`; `weight_g_idx` `[in]`
//! for act-order. Asymmetric group/channel `weight_zero_point` is packed the same way but
//! along dim 0: int32 `[ceil(out·bits/32), groups]`, with the same +2^(bits−1) offset
//! (compressed-tensors `PackedQuantizationCompressor.compress_weight`,
//! `pack_to_int32(zero_point, num_bits, packed_dim=0)`). An unpacked signed `[out, groups]`
//! zero point (other writers) is accepted too. compressed-tensors pads K to whole words;
//! we refuse a K that needs padding rather than guess where the pad goes.
//! W4A8: int4 (uint4b8) `weight_packed` with bf16 group-128 `weight_scale` `[out, in/128]`;
//! the checkpoint has no channel scales: vLLM `CompressedTensorsW4A8Fp8MoEMethod` creates
//! `w13_weight_chan_scale` as ones and splits the bf16 group scales into (fp8 group,
//! f32 channel) at load (`convert_bf16_scales_to_fp8`). We keep the group scales exactly
//! and set fleetmoe's per-channel factor to 1; a backend that needs fp8-representable
//! group scales re-factors them in its `prepare`.

use super::{floats, groups_of};
use crate::checkpoint::shards::Shards;
use crate::error::{Error, Result};
use crate::quant::{IntBits, IntGroup, IntWeights, QuantScheme, WeightData};
use safetensors::Dtype;

/// Values of `bits` each, `32/bits` per word, value j at bit `bits·j`.
pub(crate) fn unpack_words(words: &[i32], bits: usize) -> Vec<u8> {
    let per = 32 / bits;
    let mask = (1u32 << bits) - 1;
    words
        .iter()
        .flat_map(|&w| (0..per).map(move |j| ((w as u32 >> (bits * j)) & mask) as u8))
        .collect()
}

pub(super) fn load(
    scheme: &QuantScheme,
    packed: bool,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let (bits, group, zp, act_order) = match *scheme {
        QuantScheme::IntWeightOnly {
            bits,
            group,
            zero_point,
            act_order,
        } => (bits, group, zero_point, act_order),
        QuantScheme::W4A8 => (IntBits::Int4, IntGroup::Size(128), false, false),
        _ => {
            return Err(Error::checkpoint(
                "",
                base,
                "int loader given a non-int scheme",
            ))
        }
    };
    let b = bits.bits();
    let wname = format!("{base}.{}", if packed { "weight_packed" } else { "weight" });
    if cols * b % 32 != 0 {
        return Err(Error::checkpoint(
            "",
            &wname,
            format!("input dimension {cols} does not fill whole int32 words"),
        ));
    }
    let groups = groups_of(group, cols, &wname)?;
    let t = shards.get(&wname)?;
    let words = if packed {
        t.expect_dtype(&[Dtype::I32])?;
        t.expect_shape(&[rows, cols * b / 32])?;
        t.i32s()?
    } else {
        t.expect_dtype(&[Dtype::I8])?;
        t.expect_shape(&[rows, cols])?;
        pack_signed(&t.ints()?, b).map_err(|why| Error::checkpoint(&t.file, &wname, why))?
    };
    if let Ok(s) = shards.get(&format!("{base}.weight_shape")) {
        let v = s.ints()?;
        if v != [rows as i64, cols as i64] {
            return Err(Error::checkpoint(
                &s.file,
                &s.name,
                format!("weight_shape {v:?}, expected [{rows}, {cols}]"),
            ));
        }
    }
    let scales = floats(shards, &format!("{base}.weight_scale"), &[rows, groups])?;
    // Symmetric weights use the fixed zero; a stored zero point must then be that zero
    // (0 signed), or `symmetric` misdescribes the file.
    let zname = format!("{base}.weight_zero_point");
    let zeros = if zp || shards.contains(&zname) {
        let z = shards.get(&zname)?;
        let packed_rows = (rows * b).div_ceil(32);
        if z.dtype == Dtype::I32 && z.shape == [packed_rows, groups] && packed_rows != rows {
            let vals = unpack_words(&z.i32s()?, b);
            let per = 32 / b;
            let mut out = vec![0u8; rows * groups];
            for r in 0..rows {
                for g in 0..groups {
                    out[r * groups + g] = vals[((r / per) * groups + g) * per + r % per];
                }
            }
            Some(out)
        } else {
            z.expect_shape(&[rows, groups])?;
            let mid = 1i64 << (b - 1);
            let max = (1i64 << b) - 1;
            let v = z.ints()?;
            Some(
                v.iter()
                    .map(|&x| {
                        let u = x + mid;
                        if (0..=max).contains(&u) {
                            Ok(u as u8)
                        } else {
                            Err(Error::checkpoint(
                                &z.file,
                                &zname,
                                format!("zero point {x} out of range"),
                            ))
                        }
                    })
                    .collect::<Result<Vec<u8>>>()?,
            )
        }
    } else {
        None
    };
    let zeros = match zeros {
        Some(z) if !zp => {
            super::check_symmetric_zeros(shards, &zname, &z, b, |bad, mid| {
                format!(
                    "zero point {} where weights.symmetric (true, or absent: the compressed-tensors default) means 0",
                    bad as i32 - mid as i32
                )
            })?;
            None
        }
        z => z,
    };
    let gname = format!("{base}.weight_g_idx");
    let g_idx = if act_order {
        Some(g_idx(shards, &gname, cols, groups)?)
    } else {
        if shards.contains(&gname) {
            trivial_g_idx(shards, &gname, cols, groups, "weights.actorder")?;
        }
        None
    };
    let (packed4, bytes) = match bits {
        IntBits::Int4 => (words, Vec::new()),
        IntBits::Int8 => (Vec::new(), unpack_words(&words, 8)),
    };
    Ok(WeightData::Int(IntWeights {
        bits,
        packed4,
        bytes,
        group: cols / groups,
        scales,
        zeros,
        g_idx,
        channel_scales: (*scheme == QuantScheme::W4A8).then(|| vec![1.0; rows]),
    }))
}

/// Signed `bits`-bit values (one per int8 of an `int-quantized` weight) in the words of
/// `pack-quantized`: each plus 2^(bits−1), `32/bits` per word, value j at bit `bits·j`.
fn pack_signed(values: &[i64], bits: usize) -> std::result::Result<Vec<i32>, String> {
    let (mid, per) = (1i64 << (bits - 1), 32 / bits);
    let mut words = vec![0u32; values.len() / per];
    for (k, &v) in values.iter().enumerate() {
        if !(-mid..mid).contains(&v) {
            return Err(format!(
                "value {v} at index {k} is outside the {bits}-bit range [{}, {}]",
                -mid,
                mid - 1
            ));
        }
        words[k / per] |= ((v + mid) as u32) << (bits * (k % per));
    }
    Ok(words.into_iter().map(|w| w as i32).collect())
}

/// An act-order `g_idx` `[cols]`, every entry a valid group.
pub(crate) fn g_idx(shards: &Shards, name: &str, cols: usize, groups: usize) -> Result<Vec<u32>> {
    let t = shards.get(name)?;
    t.expect_shape(&[cols])?;
    t.ints()?
        .into_iter()
        .map(|g| {
            if g >= 0 && (g as usize) < groups {
                Ok(g as u32)
            } else {
                Err(Error::checkpoint(
                    &t.file,
                    name,
                    format!("g_idx entry {g} is not one of {groups} groups"),
                ))
            }
        })
        .collect()
}

/// A `g_idx` stored although the config says there is no activation order (`field`):
/// it must be the plain order, column c in group c / (cols / groups).
pub(crate) fn trivial_g_idx(
    shards: &Shards,
    name: &str,
    cols: usize,
    groups: usize,
    field: &str,
) -> Result<()> {
    let g = g_idx(shards, name, cols, groups)?;
    let size = cols / groups;
    match g.iter().enumerate().find(|&(c, &v)| v as usize != c / size) {
        None => Ok(()),
        Some((c, &v)) => Err(Error::checkpoint(
            shards.file_of(name),
            name,
            format!(
                "column {c} in group {v}, not {}: this g_idx reorders columns, but {field} (absent, false or \"weight\") says there is no activation order",
                c / size
            ),
        )),
    }
}
