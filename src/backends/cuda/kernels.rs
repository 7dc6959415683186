//! The CUDA kernel sources, embedded at build time, and how each module is assembled from
//! them (the shared prelude, then variant defines, then the file).

/// Prepended to every kernel file.
pub const PRELUDE: &str = include_str!("../../../kernels-cuda/prelude.cuh");

/// OCP minifloats and MX block scaling, shared with the HIP kernels; placed right after
/// the prelude in every module.
pub const MINIFLOAT: &str = include_str!("../../../kernels-common/minifloat.h");

/// Register expansion of packed weights, included by gemm.cu's module after the prelude.
pub const EXPAND: &str = include_str!("../../../kernels-cuda/expand.cuh");

/// The Hopper (sm_90a, `wgmma`) family of the grouped GEMMs, compiled after gemm.cu in the
/// same module (it shares gemm.cu's arguments, copies and epilogue).
pub const GEMM_SM90: &str = include_str!("../../../kernels-cuda/gemm_sm90.cu");

/// Every `kernels-cuda/*.cu` file, by name (gemm_sm90.cu travels inside gemm.cu's module).
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
    // One text, so the header's include guard has nothing to guard.
    let minifloat = from_dir("minifloat.h").unwrap_or_else(|| MINIFLOAT.to_string());
    s.push_str(&minifloat.replace("#pragma once", ""));
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
    if file == "gemm.cu" {
        let sm90 = from_dir("gemm_sm90.cu").unwrap_or_else(|| GEMM_SM90.to_string());
        s.push_str("\n#line 1 \"gemm_sm90.cu\"\n");
        s.push_str(&sm90);
    }
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
    /// INT8 W8A8: s8 weights and per-token s8 activations on int8 tensor cores, exact s32
    /// accumulators, per-channel × per-token scales in the epilogue.
    Int8 = 10,
    /// MXFP6 weights re-encoded at load time as e4m3 bytes (every fp6 value is one), fp8
    /// or MX activations, the e8m0 block scales folded per k32.
    Mx8Fp8 = 11,
    /// MXFP6 weights as e4m3 bytes expanded to bf16 in registers (exact), bf16 activations.
    Mx8 = 12,
    /// MXFP4 weights as `Mxfp4Fp8`, MX activations: their per-32 scales join the fold.
    Mxfp4Mx = 13,
    /// MXFP6 weights as `Mx8Fp8`, MX activations.
    Mx8Mx = 14,
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
            GemmVariant::Int8 => "fm_gemm_i8",
            GemmVariant::Mx8Fp8 => "fm_gemm_mx8f8",
            GemmVariant::Mx8 => "fm_gemm_mx8",
            GemmVariant::Mxfp4Mx => "fm_gemm_mxfp4mx",
            GemmVariant::Mx8Mx => "fm_gemm_mx8mx",
        }
    }
    pub const ALL: [GemmVariant; 15] = [
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
        GemmVariant::Int8,
        GemmVariant::Mx8Fp8,
        GemmVariant::Mx8,
        GemmVariant::Mxfp4Mx,
        GemmVariant::Mx8Mx,
    ];

    /// Whether the tensor cores take fp8 e4m3 activations.
    pub fn fp8_activations(self) -> bool {
        match self {
            GemmVariant::Fp8
            | GemmVariant::Fp8Block
            | GemmVariant::Mxfp4Fp8
            | GemmVariant::W4a8
            | GemmVariant::Mx8Fp8
            | GemmVariant::Mxfp4Mx
            | GemmVariant::Mx8Mx => true,
            GemmVariant::Bf16
            | GemmVariant::F16
            | GemmVariant::Mxfp4
            | GemmVariant::Nvfp4
            | GemmVariant::W4a16
            | GemmVariant::W8a16
            | GemmVariant::Int8
            | GemmVariant::Mx8 => false,
        }
    }

    /// Whether gemm_sm90.cu has `wgmma` kernels of this variant (the plain 16-bit and fp8
    /// weights; packed low-bit weights expand in registers on the mma.sync family).
    pub fn has_sm90(self) -> bool {
        matches!(
            self,
            GemmVariant::Bf16 | GemmVariant::F16 | GemmVariant::Fp8 | GemmVariant::Fp8Block
        )
    }

    /// Shared memory of one weight stage per 16 rows: `None` for plain 128-byte rows, else
    /// the packed tiles plus room for a scale chunk (gemm.cu's `Packed`).
    fn packed_stage_bytes(self) -> Option<usize> {
        const CHUNK: usize = 256;
        let lane = match self {
            GemmVariant::Bf16
            | GemmVariant::F16
            | GemmVariant::Fp8
            | GemmVariant::Fp8Block
            | GemmVariant::Int8 => return None,
            GemmVariant::Mxfp4 | GemmVariant::Nvfp4 | GemmVariant::W4a16 => 4,
            GemmVariant::W8a16
            | GemmVariant::Mxfp4Fp8
            | GemmVariant::W4a8
            | GemmVariant::Mx8
            | GemmVariant::Mxfp4Mx => 8,
            GemmVariant::Mx8Fp8 | GemmVariant::Mx8Mx => 16,
        };
        Some(4 * 32 * lane + CHUNK)
    }
}

/// Which instructions a GEMM kernel multiplies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gemm.cu: `mma.sync` fed by `ldmatrix` (sm_80 and later).
    MmaSync,
    /// gemm_sm90.cu: warpgroup `wgmma` reading shared memory (sm_90a only), two
    /// warpgroups per block.
    Wgmma,
}

/// One GEMM tile shape (must match the `FM_TILE_n` / `FM_PTILE_n` tables of gemm.cu or
/// the `FM_HTILE_n` / `FM_HBTILE_n` tables of gemm_sm90.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub family: Family,
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
        if self.family == Family::Wgmma {
            // Stages of 128-byte rows, the slot rows, and 1 KB to align the swizzle atoms.
            return (self.stages * (self.bn + self.bt) * 128 + 2 * self.bt * 4 + 1024) as u32;
        }
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
        family: Family::MmaSync,
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

/// A gemm_sm90.cu tile: two warpgroups of `mi` m64 tiles each (`bn` = 128 `mi`), `bt`
/// slots as the wgmma's N. (How many blocks per SM its registers are capped for is the
/// last field of its `FM_HTILE_` entry, written beside each entry here.)
const fn sm90_tile(index: usize, mi: usize, bt: usize, stages: usize) -> Tile {
    Tile {
        family: Family::Wgmma,
        index,
        bn: 128 * mi,
        bt,
        threads: 256,
        stages,
        wk: 1,
        wn: 8,
        wt: 1,
    }
}

/// gemm_sm90.cu's `FM_HTILE_` table (16-bit weights), by kernel id.
pub const SM90_TILES: [Tile; 4] = [
    sm90_tile(3, 2, 64, 5),  // one block per SM
    sm90_tile(4, 2, 128, 4), // one
    sm90_tile(5, 1, 128, 3), // two
    sm90_tile(6, 1, 64, 4),  // two
];

/// `FM_HPTILE_` (fp8: a second accumulator set for the promotion, so 128 rows).
pub const SM90_FP8_TILES: [Tile; 3] = [
    sm90_tile(3, 1, 64, 6),  // one block per SM
    sm90_tile(4, 1, 128, 6), // one
    sm90_tile(6, 1, 64, 4),  // two
];

/// Which `wgmma` tiles stand in for the mma.sync tiles of 64 and 128 slots (tiles 3 and
/// 4; the slot count must match, so the routing alignment does not change with the
/// family), per variant: the H200's choice from `fleetmoe bench` (kernels-cuda/NOTES.md,
/// 2026-12-03). fp8 block-128 has none: its wgmma tiles were 1.10-1.17x mma.sync's time
/// at M >= 1024, so it stays on mma.sync until its promotion moves outside the MMA.
/// `FLEETMOE_SM90_TILES=<id>,<id>` (kernel ids) replaces it, to time the others.
fn sm90_choice(v: GemmVariant) -> &'static [usize] {
    match v {
        GemmVariant::Bf16 | GemmVariant::F16 => &[6, 5],
        // fp8: on gemm2 only (`sm90_gemms`); 6, 4 measured fastest (on both, 2026-12-03).
        GemmVariant::Fp8 => &[6, 4],
        _ => &[],
    }
}

/// Which GEMMs of `v` take its `wgmma` tiles, (gemm1, gemm2). fp8: gemm2 only. On the
/// H200 (2026-12-03) an fp8 gemm1 on wgmma is what moves a layer 1.4-6e-3 (and Qwen3's
/// per-tensor layer 3e-2) from the emulation where mma.sync is <= 2.4e-4: with gemm1 on
/// wgmma alone the figures are those of both, to three digits. A CPU model that truncates
/// each k32 partial sum to the width of the QGMMA's measured per-step error (4.4e-5)
/// reproduces that level (2026-12-04): gemm1's bf16-then-e4m3 requantisation amplifies the
/// tensor cores' accumulation width; gemm2 is not requantised (kernels-cuda/NOTES.md).
/// `FLEETMOE_SM90_GEMMS=both|gemm1|gemm2` overrides, to study exactly that.
pub fn sm90_gemms(v: GemmVariant) -> crate::Result<(bool, bool)> {
    let fp8 = matches!(v, GemmVariant::Fp8 | GemmVariant::Fp8Block);
    match std::env::var("FLEETMOE_SM90_GEMMS").as_deref() {
        Err(_) | Ok("") => Ok((!fp8, true)),
        Ok("both") => Ok((true, true)),
        Ok("gemm1") => Ok((true, false)),
        Ok("gemm2") => Ok((false, true)),
        Ok(other) => Err(crate::Error::Config(format!(
            "FLEETMOE_SM90_GEMMS={other}: expected `both`, `gemm1` or `gemm2`"
        ))),
    }
}

impl GemmVariant {
    /// The table of this variant's `wgmma` kernels (empty where it has none).
    pub fn sm90_tiles(self) -> &'static [Tile] {
        match self {
            GemmVariant::Bf16 | GemmVariant::F16 => &SM90_TILES,
            GemmVariant::Fp8 | GemmVariant::Fp8Block => &SM90_FP8_TILES,
            _ => &[],
        }
    }

    /// The `wgmma` tiles this variant runs in place of mma.sync tiles of the same width
    /// (empty where it has none); `Err` for a `FLEETMOE_SM90_TILES` that names no kernel of
    /// its table.
    pub fn sm90_wide_tiles(self) -> crate::Result<Vec<Tile>> {
        let table = self.sm90_tiles();
        if table.is_empty() {
            return Ok(Vec::new());
        }
        let by_id = |id: usize| table.iter().find(|t| t.index == id).copied();
        match std::env::var("FLEETMOE_SM90_TILES") {
            Ok(list) if !list.is_empty() => list
                .split(',')
                .map(|id| {
                    id.trim().parse().ok().and_then(by_id).ok_or_else(|| {
                        crate::Error::Config(format!(
                            "FLEETMOE_SM90_TILES={list}: `{id}` is not a {} wgmma tile id \
                             (those are {:?})",
                            self.prefix(),
                            table.iter().map(|t| t.index).collect::<Vec<_>>()
                        ))
                    })
                })
                .collect(),
            _ => Ok(sm90_choice(self)
                .iter()
                .filter_map(|&id| by_id(id))
                .collect()),
        }
    }

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
    let family = match tile.family {
        Family::MmaSync => 't',
        Family::Wgmma => 'h',
    };
    format!("{}_{}_{family}{}", v.prefix(), stage, tile.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#define {prefix}{id} a, b, ...` of a kernel source, as numbers.
    fn defines(src: &str, prefix: &str) -> Vec<(usize, Vec<usize>)> {
        src.lines()
            .filter_map(|l| l.strip_prefix("#define ")?.strip_prefix(prefix))
            .filter_map(|rest| {
                let (id, vals) = rest.split_once(' ')?;
                let vals: Option<Vec<usize>> =
                    vals.split(',').map(|v| v.trim().parse().ok()).collect();
                Some((id.parse().ok()?, vals?))
            })
            .collect()
    }

    /// The host's tile tables describe the kernels the sources build: a mismatch would
    /// launch with the wrong shared memory or block size.
    #[test]
    fn tile_tables_match_the_kernel_sources() {
        let gemm = SOURCES.iter().find(|(n, _)| *n == "gemm.cu").unwrap().1;
        for (prefix, table) in [("FM_TILE_", &TILES), ("FM_PTILE_", &PACKED_TILES)] {
            let defs = defines(gemm, prefix);
            assert_eq!(defs.len(), table.len(), "{prefix}");
            for (id, v) in defs {
                let t = table[id];
                assert_eq!(
                    (t.bn, t.bt, t.wn, t.wt, t.wk, t.stages),
                    (v[0], v[1], v[2], v[3], v[4], v[5]),
                    "{prefix}{id}"
                );
            }
        }
        for (prefix, table) in [
            ("FM_HTILE_", &SM90_TILES[..]),
            ("FM_HPTILE_", &SM90_FP8_TILES[..]),
        ] {
            let defs = defines(GEMM_SM90, prefix);
            assert_eq!(defs.len(), table.len(), "{prefix}");
            for (id, v) in defs {
                let t = table.iter().find(|t| t.index == id).expect("id in table");
                assert_eq!(
                    (t.bn, t.bt, t.stages),
                    (128 * v[0], v[1], v[2]),
                    "{prefix}{id}"
                );
                // H100 / H200: 227 KB of shared memory per block, 228 per SM.
                let smem = t.smem_bytes(GemmVariant::Bf16) as usize;
                assert!(
                    smem * v[4] <= 228 * 1024,
                    "{prefix}{id}: {smem} B x {}",
                    v[4]
                );
            }
        }
    }

    #[test]
    fn wide_batches_pick_a_wgmma_tile_of_the_same_width() {
        for v in GemmVariant::ALL {
            let wide = v.sm90_wide_tiles().unwrap();
            // fp8 block-128 has wgmma kernels but stays on mma.sync (slower on the H200);
            // fp8 takes them for gemm2 only (`sm90_gemms`).
            let chosen = v.has_sm90() && v != GemmVariant::Fp8Block;
            let (on1, on2) = sm90_gemms(v).unwrap();
            assert!(on2);
            let fp8 = matches!(v, GemmVariant::Fp8 | GemmVariant::Fp8Block);
            assert_eq!(on1, !fp8, "{v:?}");
            assert_eq!(wide.is_empty(), !chosen, "{v:?}");
            for t in &wide {
                assert_eq!(t.family, Family::Wgmma);
                assert!(v.tiles()[3..].iter().any(|m| m.bt == t.bt), "{v:?} {t:?}");
            }
            // Decode tiles stay on mma.sync; 33+ tokens per expert take the wide tile.
            let small = crate::backends::cuda::plan::tile_for(v, 8 * 16, 8, &wide);
            assert_eq!(small.family, Family::MmaSync);
            let big = crate::backends::cuda::plan::tile_for(v, 8 * 200, 8, &wide);
            assert_eq!(big.family == Family::Wgmma, chosen, "{v:?}");
            let family = if chosen { 'h' } else { 't' };
            assert!(gemm_kernel_name(v, 'g', &big).ends_with(&format!("_g_{family}{}", big.index)));
        }
    }
}
