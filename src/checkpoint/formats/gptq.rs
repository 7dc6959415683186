//! AutoGPTQ and AutoAWQ integer weights.
//! GPTQ: `qweight` int32 `[in·bits/32, out]`, packed along K (value j of a word at bit
//! `bits·j`); `scales` f16 `[groups, out]`; `qzeros` int32 `[groups, out·bits/32]` packed
//! along N, stored minus one unless `checkpoint_format` is `gptq_v2` (vLLM `gptq.py`,
//! AutoGPTQ `QuantLinear.pack`); `g_idx` int32 `[in]` with `desc_act`.
//! AWQ (GEMM): `qweight` int32 `[in, out/8]` packed along N, nibble i of a word holding
//! column `[0, 2, 4, 6, 1, 3, 5, 7][i]` of its 8-column group (AutoAWQ `WQLinear_GEMM.pack`
//! `order_map`; vLLM `AWQ_REVERSE_ORDER` = [0, 4, 1, 5, 2, 6, 3, 7] undoes it); `qzeros`
//! `[groups, out/8]` packed the same way, not offset; `scales` `[groups, out]`.

use super::int::{g_idx, trivial_g_idx, unpack_words};
use super::{floats, groups_of};
use crate::checkpoint::config::QuantFormat;
use crate::checkpoint::shards::Shards;
use crate::error::{Error, Result};
use crate::quant::{IntBits, IntWeights, QuantScheme, WeightData};
use safetensors::Dtype;

const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

pub(super) fn load(
    format: &QuantFormat,
    scheme: &QuantScheme,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let QuantScheme::IntWeightOnly {
        bits,
        group,
        zero_point,
        act_order,
    } = *scheme
    else {
        return Err(Error::checkpoint(
            "",
            base,
            "GPTQ/AWQ loader given another scheme",
        ));
    };
    let b = bits.bits();
    let per = 32 / b;
    let qname = format!("{base}.qweight");
    let groups = groups_of(group, cols, &qname)?;
    let awq = matches!(format, QuantFormat::Awq { .. });
    let packed_dim = if awq { rows } else { cols };
    if packed_dim % per != 0 {
        return Err(Error::checkpoint(
            "",
            &qname,
            format!("dimension {packed_dim} is not a multiple of {per} values per word"),
        ));
    }
    let q = shards.get(&qname)?;
    q.expect_dtype(&[Dtype::I32])?;
    let scales_t = floats(shards, &format!("{base}.scales"), &[groups, rows])?;
    // [groups, rows] → [rows, groups]
    let mut scales = vec![0f32; rows * groups];
    for g in 0..groups {
        for r in 0..rows {
            scales[r * groups + g] = scales_t[g * rows + r];
        }
    }
    // codes[r][c], unsigned
    let mut codes = vec![0u8; rows * cols];
    if awq {
        q.expect_shape(&[cols, rows / per])?;
        let vals = unpack_words(&q.i32s()?, b);
        for c in 0..cols {
            for w in 0..rows / per {
                for (i, &col) in AWQ_ORDER.iter().enumerate() {
                    codes[(w * per + col) * cols + c] = vals[(c * (rows / per) + w) * per + i];
                }
            }
        }
    } else {
        q.expect_shape(&[cols / per, rows])?;
        let vals = unpack_words(&q.i32s()?, b);
        for w in 0..cols / per {
            for r in 0..rows {
                for j in 0..per {
                    codes[r * cols + w * per + j] = vals[(w * rows + r) * per + j];
                }
            }
        }
    }
    // With `sym` the kernels use the fixed zero 2^(bits-1); AutoGPTQ still writes
    // `qzeros`, which must then hold exactly that zero, or `sym` misdescribes the file.
    let zname = format!("{base}.qzeros");
    let zeros = if zero_point || shards.contains(&zname) {
        let z = read_zeros(format, shards, &zname, rows, groups, b, awq)?;
        if zero_point {
            Some(z)
        } else {
            super::check_symmetric_zeros(shards, &zname, &z, b, |bad, mid| {
                format!(
                    "zero point {bad} where quantization_config.sym ({}) means the symmetric zero {mid}",
                    sym_setting(format)
                )
            })?;
            None
        }
    } else {
        None
    };
    // Without `desc_act` group g holds columns g·size..; a stored g_idx must say the same.
    let gname = format!("{base}.g_idx");
    let g_idx = if act_order {
        Some(g_idx(shards, &gname, cols, groups)?)
    } else {
        if shards.contains(&gname) {
            trivial_g_idx(shards, &gname, cols, groups, "quantization_config.desc_act")?;
        }
        None
    };
    let (packed4, bytes) = match bits {
        IntBits::Int4 => (crate::formats::pack_int4_i32(&codes)?, Vec::new()),
        IntBits::Int8 => (Vec::new(), codes),
    };
    Ok(WeightData::Int(IntWeights {
        bits,
        packed4,
        bytes,
        group: cols / groups,
        scales,
        zeros,
        g_idx,
        channel_scales: None,
    }))
}

/// How `sym` was set, for errors: the value, or that it was the default.
fn sym_setting(format: &QuantFormat) -> &'static str {
    match format {
        QuantFormat::Gptq { .. } => "true, or absent: GPTQConfig's default",
        _ => "true",
    }
}

/// GPTQ / AWQ `qzeros` `[groups, rows·bits/32]` unpacked to `[rows, groups]` codes.
fn read_zeros(
    format: &QuantFormat,
    shards: &Shards,
    zname: &str,
    rows: usize,
    groups: usize,
    b: usize,
    awq: bool,
) -> Result<Vec<u8>> {
    let per = 32 / b;
    let z = shards.get(zname)?;
    z.expect_dtype(&[Dtype::I32])?;
    if rows % per != 0 {
        return Err(Error::checkpoint(
            &z.file,
            zname,
            "output dimension not a whole number of words",
        ));
    }
    z.expect_shape(&[groups, rows / per])?;
    let vals = unpack_words(&z.i32s()?, b);
    let minus_one = matches!(
        format,
        QuantFormat::Gptq {
            zeros_minus_one: true,
            ..
        }
    );
    let max = (1u16 << b) - 1;
    let mut out = vec![0u8; rows * groups];
    for g in 0..groups {
        for w in 0..rows / per {
            for i in 0..per {
                let col = if awq { AWQ_ORDER[i] } else { i };
                let v = vals[(g * (rows / per) + w) * per + i] as u16 + u16::from(minus_one);
                if v > max {
                    return Err(Error::checkpoint(
                        &z.file,
                        zname,
                        format!("zero point {v} exceeds {max}"),
                    ));
                }
                out[(w * per + col) * groups + g] = v as u8;
            }
        }
    }
    Ok(out)
}
