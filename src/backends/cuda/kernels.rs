//! The CUDA kernel sources, embedded at build time, and how each module is assembled from
//! them (the shared prelude, then variant defines, then the file).

/// Prepended to every kernel file.
pub const PRELUDE: &str = include_str!("../../../kernels-cuda/prelude.cuh");

/// Register expansion of packed weights, included by gemm.cu's module after the prelude.
pub const EXPAND: &str = include_str!("../../../kernels-cuda/expand.cuh");

/// Every `kernels-cuda/*.cu` file, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("align.cu", include_str!("../../../kernels-cuda/align.cu")),
    ("quant.cu", include_str!("../../../kernels-cuda/quant.cu")),
    ("gemm.cu", include_str!("../../../kernels-cuda/gemm.cu")),
    ("lora.cu", include_str!("../../../kernels-cuda/lora.cu")),
    ("route.cu", include_str!("../../../kernels-cuda/route.cu")),
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
    if file == "gemm.cu" {
        s.push_str(&from_dir("expand.cuh").unwrap_or_else(|| EXPAND.to_string()));
        s.push('\n');
    }
    for (k, v) in defines {
        s.push_str(&format!("#define {k} {v}\n"));
    }
    s.push_str(&crate::fault::kernel_define_for(&body));
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
    /// MXFP4 weights expanded to bf16, bf16 activations.
    Mxfp4 = 4,
    /// NVFP4 weights expanded to bf16, bf16 activations.
    Nvfp4 = 5,
    /// uint4 weights with group scales (and zeros) expanded to bf16.
    W4a16 = 6,
    /// uint8 weights with group scales (and zeros) expanded to bf16.
    W8a16 = 7,
    /// MXFP4 weights expanded to e4m3, fp8 activations, block scale folded per k32.
    Mxfp4Fp8 = 8,
    /// uint4 weights expanded to e4m3 (code − 8), fp8 activations, group scale folded.
    W4a8 = 9,
}

impl GemmVariant {
    /// Kernel-name prefix in gemm.cu.
    pub fn prefix(self) -> &'static str {
        match self {
            GemmVariant::Bf16 => "fm_gemm_bf16",
            GemmVariant::F16 => "fm_gemm_f16",
            GemmVariant::Fp8 => "fm_gemm_fp8",
            GemmVariant::Fp8Block => "fm_gemm_fp8blk",
            GemmVariant::Mxfp4 => "fm_gemm_mxfp4",
            GemmVariant::Nvfp4 => "fm_gemm_nvfp4",
            GemmVariant::W4a16 => "fm_gemm_w4a16",
            GemmVariant::W8a16 => "fm_gemm_w8a16",
            GemmVariant::Mxfp4Fp8 => "fm_gemm_mxfp4f8",
            GemmVariant::W4a8 => "fm_gemm_w4a8",
        }
    }
    pub const ALL: [GemmVariant; 10] = [
        GemmVariant::Bf16,
        GemmVariant::F16,
        GemmVariant::Fp8,
        GemmVariant::Fp8Block,
        GemmVariant::Mxfp4,
        GemmVariant::Nvfp4,
        GemmVariant::W4a16,
        GemmVariant::W8a16,
        GemmVariant::Mxfp4Fp8,
        GemmVariant::W4a8,
    ];

    /// Whether the tensor cores take fp8 e4m3 activations.
    pub fn fp8_activations(self) -> bool {
        match self {
            GemmVariant::Fp8
            | GemmVariant::Fp8Block
            | GemmVariant::Mxfp4Fp8
            | GemmVariant::W4a8 => true,
            GemmVariant::Bf16
            | GemmVariant::F16
            | GemmVariant::Mxfp4
            | GemmVariant::Nvfp4
            | GemmVariant::W4a16
            | GemmVariant::W8a16 => false,
        }
    }

    /// Shared memory of one weight stage per 16 rows: `None` for plain 128-byte rows, else
    /// the packed tiles plus room for a scale chunk (gemm.cu's `Packed`).
    fn packed_stage_bytes(self) -> Option<usize> {
        const CHUNK: usize = 256;
        let lane = match self {
            GemmVariant::Bf16 | GemmVariant::F16 | GemmVariant::Fp8 | GemmVariant::Fp8Block => {
                return None
            }
            GemmVariant::Mxfp4 | GemmVariant::Nvfp4 | GemmVariant::W4a16 => 4,
            GemmVariant::W8a16 | GemmVariant::Mxfp4Fp8 | GemmVariant::W4a8 => 8,
        };
        Some(4 * 32 * lane + CHUNK)
    }
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
    /// Dynamic shared memory of the kernel for `variant`.
    pub fn smem_bytes(&self, variant: GemmVariant) -> u32 {
        let a_stage = variant
            .packed_stage_bytes()
            .map_or(self.bn * 128, |b| self.bn / 16 * b);
        let stages = self.stages * (a_stage + self.bt * 128);
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

/// The `FM_TILE_` table of gemm.cu, smallest token tile first.
pub const TILES: [Tile; 5] = [
    tile(0, 32, 8, 2, 1, 2, 8),
    tile(1, 64, 16, 4, 1, 1, 6),
    tile(2, 64, 32, 2, 2, 1, 5),
    tile(3, 128, 64, 4, 2, 1, 4),
    tile(4, 128, 128, 2, 4, 1, 3),
];

/// The `FM_PTILE_` table (packed weights: more rows per block at small batch).
pub const PACKED_TILES: [Tile; 5] = [
    tile(0, 128, 8, 4, 1, 2, 6),
    tile(1, 128, 16, 4, 1, 2, 5),
    tile(2, 128, 32, 4, 2, 1, 5),
    tile(3, 128, 64, 4, 2, 1, 4),
    tile(4, 128, 128, 2, 4, 1, 3),
];

impl GemmVariant {
    /// The tile table this variant's kernels are built with.
    pub fn tiles(self) -> &'static [Tile; 5] {
        if self.packed_stage_bytes().is_some() {
            &PACKED_TILES
        } else {
            &TILES
        }
    }
}

/// The GEMM kernel name for a variant, stage and tile. Stage: `g` gated gemm1, `s`
/// single (non-gated) gemm1, `d` gemm2 (down).
pub fn gemm_kernel_name(v: GemmVariant, stage: char, tile: &Tile) -> String {
    format!("{}_{}_t{}", v.prefix(), stage, tile.index)
}
