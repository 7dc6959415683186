// Grouped expert GEMMs on MFMA, reading weights in AITER's 16x16-shuffled layout.
//
// Grid: x = tiles of 64 weight rows (four wavefronts of 16 rows), y = blocks of 16 token
// slots from fm_align (all one expert). Each wavefront computes a 16 (weight rows) x 16
// (slots) tile with 16x16xK MFMAs, loading straight from global memory: a plain,
// untuned kernel whose job is to be right on the prepared layouts.
//
// MFMA operands, 64 lanes, g = lane / 16: A (weights) lane holds row lane % 16, B
// (activations) lane holds slot lane % 16; both hold the same K elements, so any split of
// K over lanes that A and B share is a correct dot product. The result lane holds rows
// 4g..4g+3 of its slot's column.
//
// Stage 1 (gemm1) reads activation row `token` (= pair / top_k), or row `slot` with
// `act_by_slot` (static fp8 scales per expert: fm_quant_slots quantized each slot's row with
// its expert's scale, and `ascale_mode` 1 reads that scale per slot), and writes f32
// [slots, N] with the bias added; stage 2 (gemm2) reads activation row `slot` and adds
// router weight * (y + bias) into out[token, N] (the weighted combine, fused).
// LoRA (lora.hip): where `lora_delta` is given, a slot whose token has an adapter
// (token_adapter[token] >= 0) adds its delta row in the epilogue, as the emulation does:
// in stage 1 before the activation (fm_act reads the stored rows), in stage 2 before the
// router weight.
//
// Variants (FM_V):
//   0 bf16, 1 f16: 16x16x16 bf16 / f16 MFMA.
//   2 fp8: 16x16x32 fp8 MFMA (gfx942 reads e4m3fnuz, gfx950 e4m3fn: the host prepared
//     the weights and quantized the activations in the device's flavour); scales are
//     folded in per 128 columns of K, so per-tensor, per-channel and 128x128-block
//     weight scales with per-tensor, per-token or per-128-group activation scales all
//     run here. gfx90a (no fp8 MFMA) decodes to bf16 in registers instead.
//   3 MX weights (MXFP4, MXFP6: `fmt_w`), bf16 / f16 activations: each code times its
//     e8m0 scale decoded to bf16 / f16 in registers (exact: at most four significant
//     bits times a power of two), 16x16x16 MFMA.
//   4 MX native (gfx950): v_mfma_scale_f32_16x16x128_f8f6f4 with MXFP4 / MXFP6 weights
//     and their e8m0 scales, and MX (same element type) or static-scale fp8 activations
//     (`a_static` per tensor, or per slot from `ascale` with `ascale_mode` 1).
//   5 integer weight-only (GPTQ / AWQ int4 / int8), bf16 activations: each code expanded
//     to bf16 in registers as bf16((code - zero) * bf16(scale)) with its group's scale
//     (`wscale`, [E, N, K / group]) and zero point (`zeros`, same indexing; null: the
//     symmetric mid code), the group looked up per column in `g_idx` ([E, K]) under
//     act-order, so K is never permuted; 16x16x16 bf16 MFMA. Runs on every target.
//   7 MX weights on the fp8 MFMA (gfx942, which has no scaled MFMA): each 32-element MX
//     block is one 16x16x32 fp8 MFMA. Weight codes (fp4 / fp6) and MX activation codes
//     are re-encoded as e4m3 in the device's flavour (exact: every fp4 / fp6 value is an
//     e4m3 value); fp8 activations arrive as fm_quant_rows' codes. Each block's dot
//     product is multiplied by its e8m0 scales (weight row's, and the activation row's
//     for MX activations) as it finishes — the scaled MFMA's arithmetic, done outside it;
//     a static fp8 activation scale (`ascale`, stored as the GEMM reads it; per slot with
//     `ascale_mode` 1, scales calibrated per expert) at the end.
//   8 INT8 W8A8: s8 weights (the checkpoint's unsigned codes - 128, shuffled as bytes) with
//     a scale per row (`wscale`, [E, N]) against s8 activations with a scale per row
//     (`ascale`, fm_quant_rows mode 4): i32 sums, exact, from the int8 MFMA (16x16x32 on
//     gfx942 / gfx950, two 16x16x16 on gfx90a), scaled once at the end.
//   6 NVFP4 weights, bf16 activations: fp4 times its e4m3fn block scale (one per 16 of K,
//     in `wmx`, e8m0-shuffled) decoded to bf16 in registers — exact, the product has at
//     most six significant bits — 16x16x16 bf16 MFMA, and the expert's f32 global scale
//     (`wscale`, [E]) times `a_static` applied to the finished dot product. W4A4 runs here
//     too: fm_nvfp4_qdq_rows has turned its activations into bf16 (code x block scale),
//     and `a_static` is their 1 / global. Runs on every target.
//   9 W4A8 (gfx942 / gfx950): int4 codes (shuffled as bytes, low nibble first) against
//     fp8 per-token activations on the 16x16x32 fp8 MFMA. code - 8 is an e4m3 value
//     (|v| <= 8), so each weight goes in as an fp8 code in the device's flavour, exactly;
//     each 128-column group's partial sum is multiplied by its group scale (`wscale`,
//     [E, N, K / 128], e4m3 values in f32) and the activation row's scale, and the row's
//     channel scale (`wchan`, [E, N]) is applied at the end. Variant 2's loop.
#include "prelude.h"

#define GEMM_THREADS 256
#define TILE_N 64
#define TILE_T 16

struct Ctx {
  int lane, g, j;      // lane, lane group, slot column of this lane
  int n0;              // first weight row of this wavefront
  int e;               // expert
  int slot;            // this lane's slot
  int pair;            // its pair (>= pairs: padding)
  long arow;           // activation row (token for stage 1 unless act_by_slot, else slot),
                       // -1 if none
};

// Activation scale of row `arow`, 128-column chunk `c`: mode 0/3 per tensor (and static),
// 1 per row (dynamic per token, or static per expert stored per slot), 2 per row per 128
// columns.
FM_INLINE float act_scale(const float* s, int mode, long arow, int c, int K) {
  if (!s) return 1.0f;
  if (mode == 1) return s[arow];
  if (mode == 2) return s[arow * ((K + 127) / 128) + c];
  return s[0];
}
// Weight scale of expert e, row n, chunk c: mode 0 per tensor [E], 1 per channel [E, N],
// 2 128x128 blocks [E, ceil(N/128), ceil(K/128)].
FM_INLINE float weight_scale(const float* s, int mode, int e, int n, int c, int N, int K) {
  if (!s) return 1.0f;
  if (mode == 1) return s[(long)e * N + n];
  if (mode == 2) {
    const int kb = (K + 127) / 128, rb = (N + 127) / 128;
    return s[((long)e * rb + n / 128) * kb + c];
  }
  return s[e];
}

FM_INLINE v4f mfma_16(v4s a, v4s b, v4f c, int is_f16) {
  return is_f16 ? mfma_f16_k16(a, b, c) : mfma_bf16_k16(a, b, c);
}

// Eight fp8 codes (one lane's K slice) against eight: native on gfx942 / gfx950; on
// other targets decoded to bf16 and two 16x16x16 MFMAs over the same eight K values.
FM_INLINE v4f mfma_fp8(u64 a, u64 b, v4f c, int fnuz) {
#ifdef FM_HAS_FP8_MFMA
  (void)fnuz;
  return mfma_fp8_k32(a, b, c);
#else
  for (int h = 0; h < 2; ++h) {
    v4s av, bv;
    for (int q = 0; q < 4; ++q) {
      av[q] = (short)f32_to_bf16(e4m3_to_f32((u8)(a >> (8 * (4 * h + q))), fnuz));
      bv[q] = (short)f32_to_bf16(e4m3_to_f32((u8)(b >> (8 * (4 * h + q))), fnuz));
    }
    c = mfma_bf16_k16(av, bv, c);
  }
  return c;
#endif
}

// Integer code (e, n, k) expanded as bf16 weight-only kernels expand it.
FM_INLINE u16 int_weight(const u8* w, const float* scales, const u8* zeros, const u32* g_idx,
                         int group, int wbits, int e, int N, int K, int n, int k) {
  const int row_bytes = wbits == 4 ? K / 2 : K;
  const u8 b = w[shuffled_byte(e, N, row_bytes, n, wbits == 4 ? k / 2 : k)];
  const int code = wbits == 4 ? (b >> (4 * (k % 2))) & 0xf : b;
  const int groups = K / group;
  const long gi = ((long)e * N + n) * groups + (g_idx ? (int)g_idx[(long)e * K + k] : k / group);
  const int zero = zeros ? zeros[gi] : 1 << (wbits - 1);
  const float s = bf16_to_f32(f32_to_bf16(scales[gi]));
  return f32_to_bf16((float)(code - zero) * s);
}

// Code `k` of a row of `bits`-bit codes packed LSB first (fp4 / fp6 / fp8, as the MX
// packing and fm_mx_quant_rows lay them out); `byte(i)` reads byte i of the row.
template <typename B>
FM_INLINE u32 packed_code(B byte, int k, int bits) {
  const int bit = k * bits;
  u32 v = byte(bit / 8);
  if (bit % 8 + bits > 8) v |= (u32)byte(bit / 8 + 1) << 8;
  return (v >> (bit % 8)) & ((1u << bits) - 1);
}

// e8m0 as the matrix cores read it: 0xFF is NaN.
FM_INLINE float e8m0_scale(u32 code) {
  return code == 0xff ? as_float(0x7fc00000u) : e8m0_to_f32(code);
}

FM_INLINE u64 load8(const u8* p) {
  u64 v = 0;
  for (int i = 0; i < 8; ++i) v |= (u64)p[i] << (8 * i);
  return v;
}

// W4A8: int4 codes k..k+7 of row n, each as the e4m3 code of code - 8 (exact).
FM_INLINE u64 int4_as_e4m3(const u8* w, int e, int N, int K, int n, int k, int fnuz) {
  u64 v = 0;
  for (int q = 0; q < 8; ++q) {
    const u8 b = w[shuffled_byte(e, N, K / 2, n, (k + q) / 2)];
    const int code = (b >> (4 * ((k + q) % 2))) & 0xf;
    v |= (u64)f32_to_e4m3((float)(code - 8), fnuz) << (8 * q);
  }
  return v;
}

// The epilogue: stage 1 stores f32 + bias (+ LoRA delta), stage 2 adds the weighted
// result (+ LoRA delta) into out.
FM_INLINE void store(const Ctx& x, v4f acc, int stage, const float* bias, int N, int top_k,
                     const float* topk_w, int weight_on_input, const float* lora_delta,
                     const int* token_adapter, float* out) {
  if (x.arow < 0) return;
  const float* delta =
      lora_delta && token_adapter[x.pair / top_k] >= 0 ? lora_delta + (long)x.slot * N : nullptr;
  for (int r = 0; r < 4; ++r) {
    const int n = x.n0 + 4 * x.g + r;
    if (n >= N) continue;
    const float y = acc[r] + (bias ? bias[(long)x.e * N + n] : 0.0f) + (delta ? delta[n] : 0.0f);
    if (stage == 1) {
      out[(long)x.slot * N + n] = y;
    } else {
      const int token = x.pair / top_k;
      const float w = weight_on_input ? 1.0f : topk_w[x.pair];
      atomic_add_f(&out[(long)token * N + n], w * y);
    }
  }
}

#ifdef FM_HAS_SCALED_MFMA
// The scaled MFMA takes its operand formats as instruction fields, so each pairing the
// MX schemes use is spelled out: weights fp4 / fp6 e2m3 / fp6 e3m2, activations in the
// same type or fp8 e4m3.
FM_INLINE v4f mfma_scale(int fmt_w, int fmt_a, v8i a, v8i b, v4f c, int sa, int sb) {
#define FM_MX_CASE(W, A)                                                                 \
  if (fmt_w == W && fmt_a == A)                                                          \
    return FM_MFMA_SCALE(a, b, c, W, A, sa, sb);
  FM_MX_CASE(FM_MX_FP4, FM_MX_FP4)
  FM_MX_CASE(FM_MX_FP4, FM_MX_FP8)
  FM_MX_CASE(FM_MX_FP6_E2M3, FM_MX_FP6_E2M3)
  FM_MX_CASE(FM_MX_FP6_E2M3, FM_MX_FP8)
  FM_MX_CASE(FM_MX_FP6_E3M2, FM_MX_FP6_E3M2)
  FM_MX_CASE(FM_MX_FP6_E3M2, FM_MX_FP8)
#undef FM_MX_CASE
  FM_TRAP();  // the host never asks for another pairing
  return c;
}
#endif

template <int V>
FM_INLINE void gemm(int stage, const u8* __restrict__ w, const float* __restrict__ wscale,
                    int wscale_mode, const u8* __restrict__ wmx, const float* __restrict__ bias,
                    const u8* __restrict__ act, const void* __restrict__ ascale, int ascale_mode,
                    float a_static, const int* __restrict__ sorted,
                    const int* __restrict__ block_expert, const float* __restrict__ topk_w,
                    float* __restrict__ out, int N, int K, int top_k, int pairs, int fnuz,
                    int is_f16, int fmt_w, int fmt_a, int weight_on_input,
                    const float* __restrict__ lora_delta, const int* __restrict__ token_adapter,
                    const u8* __restrict__ zeros, const u32* __restrict__ g_idx, int group,
                    int wbits, const float* __restrict__ wchan, int act_by_slot) {
  Ctx x;
  x.lane = tid_x() % FM_WAVE;
  x.g = x.lane / 16;
  x.j = x.lane % 16;
  x.n0 = bid_x() * TILE_N + (tid_x() / FM_WAVE) * 16;
  x.e = block_expert[bid_y()];
  if (x.e < 0 || x.n0 >= N) return;
  x.slot = bid_y() * TILE_T + x.j;
  x.pair = sorted[x.slot];
  x.arow = x.pair >= pairs ? -1 : (stage == 1 && !act_by_slot ? x.pair / top_k : x.slot);
  const int wn = x.n0 + x.lane % 16;  // the weight row this lane loads
  v4f acc = {0.0f, 0.0f, 0.0f, 0.0f};

  if constexpr (V == 0 || V == 1) {
    const u16* w16 = (const u16*)w;
    const u16* a16 = (const u16*)act;
    for (int k = 0; k < K; k += 16) {
      const int kk = k + 4 * x.g;
      v4s a, b;
      for (int q = 0; q < 4; ++q) {
        a[q] = (short)w16[shuffled_elem16(x.e, N, K, wn, kk + q)];
        b[q] = x.arow < 0 ? 0 : (short)a16[x.arow * K + kk + q];
      }
      acc = mfma_16(a, b, acc, V == 1);
    }
  } else if constexpr (V == 2 || V == 9) {
    const float* as = (const float*)ascale;
    for (int c = 0; c * 128 < K; ++c) {
      v4f part = {0.0f, 0.0f, 0.0f, 0.0f};
      const int kend = (c + 1) * 128 < K ? (c + 1) * 128 : K;
      for (int k = c * 128; k < kend; k += 32) {
        const int kk = k + 8 * x.g;
        // fp8: 8 consecutive bytes of one 16-byte chunk of the shuffled tile.
        const u64 a = V == 2 ? load8(w + shuffled_byte(x.e, N, K, wn, kk))
                             : int4_as_e4m3(w, x.e, N, K, wn, kk, fnuz);
        const u64 b = x.arow < 0 ? 0 : load8(act + x.arow * K + kk);
        part = mfma_fp8(a, b, part, fnuz);
      }
      const float sa = x.arow < 0 ? 0.0f : act_scale(as, ascale_mode, x.arow, c, K);
      for (int r = 0; r < 4; ++r) {
        const int n = x.n0 + 4 * x.g + r < N ? x.n0 + 4 * x.g + r : x.n0;
        const float sw = V == 2 ? weight_scale(wscale, wscale_mode, x.e, n, c, N, K)
                                : wscale[((long)x.e * N + n) * (K / 128) + c];
        acc[r] += part[r] * sa * sw;
      }
    }
    if constexpr (V == 9)
      for (int r = 0; r < 4; ++r) {
        const int n = x.n0 + 4 * x.g + r < N ? x.n0 + 4 * x.g + r : x.n0;
        acc[r] *= wchan[(long)x.e * N + n];
      }
  } else if constexpr (V == 3) {
    const u16* a16 = (const u16*)act;
    const int wbits = mx_bits(fmt_w);
    const int row_bytes = K * wbits / 8;
    const int pc = ((K / 32) + 7) / 8 * 8;
    auto wbyte = [&](int i) { return w[shuffled_byte(x.e, N, row_bytes, wn, i)]; };
    for (int k = 0; k < K; k += 16) {
      const int kk = k + 4 * x.g;
      const float s = e8m0_to_f32(wmx[shuffled_scale(pc, (long)x.e * N + wn, kk / 32)]);
      v4s a, b;
      for (int q = 0; q < 4; ++q) {
        const float v = mx_decode(packed_code(wbyte, kk + q, wbits), fmt_w) * s;
        a[q] = (short)(is_f16 ? f32_to_f16(v) : f32_to_bf16(v));
        b[q] = x.arow < 0 ? 0 : (short)a16[x.arow * K + kk + q];
      }
      acc = mfma_16(a, b, acc, is_f16);
    }
  } else if constexpr (V == 8) {
    v4i isum = {0, 0, 0, 0};
    for (int k = 0; k < K; k += 32) {
      const int kk = k + 8 * x.g;
      const u64 a = load8(w + shuffled_byte(x.e, N, K, wn, kk));
      const u64 b = x.arow < 0 ? 0 : load8(act + x.arow * K + kk);
      isum = mfma_i8_k32(a, b, isum);
    }
    const float sa = x.arow < 0 ? 0.0f : ((const float*)ascale)[x.arow];
    for (int r = 0; r < 4; ++r)
      acc[r] = (float)isum[r] * (wscale[(long)x.e * N + x.n0 + 4 * x.g + r] * sa);
  } else if constexpr (V == 7) {
#ifdef FM_HAS_FP8_MFMA
    const int wbits = mx_bits(fmt_w), abits = mx_bits(fmt_a);
    const int row_bytes = K * wbits / 8;
    const int pc = ((K / 32) + 7) / 8 * 8;
    const int a_is_fp8 = fmt_a == FM_MX_FP8;
    const u8* arow = x.arow < 0 ? nullptr : act + x.arow * (long)K * abits / 8;
    auto wbyte = [&](int i) { return w[shuffled_byte(x.e, N, row_bytes, wn, i)]; };
    auto abyte = [&](int i) { return arow[i]; };
    for (int blk = 0; blk * 32 < K; ++blk) {
      const int kk = blk * 32 + 8 * x.g;  // this lane's 8 elements of the block
      u64 a = 0, b = 0;
      for (int q = 0; q < 8; ++q)
        a |= (u64)f32_to_e4m3(mx_decode(packed_code(wbyte, kk + q, wbits), fmt_w), fnuz) << (8 * q);
      float sa = 1.0f;
      if (arow) {
        if (a_is_fp8) {
          b = load8(arow + kk);
        } else {
          for (int q = 0; q < 8; ++q)
            b |= (u64)f32_to_e4m3(mx_decode(packed_code(abyte, kk + q, abits), fmt_a), fnuz) << (8 * q);
          sa = e8m0_scale(((const u8*)ascale)[x.arow * (K / 32) + blk]);
        }
      }
      const v4f part = mfma_fp8(a, b, v4f{0.0f, 0.0f, 0.0f, 0.0f}, fnuz);
      for (int r = 0; r < 4; ++r) {
        const long n = x.n0 + 4 * x.g + r;
        acc[r] += part[r] * e8m0_scale(wmx[shuffled_scale(pc, (long)x.e * N + n, blk)]) * sa;
      }
    }
    if (a_is_fp8 && x.arow >= 0) {
      // The static scale: per tensor, or (ascale_mode 1) the slot's expert's.
      const float* as = (const float*)ascale;
      const float s = ascale_mode == 1 ? as[x.arow] : as[0];
      for (int r = 0; r < 4; ++r) acc[r] *= s;
    }
#else
    (void)fmt_w; (void)fmt_a;
    FM_TRAP();  // the oracle picks this variant only where the fp8 MFMA exists
#endif
  } else if constexpr (V == 6) {
    const u16* a16 = (const u16*)act;
    const int row_bytes = K / 2;
    const int pc = ((K / 16) + 7) / 8 * 8;
    for (int k = 0; k < K; k += 16) {
      const int kk = k + 4 * x.g;
      const float s = e4m3_to_f32(wmx[shuffled_scale(pc, (long)x.e * N + wn, kk / 16)], 0);
      const u8 b0 = w[shuffled_byte(x.e, N, row_bytes, wn, kk / 2)];
      const u8 b1 = w[shuffled_byte(x.e, N, row_bytes, wn, kk / 2 + 1)];
      const u32 codes = (u32)b0 | ((u32)b1 << 8);
      v4s a, b;
      for (int q = 0; q < 4; ++q) {
        a[q] = (short)f32_to_bf16(mx_decode((codes >> (4 * q)) & 0xf, FM_MX_FP4) * s);
        b[q] = x.arow < 0 ? 0 : (short)a16[x.arow * K + kk + q];
      }
      acc = mfma_bf16_k16(a, b, acc);
    }
    const float scale = wscale[x.e] * a_static;
    for (int r = 0; r < 4; ++r) acc[r] *= scale;
  } else if constexpr (V == 5) {
    const u16* a16 = (const u16*)act;
    for (int k = 0; k < K; k += 16) {
      const int kk = k + 4 * x.g;
      v4s a, b;
      for (int q = 0; q < 4; ++q) {
        a[q] = (short)int_weight(w, wscale, zeros, g_idx, group, wbits, x.e, N, K, wn, kk + q);
        b[q] = x.arow < 0 ? 0 : (short)a16[x.arow * K + kk + q];
      }
      acc = mfma_bf16_k16(a, b, acc);
    }
  } else {
#ifdef FM_HAS_SCALED_MFMA
    const int wbits = mx_bits(fmt_w);
    const int row_bytes = K * wbits / 8;
    const int pc = ((K / 32) + 7) / 8 * 8;
    const int a_is_fp8 = fmt_a == FM_MX_FP8;
    const int abits = mx_bits(fmt_a);
    const u8* as = (const u8*)ascale;
    for (int k = 0; k < K; k += 128) {
      const int blk = k / 32 + x.g;  // this lane's 32-element block
      // A: the lane's 32 weight elements, contiguous, through the shuffle map.
      v8i a = {0, 0, 0, 0, 0, 0, 0, 0};
      const int kb0 = blk * 32 * wbits / 8;
      for (int i = 0; i < 32 * wbits / 8; ++i)
        a[i / 4] |= (int)((u32)w[shuffled_byte(x.e, N, row_bytes, wn, kb0 + i)] << (8 * (i % 4)));
      const int sa = wmx[shuffled_scale(pc, (long)x.e * N + wn, blk)];
      v8i b = {0, 0, 0, 0, 0, 0, 0, 0};
      int sb = 127;
      if (x.arow >= 0) {
        const u8* arow = act + x.arow * (long)K * abits / 8;
        if (a_is_fp8) {
          // fp8 operands are split in 16-element chunks: lane group g holds chunks g and
          // g + 4 of the 128 (the layout AMD documents for the 32x32x64 scaled MFMA,
          // carried over to 16x16x128; not yet checked on hardware).
          for (int i = 0; i < 32; ++i) {
            const int kk = k + (i < 16 ? 16 * x.g + i : 64 + 16 * x.g + i - 16);
            b[i / 4] |= (int)((u32)arow[kk] << (8 * (i % 4)));
          }
        } else {
          for (int i = 0; i < 32 * abits / 8; ++i)
            b[i / 4] |= (int)((u32)arow[kb0 + i] << (8 * (i % 4)));
          sb = as[x.arow * (K / 32) + blk];
        }
      }
      acc = mfma_scale(fmt_w, fmt_a, a, b, acc, sa, sb);
    }
    if (a_is_fp8 && x.arow >= 0) {
      // The static scale: `a_static` per tensor, or (ascale_mode 1) the slot's expert's,
      // which fm_quant_slots stored per slot.
      const float s = ascale_mode == 1 ? ((const float*)ascale)[x.arow] : a_static;
      for (int r = 0; r < 4; ++r) acc[r] *= s;
    }
#else
    (void)fmt_w; (void)fmt_a; (void)a_static;
    FM_TRAP();  // the scaled MFMA exists on gfx950 only; the oracle never picks it elsewhere
#endif
  }
  store(x, acc, stage, bias, N, top_k, topk_w, weight_on_input, lora_delta, token_adapter, out);
}

#define FM_GEMM_KERNEL(NAME, V, STAGE)                                                        \
  extern "C" __global__ void __launch_bounds__(GEMM_THREADS) NAME(                           \
      const u8* w, const float* wscale, int wscale_mode, const u8* wmx, const float* bias,     \
      const u8* act, const void* ascale, int ascale_mode, float a_static, const int* sorted,   \
      const int* block_expert, const float* topk_w, float* out, int N, int K, int top_k,       \
      int pairs, int fnuz, int is_f16, int fmt_w, int fmt_a, int weight_on_input,             \
      const float* lora_delta, const int* token_adapter, const u8* zeros, const u32* g_idx,   \
      int group, int wbits, const float* wchan, int act_by_slot) {                             \
    gemm<V>(STAGE, w, wscale, wscale_mode, wmx, bias, act, ascale, ascale_mode, a_static,      \
            sorted, block_expert, topk_w, out, N, K, top_k, pairs, fnuz, is_f16, fmt_w, fmt_a, \
            weight_on_input, lora_delta, token_adapter, zeros, g_idx, group, wbits, wchan,     \
            act_by_slot);                                                                      \
  }

FM_GEMM_KERNEL(fm_gemm_bf16_up, 0, 1)
FM_GEMM_KERNEL(fm_gemm_bf16_down, 0, 2)
FM_GEMM_KERNEL(fm_gemm_f16_up, 1, 1)
FM_GEMM_KERNEL(fm_gemm_f16_down, 1, 2)
FM_GEMM_KERNEL(fm_gemm_fp8_up, 2, 1)
FM_GEMM_KERNEL(fm_gemm_fp8_down, 2, 2)
FM_GEMM_KERNEL(fm_gemm_mxa16_up, 3, 1)
FM_GEMM_KERNEL(fm_gemm_mxa16_down, 3, 2)
FM_GEMM_KERNEL(fm_gemm_mx_up, 4, 1)
FM_GEMM_KERNEL(fm_gemm_mx_down, 4, 2)
FM_GEMM_KERNEL(fm_gemm_wna16_up, 5, 1)
FM_GEMM_KERNEL(fm_gemm_wna16_down, 5, 2)
FM_GEMM_KERNEL(fm_gemm_nvfp4a16_up, 6, 1)
FM_GEMM_KERNEL(fm_gemm_nvfp4a16_down, 6, 2)
FM_GEMM_KERNEL(fm_gemm_mxfp8_up, 7, 1)
FM_GEMM_KERNEL(fm_gemm_mxfp8_down, 7, 2)
FM_GEMM_KERNEL(fm_gemm_w8a8_up, 8, 1)
FM_GEMM_KERNEL(fm_gemm_w8a8_down, 8, 2)
FM_GEMM_KERNEL(fm_gemm_w4a8_up, 9, 1)
FM_GEMM_KERNEL(fm_gemm_w4a8_down, 9, 2)
