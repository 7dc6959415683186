//! Loading the CUDA modules and launching their kernels with the arguments gemm.cu,
//! align.cu and quant.cu declare.

use super::kernels::{module_source, GemmVariant, Tile};
use crate::device::cuda::{CudaDevice, CudaKernels};
use crate::device::{Arg, LaunchConfig, ModuleSource, Runtime};
use crate::error::{Error, Result};
pub use crate::gpu::lora::LoraRoute;
use crate::gpu::rows::RowsIn;
use std::sync::Arc;

type Stream = <CudaDevice as Runtime>::Stream;

/// `struct GemmArgs` of gemm.cu, field for field (pointers as device addresses, 0 = null),
/// passed by value; `Pod` proves it has no padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmArgs {
    pub w: u64,
    pub act: u64,
    pub wrow: u64,
    pub wblk: u64,
    pub ascale: u64,
    pub bias: u64,
    pub sorted: u64,
    pub block_expert: u64,
    pub num_slots: u64,
    pub topk_w: u64,
    pub out: u64,
    pub amax: u64,
    pub n: i32,
    pub k: i32,
    pub as_row: i32,
    pub as_k: i32,
    pub top_k: i32,
    pub pairs: i32,
    pub ldo: i32,
    pub k_split: i32,
    pub act_kind: i32,
    pub alpha: f32,
    pub limit: f32,
    pub weight_on_input: i32,
    pub lora_delta: u64,
    pub token_adapter: u64,
    pub gs: u64,
    pub gpc: i32,
    pub nchunks: i32,
    pub chunk_bytes: i32,
    pub kpad: i32,
    pub group_log2: i32,
    pub spc_log2: i32,
    /// gemm1's activations are `[slots, K]` (gathered per slot for act-order), not `[tokens, K]`.
    pub act_by_slot: i32,
    /// MX activations: scales per row of `ak32`.
    pub ak_row: i32,
    /// MX activations: `[rows, K / 32]` f32 scale of each 32-column block, or 0.
    pub ak32: u64,
}

/// The loaded modules of one experts backend.
pub struct Modules {
    dev: Arc<CudaDevice>,
    lora: CudaKernels,
    quant: CudaKernels,
    gemm: CudaKernels,
    variant: GemmVariant,
}

/// Compiles (or loads from the cache) `file` of kernels-cuda with `defines`.
pub fn load_file(
    dev: &CudaDevice,
    file: &'static str,
    defines: &[(&str, &str)],
) -> Result<CudaKernels> {
    let source = module_source(file, defines).ok_or_else(|| Error::Missing {
        what: file.into(),
        why: "kernel source not embedded".into(),
    })?;
    dev.load(&ModuleSource::Cuda {
        name: file,
        source: &source,
    })
}

impl Modules {
    /// Compiles (or loads from the cache) quantization, LoRA and one GEMM variant.
    pub fn load(dev: &Arc<CudaDevice>, variant: GemmVariant) -> Result<Modules> {
        let v = (variant as u32).to_string();
        Ok(Modules {
            dev: dev.clone(),
            lora: load_file(dev, "lora.cu", &[])?,
            quant: load_file(dev, "quant.cu", &[])?,
            gemm: load_file(dev, "gemm.cu", &[("FM_VARIANT", &v)])?,
            variant,
        })
    }

    /// amax of `rows × cols` bf16 values into `amax` (skipping padding slots when `sorted`).
    pub fn amax_rows(&self, rows_in: RowsIn, amax: u64, stream: &Stream) -> Result<()> {
        let (rows, cols) = (rows_in.rows, rows_in.cols);
        let blocks = ((rows * cols / 8).div_ceil(256)).clamp(1, 1024) as u32;
        let cfg = LaunchConfig {
            grid: (blocks, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = rows_in.then(&[Arg::Ptr(amax)]);
        self.dev
            .launch(&self.quant, "fm_amax_rows", cfg, &args, stream)
    }

    /// fp8 quantization of bf16 rows (`mode` as in quant.cu).
    #[allow(clippy::too_many_arguments)]
    pub fn quant_rows(
        &self,
        rows_in: RowsIn,
        mode: i32,
        amax: u64,
        static_scale: f32,
        codes: u64,
        scales: u64,
        stream: &Stream,
    ) -> Result<()> {
        let rows = rows_in.rows;
        let cfg = LaunchConfig {
            grid: (rows.max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = rows_in.then(&[
            Arg::I32(mode),
            Arg::Ptr(amax),
            Arg::F32(static_scale),
            Arg::Ptr(codes),
            Arg::Ptr(scales),
        ]);
        self.dev
            .launch(&self.quant, "fm_quant_rows", cfg, &args, stream)
    }

    /// MX activations of bf16 rows: e4m3 bytes of the element values and an f32 scale
    /// per 32 columns (`fm_mx_quant_rows`; `fmt` is the element type's `FM_MX_*`).
    pub fn mx_quant_rows(
        &self,
        rows_in: RowsIn,
        fmt: i32,
        codes: u64,
        scales: u64,
        stream: &Stream,
    ) -> Result<()> {
        let (rows, cols) = (rows_in.rows, rows_in.cols);
        let cfg = LaunchConfig {
            // One warp per 32-column block.
            grid: ((rows * cols).div_ceil(256).max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = rows_in.then(&[Arg::I32(fmt), Arg::Ptr(codes), Arg::Ptr(scales)]);
        self.dev
            .launch(&self.quant, "fm_mx_quant_rows", cfg, &args, stream)
    }

    /// Act-order: `dst[slot] = src[row][perm[e]]` for every slot in use (`fm_gather_cols`;
    /// `row` is the slot's token, or the slot itself with `by_slot`).
    #[allow(clippy::too_many_arguments)]
    pub fn gather_cols(
        &self,
        src: u64,
        cols: usize,
        by_slot: bool,
        route: &LoraRoute,
        perm: u64,
        dst: u64,
        stream: &Stream,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (route.slots.max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let lead = route.slot_args(src, cols, by_slot);
        let rest = [Arg::Ptr(perm), Arg::Ptr(dst)];
        let args: Vec<Arg> = lead.iter().chain(&rest).copied().collect();
        self.dev
            .launch(&self.quant, "fm_gather_cols", cfg, &args, stream)
    }

    /// fp8 with static scales per expert: `codes[slot]`, `scales[slot]` for every slot in
    /// use (`fm_quant_slots`; the row is the slot's token, or the slot itself with
    /// `by_slot`).
    #[allow(clippy::too_many_arguments)]
    pub fn quant_slots(
        &self,
        src: u64,
        cols: usize,
        by_slot: bool,
        route: &LoraRoute,
        expert_scales: u64,
        codes: u64,
        scales: u64,
        stream: &Stream,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (route.slots.max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let lead = route.slot_args(src, cols, by_slot);
        let rest = [Arg::Ptr(expert_scales), Arg::Ptr(codes), Arg::Ptr(scales)];
        let args: Vec<Arg> = lead.iter().chain(&rest).copied().collect();
        self.dev
            .launch(&self.quant, "fm_quant_slots", cfg, &args, stream)
    }

    /// NVFP4 W4A4 activation quantize-dequantize of bf16 rows into bf16 `q · block scale`,
    /// `step_factor` (1 / global) written to `factor` for the GEMM (`fm_nvfp4_qdq_rows`).
    #[allow(clippy::too_many_arguments)]
    pub fn nvfp4_qdq_rows(
        &self,
        rows_in: RowsIn,
        global: f32,
        step_factor: f32,
        dst: u64,
        factor: u64,
        stream: &Stream,
    ) -> Result<()> {
        let (rows, cols) = (rows_in.rows, rows_in.cols);
        let blocks = (rows * cols / 16).div_ceil(256).clamp(1, 4096) as u32;
        let cfg = LaunchConfig {
            grid: (blocks, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = rows_in.then(&[
            Arg::F32(global),
            Arg::F32(step_factor),
            Arg::Ptr(dst),
            Arg::Ptr(factor),
        ]);
        self.dev
            .launch(&self.quant, "fm_nvfp4_qdq_rows", cfg, &args, stream)
    }

    /// `t = A · x` for every slot whose token has an adapter (`lora.cu`): one block per
    /// token block and K split, each writing its partial sums (`[splits][slots][rows]`).
    #[allow(clippy::too_many_arguments)]
    pub fn lora_shrink(
        &self,
        x: u64,
        x_by_slot: bool,
        is_f16: bool,
        k: usize,
        route: &LoraRoute,
        a: u64,
        rows: usize,
        t: u64,
        stream: &Stream,
    ) -> Result<()> {
        lora_block_fits(route)?;
        let (kc, splits) = lora_splits(k);
        let cfg = LaunchConfig {
            grid: (route.blocks() as u32, splits as u32, 1),
            block: (LORA_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let lead = route.shrink_args(x, x_by_slot, is_f16, k, a, rows, t);
        let rest = [Arg::I32(kc as i32), Arg::I32(route.slots as i32)];
        let args: Vec<Arg> = lead.iter().chain(&rest).copied().collect();
        self.dev
            .launch(&self.lora, "fm_lora_shrink", cfg, &args, stream)
    }

    /// `delta = B · t` for every slot whose token has an adapter, `t` being the shrink's
    /// partial sums over the `k` it read.
    #[allow(clippy::too_many_arguments)]
    pub fn lora_expand(
        &self,
        t: u64,
        rank: usize,
        k: usize,
        route: &LoraRoute,
        b: u64,
        n: usize,
        delta: u64,
        stream: &Stream,
    ) -> Result<()> {
        lora_block_fits(route)?;
        let (_, splits) = lora_splits(k);
        let cfg = LaunchConfig {
            grid: (route.blocks() as u32, n.div_ceil(LORA_THREADS) as u32, 1),
            block: (LORA_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let lead = route.expand_args(t, rank, b, n, delta);
        let rest = [Arg::I32(splits as i32), Arg::I32(route.slots as i32)];
        let args: Vec<Arg> = lead.iter().chain(&rest).copied().collect();
        self.dev
            .launch(&self.lora, "fm_lora_expand", cfg, &args, stream)
    }

    /// One grouped GEMM: `blocks` token blocks × row tiles × `splits` K splits.
    pub fn gemm(
        &self,
        kernel: &str,
        tile: &Tile,
        args: GemmArgs,
        blocks: usize,
        splits: usize,
        stream: &Stream,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (
                blocks as u32,
                crate::fault::tiles(args.n as usize, tile.bn) as u32,
                splits as u32,
            ),
            block: (tile.threads, 1, 1),
            shared_mem_bytes: tile.smem_bytes(self.variant),
        };
        let bytes = bytemuck::bytes_of(&args);
        self.dev
            .launch(&self.gemm, kernel, cfg, &[Arg::Struct(bytes)], stream)
    }
}

/// `lora.cu`'s block size (`LR_THREADS`), also the most slots a token block may have
/// (`LR_MAX_BT`): each thread lists one slot.
const LORA_THREADS: usize = 256;

/// The LoRA kernels list a token block's slots one per thread.
fn lora_block_fits(route: &LoraRoute) -> Result<()> {
    if route.bt > LORA_THREADS {
        return Err(Error::Config(format!(
            "LoRA kernels take token blocks of at most {LORA_THREADS} slots, the GEMM tile has {}",
            route.bt
        )));
    }
    Ok(())
}

/// How the LoRA shrink splits K across the grid: `(columns per split, splits)`, about
/// eight splits of at least 128 columns (a multiple of 4, for float4 loads of A), so a
/// decode step still fills the GPU and the expand adds few partial sums.
pub fn lora_splits(k: usize) -> (usize, usize) {
    let kc = (k.div_ceil(8).div_ceil(4) * 4).max(128);
    (kc, k.div_ceil(kc).max(1))
}

#[cfg(test)]
mod tests {
    use super::lora_splits;

    #[test]
    fn lora_splits_cover_k_in_fours() {
        for k in [1, 4, 7, 128, 129, 768, 2048, 2880, 4096, 7168, 16384] {
            let (kc, splits) = lora_splits(k);
            assert_eq!(kc % 4, 0, "k = {k}");
            assert!(
                kc * splits >= k && kc * (splits - 1) < k,
                "k = {k}: {kc} x {splits}"
            );
            assert!(splits <= 8, "k = {k}: {splits} splits");
        }
    }
}
