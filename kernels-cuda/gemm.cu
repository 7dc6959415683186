// Grouped expert GEMMs on tensor cores (mma.sync), "swap AB": the weight rows (output
// features) are the MMA's M side and the tokens routed to one expert are its N side, so a
// decode step with a handful of tokens per expert still fills the instruction (n = 8) and
// the kernel streams weights. Both operands are K-contiguous in memory ([E, N, K] weights,
// [rows, K] activations), so one byte-level tile path serves bf16, f16 and fp8 e4m3.
//
// One block = one tile of BN weight rows x BT token slots of one expert (blockIdx.x is
// the token block from fm_align, blockIdx.y the row tile, blockIdx.z the K split).
// Shared memory holds STAGES stages of 128 bytes of K per row, filled with cp.async and
// read with ldmatrix through an XOR swizzle of the 16-byte chunks.
//
// MODE 0: gemm1, gated. Weight rows are prepared in groups of 16: rows 0-7 the gate rows
//         of features 8g..8g+7, rows 8-15 their up rows, so each thread's accumulators
//         hold (gate, up) of the same feature and the activation is fused here; the
//         result is written to the intermediate row of the token's slot.
// MODE 1: gemm1, not gated (relu2, silu): activation of each row.
// MODE 2: gemm2: scaled by the router weight and added (atomically, f32) into out[token].
// BLK:    scales change along K (128x128 weight blocks and/or per-128-column activation
//         scales): each 128-element K stage is accumulated apart and folded in scaled.
// DT:     element type: 0 bf16, 1 f16, 2 fp8 e4m3, 3 int8 (W8A8: s8 weights and per-token s8
//         activations; the accumulators hold exact s32 sums over all of K, as int bits in
//         the float registers, converted once after the K loop).
// WQ:     packed low-bit weights (packed.rs): 1 MXFP4, 2 NVFP4, 3 uint4, 4 uint8, 5 MX
//         values as e4m3 bytes (MXFP6 re-encoded at load time, exactly). Each
//         16-row group's stage arrives as fragment tiles plus a chunk of group scales and
//         is expanded in registers (expand.cuh) instead of read with ldmatrix. With bf16
//         activations the group scale is applied before the MMA; with fp8 ones (MXFP4,
//         W4A8, MX) each k32 MMA is accumulated apart and folded in scaled; MX activations
//         (`ak32`) add their own scale per token and 32 K to that fold.

struct GemmArgs {
  const u8* w;             // [E, N, K] elements of DT
  const u8* act;           // MODE 0/1: [tokens, K] (gathered per pair); MODE 2: [slots, K]
  const float* wrow;       // [E, N] weight scale of each row, or null
  const float* wblk;       // [E, N/8, ceil(K/128)] weight scale per 8 rows x 128 K, or null
  const float* ascale;     // activation scales (strides as_row, as_k), or null
  const float* bias;       // [E, N] f32, or null
  const int* sorted;       // [slots] pair id or `pairs` (padding)
  const int* block_expert; // [token blocks]
  const int* num_slots;    // [1]
  const float* topk_w;     // [pairs]
  void* out;               // MODE 0/1: intermediate [slots, ldo] (bf16/f16); MODE 2: f32 [tokens, ldo]
  u32* amax;               // MODE 0/1: amax of the intermediate (fp8 per tensor), or null
  int N, K;                // K in elements
  int as_row, as_k;        // activation scale strides per row and per 128-column group
  int top_k, pairs, ldo;
  int k_split;             // K elements per blockIdx.z (multiple of 128)
  int act_kind;            // 0 silu*up, 1 gelu*up, 2 gelu_tanh*up, 3 swigluoai, 4 relu2, 5 silu
  float alpha, limit;
  int weight_on_input;     // router weight scales gemm1's output (before bias), not gemm2's
  const float* lora_delta; // [slots, N] LoRA delta (lora.cu), or null
  const int* token_adapter;// [tokens] adapter slot or -1; read only with lora_delta
  const u8* gs;            // WQ: scale chunks [E, ceil(N/16), kpad/sc_k, chunk_bytes]
  int gpc, nchunks, chunk_bytes, kpad;  // WQ: groups per chunk row, chunks per row; K padded to a stage
  int group_log2;          // WQ: log2(group), or 30 when one group covers all of K
  int spc_log2;            // WQ: log2(stages per chunk), or 30 when one chunk covers all of K
  int act_by_slot;         // MODE 0/1: `act` is [slots, K] (gathered per slot: act-order), not [tokens, K]
  int ak_row;              // MX activations: scales per row of `ak32` (K / 32)
  const float* ak32;       // MX activations: [rows, K / 32] scale of each 32-column block, or null
};

// Bytes one lane holds per fragment tile, and the per-16-row stage sizes in shared memory.
template <int DT, int WQ>
struct Packed {
  static constexpr int BITS = WQ >= 4 ? 8 : 4;
  static constexpr int LANE = (DT == 2 ? 16 : 8) * BITS / 8;
  static constexpr int KF = DT == 2 ? 32 : 16;    // K per fragment tile
  static constexpr int STAGE = 4 * 32 * LANE;     // four tiles = 128 bytes of activations
  static constexpr int CHUNK = 256;               // room for the largest scale chunk
};

// The LoRA delta of one output, when the token has an adapter.
__device__ __forceinline__ float lora_at(const GemmArgs& p, int pair, long slot, int row) {
  if (!p.lora_delta || p.token_adapter[pair / p.top_k] < 0) return 0.0f;
  return p.lora_delta[slot * p.N + row];
}

__device__ __forceinline__ float fm_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float act_gated(int kind, float g, float u, float alpha, float limit) {
  switch (kind) {
    case 0: return g * fm_sigmoid(g) * u;
    case 1: return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f)) * u;
    case 2: {
      float t = tanhf(0.79788456080286536f * (g + 0.044715f * g * g * g));
      return 0.5f * g * (1.0f + t) * u;
    }
    default: {
      g = fminf(g, limit);
      u = fminf(fmaxf(u, -limit), limit);
      return (u + 1.0f) * g * fm_sigmoid(alpha * g);
    }
  }
}

__device__ __forceinline__ float act_single(int kind, float x) {
  if (kind == 4) { float r = fmaxf(x, 0.0f); return r * r; }
  return x * fm_sigmoid(x);
}

// The model dtype: f16 for the f16 variant, bf16 otherwise (fp8 schemes run bf16 models).
template <int DT>
__device__ __forceinline__ u16 to_half(float v) { return DT == 1 ? f32_to_f16(v) : f32_to_bf16(v); }
template <int DT>
__device__ __forceinline__ float from_half(u16 h) { return DT == 1 ? f16_to_f32(h) : bf16_to_f32(h); }
template <int DT>
__device__ __forceinline__ float round_half(float v) { return from_half<DT>(to_half<DT>(v)); }

// The four A registers of weight rows [row16, row16 + 16) for K step ks of a stage that
// begins at K element kglob, from the packed stage `a` (tiles, then scale chunks); `fold`
// gets the f32 factors of rows g and g + 8 when they are applied after the MMA.
// `kin` is the stage's first K column relative to its scale chunk; `gpc` the groups per
// chunk row. No division here: this runs for every fragment.
template <int DT, int WQ, int BN>
__device__ __forceinline__ void packed_fragment(const GemmArgs& p, const u8* a, int rg, int ks,
                                                int kin, int gpc, int lane, u32* af, float* fold) {
  using P = Packed<DT, WQ>;
  const u8* tile = a + rg * P::STAGE + ks * 32 * P::LANE + lane * P::LANE;
  // e2m1 groups are 16 (NVFP4) and 32 (MXFP4) by format, so their shift is a constant.
  const int gl2 = WQ == 1 ? 5 : WQ == 2 ? 4 : p.group_log2;
  const int within = (kin + ks * P::KF) >> gl2;
  const u8* sc = a + (BN / 16) * P::STAGE + rg * P::CHUNK;
  const int g = lane >> 2;
  const int EB = (WQ == 1 || WQ == 2 || WQ == 5) ? 1 : 4;
  const u8* e0 = sc + (g * gpc + within) * EB;
  const u8* e1 = sc + ((g + 8) * gpc + within) * EB;
  if constexpr (DT == 2) {
    const uint2 w = *reinterpret_cast<const uint2*>(tile);
    if constexpr (WQ == 1) {
      expand_e2m1_fp8(w.x, w.y, af);
      fold[0] = mx_fold_f32(*e0);
      fold[1] = mx_fold_f32(*e1);
    } else if constexpr (WQ == 5) {
      // Already e4m3 bytes in the A fragment's order: registers 0-3 are the lane's words.
      const uint4 q = *reinterpret_cast<const uint4*>(tile);
      af[0] = q.x;
      af[1] = q.y;
      af[2] = q.z;
      af[3] = q.w;
      fold[0] = e8m0_to_f32(*e0);
      fold[1] = e8m0_to_f32(*e1);
    } else {
      expand_u4_fp8(w.x, w.y, af);
      fold[0] = *reinterpret_cast<const float*>(e0);
      fold[1] = *reinterpret_cast<const float*>(e1);
    }
  } else if constexpr (WQ == 1) {
    expand_e2m1_bf16(*reinterpret_cast<const u32*>(tile), mx_scale_bf16x2(*e0), mx_scale_bf16x2(*e1), af);
  } else if constexpr (WQ == 2) {
    expand_e2m1_bf16(*reinterpret_cast<const u32*>(tile), nvfp4_scale_bf16x2(*e0),
                     nvfp4_scale_bf16x2(*e1), af);
  } else if constexpr (WQ == 5) {
    const uint2 w = *reinterpret_cast<const uint2*>(tile);
    expand_e4m3_bf16(w.x, w.y, mx8_scale_bf16x2(*e0), mx8_scale_bf16x2(*e1), af);
  } else if constexpr (WQ == 3) {
    expand_u4_bf16(*reinterpret_cast<const u32*>(tile), *reinterpret_cast<const u32*>(e0),
                   *reinterpret_cast<const u32*>(e1), af);
  } else {
    const uint2 w = *reinterpret_cast<const uint2*>(tile);
    expand_u8_bf16(w.x, w.y, *reinterpret_cast<const u32*>(e0), *reinterpret_cast<const u32*>(e1), af);
  }
}

// f(c) for c = tid, tid + NTHR, ... below N: the trip count is known at compile time, so
// the copy loops unroll with no loop or remainder code.
template <int N, int NTHR, typename F>
__device__ __forceinline__ void strided(int tid, F&& f) {
#pragma unroll
  for (int i = 0; i < (N + NTHR - 1) / NTHR; ++i) {
    const int c = tid + i * NTHR;
    if (N % NTHR == 0 || c < N) f(c);
  }
}

// One stage of ROWS rows x 128 bytes of K (bytes [kbyte, kbyte + 128) of each row, zeros
// past kb1 or for a row whose `row_at(r)` is null) into `dst`, 16-byte chunks placed with
// the XOR swizzle of 128-byte rows: chunk ch of row r at r * 128 + ((ch ^ (r & 7)) << 4).
// With `dst` 1024-byte aligned this is exactly the 128-byte swizzle the Hopper tensor
// cores read (gemm_sm90.cu), so both GEMM families share the copy.
template <int ROWS, int NTHR, typename RowAt>
__device__ __forceinline__ void copy_rows_128(u8* dst, int tid, int kbyte, int kb1, const u8* valid,
                                              RowAt&& row_at) {
  strided<ROWS * 8, NTHR>(tid, [&](int c) {
    const int r = c >> 3, ch = c & 7;
    const int kk = kbyte + ch * 16;
    const u8* row = row_at(r);
    const bool ok = row != nullptr && kk < kb1;
    cp_async16(smem_addr(dst + r * 128 + ((ch ^ (r & 7)) << 4)), ok ? row + kk : valid, ok ? 16 : 0);
  });
}

// Where a thread's accumulators sit in the tile: acc[i][j][r] is weight row
// row0 + i * row_step + g (+ 8 for r >= 2) and token slot t0 + j * 8 + 2 * (lane & 3) + (r & 1),
// g = lane / 4 — the m16n8 accumulator layout of mma.sync, which wgmma's m64nN repeats
// per warp (16 rows each) and per 8 columns, so one epilogue serves both families.
struct TileMap {
  int row0, row_step, t0;
};

// BLK: the scales of one 128-K block for a thread's accumulators: the weight block scale
// of rows g and g + 8 of each 16-row group, the activation scale of each token column.
template <int MI, int NI>
struct BlockScales {
  float w[MI][2];
  float a[NI][2];
};

template <int MI, int NI>
__device__ __forceinline__ BlockScales<MI, NI> block_scales(const GemmArgs& p, const int* s_row, int e,
                                                            int kblk, TileMap m, int lane) {
  BlockScales<MI, NI> sc;
  const int kbw = (p.K + 127) / 128;
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    const int r8 = (m.row0 + i * m.row_step) / 8;
    sc.w[i][0] = sc.w[i][1] = 1.0f;
    if (p.wblk && r8 * 8 < p.N) {
      const float* ws = p.wblk + ((long)e * (p.N / 8) + r8) * kbw + kblk;
      sc.w[i][0] = ws[0];
      sc.w[i][1] = ws[kbw];
    }
  }
#pragma unroll
  for (int j = 0; j < NI; ++j) {
    const int t0 = m.t0 + j * 8 + 2 * (lane & 3);
    sc.a[j][0] = sc.a[j][1] = 1.0f;
    if (p.ascale) {
      const int r0 = s_row[t0], r1 = s_row[t0 + 1];
      sc.a[j][0] = r0 >= 0 ? p.ascale[(long)r0 * p.as_row + (long)kblk * p.as_k] : 0.0f;
      sc.a[j][1] = r1 >= 0 ? p.ascale[(long)r1 * p.as_row + (long)kblk * p.as_k] : 0.0f;
    }
  }
  return sc;
}

// acc += part, each element scaled by its row's and column's block scale (SCALED) or not.
template <bool SCALED, int MI, int NI>
__device__ __forceinline__ void fold(float (&acc)[MI][NI][4], const float (&part)[MI][NI][4],
                                     const BlockScales<MI, NI>& sc) {
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        acc[i][j][r] += SCALED ? part[i][j][r] * sc.w[i][r >> 1] * sc.a[j][r & 1] : part[i][j][r];
}

// The fused epilogue of one thread's accumulators (placed by `m`): scales, router weight,
// bias, LoRA delta, then MODE 0/1 the activation into the intermediate (with its amax),
// MODE 2 the atomic add into the output. `slot0` is the tile's first token slot, `e` its
// expert, `split` its K split (bias and LoRA are added by split 0 only).
template <int DT, int MI, int NI, int MODE, bool BLK>
__device__ __forceinline__ void gemm_epilogue(const GemmArgs& p, const float (&acc)[MI][NI][4],
                                              const int* s_row, const int* s_pair, int e, int slot0,
                                              int split, TileMap m, int lane) {
  const int g = lane >> 2;
  float local_max = 0.0f;
#pragma unroll
  for (int i = 0; i < MI; ++i) {
    const int rbase = m.row0 + i * m.row_step;
    if (rbase >= p.N) continue;
#pragma unroll
    for (int j = 0; j < NI; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int tl = m.t0 + j * 8 + 2 * (lane & 3) + h;
        const int pair = s_pair[tl];
        if (pair >= p.pairs) continue;
        const int arow = s_row[tl];
        float tok_scale = 1.0f;
        if (!BLK && p.ascale) tok_scale = p.ascale[(long)arow * p.as_row];
        const int rows[2] = {rbase + g, rbase + g + 8};
        float v[2];
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          float x = acc[i][j][q * 2 + h] * tok_scale;
          // Rows past N (a part-filled last tile) are dropped below; read no scale there.
          if (p.wrow && rows[q] < p.N) x *= p.wrow[(long)e * p.N + rows[q]];
          v[q] = x;
        }
        if constexpr (MODE == 0) {
          const int slot = slot0 + tl;
          if (p.weight_on_input) { const float w = p.topk_w[pair]; v[0] *= w; v[1] *= w; }
          if (p.bias) { v[0] += p.bias[(long)e * p.N + rows[0]]; v[1] += p.bias[(long)e * p.N + rows[1]]; }
          v[0] += lora_at(p, pair, slot, rows[0]);
          v[1] += lora_at(p, pair, slot, rows[1]);
          // Round gate and up to the model dtype first, as the emulation does.
          const float y = act_gated(p.act_kind, round_half<DT>(v[0]), round_half<DT>(v[1]), p.alpha, p.limit);
          const int feature = (rbase / 16) * 8 + g;
          const u16 yh = to_half<DT>(y);
          reinterpret_cast<u16*>(p.out)[(long)slot * p.ldo + feature] = yh;
          // amax of the stored value, so a per-tensor scale matches the emulation's.
          local_max = fmaxf(local_max, fabsf(from_half<DT>(yh)));
        } else if constexpr (MODE == 1) {
          const int slot = slot0 + tl;
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            if (rows[q] >= p.N) continue;
            float x = v[q];
            if (p.weight_on_input) x *= p.topk_w[pair];
            if (p.bias) x += p.bias[(long)e * p.N + rows[q]];
            x += lora_at(p, pair, slot, rows[q]);
            const float y = act_single(p.act_kind, round_half<DT>(x));
            const u16 yh = to_half<DT>(y);
            reinterpret_cast<u16*>(p.out)[(long)slot * p.ldo + rows[q]] = yh;
            local_max = fmaxf(local_max, fabsf(from_half<DT>(yh)));
          }
        } else {
          const int token = pair / p.top_k;
          const float w = p.weight_on_input ? 1.0f : p.topk_w[pair];
          float* out = reinterpret_cast<float*>(p.out) + (long)token * p.ldo;
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            if (rows[q] >= p.N) continue;
            float x = v[q];
            if (split == 0) {
              if (p.bias) x += p.bias[(long)e * p.N + rows[q]];
              x += lora_at(p, pair, (long)slot0 + tl, rows[q]);
            }
            atomicAdd(out + rows[q], w * x);
          }
        }
      }
    }
  }
  if (MODE != 2 && p.amax) {
    local_max = warp_max(local_max);
    if (lane == 0 && local_max > 0.0f) atomic_max_nonneg(p.amax, local_max);
  }
}

// The work of one GEMM block, from the routing alignment: its expert, first weight row
// and K range (blockIdx = token block, row tile, K split).
struct BlockWork {
  int e, n0, kbeg, kend;
};

// Finds this block's work and writes its slots' pairs and activation rows (-1: padding)
// to shared memory; false (for the whole block, before any barrier) where it has none.
// Shared by the mma.sync and wgmma bodies so both read the alignment the same way.
template <int BN, int BT, int NTHR, int MODE>
__device__ __forceinline__ bool block_work(const GemmArgs& p, int* s_row, int* s_pair, BlockWork& w) {
  const int tb = blockIdx.x;
  if (tb * BT >= p.num_slots[0]) return false;
  w.e = p.block_expert[tb];
  if (w.e < 0) return false;
  w.n0 = blockIdx.y * BN;
  w.kbeg = blockIdx.z * p.k_split;
  w.kend = min(p.K, w.kbeg + p.k_split);
  if (w.kbeg >= w.kend) return false;
  for (int j = threadIdx.x; j < BT; j += NTHR) {
    const int slot = tb * BT + j;
    const int pair = p.sorted[slot];
    s_pair[j] = pair;
    s_row[j] = pair < p.pairs ? (MODE == 2 || p.act_by_slot ? slot : pair / p.top_k) : -1;
  }
  __syncthreads();
  return true;
}

template <int DT, int BN, int BT, int WN, int WT, int WK, int STAGES, int MODE, bool BLK, int WQ,
          bool AK>
__device__ __forceinline__ void gemm_body(const GemmArgs& p) {
  constexpr int ES = DT >= 2 ? 1 : 2;
  using P = Packed<DT, WQ == 0 ? 1 : WQ>;
  // Shared memory of one stage of weights: 128 bytes per row, or packed tiles + scales.
  constexpr int A_STAGE = WQ ? (BN / 16) * (P::STAGE + P::CHUNK) : BN * 128;
  constexpr bool FOLD = WQ != 0 && DT == 2;
  static_assert(!AK || FOLD, "MX activation scales are folded with the weight's");
  constexpr int NTHR = WN * WT * WK * 32;
  constexpr int WM = BN / WN;
  constexpr int WTT = BT / WT;
  constexpr int MI = WM / 16;
  constexpr int NI = WTT / 8;
  static_assert(WM % 16 == 0 && WTT % 8 == 0 && 4 % WK == 0, "tile shape");
  extern __shared__ __align__(128) u8 smem[];
  u8* sA = smem;
  u8* sB = smem + STAGES * A_STAGE;
  int* s_row = reinterpret_cast<int*>(sB + STAGES * BT * 128);
  int* s_pair = s_row + BT;

  BlockWork w;
  if (!block_work<BN, BT, NTHR, MODE>(p, s_row, s_pair, w)) return;
  const int e = w.e, n0 = w.n0, kbeg = w.kbeg, kend = w.kend;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wn = warp % WN, wt = (warp / WN) % WT, wk = warp / (WN * WT);
  // AK: where each of the thread's token columns keeps its MX activation scales (-1:
  // a padding slot, scale 0), found once for the whole K loop.
  long ak_off[AK ? NI : 1][2];
  if constexpr (AK) {
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = s_row[wt * WTT + j * 8 + 2 * (lane & 3) + h];
        ak_off[j][h] = row >= 0 ? (long)row * p.ak_row : -1;
      }
  }

  const long Kb = (long)p.K * ES;
  const u8* wbase = p.w + (long)e * p.N * Kb;
  const int kb0 = kbeg * ES, kb1 = kend * ES;
  const int ntiles = (kb1 - kb0 + 127) / 128;

  const int n16 = (p.N + 15) / 16;
  auto load_stage = [&](int stage, int kt) {
    const int kbyte = kb0 + kt * 128;
    u8* a = sA + stage * A_STAGE;
    if constexpr (WQ != 0) {
      // Packed: each 16-row group's stage is contiguous (tiles along K), then its chunk.
      const int kglob = kbeg + kt * (128 / ES);
      const u8* wb = p.w + (long)e * n16 * (p.kpad / (128 / ES)) * P::STAGE;
      strided<(BN / 16) * (P::STAGE / 16), NTHR>(tid, [&](int c) {
        const int rg = c / (P::STAGE / 16), off = (c % (P::STAGE / 16)) * 16;
        const int grow = n0 / 16 + rg;
        const bool ok = grow < n16;
        const u8* src = ok ? wb + ((long)grow * (p.kpad / (128 / ES)) + kglob / (128 / ES)) * P::STAGE + off : p.w;
        cp_async16(smem_addr(a + rg * P::STAGE + off), src, ok ? 16 : 0);
      });
      const int chunk = (kglob / (128 / ES)) >> p.spc_log2;
      strided<(BN / 16) * (P::CHUNK / 16), NTHR>(tid, [&](int c) {
        const int rg = c / (P::CHUNK / 16), off = (c % (P::CHUNK / 16)) * 16;
        if (off >= p.chunk_bytes) return;
        const int grow = n0 / 16 + rg;
        const bool ok = grow < n16;
        const u8* src = ok ? p.gs + (((long)e * n16 + grow) * p.nchunks + chunk) * p.chunk_bytes + off : p.gs;
        cp_async16(smem_addr(a + (BN / 16) * P::STAGE + rg * P::CHUNK + off), src, ok ? 16 : 0);
      });
    } else {
      copy_rows_128<BN, NTHR>(a, tid, kbyte, kb1, p.w, [&](int r) {
        return n0 + r < p.N ? wbase + (long)(n0 + r) * Kb : nullptr;
      });
    }
    copy_rows_128<BT, NTHR>(sB + stage * BT * 128, tid, kbyte, kb1, p.act, [&](int r) {
      const int row = s_row[r];
      return row >= 0 ? p.act + (long)row * Kb : nullptr;
    });
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < ntiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ntiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nk = kt + STAGES - 1;
      if (nk < ntiles) load_stage(nk % STAGES, nk);
      cp_async_commit();
    }
    const u8* a = sA + (kt % STAGES) * A_STAGE;
    // Packed: where this stage starts inside its scale chunk (chunks hold whole stages).
    const int sidx = kbeg / (128 / ES) + kt;
    const int kin = WQ ? (sidx & ((1 << p.spc_log2) - 1)) * (128 / ES) : 0;
    const int gpc = p.gpc;
    const u8* b = sB + (kt % STAGES) * BT * 128;
    float part[BLK ? MI : 1][BLK ? NI : 1][4];
    if constexpr (BLK) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) part[i][j][r] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < 4 / WK; ++kk) {
      const int ks = wk + kk * WK;
      u32 af[MI][4], bfr[NI][2];
      float fold[FOLD ? MI : 1][2];
      // AK: the MX activation scale of this k32 block for each of the thread's token
      // columns (0 past K and for padding slots, whose codes are zeros anyway).
      float ak[AK ? NI : 1][2];
      if constexpr (AK) {
        const int k32 = (kbeg + kt * 128) / 32 + ks;
        const bool in_k = k32 * 32 < p.K;
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h)
            ak[j][h] = (ak_off[j][h] >= 0 && in_k) ? __ldg(p.ak32 + ak_off[j][h] + k32) : 0.0f;
      }
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        if constexpr (WQ != 0) {
          packed_fragment<DT, WQ, BN>(p, a, (wn * WM + i * 16) / 16, ks, kin, gpc, lane, af[i],
                                      fold[FOLD ? i : 0]);
        } else {
          const int row = wn * WM + i * 16 + (lane & 15);
          const int ch = ks * 2 + (lane >> 4);
          ldmatrix_x4(smem_addr(a + row * 128 + ((ch ^ (row & 7)) << 4)), af[i][0], af[i][1],
                      af[i][2], af[i][3]);
        }
      }
      if constexpr (NI == 1) {
        const int tok = wt * WTT + (lane & 7);
        const int ch = ks * 2 + ((lane >> 3) & 1);
        ldmatrix_x2(smem_addr(b + tok * 128 + ((ch ^ (tok & 7)) << 4)), bfr[0][0], bfr[0][1]);
      } else {
#pragma unroll
        for (int j = 0; j < NI; j += 2) {
          const int tok = wt * WTT + j * 8 + (lane & 7) + ((lane >> 4) << 3);
          const int ch = ks * 2 + ((lane >> 3) & 1);
          ldmatrix_x4(smem_addr(b + tok * 128 + ((ch ^ (tok & 7)) << 4)), bfr[j][0], bfr[j][1],
                      bfr[j + 1][0], bfr[j + 1][1]);
        }
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          if constexpr (BLK) {
            mma_32B<DT>(part[i][j], af[i], bfr[j]);
          } else if constexpr (DT == 3) {
            mma_s8_32B(reinterpret_cast<int*>(acc[i][j]), af[i], bfr[j]);
          } else if constexpr (FOLD) {
            float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mma_32B<DT>(t, af[i], bfr[j]);
            if constexpr (AK) {
              acc[i][j][0] += t[0] * fold[i][0] * ak[j][0];
              acc[i][j][1] += t[1] * fold[i][0] * ak[j][1];
              acc[i][j][2] += t[2] * fold[i][1] * ak[j][0];
              acc[i][j][3] += t[3] * fold[i][1] * ak[j][1];
            } else {
              acc[i][j][0] += t[0] * fold[i][0];
              acc[i][j][1] += t[1] * fold[i][0];
              acc[i][j][2] += t[2] * fold[i][1];
              acc[i][j][3] += t[3] * fold[i][1];
            }
          } else {
            mma_32B<DT>(acc[i][j], af[i], bfr[j]);
          }
        }
    }
    if constexpr (BLK) {
      // This stage is exactly one 128-element K block (fp8: 128 bytes).
      const TileMap m{n0 + wn * WM, 16, wt * WTT};
      fold<true>(acc, part, block_scales<MI, NI>(p, s_row, e, kbeg / 128 + kt, m, lane));
    }
  }
  cp_async_wait<0>();
  if constexpr (DT == 3) {
    // int8: the exact s32 sums (|sum| <= K * 128 * 128 < 2^31 for K < 2^17) to f32.
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = (float)__float_as_int(acc[i][j][r]);
  }

  if constexpr (WK > 1) {
    // Sum the K-split warps' partial tiles through shared memory.
    __syncthreads();
    float* red = reinterpret_cast<float*>(smem);
    constexpr int PER = MI * NI * 4;
    const int mn = warp % (WN * WT);
    if (wk > 0) {
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r)
            red[(((wk - 1) * WN * WT + mn) * PER + (i * NI + j) * 4 + r) * 32 + lane] = acc[i][j][r];
    }
    __syncthreads();
    if (wk > 0) return;
#pragma unroll
    for (int q = 1; q < WK; ++q)
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r)
            acc[i][j][r] += red[(((q - 1) * WN * WT + mn) * PER + (i * NI + j) * 4 + r) * 32 + lane];
  }

  gemm_epilogue<DT, MI, NI, MODE, BLK>(p, acc, s_row, s_pair, e, blockIdx.x * BT, blockIdx.z,
                                      TileMap{n0 + wn * WM, 16, wt * WTT}, lane);
}

// Tile shapes: BN, BT, WN, WT, WK, STAGES. The host picks by tokens per expert.
#define FM_TILE_0 32, 8, 2, 1, 2, 8
#define FM_TILE_1 64, 16, 4, 1, 1, 6
#define FM_TILE_2 64, 32, 2, 2, 1, 5
#define FM_TILE_3 128, 64, 4, 2, 1, 4
#define FM_TILE_4 128, 128, 2, 4, 1, 3
// Packed weights carry a quarter (int8: half) of the bytes per row, so their small-batch
// tiles take four times the rows: a stage then moves as many bytes as a bf16 one and the
// fixed cost of each pipeline step is spread over as much data.
#define FM_PTILE_0 128, 8, 4, 1, 2, 6
#define FM_PTILE_1 128, 16, 4, 1, 2, 5
#define FM_PTILE_2 128, 32, 4, 2, 1, 5
#define FM_PTILE_3 128, 64, 4, 2, 1, 4
#define FM_PTILE_4 128, 128, 2, 4, 1, 3
#define FM_THREADS(BN, BT, WN, WT, WK, ST) (WN * WT * WK * 32)
#define FM_THREADS_OF(...) FM_THREADS(__VA_ARGS__)

#define FM_KERNEL(NAME, DT, TILE, MODE, BLK, WQ, AK)                                \
  extern "C" __global__ void __launch_bounds__(FM_THREADS_OF(TILE), BLK ? 1 : 2) NAME(GemmArgs p) { \
    gemm_body<DT, TILE, MODE, BLK, WQ, AK>(p);                                       \
  }

#define FM_MODES(PFX, DT, BLK, WQ, TS, T, AK)                  \
  FM_KERNEL(PFX##_g_t##T, DT, TS##T, 0, BLK, WQ, AK)           \
  FM_KERNEL(PFX##_s_t##T, DT, TS##T, 1, BLK, WQ, AK)           \
  FM_KERNEL(PFX##_d_t##T, DT, TS##T, 2, BLK, WQ, AK)

// TS: the tile table, FM_TILE_ or FM_PTILE_ (packed weights). AK: MX activations, whose
// per-32 scales (`ak32`) join the weight's in the k32 fold.
#define FM_TILES_AK(PFX, DT, BLK, WQ, TS, AK) \
  FM_MODES(PFX, DT, BLK, WQ, TS, 0, AK)       \
  FM_MODES(PFX, DT, BLK, WQ, TS, 1, AK)       \
  FM_MODES(PFX, DT, BLK, WQ, TS, 2, AK)       \
  FM_MODES(PFX, DT, BLK, WQ, TS, 3, AK)       \
  FM_MODES(PFX, DT, BLK, WQ, TS, 4, AK)
#define FM_TILES(PFX, DT, BLK, WQ, TS) FM_TILES_AK(PFX, DT, BLK, WQ, TS, false)

// The host compiles one variant per module (FM_VARIANT defined before this file); with
// none defined, every variant is built (the CI compile check).
#if !defined(FM_VARIANT) || FM_VARIANT == 0
FM_TILES(fm_gemm_bf16, 0, false, 0, FM_TILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 1
FM_TILES(fm_gemm_f16, 1, false, 0, FM_TILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 2
FM_TILES(fm_gemm_fp8, 2, false, 0, FM_TILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 3
FM_TILES(fm_gemm_fp8blk, 2, true, 0, FM_TILE_)
#endif
// Packed low-bit weights (the WQ codes of packed.rs).
#if !defined(FM_VARIANT) || FM_VARIANT == 4
FM_TILES(fm_gemm_mxfp4, 0, false, 1, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 5
FM_TILES(fm_gemm_nvfp4, 0, false, 2, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 6
FM_TILES(fm_gemm_w4a16, 0, false, 3, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 7
FM_TILES(fm_gemm_w8a16, 0, false, 4, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 8
FM_TILES(fm_gemm_mxfp4f8, 2, false, 1, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 9
FM_TILES(fm_gemm_w4a8, 2, false, 3, FM_PTILE_)
#endif
// INT8 W8A8 on int8 tensor cores (per-channel weight scales, per-token activation scales).
#if !defined(FM_VARIANT) || FM_VARIANT == 10
FM_TILES(fm_gemm_i8, 3, false, 0, FM_TILE_)
#endif
// MXFP6 weights as e4m3 bytes with their e8m0 block scales: fp8 activations (11), bf16
// ones (12), MX ones (14); MXFP4 with MX activations (13).
#if !defined(FM_VARIANT) || FM_VARIANT == 11
FM_TILES(fm_gemm_mx8f8, 2, false, 5, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 12
FM_TILES(fm_gemm_mx8, 0, false, 5, FM_PTILE_)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 13
FM_TILES_AK(fm_gemm_mxfp4mx, 2, false, 1, FM_PTILE_, true)
#endif
#if !defined(FM_VARIANT) || FM_VARIANT == 14
FM_TILES_AK(fm_gemm_mx8mx, 2, false, 5, FM_PTILE_, true)
#endif
