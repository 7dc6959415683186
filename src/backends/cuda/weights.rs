//! One projection (w13 or w2) of the routed experts on an NVIDIA GPU: the prepared
//! layout's weights, scales, bias, packed-weight scale chunks and act-order permutation,
//! uploaded once, and the `GemmArgs` fields they fill.

use super::launch::GemmArgs;
use super::layout::GemmWeights;
use crate::device::cuda::CudaDevice;
use crate::device::Buffer;
use crate::error::Result;

/// One projection on the device.
pub(super) struct DeviceWeights {
    pub(super) data: Buffer<CudaDevice>,
    pub(super) row_scales: Option<Buffer<CudaDevice>>,
    pub(super) block_scales: Option<Buffer<CudaDevice>>,
    pub(super) bias: Option<Buffer<CudaDevice>>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// Packed low-bit weights: the scale chunks and their geometry.
    packed: Option<PackedScales>,
    /// Act-order: `[E, cols]` i32, the checkpoint column of each prepared K column; the
    /// GEMM's input is gathered by it (`fm_gather_cols`).
    pub(super) k_perm: Option<Buffer<CudaDevice>>,
}

struct PackedScales {
    chunks: Buffer<CudaDevice>,
    gpc: usize,
    nchunks: usize,
    chunk_bytes: usize,
    kpad: usize,
    group_log2: u32,
    spc_log2: u32,
}

impl DeviceWeights {
    pub(super) fn upload(dev: &CudaDevice, w: &GemmWeights) -> Result<Self> {
        let opt = |v: &Option<Vec<f32>>| v.as_ref().map(|v| Buffer::from_slice(dev, v)).transpose();
        Ok(DeviceWeights {
            data: Buffer::from_slice(dev, &w.data)?,
            row_scales: opt(&w.row_scales)?,
            block_scales: opt(&w.block_scales)?,
            bias: opt(&w.bias)?,
            rows: w.rows,
            cols: w.cols,
            k_perm: w
                .packing
                .as_ref()
                .and_then(|p| p.k_perm.as_ref())
                .map(|perm| Buffer::from_slice(dev, perm))
                .transpose()?,
            packed: w
                .packing
                .as_ref()
                .map(|p| -> Result<PackedScales> {
                    let kpad = w.cols.div_ceil(p.ks()) * p.ks();
                    Ok(PackedScales {
                        chunks: Buffer::from_slice(dev, &p.chunks)?,
                        gpc: p.sc_k / p.group,
                        nchunks: kpad / p.sc_k,
                        chunk_bytes: p.chunk_bytes(),
                        kpad,
                        group_log2: p.group_log2(),
                        spc_log2: p.stages_per_chunk_log2(),
                    })
                })
                .transpose()?,
        })
    }

    /// `args` with this projection's packed-weight fields; `args` as given (its packed
    /// fields zero) when the weights are not packed.
    pub(super) fn with_packed(&self, args: GemmArgs) -> GemmArgs {
        match &self.packed {
            None => args,
            Some(p) => GemmArgs {
                gs: p.chunks.addr(),
                gpc: p.gpc as i32,
                nchunks: p.nchunks as i32,
                chunk_bytes: p.chunk_bytes as i32,
                kpad: p.kpad as i32,
                group_log2: p.group_log2 as i32,
                spc_log2: p.spc_log2 as i32,
                ..args
            },
        }
    }
}
