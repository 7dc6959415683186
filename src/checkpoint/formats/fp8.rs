//! FP8 e4m3fn weights `[out, in]` with f32/bf16 scales: compressed-tensors
//! `float-quantized` (`weight_scale`: `[1]` tensor, `[out, 1]` channel,
//! `[ceil(out/128), ceil(in/128)]` block), ModelOpt FP8 (`weight_scale` scalar) and the
//! DeepSeek-V3 native format (`weight_scale_inv`, 128×128 blocks, multiplied to
//! dequantize despite its name: vLLM `Fp8LinearMethod` block path). `w = code · scale`.

use super::tensor;
use crate::checkpoint::config::QuantFormat;
use crate::checkpoint::shards::Shards;
use crate::error::Result;
use crate::quant::fp8::scales_per_expert;
use crate::quant::{Fp8WeightScale, QuantScheme, WeightData};
use safetensors::Dtype;

pub(super) fn load(
    format: &QuantFormat,
    scheme: &QuantScheme,
    shards: &Shards,
    base: &str,
    rows: usize,
    cols: usize,
) -> Result<WeightData> {
    let QuantScheme::Fp8 { weight, .. } = *scheme else {
        return Err(crate::Error::checkpoint(
            "",
            base,
            "fp8 loader given a non-fp8 scheme",
        ));
    };
    let codes = tensor(
        shards,
        &format!("{base}.weight"),
        &[rows, cols],
        &[Dtype::F8_E4M3],
    )?
    .data;
    let scale_name = match format {
        QuantFormat::NativeFp8 { block: true, .. } => format!("{base}.weight_scale_inv"),
        _ => format!("{base}.weight_scale"),
    };
    let shape = match weight {
        Fp8WeightScale::PerTensor => vec![1],
        Fp8WeightScale::PerChannel => vec![rows, 1],
        Fp8WeightScale::Block128 => vec![rows.div_ceil(128), cols.div_ceil(128)],
    };
    let s = shards.get(&scale_name)?;
    s.expect_shape(&shape)?;
    let scales = s.f32s()?;
    for &v in &scales {
        super::positive(&s, v)?;
    }
    if scales.len() != scales_per_expert(weight, rows, cols) {
        return Err(crate::Error::checkpoint(
            &s.file,
            &scale_name,
            "wrong number of scales",
        ));
    }
    Ok(WeightData::Fp8 { codes, scales })
}
