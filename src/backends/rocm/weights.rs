//! One projection (w13 or w2) of the routed experts on an AMD GPU: the prepared layout's
//! shuffled weights, fp8 scales, MX / NVFP4 block scales and NVFP4 global scales, integer
//! group scales, zero points, act-order `g_idx` and W4A8 channel scales, and the bias,
//! uploaded once.

use super::layout::HipGemmWeights;
use crate::device::hip::HipDevice;
use crate::device::Buffer;
use crate::error::Result;
use crate::quant::Fp8WeightScale;

/// One projection on the device.
pub(super) struct DeviceWeights {
    pub(super) data: Buffer<HipDevice>,
    pub(super) fp8_scales: Option<(i32, Buffer<HipDevice>)>,
    pub(super) block_scales: Option<Buffer<HipDevice>>,
    pub(super) global_scales: Option<Buffer<HipDevice>>,
    pub(super) row_scales: Option<Buffer<HipDevice>>,
    pub(super) int: Option<IntGroupsOnDevice>,
    pub(super) bias: Option<Buffer<HipDevice>>,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

/// Integer weight-only group scales, zero points and act-order `g_idx` on the device.
pub(super) struct IntGroupsOnDevice {
    pub(super) group: usize,
    pub(super) scales: Buffer<HipDevice>,
    pub(super) zeros: Option<Buffer<HipDevice>>,
    pub(super) g_idx: Option<Buffer<HipDevice>>,
    pub(super) channel_scales: Option<Buffer<HipDevice>>,
}

impl DeviceWeights {
    pub(super) fn upload(dev: &HipDevice, w: &HipGemmWeights) -> Result<Self> {
        let fp8_scales = match &w.fp8_scales {
            Some((g, s)) => {
                let mode = match g {
                    Fp8WeightScale::PerTensor => 0,
                    Fp8WeightScale::PerChannel => 1,
                    Fp8WeightScale::Block128 => 2,
                };
                Some((mode, Buffer::from_slice(dev, s)?))
            }
            None => None,
        };
        let int = match &w.int {
            Some(g) => Some(IntGroupsOnDevice {
                group: g.group,
                scales: Buffer::from_slice(dev, &g.scales)?,
                zeros: upload_opt(dev, &g.zeros)?,
                g_idx: upload_opt(dev, &g.g_idx)?,
                channel_scales: upload_opt(dev, &g.channel_scales)?,
            }),
            None => None,
        };
        Ok(DeviceWeights {
            data: Buffer::from_slice(dev, &w.data)?,
            fp8_scales,
            block_scales: upload_opt(dev, &w.block_scales)?,
            global_scales: upload_opt(dev, &w.global_scales)?,
            row_scales: upload_opt(dev, &w.row_scales)?,
            int,
            bias: upload_opt(dev, &w.bias)?,
            rows: w.rows,
            cols: w.cols,
        })
    }
}

fn upload_opt<T: bytemuck::Pod>(
    dev: &HipDevice,
    v: &Option<Vec<T>>,
) -> Result<Option<Buffer<HipDevice>>> {
    v.as_ref().map(|v| Buffer::from_slice(dev, v)).transpose()
}

impl DeviceWeights {
    /// The f32 weight scales the GEMM reads: fp8's, NVFP4's global ones (per expert),
    /// INT8 W8A8's per row, or the integer group scales (0: none).
    pub(super) fn weight_scales(&self) -> u64 {
        // At most one of them is present: each belongs to one element type.
        self.fp8_scales
            .as_ref()
            .map(|s| &s.1)
            .or(self.global_scales.as_ref())
            .or(self.row_scales.as_ref())
            .or(self.int.as_ref().map(|g| &g.scales))
            .map_or(0, Buffer::addr)
    }

    /// Integer zero points (0: symmetric, or not an integer projection).
    pub(super) fn int_zeros(&self) -> u64 {
        self.int
            .as_ref()
            .and_then(|g| g.zeros.as_ref())
            .map_or(0, Buffer::addr)
    }

    /// Act-order `g_idx` (0: groups of consecutive columns).
    pub(super) fn int_g_idx(&self) -> u64 {
        self.int
            .as_ref()
            .and_then(|g| g.g_idx.as_ref())
            .map_or(0, Buffer::addr)
    }

    /// W4A8's channel scales (0: not a W4A8 projection).
    pub(super) fn int_channel_scales(&self) -> u64 {
        self.int
            .as_ref()
            .and_then(|g| g.channel_scales.as_ref())
            .map_or(0, Buffer::addr)
    }

    /// Elements of K per integer group (0: not an integer projection).
    pub(super) fn int_group(&self) -> i32 {
        self.int.as_ref().map_or(0, |g| g.group as i32)
    }
}
