//! Quantization of the GEMM inputs on the device: `fm_quant_rows` (fp8 by mode, int8),
//! `fm_mx_quant_rows`, `fm_nvfp4_qdq_rows`, and `fm_quant_slots` for static fp8 scales
//! calibrated per expert (codes and a scale per expert-sorted slot).

use super::{cfg, ptr, HipExperts, Stream};
use crate::backends::rocm::plan::{ActPlan, Variant};
use crate::device::hip::HipDevice;
use crate::device::{Arg, Buffer, Runtime};
use crate::error::{Error, Result};
use crate::gpu::lora::LoraRoute;
use crate::gpu::rows::RowsIn;
use crate::quant::Stage;

impl HipExperts {
    /// The fp8_mode activations are quantized in: the scaled MFMA (gfx950) reads OCP fp8.
    fn act_fp8_mode(&self) -> i32 {
        match self.variant {
            Variant::MxNative { .. } => 0,
            _ => self.fp8_mode,
        }
    }

    /// Quantizes `stage`'s GEMM input, the model-dtype matrix `src` (`cols` wide): `rows`
    /// token rows for gemm1, or the expert-sorted slots of `route` for gemm2 (and, per
    /// expert, for gemm1 too); returns the buffers the GEMM reads (codes or the input
    /// itself, and scales) and the scales' mode.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quantize(
        &self,
        stage: Stage,
        src: u64,
        rows: usize,
        cols: usize,
        route: &LoraRoute,
        (amax, codes, scales): (&Buffer<HipDevice>, &Buffer<HipDevice>, &Buffer<HipDevice>),
        stream: &Stream,
    ) -> Result<(u64, u64, i32)> {
        let (plan, index) = match stage {
            Stage::W13 => (self.a1, 0),
            Stage::W2 => (self.a2, 1),
        };
        // gemm2's input rows are the slots: padding skipped, the count on the device.
        let (num_rows, sorted, pairs) = match stage {
            Stage::W13 => (0, 0, 0),
            Stage::W2 => (route.num_slots, route.sorted, route.pairs),
        };
        let rows_in = RowsIn {
            src,
            rows,
            cols,
            num_rows,
            sorted,
            pairs,
        };
        let rows_then = |rest: &[Arg<'static>]| rows_in.then(rest);
        let f16 = Arg::I32(self.is_f16 as i32);
        // fm_quant_rows: fp8 by `mode` (after the amax pass for per-tensor) or int8 (4).
        let quant_rows = |mode: i32, static_scale: f32| -> Result<(u64, u64, i32)> {
            let fp8_mode = self.act_fp8_mode();
            if mode == 0 {
                self.dev.zero(amax.addr(), 4, stream)?;
                let args = rows_then(&[f16, ptr(amax)]);
                self.launch(
                    &self.quant,
                    "fm_amax_rows",
                    cfg((rows.div_ceil(256).min(1024), 1), 256, 0),
                    &args,
                    stream,
                )?;
            }
            let args = rows_then(&[
                Arg::I32(mode),
                ptr(amax),
                Arg::F32(static_scale),
                Arg::I32(fp8_mode),
                f16,
                ptr(codes),
                ptr(scales),
            ]);
            self.launch(
                &self.quant,
                "fm_quant_rows",
                cfg((rows, 1), 256, 0),
                &args,
                stream,
            )?;
            Ok((codes.addr(), scales.addr(), mode))
        };
        match plan {
            ActPlan::None => Ok((src, 0, 0)),
            ActPlan::Fp8 { mode, static_scale } => quant_rows(mode, static_scale),
            ActPlan::Fp8PerExpert => {
                // Each slot's row with its expert's scale, codes and scales per slot (the
                // GEMM reads the scales per row, mode 1); the same leading arguments as
                // the CUDA kernel's, from the same route.
                let expert_scales = self.expert_scales[index].as_ref().ok_or_else(|| {
                    Error::Config("per-expert input scales were not uploaded".into())
                })?;
                let lead = route.slot_args(src, cols, stage == Stage::W2);
                let rest = [
                    ptr(expert_scales),
                    Arg::I32(self.act_fp8_mode()),
                    f16,
                    ptr(codes),
                    ptr(scales),
                ];
                let args: Vec<Arg> = lead.iter().chain(&rest).copied().collect();
                self.launch(
                    &self.quant,
                    "fm_quant_slots",
                    cfg((route.slots, 1), 256, 0),
                    &args,
                    stream,
                )?;
                Ok((codes.addr(), scales.addr(), 1))
            }
            ActPlan::Int8PerRow => quant_rows(4, 0.0),
            ActPlan::Mx { fmt } => {
                let blocks = rows * cols / 32;
                let args = rows_then(&[Arg::I32(fmt), f16, ptr(codes), ptr(scales)]);
                self.launch(
                    &self.quant,
                    "fm_mx_quant_rows",
                    cfg((blocks.div_ceil(256), 1), 256, 0),
                    &args,
                    stream,
                )?;
                Ok((codes.addr(), scales.addr(), 0))
            }
            ActPlan::Nvfp4 { global } => {
                crate::error::check_group(
                    crate::quant::nvfp4::BLOCK,
                    cols,
                    "NVFP4 activation width",
                )?;
                let blocks = rows * cols / crate::quant::nvfp4::BLOCK;
                let args = rows_then(&[Arg::F32(global), ptr(codes)]);
                self.launch(
                    &self.quant,
                    "fm_nvfp4_qdq_rows",
                    cfg((blocks.div_ceil(256).clamp(1, 4096), 1), 256, 0),
                    &args,
                    stream,
                )?;
                Ok((codes.addr(), 0, 0))
            }
        }
    }
}
