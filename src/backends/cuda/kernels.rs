//! The CUDA kernel sources, embedded at build time, and how each module is assembled from
//! them (the shared prelude, then variant defines, then the file).

/// Prepended to every kernel file.
pub const PRELUDE: &str = include_str!("../../../kernels-cuda/prelude.cuh");

/// Every `kernels-cuda/*.cu` file, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("align.cu", include_str!("../../../kernels-cuda/align.cu")),
    ("quant.cu", include_str!("../../../kernels-cuda/quant.cu")),
    ("gemm.cu", include_str!("../../../kernels-cuda/gemm.cu")),
    ("lora.cu", include_str!("../../../kernels-cuda/lora.cu")),
];

/// The text NVRTC compiles for `file` with `defines` (`NAME VALUE` pairs).
///
/// For kernel work, `$FLEETMOE_KERNELS_DIR` replaces the embedded sources with the files in
/// that folder (same names), so a kernel change can be tried without rebuilding; the disk
/// cache is keyed by the text, so nothing stale is loaded.
pub fn module_source(file: &str, defines: &[(&str, &str)]) -> Option<String> {
    let embedded = SOURCES.iter().find(|(n, _)| *n == file)?.1;
    let from_dir = |name: &str| {
        let dir = std::env::var_os("FLEETMOE_KERNELS_DIR")?;
        std::fs::read_to_string(std::path::Path::new(&dir).join(name)).ok()
    };
    let body = from_dir(file).unwrap_or_else(|| embedded.to_string());
    let prelude = from_dir("prelude.cuh").unwrap_or_else(|| PRELUDE.to_string());
    let mut s = String::with_capacity(prelude.len() + body.len() + 128);
    s.push_str(&prelude);
    s.push('\n');
    for (k, v) in defines {
        s.push_str(&format!("#define {k} {v}\n"));
    }
    s.push_str(&format!("#line 1 \"{file}\"\n"));
    s.push_str(&body);
    Some(s)
}

/// The weight/activation element type of a GEMM module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmVariant {
    Bf16 = 0,
    F16 = 1,
    /// fp8 with scales constant along K (per-tensor / per-channel weights, per-tensor /
    /// per-token activations).
    Fp8 = 2,
    /// fp8 with scales that change every 128 elements of K (block weights or per-group
    /// activations).
    Fp8Block = 3,
}

impl GemmVariant {
    /// Kernel-name prefix in gemm.cu.
    pub fn prefix(self) -> &'static str {
        match self {
            GemmVariant::Bf16 => "fm_gemm_bf16",
            GemmVariant::F16 => "fm_gemm_f16",
            GemmVariant::Fp8 => "fm_gemm_fp8",
            GemmVariant::Fp8Block => "fm_gemm_fp8blk",
        }
    }
    pub const ALL: [GemmVariant; 4] = [
        GemmVariant::Bf16,
        GemmVariant::F16,
        GemmVariant::Fp8,
        GemmVariant::Fp8Block,
    ];
}

/// One GEMM tile shape (must match the `FM_TILE_n` table in gemm.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub index: usize,
    /// Weight rows per block.
    pub bn: usize,
    /// Token slots per block (the alignment padding).
    pub bt: usize,
    pub threads: u32,
    pub stages: usize,
    /// Warps that split each stage's K between them.
    pub wk: usize,
    pub wn: usize,
    pub wt: usize,
}

impl Tile {
    /// Dynamic shared memory of the kernel.
    pub fn smem_bytes(&self) -> u32 {
        let stages = self.stages * (self.bn + self.bt) * 128;
        let rows = 2 * self.bt * 4;
        let mi = self.bn / self.wn / 16;
        let ni = self.bt / self.wt / 8;
        let red = (self.wk - 1) * self.wn * self.wt * mi * ni * 4 * 32 * 4;
        (stages.max(red) + rows) as u32
    }
}

const fn tile(
    index: usize,
    bn: usize,
    bt: usize,
    wn: usize,
    wt: usize,
    wk: usize,
    stages: usize,
) -> Tile {
    Tile {
        index,
        bn,
        bt,
        threads: (wn * wt * wk * 32) as u32,
        stages,
        wk,
        wn,
        wt,
    }
}

/// The table of gemm.cu, smallest token tile first.
pub const TILES: [Tile; 5] = [
    tile(0, 32, 8, 2, 1, 2, 8),
    tile(1, 64, 16, 4, 1, 1, 6),
    tile(2, 64, 32, 2, 2, 1, 5),
    tile(3, 128, 64, 4, 2, 1, 4),
    tile(4, 128, 128, 2, 4, 1, 3),
];

/// The GEMM kernel name for a variant, stage and tile. Stage: `g` gated gemm1, `s`
/// single (non-gated) gemm1, `d` gemm2 (down).
pub fn gemm_kernel_name(v: GemmVariant, stage: char, tile: &Tile) -> String {
    format!("{}_{}_t{}", v.prefix(), stage, tile.index)
}
