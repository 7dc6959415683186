//! Loading the CUDA modules and launching their kernels with the arguments gemm.cu,
//! align.cu and quant.cu declare.

use super::kernels::{module_source, GemmVariant, Tile};
use crate::device::cuda::{CudaBuffer, CudaDevice};
use crate::device::{Arg, Device, LaunchConfig, Module, ModuleSource, Stream};
use crate::error::{Error, Result};
use std::ffi::c_void;
use std::sync::Arc;

/// `struct GemmArgs` of gemm.cu, field for field (pointers as device addresses, 0 = null).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
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
}

/// Where the expert-sorted slots are, for the LoRA kernels.
pub struct LoraRoute {
    pub slots: usize,
    pub sorted: u64,
    pub num_slots: u64,
    pub block_expert: u64,
    pub bt: usize,
    pub pairs: usize,
    pub top_k: usize,
    pub token_adapter: u64,
    pub experts: usize,
}

/// The loaded modules of one experts backend.
pub struct Modules {
    dev: Arc<CudaDevice>,
    align: Module,
    lora: Module,
    quant: Module,
    gemm: Module,
    variant: GemmVariant,
}

fn load(dev: &CudaDevice, name: &'static str, source: &str) -> Result<Module> {
    dev.load_module(&ModuleSource::Cuda { name, source })
}

impl Modules {
    /// Compiles (or loads from the cache) alignment, quantization and one GEMM variant.
    pub fn load(dev: &Arc<CudaDevice>, gemm_source: &str, variant: GemmVariant) -> Result<Modules> {
        let src = |f: &str| {
            module_source(f, &[]).ok_or_else(|| Error::Missing {
                what: f.into(),
                why: "kernel source not embedded".into(),
            })
        };
        let name = match variant {
            GemmVariant::Bf16 => "gemm_bf16.cu",
            GemmVariant::F16 => "gemm_f16.cu",
            GemmVariant::Fp8 => "gemm_fp8.cu",
            GemmVariant::Fp8Block => "gemm_fp8blk.cu",
            GemmVariant::Mxfp4 => "gemm_mxfp4.cu",
            GemmVariant::Nvfp4 => "gemm_nvfp4.cu",
            GemmVariant::W4a16 => "gemm_w4a16.cu",
            GemmVariant::W8a16 => "gemm_w8a16.cu",
            GemmVariant::Mxfp4Fp8 => "gemm_mxfp4f8.cu",
            GemmVariant::W4a8 => "gemm_w4a8.cu",
        };
        Ok(Modules {
            dev: dev.clone(),
            align: load(dev, "align.cu", &src("align.cu")?)?,
            lora: load(dev, "lora.cu", &src("lora.cu")?)?,
            quant: load(dev, "quant.cu", &src("quant.cu")?)?,
            gemm: load(dev, name, gemm_source)?,
            variant,
        })
    }

    /// Sorts the (token, choice) pairs by expert, padding each expert to `bt` slots.
    #[allow(clippy::too_many_arguments)]
    pub fn align(
        &self,
        ids: &CudaBuffer,
        pairs: usize,
        experts: usize,
        bt: usize,
        max_blocks: usize,
        sorted: &CudaBuffer,
        block_expert: &CudaBuffer,
        num_slots: &CudaBuffer,
        counts: &CudaBuffer,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (1, 1, 1),
            block: (1024, 1, 1),
            shared_mem_bytes: ((3 * experts + 1) * 4) as u32,
        };
        let args = [
            Arg::Buffer(ids.handle()),
            Arg::I32(pairs as i32),
            Arg::I32(experts as i32),
            Arg::I32(bt as i32),
            Arg::I32(max_blocks as i32),
            Arg::Buffer(sorted.handle()),
            Arg::Buffer(block_expert.handle()),
            Arg::Buffer(num_slots.handle()),
            Arg::Buffer(counts.handle()),
        ];
        self.dev
            .launch(self.align, "fm_align", cfg, &args, Stream::DEFAULT)
    }

    /// amax of `rows × cols` bf16 values into `amax` (skipping padding slots when `sorted`).
    #[allow(clippy::too_many_arguments)]
    pub fn amax_rows(
        &self,
        src: u64,
        rows: usize,
        cols: usize,
        num_rows: u64,
        sorted: u64,
        pairs: usize,
        amax: u64,
    ) -> Result<()> {
        let blocks = ((rows * cols / 8).div_ceil(256)).clamp(1, 1024) as u32;
        let cfg = LaunchConfig {
            grid: (blocks, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(src),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::U64(num_rows),
            Arg::U64(sorted),
            Arg::I32(pairs as i32),
            Arg::U64(amax),
        ];
        self.dev
            .launch(self.quant, "fm_amax_rows", cfg, &args, Stream::DEFAULT)
    }

    /// fp8 quantization of bf16 rows (`mode` as in quant.cu).
    #[allow(clippy::too_many_arguments)]
    pub fn quant_rows(
        &self,
        src: u64,
        rows: usize,
        cols: usize,
        num_rows: u64,
        sorted: u64,
        pairs: usize,
        mode: i32,
        amax: u64,
        static_scale: f32,
        codes: u64,
        scales: u64,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (rows.max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(src),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::U64(num_rows),
            Arg::U64(sorted),
            Arg::I32(pairs as i32),
            Arg::I32(mode),
            Arg::U64(amax),
            Arg::F32(static_scale),
            Arg::U64(codes),
            Arg::U64(scales),
        ];
        self.dev
            .launch(self.quant, "fm_quant_rows", cfg, &args, Stream::DEFAULT)
    }

    /// `dst[t] = src[t] · w[t]` rounded to the model dtype (router weight on the input).
    pub fn scale_rows(
        &self,
        src: u64,
        rows: usize,
        cols: usize,
        w: u64,
        is_f16: bool,
        dst: u64,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: (rows.max(1) as u32, 1, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(src),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
            Arg::U64(w),
            Arg::I32(is_f16 as i32),
            Arg::U64(dst),
        ];
        self.dev
            .launch(self.quant, "fm_scale_rows", cfg, &args, Stream::DEFAULT)
    }

    /// `t = A · x` for every slot whose token has an adapter (`lora.cu`), one block of
    /// threads per token block and rank.
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
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: ((route.slots / route.bt) as u32, rows as u32, 1),
            block: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(x),
            Arg::I32(x_by_slot as i32),
            Arg::I32(is_f16 as i32),
            Arg::I32(k as i32),
            Arg::U64(route.sorted),
            Arg::U64(route.num_slots),
            Arg::U64(route.block_expert),
            Arg::I32(route.bt as i32),
            Arg::I32(route.pairs as i32),
            Arg::I32(route.top_k as i32),
            Arg::U64(route.token_adapter),
            Arg::I32(route.experts as i32),
            Arg::U64(a),
            Arg::I32(rows as i32),
            Arg::U64(t),
        ];
        self.dev
            .launch(self.lora, "fm_lora_shrink", cfg, &args, Stream::DEFAULT)
    }

    /// `delta = B · t` for every slot whose token has an adapter.
    pub fn lora_expand(
        &self,
        t: u64,
        rank: usize,
        route: &LoraRoute,
        b: u64,
        n: usize,
        delta: u64,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid: ((route.slots / route.bt) as u32, n.div_ceil(256) as u32, 1),
            block: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            Arg::U64(t),
            Arg::I32(rank as i32),
            Arg::U64(route.sorted),
            Arg::U64(route.num_slots),
            Arg::U64(route.block_expert),
            Arg::I32(route.bt as i32),
            Arg::I32(route.pairs as i32),
            Arg::I32(route.top_k as i32),
            Arg::U64(route.token_adapter),
            Arg::I32(route.experts as i32),
            Arg::U64(b),
            Arg::I32(n as i32),
            Arg::U64(delta),
        ];
        self.dev
            .launch(self.lora, "fm_lora_expand", cfg, &args, Stream::DEFAULT)
    }

    /// One grouped GEMM: `blocks` token blocks × row tiles × `splits` K splits.
    pub fn gemm(
        &self,
        kernel: &str,
        tile: &Tile,
        mut args: GemmArgs,
        blocks: usize,
        splits: usize,
        stream: Stream,
    ) -> Result<()> {
        let stream = self.dev.raw_stream(stream)?;
        let f = self.dev.function(self.gemm, kernel)?;
        let smem = tile.smem_bytes(self.variant);
        self.dev.set_max_dynamic_smem(self.gemm, kernel, smem)?;
        let cfg = LaunchConfig {
            grid: (
                blocks as u32,
                (args.n as usize).div_ceil(tile.bn) as u32,
                splits as u32,
            ),
            block: (tile.threads, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut params = [&mut args as *mut GemmArgs as *mut c_void];
        // SAFETY: `GemmArgs` mirrors the kernel's by-value struct; every address in it is a
        // live allocation of this device sized by `CudaExperts::workspace` / `upload`.
        unsafe { self.dev.launch_raw(f, cfg, &mut params, stream) }
    }
}
