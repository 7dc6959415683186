// OCP minifloats and MX block scaling, written once for the CUDA and HIP kernels (the
// HIP prelude includes this file; the CUDA module assembly in backends/cuda/kernels.rs
// places it after prelude.cuh). Plain C with the preludes' portable names only: FM_INLINE,
// as_u32 / as_float (bit casts), fabs_, rint_ (round to nearest even) and u8 / u32. What
// it computes is what quant::mx and formats.rs define: round to nearest even,
// saturating, subnormals kept, AMD Quark's "even" shared exponent.
#pragma once

// Encodes x (already divided by its scale) as a sign-magnitude minifloat with `ebits`
// exponent and `mbits` mantissa bits and `bias`, round to nearest even, saturating at
// magnitude code `max_code`. Subnormals included. `neg_zero` false maps -0 to +0 (fnuz).
FM_INLINE u32 encode_minifloat(float x, int ebits, int mbits, int bias, u32 max_code,
                               bool neg_zero) {
  const u32 sign = (as_u32(x) >> 31) & 1u;
  const float a = fabs_(x);
  u32 mag;
  const int min_normal_exp = 1 - bias;
  const float min_normal = as_float((u32)(min_normal_exp + 127) << 23);
  if (a < min_normal) {
    // Steps of 2^(min_normal_exp - mbits).
    const float step = as_float((u32)(min_normal_exp - mbits + 127) << 23);
    mag = (u32)rint_(a / step);
  } else {
    int e = (int)((as_u32(a) >> 23) & 0xff) - 127;
    const float m = as_float((as_u32(a) & 0x807fffffu) | (127u << 23));  // [1, 2)
    u32 mant = (u32)rint_((m - 1.0f) * (float)(1u << mbits));
    if (mant == (1u << mbits)) { mant = 0; e += 1; }
    const int biased = e + bias;
    mag = biased > (1 << ebits) - 1 ? max_code + 1 : ((u32)biased << mbits) | mant;
  }
  if (mag > max_code) mag = max_code;
  if (mag == 0 && !neg_zero) return 0;
  return (sign << (ebits + mbits)) | mag;
}

FM_INLINE float decode_minifloat(u32 code, int ebits, int mbits, int bias) {
  const u32 sign = (code >> (ebits + mbits)) & 1u;
  const u32 e = (code >> mbits) & ((1u << ebits) - 1);
  const u32 m = code & ((1u << mbits) - 1);
  float v;
  if (e == 0) v = (float)m * as_float((u32)(1 - bias - mbits + 127) << 23);
  else v = as_float(((u32)((int)e - bias + 127) << 23) | (m << (23 - mbits)));
  return sign ? -v : v;
}

// OCP MX element types, numbered as the gfx950 scaled MFMA's format operand:
// 0 fp8 e4m3, 2 fp6 e2m3, 3 fp6 e3m2, 4 fp4 e2m1.
#define FM_MX_FP8 0
#define FM_MX_FP6_E2M3 2
#define FM_MX_FP6_E3M2 3
#define FM_MX_FP4 4
FM_INLINE float mx_decode(u32 code, int fmt) {
  switch (fmt) {
    case FM_MX_FP4: return decode_minifloat(code, 2, 1, 1);
    case FM_MX_FP6_E2M3: return decode_minifloat(code, 2, 3, 1);
    case FM_MX_FP6_E3M2: return decode_minifloat(code, 3, 2, 3);
    default: return decode_minifloat(code, 4, 3, 7);
  }
}
FM_INLINE u32 mx_encode(float x, int fmt) {
  switch (fmt) {
    case FM_MX_FP4: return encode_minifloat(x, 2, 1, 1, 0x7, true);
    case FM_MX_FP6_E2M3: return encode_minifloat(x, 2, 3, 1, 0x1f, true);
    case FM_MX_FP6_E3M2: return encode_minifloat(x, 3, 2, 3, 0x1f, true);
    default: return encode_minifloat(x, 4, 3, 7, 0x7e, true);
  }
}
// Stored mantissa bits and emax of an element type (AMD Quark's "even" scale rule).
FM_INLINE int mx_mbits(int fmt) { return fmt == FM_MX_FP4 ? 1 : fmt == FM_MX_FP6_E3M2 ? 2 : 3; }
FM_INLINE int mx_emax(int fmt) { return fmt == FM_MX_FP8 ? 8 : fmt == FM_MX_FP6_E3M2 ? 4 : 2; }
FM_INLINE int mx_bits(int fmt) { return fmt == FM_MX_FP4 ? 4 : fmt == FM_MX_FP8 ? 8 : 6; }

// e8m0: 2^(code - 127).
FM_INLINE float e8m0_to_f32(u32 code) {
  return code == 0 ? as_float(0x00400000u) : as_float(code << 23);
}
// Quark's "even" shared exponent of a block with amax `amax` (as quant::mx does): an amax
// that rounds into the biased exponent 255 counts as 2^127, as Quark clamps it.
FM_INLINE int mx_shared_exponent(float amax, int fmt) {
  const u32 r = (as_u32(fabs_(amax)) + (1u << (23 - mx_mbits(fmt) - 1))) & 0xff800000u;
  const int biased = (int)((r >> 23) & 0xff);
  const int log2 = r == 0 ? -126 : (biased == 255 ? 127 : biased - 127);
  const int e = log2 - mx_emax(fmt);
  return e < -127 ? -127 : (e > 127 ? 127 : e);
}
FM_INLINE float exp2i(int e) {
  // 2^e for e in [-127, 127] (subnormal for -127).
  return e >= -126 ? as_float((u32)(e + 127) << 23) : as_float(0x00400000u);
}
