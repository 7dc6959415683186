// Software matrix instructions for the simulator, from the lane layouts the kernels use:
// A lane holds row lane % 16 and B lane column lane % 16, lane group g = lane / 16 holds
// K slice g; the result lane holds rows 4g..4g+3 of column lane % 16. For the gfx950
// scaled MFMA: fp4 / fp6 lanes hold 32 consecutive K values (block g, LSB-first bits),
// fp8 lanes hold 16-value chunks g and g + 4; the scale operand of lane (row, g) scales
// row's K block g. Operand codes are read as the hardware reads them (sim_decode.h), not
// through the kernels' own decodes. Products and sums in f32; the hardware's internal
// order and width of its sums are not documented, so the simulator fixes one: products
// added in K order, then added to C.
#pragma once
#include "sim_decode.h"

namespace fm_sim {
template <int BYTES, typename F>
inline v4f mfma(const void* a, const void* b, v4f c, int k_per_lane, F elem) {
  unsigned char as[FM_WAVE][BYTES], bs[FM_WAVE][BYTES];
  exchange(a, BYTES, as);
  exchange(b, BYTES, bs);
  const int lane = t_tid % FM_WAVE, j = lane % 16, g = lane / 16;
  v4f d = c;
  for (int r = 0; r < 4; ++r) {
    const int i = 4 * g + r;
    float s = 0.0f;
    for (int kg = 0; kg < 4; ++kg)
      for (int q = 0; q < k_per_lane; ++q) s += elem(as[i + 16 * kg], q) * elem(bs[j + 16 * kg], q);
    d[r] += s;
  }
  return d;
}
}  // namespace fm_sim

FM_INLINE v4f mfma_bf16_k16(v4s a, v4s b, v4f c) {
  return fm_sim::mfma<8>(&a, &b, c, 4, [](const unsigned char* p, int q) {
    return fm_sim::hw::bf16((u16)(p[2 * q] | (p[2 * q + 1] << 8)));
  });
}
FM_INLINE v4f mfma_f16_k16(v4s a, v4s b, v4f c) {
  return fm_sim::mfma<8>(&a, &b, c, 4, [](const unsigned char* p, int q) {
    return fm_sim::hw::f16((u16)(p[2 * q] | (p[2 * q + 1] << 8)));
  });
}
// s8 x s8 with exact i32 sums (every target: gfx90a's two 16x16x16 instructions give the
// same integers as one 16x16x32).
FM_INLINE v4i mfma_i8_k32(u64 a, u64 b, v4i c) {
  unsigned char as[FM_WAVE][8], bs[FM_WAVE][8];
  fm_sim::exchange(&a, 8, as);
  fm_sim::exchange(&b, 8, bs);
  const int lane = fm_sim::t_tid % FM_WAVE, j = lane % 16, g = lane / 16;
  v4i d = c;
  for (int r = 0; r < 4; ++r) {
    const int i = 4 * g + r;
    int s = 0;
    for (int kg = 0; kg < 4; ++kg)
      for (int q = 0; q < 8; ++q)
        s += (int)(signed char)as[i + 16 * kg][q] * (int)(signed char)bs[j + 16 * kg][q];
    d[r] += s;
  }
  return d;
}
#ifdef FM_HAS_FP8_MFMA
FM_INLINE v4f mfma_fp8_k32(u64 a, u64 b, v4f c) {
  return fm_sim::mfma<8>(&a, &b, c, 8, [](const unsigned char* p, int q) {
    return fm_sim::hw::fp8_mfma(p[q]);
  });
}
#endif

#ifdef FM_HAS_SCALED_MFMA
namespace fm_sim {
// Element q (0..31) of a lane's 32-byte operand in format `fmt`, and its K index within
// the 128 of the instruction for lane group g.
inline float scaled_elem(const unsigned char* p, int q, int fmt) {
  const int bits = fmt == 4 ? 4 : fmt <= 1 ? 8 : 6;
  const int bit = q * bits;
  const u32 word = p[bit / 8] | (bit / 8 + 1 < 32 ? p[bit / 8 + 1] << 8 : 0);
  return hw::f8f6f4((word >> (bit % 8)) & ((1u << bits) - 1), fmt);
}
inline int scaled_k(int q, int g, int fmt) {
  if (fmt <= 1) return q < 16 ? 16 * g + q : 64 + 16 * g + (q - 16);
  return 32 * g + q;
}
// D = C + sum over the four 32-element K blocks of (block dot product) * 2^(ea + eb).
// CDNA4 ISA §7.2: "During dot product operations, the scales are applied after the normal
// dot product prior to output/accumulation" — each block's sum is formed first, then
// scaled, so scales 2^127 and 2^-127 cancel instead of overflowing a product. Order here
// (the hardware's is not documented; this one is fixed): within a block the 32 products
// are added in K order in f32; the block sum is scaled by both scales in one step (ldexp
// by the sum of their exponents: exact unless the result leaves the f32 range); the four
// scaled block sums are added in block order; then C. A NaN scale (0xFF) makes its
// block's term NaN.
inline v4f mfma_scale(v8i a, v8i b, v4f c, int fa, int fb, int sa, int sb) {
  unsigned char as[FM_WAVE][32], bs[FM_WAVE][32];
  int sas[FM_WAVE], sbs[FM_WAVE];
  exchange(&a, 32, as);
  exchange(&b, 32, bs);
  exchange(&sa, 4, sas);
  exchange(&sb, 4, sbs);
  float A[16][128], B[16][128];
  for (int l = 0; l < FM_WAVE; ++l)
    for (int q = 0; q < 32; ++q) {
      A[l % 16][scaled_k(q, l / 16, fa)] = scaled_elem(as[l], q, fa);
      B[l % 16][scaled_k(q, l / 16, fb)] = scaled_elem(bs[l], q, fb);
    }
  const int lane = t_tid % FM_WAVE, j = lane % 16, g = lane / 16;
  v4f d = c;
  for (int r = 0; r < 4; ++r) {
    const int i = 4 * g + r;
    float s = 0.0f;
    for (int blk = 0; blk < 4; ++blk) {
      float dot = 0.0f;
      for (int k = 32 * blk; k < 32 * blk + 32; ++k) dot += A[i][k] * B[j][k];
      const int ka = sas[i + 16 * blk], kb = sbs[j + 16 * blk];
      s += hw::e8m0_is_nan(ka) || hw::e8m0_is_nan(kb)
               ? hw::nan()
               : std::ldexp(dot, hw::e8m0_exponent(ka) + hw::e8m0_exponent(kb));
    }
    d[r] += s;
  }
  return d;
}
}  // namespace fm_sim
#define FM_MFMA_SCALE(a, b, c, W, A, sa, sb) fm_sim::mfma_scale(a, b, c, W, A, sa, sb)
#endif
