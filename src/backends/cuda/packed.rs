//! Low-bit weights (MXFP4, MXFP6 as e4m3 bytes, NVFP4, int4, int8) in the layout the
//! CUDA GEMMs expand in registers. Pure Rust, tested without a GPU.
//!
//! Hopper has no 4-bit tensor cores, so the kernels keep the codes packed in memory and
//! turn them into bf16 (or fp8 e4m3) right before `mma.sync`. To make that cheap the codes
//! are stored per *fragment tile* — 16 weight rows × `kf` columns of K (16 for bf16
//! activations, 32 for fp8) — in exactly the order the instruction's A fragment wants:
//! lane `l` of the warp finds its 8 (bf16) or 16 (fp8) values in one 4- or 8-byte word,
//! already placed where a shift and a mask turn them into register pairs (Marlin's idea,
//! our own arrangement; the bit positions are in [`Packing::bit_of`]).
//!
//! Group scales travel in *chunks*: for every 16 rows, the scales of `sc_k` consecutive K
//! columns (one pipeline stage, or one group when groups are longer than a stage), so a
//! stage's scales arrive with one 16-byte copy per row group.

use crate::error::{Error, Result};
use crate::fault::{self, Fault};
use crate::formats::{unpack_fp4, unpack_int4_i32};
use crate::quant::{IntBits, MxElem, QuantScheme, QuantTensor, WeightData};

/// What a packed code is and how its scale is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// e2m1 with an e8m0 scale per 32 (MXFP4).
    Mxfp4,
    /// e2m1 with an e4m3 scale per 16 and an f32 global scale (NVFP4).
    Nvfp4,
    /// Unsigned int4, `(code − zero) · scale` per group (GPTQ / AWQ, W4A8).
    Uint4,
    /// Unsigned int8, `(code − zero) · scale` per group.
    Uint8,
    /// An MX element's value as an e4m3fn byte, with its e8m0 scale per 32: MXFP6 (e2m3
    /// and e3m2 values all are e4m3 values), taken by the fp8 tensor cores as it is or
    /// expanded to bf16 exactly.
    MxE4m3,
}

impl Code {
    pub fn bits(self) -> usize {
        match self {
            Code::Mxfp4 | Code::Nvfp4 | Code::Uint4 => 4,
            Code::Uint8 | Code::MxE4m3 => 8,
        }
    }

    /// The kernel's `WQ` template value (gemm.cu).
    pub fn wq(self) -> i32 {
        match self {
            Code::Mxfp4 => 1,
            Code::Nvfp4 => 2,
            Code::Uint4 => 3,
            Code::Uint8 => 4,
            Code::MxE4m3 => 5,
        }
    }
}

/// NVFP4 weights come out of the register expansion `2^-119` too small (the bf16 bit trick
/// keeps e2m1 and e4m3 exact); the row scale puts it back.
pub const NVFP4_ROW_FACTOR: f32 = 6.646_14e35; // 2^119 exactly (shortest f32 spelling)

/// The geometry of one packed projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Packing {
    pub code: Code,
    /// Activations are fp8 e4m3 (k32 MMA) rather than bf16 (k16).
    pub fp8_act: bool,
    /// K columns per scale (the padded K for per-channel).
    pub group: usize,
    /// K columns per scale chunk.
    pub sc_k: usize,
    /// Bytes of one scale entry (see [`entry`]).
    pub entry_bytes: usize,
    /// `[E, rows_pad/16, chunks, 16 rows, sc_k/group entries]`.
    pub chunks: Vec<u8>,
    /// GPTQ act-order: `[E, cols]`, the checkpoint column of each prepared K column (see
    /// [`act_order_perm`]); the GEMM's activations must be gathered in the same order.
    pub k_perm: Option<Vec<u32>>,
}

impl Packing {
    /// The geometry (no scales yet) of `code` weights with `cols` columns in groups of
    /// `group`; the error says why the kernels cannot take them.
    pub fn geometry(
        code: Code,
        fp8_act: bool,
        group: usize,
        cols: usize,
    ) -> std::result::Result<Packing, String> {
        if code == Code::Uint8 && fp8_act {
            return Err("int8 weights with fp8 activations".into());
        }
        let entry_bytes = match code {
            Code::Mxfp4 | Code::Nvfp4 | Code::MxE4m3 => 1,
            Code::Uint4 | Code::Uint8 => 4,
        };
        let mut p = Packing {
            code,
            fp8_act,
            group,
            sc_k: 0,
            entry_bytes,
            chunks: Vec::new(),
            k_perm: None,
        };
        let (kf, ks) = (p.kf(), p.ks());
        // A power-of-two group no longer than the padded K is kept (the kernel shifts by
        // it; MXFP4's 32 and NVFP4's 16 always are, so their kernels shift by constants).
        // Any other group must span all of K (per-channel) and becomes the padded K.
        let kpad = cols.div_ceil(ks) * ks;
        let group = if group.is_power_of_two() && group <= kpad {
            group
        } else if group >= cols {
            kpad
        } else {
            0
        };
        if group < kf {
            return Err(format!(
                "group {group} does not fit the {kf}-column fragments and {ks}-column stages"
            ));
        }
        p.group = group;
        p.sc_k = group.max(ks);
        Ok(p)
    }

    /// Bytes of packed weights and of scale chunks for `experts × rows × cols`.
    pub fn sizes(&self, experts: usize, rows: usize, cols: usize) -> (usize, usize) {
        let kpad = cols.div_ceil(self.ks()) * self.ks();
        let groups16 = experts * rows.div_ceil(16);
        (
            groups16 * (kpad / self.kf()) * 32 * self.lane_bytes(),
            groups16 * (kpad / self.sc_k) * self.chunk_bytes(),
        )
    }

    /// What the kernel shifts by to find a column's group: log2 of the group, or 30 when
    /// the group is not a power of two (then it spans the whole padded K, so every column
    /// lands in group 0).
    pub fn group_log2(&self) -> u32 {
        log2_or_all(self.group)
    }

    /// What the kernel shifts a stage index by to find its scale chunk: log2 of the stages
    /// per chunk, or 30 when that is not a power of two (then one chunk spans all of K).
    pub fn stages_per_chunk_log2(&self) -> u32 {
        log2_or_all(self.sc_k / self.ks())
    }

    /// K columns of one fragment tile.
    pub fn kf(&self) -> usize {
        if self.fp8_act {
            32
        } else {
            16
        }
    }
    /// K columns of one pipeline stage (128 bytes of activations).
    pub fn ks(&self) -> usize {
        if self.fp8_act {
            128
        } else {
            64
        }
    }
    /// Bytes each lane holds per fragment tile.
    pub fn lane_bytes(&self) -> usize {
        (if self.fp8_act { 16 } else { 8 }) * self.code.bits() / 8
    }
    /// Bytes of weights per 16 rows per stage.
    pub fn stage_bytes(&self) -> usize {
        (self.ks() / self.kf()) * 32 * self.lane_bytes()
    }
    /// Bytes of one scale chunk (16 rows).
    pub fn chunk_bytes(&self) -> usize {
        16 * (self.sc_k / self.group) * self.entry_bytes
    }

    /// Where value (`r` < 16, `k` < kf) of a fragment tile lives: lane and bit offset in
    /// the lane's bytes. The A fragment of `mma.m16n8k16` (bf16) gives lane `4g + t` the
    /// rows `g`, `g + 8` and columns `2t, 2t+1, 2t+8, 2t+9` as registers 0–3 (row, then
    /// column half); `m16n8k32` (e4m3) gives columns `4t..4t+4` and `16 + 4t..`.
    pub fn position(&self, r: usize, k: usize) -> (usize, usize) {
        let (g, hi_row) = (r % 8, r / 8);
        let (half, c) = if self.fp8_act {
            (k / 16, k % 16)
        } else {
            (k / 8, k % 8)
        };
        let per = if self.fp8_act { 4 } else { 2 };
        let (t, q) = (c / per, c % per);
        let reg = hi_row + 2 * half;
        (g * 4 + t, self.bit_of(reg, q))
    }

    /// Bit offset of element `q` of register `reg` in a lane's bytes:
    /// - 4-bit, bf16: register `j` in nibble `j` (element 0) and nibble `4 + j` (element 1)
    ///   of one word, so `(w >> 4j) & 0x000f000f` holds both;
    /// - 4-bit, fp8: registers `2w`, `2w+1` in word `w`, element `q` in byte `q`, low nibble
    ///   for the even register, high for the odd;
    /// - 8-bit, bf16: registers `2w`, `2w+1` in word `w`, one byte each element;
    /// - 8-bit, fp8: register `j` is word `j`, element `q` its byte `q` (the lane's 16
    ///   bytes are the four A registers as they are).
    pub fn bit_of(&self, reg: usize, q: usize) -> usize {
        match (self.code.bits(), self.fp8_act) {
            (4, false) => 4 * reg + 16 * q,
            (4, true) => 32 * (reg / 2) + 8 * q + 4 * (reg % 2),
            (8, true) => 32 * reg + 8 * q,
            _ => 32 * (reg / 2) + 8 * (2 * (reg % 2) + q),
        }
    }
}

/// log2 of `n`, or 30 (a shift that sends every index in range to 0) when `n` is not a
/// power of two, which the geometry allows only for a span covering all of K.
fn log2_or_all(n: usize) -> u32 {
    if n.is_power_of_two() {
        n.trailing_zeros()
    } else {
        30
    }
}

/// The codes of one projection, one per byte, `[E, rows, cols]`, and its scales.
struct Codes {
    codes: Vec<u8>,
    /// Per (expert, row, group): the scale entry's bytes.
    entries: Vec<[u8; 4]>,
    group: usize,
    /// Per (expert, row) epilogue scale, if any.
    row_scales: Option<Vec<f32>>,
    /// Act-order: the group of each column, `[E, cols]`.
    g_idx: Option<Vec<u32>>,
}

fn bf16_bits(v: f32) -> [u8; 2] {
    half::bf16::from_f32(v).to_bits().to_le_bytes()
}

fn unsupported(scheme: &QuantScheme, why: &str) -> Error {
    Error::BackendUnavailable {
        backend: "cuda".into(),
        reasons: format!("scheme {scheme}: {why}"),
    }
}

/// Reads the checkpoint's codes and turns each scale into the entry the kernel reads.
fn read_codes(scheme: &QuantScheme, t: &QuantTensor, fp8_act: bool) -> Result<(Code, Codes)> {
    let (e, rows, cols) = (t.experts, t.rows, t.cols);
    match (&t.data, scheme) {
        (
            WeightData::Mx { packed, scales },
            QuantScheme::Mx {
                elem: MxElem::Fp4E2M1,
                ..
            },
        ) => {
            // bf16: the kernel builds 2^(s−1) as bf16 bits (s + 126) << 7, so s ≤ 128;
            // fp8: it folds 2^(s−121) in f32. 255 is NaN.
            let limit = if fp8_act { 248 } else { 128 };
            if let Some(&s) = scales.iter().find(|&&s| s > limit) {
                return Err(unsupported(
                    scheme,
                    &format!("e8m0 scale {s} is outside what the CUDA kernel expands (≤ {limit})"),
                ));
            }
            Ok((
                Code::Mxfp4,
                Codes {
                    codes: unpack_fp4(packed),
                    entries: scales.iter().map(|&s| [s, 0, 0, 0]).collect(),
                    group: 32,
                    row_scales: None,
                    g_idx: None,
                },
            ))
        }
        // MXFP6: each code's value as an e4m3fn byte (exact: e2m3 and e3m2 have at most 3
        // mantissa bits and exponents inside e4m3's range). fp8: the e8m0 scale folded as
        // 2^(s − 127) after each k32 MMA; bf16: the kernel builds 2^(s − 7) as bf16 bits
        // (s + 120) << 7, so s ≤ 134.
        (
            WeightData::Mx { packed, scales },
            QuantScheme::Mx {
                elem: elem @ (MxElem::Fp6E2M3 | MxElem::Fp6E3M2),
                ..
            },
        ) => {
            let limit = if fp8_act { 254 } else { 134 };
            if let Some(&s) = scales.iter().find(|&&s| s > limit) {
                return Err(unsupported(
                    scheme,
                    &format!("e8m0 scale {s} is outside what the CUDA kernel expands (≤ {limit})"),
                ));
            }
            let codes = crate::quant::mx::unpack(*elem, packed)?
                .into_iter()
                .map(|c| {
                    let v = crate::quant::mx::decode(*elem, c);
                    crate::quant::fp8::encode(crate::quant::Fp8Flavor::E4M3Fn, v)
                })
                .collect();
            Ok((
                Code::MxE4m3,
                Codes {
                    codes,
                    entries: scales.iter().map(|&s| [s, 0, 0, 0]).collect(),
                    group: 32,
                    row_scales: None,
                    g_idx: None,
                },
            ))
        }
        // W4A4 runs the same weights: its activations are quantize-dequantized to bf16
        // before the GEMM (`fm_nvfp4_qdq_rows`).
        (
            WeightData::Nvfp4 {
                packed,
                block_scales,
                global_scales,
            },
            QuantScheme::Nvfp4 { .. },
        ) => {
            if let Some(&s) = block_scales.iter().find(|&&s| s & 0x7f == 0x7f) {
                return Err(unsupported(
                    scheme,
                    &format!("e4m3 block scale {s:#x} is NaN"),
                ));
            }
            let row_scales = global_scales
                .iter()
                .flat_map(|&g| std::iter::repeat_n(g * NVFP4_ROW_FACTOR, rows))
                .collect::<Vec<f32>>();
            if row_scales.iter().any(|s| !s.is_finite()) {
                return Err(unsupported(scheme, "global scale too large for the kernel"));
            }
            Ok((
                Code::Nvfp4,
                Codes {
                    codes: unpack_fp4(packed),
                    entries: block_scales.iter().map(|&s| [s, 0, 0, 0]).collect(),
                    group: 16,
                    row_scales: Some(row_scales),
                    g_idx: None,
                },
            ))
        }
        (WeightData::Int(iw), QuantScheme::IntWeightOnly { .. } | QuantScheme::W4A8) => {
            if iw.g_idx.is_some() && fp8_act {
                return Err(unsupported(
                    scheme,
                    "act-order (g_idx) with fp8 activations is not in the CUDA kernels",
                ));
            }
            let codes = match iw.bits {
                IntBits::Int4 => unpack_int4_i32(&iw.packed4),
                IntBits::Int8 => iw.bytes.clone(),
            };
            let mid = crate::quant::int::mid_code(iw.bits) as u8;
            let groups = cols / iw.group;
            let code = match iw.bits {
                IntBits::Int4 => Code::Uint4,
                IntBits::Int8 => Code::Uint8,
            };
            let entries = (0..e * rows * groups)
                .map(|i| {
                    let s = iw.scales[i];
                    let z = iw.zeros.as_ref().map_or(mid, |z| z[i]);
                    let z = if fault::is(Fault::DroppedZeroPoint) {
                        mid
                    } else {
                        z
                    };
                    if fp8_act {
                        s.to_le_bytes()
                    } else {
                        // bf16 scale, and the zero point with the int4 magic 128 added
                        // (the kernel reads 128 + code from the bf16 bit trick).
                        let off = if code == Code::Uint4 { 128.0 } else { 0.0 };
                        let [a, b] = bf16_bits(s);
                        let [c, d] = bf16_bits(off + z as f32);
                        [a, b, c, d]
                    }
                })
                .collect();
            Ok((
                code,
                Codes {
                    codes,
                    entries,
                    group: iw.group,
                    row_scales: iw.channel_scales.clone(),
                    g_idx: iw.g_idx.clone(),
                },
            ))
        }
        _ => Err(unsupported(scheme, "no packed CUDA layout")),
    }
}

/// A projection packed for the kernels: (data, packing, epilogue row scales), rows in
/// `order` (prepared row → checkpoint row).
pub fn pack(
    scheme: &QuantScheme,
    t: &QuantTensor,
    order: &[usize],
    fp8_act: bool,
) -> Result<(Vec<u8>, Packing, Option<Vec<f32>>)> {
    let (code, mut src) = read_codes(scheme, t, fp8_act)?;
    let (e, rows, cols) = (t.experts, t.rows, t.cols);
    let groups_src = cols / src.group.min(cols);
    fault::shift_scales(&mut src.entries, e * rows, groups_src);
    let mut p = Packing::geometry(code, fp8_act, src.group, cols)
        .map_err(|why| unsupported(scheme, &why))?;
    let perm = src
        .g_idx
        .as_ref()
        .map(|g| act_order_perm(g, e, cols, src.group.min(cols)))
        .transpose()
        .map_err(|why| unsupported(scheme, &why))?;
    let (kf, ks) = (p.kf(), p.ks());
    let kpad = cols.div_ceil(ks) * ks;
    let group = p.group;
    let rg = rows.div_ceil(16);
    let lane_bytes = p.lane_bytes();
    let tiles = kpad / kf;
    let (data_len, chunks_len) = p.sizes(e, rows, cols);
    let mut data = vec![0u8; data_len];
    let nchunks = kpad / p.sc_k;
    let gpc = p.sc_k / group;
    let mut chunks = vec![0u8; chunks_len];
    for ex in 0..e {
        for (pr, &cr) in order.iter().enumerate() {
            let (g16, r) = (pr / 16, pr % 16);
            let row_codes = &src.codes[(ex * rows + cr) * cols..][..cols];
            let col_of = |k: usize| perm.as_ref().map_or(k, |pm| pm[ex * cols + k] as usize);
            for k in 0..cols {
                let c = row_codes[col_of(k)];
                let (lane, bit) = p.position(r, k % kf);
                let bit = fault::nibble_bit(bit, code.bits());
                let tile = (ex * rg + g16) * tiles + k / kf;
                let byte = tile * 32 * lane_bytes + lane * lane_bytes + bit / 8;
                data[byte] |= c << (bit % 8);
            }
            for gi in 0..groups_src {
                let k = gi * src.group;
                let (chunk, within) = (k / p.sc_k, (k % p.sc_k) / group);
                let at = (((ex * rg + g16) * nchunks + chunk) * 16 + r) * gpc + within;
                let entry = &src.entries[(ex * rows + cr) * groups_src + gi];
                chunks[at * p.entry_bytes..][..p.entry_bytes]
                    .copy_from_slice(&entry[..p.entry_bytes]);
            }
        }
    }
    p.chunks = chunks;
    p.k_perm = perm;
    let row_scales = src.row_scales.map(|s| {
        let mut s = super::layout::permute_per_row(&s, e, rows, order);
        fault::shift_scales(&mut s, e * rows, 1);
        s
    });
    Ok((data, p, row_scales))
}

/// GPTQ act-order at load time, as Marlin does it (vLLM
/// `quantization/utils/marlin_utils.py` `marlin_sort_g_idx`: `g_idx_sort_indices =
/// torch.argsort(g_idx)`; for MoE, `gptq_marlin.py`'s `GPTQMarlinMoEMethod` sorts w13's and
/// w2's `g_idx` per expert and repacks the weights with that `perm`, and the kernel
/// gathers the activations by it): per expert, the checkpoint columns
/// sorted by group (stable, so ties keep their order), `[E, cols]` prepared column →
/// checkpoint column. Each group then occupies `group` consecutive prepared columns, so
/// the grouped int4 / int8 path reads its scale by position as without act-order. A
/// `g_idx` whose groups are not all `group` columns (no GPTQ checkpoint makes one) cannot
/// be laid out that way and is refused; the emulation runs it.
pub fn act_order_perm(
    g_idx: &[u32],
    experts: usize,
    cols: usize,
    group: usize,
) -> std::result::Result<Vec<u32>, String> {
    if g_idx.len() != experts * cols || group == 0 {
        return Err(format!(
            "act-order g_idx of {} entries for {experts} experts × {cols} columns",
            g_idx.len()
        ));
    }
    let mut perm = Vec::with_capacity(experts * cols);
    for ex in 0..experts {
        let g = &g_idx[ex * cols..][..cols];
        let mut cs: Vec<u32> = (0..cols as u32).collect();
        cs.sort_by_key(|&c| g[c as usize]);
        if let Some(k) = (0..cols).find(|&k| g[cs[k] as usize] as usize != k / group) {
            return Err(format!(
                "act-order g_idx of expert {ex}: sorted column {k} is in group {}, not {} \
                 (the groups are not all {group} columns)",
                g[cs[k] as usize],
                k / group
            ));
        }
        perm.extend(cs);
    }
    Ok(perm)
}

/// Reads the packed codes back, one per byte, `[E, rows, cols]` in prepared row order.
pub fn unpack_codes(data: &[u8], p: &Packing, experts: usize, rows: usize, cols: usize) -> Vec<u8> {
    let (kf, lane_bytes) = (p.kf(), p.lane_bytes());
    let rg = rows.div_ceil(16);
    let tiles = cols.div_ceil(p.ks()) * p.ks() / kf;
    let mask = ((1u16 << p.code.bits()) - 1) as u8;
    let mut out = Vec::with_capacity(experts * rows * cols);
    for ex in 0..experts {
        for pr in 0..rows {
            for k in 0..cols {
                let (lane, bit) = p.position(pr % 16, k % kf);
                let tile = (ex * rg + pr / 16) * tiles + k / kf;
                let byte = data[tile * 32 * lane_bytes + lane * lane_bytes + bit / 8];
                out.push((byte >> (bit % 8)) & mask);
            }
        }
    }
    out
}

/// The scale entry of (expert, prepared row, column), as stored.
pub fn entry(p: &Packing, experts_rows: (usize, usize), e: usize, r: usize, k: usize) -> &[u8] {
    let (_, rows) = experts_rows;
    let rg = rows.div_ceil(16);
    let nchunks = p.chunks.len() / p.chunk_bytes() / (experts_rows.0 * rg);
    let gpc = p.sc_k / p.group;
    let at =
        (((e * rg + r / 16) * nchunks + k / p.sc_k) * 16 + r % 16) * gpc + (k % p.sc_k) / p.group;
    &p.chunks[at * p.entry_bytes..][..p.entry_bytes]
}
