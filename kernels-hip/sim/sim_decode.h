// What the simulated matrix instructions read their operand codes as: the hardware's
// decode, written from AMD's documentation and independent of prelude.h (whose decodes
// are the kernels' own software, not the matrix cores'). NaN and infinity codes decode to
// NaN and infinity, so a kernel that feeds them to a matrix instruction sees what the GPU
// would produce.
//
// Sources:
// - AMD Instinct CDNA4 ISA reference guide (gfx950), ch. 7 "Matrix Arithmetic
//   Instructions", https://www.amd.com/content/dam/amd/en/documents/instinct-tech-docs/
//   instruction-set-architectures/amd-instinct-cdna4-instruction-set-architecture.pdf
//   §7.2 "Block Scaled Matrices": the block scale "is an exponent-offset, encoded as an
//   8-bit exponent (bias 127) with valid values in: -127, 127 (0xFF is NaN)".
//   §7.3 Table 30 "Small Float Data Formats": FP8 E4M3 bias 7, no INF, NaN +0x7F / -0xFF,
//   max 448; BF8 E5M2 bias 15, INF 0x7C / 0xFC, NaN 0x7D-0x7F / 0xFD-0xFF; FP6 E2M3
//   (bias 1, max 7.5), BF6 E3M2 (bias 3, max 28) and FP4 E2M1 (bias 1, max 6) have no INF
//   and no NaN.
// - gfx942 (CDNA3) matrix cores read the FNUZ variants: ROCm HIP "FP8 numbers" (6.2,
//   https://rocm.docs.amd.com/projects/HIP/en/docs-6.2.0/reference/fp8_numbers.html:
//   gfx940/gfx941/gfx942 support FNUZ FP8, not OCP FP8; "NaN is when sign bit is set and
//   all other exponent and mantissa bits are 0") and AMD's "Matrix Core Programming on AMD
//   CDNA3 and CDNA4 architecture" (ROCm blog, 2025: "The AMD CDNA3 architecture uses FNUZ
//   variants for both E4M3 and E5M2, whereas the CDNA4 architecture uses E4M3FN and E5M2
//   (OCP) variants"): E4M3FNUZ bias 8, max 240, 0x80 the only NaN, no -0, no INF;
//   E5M2FNUZ bias 16, 0x80 the only NaN.
#pragma once
#include <cmath>
#include <cstdlib>
#include <limits>

namespace fm_sim::hw {
inline float nan() { return std::numeric_limits<float>::quiet_NaN(); }

// A finite sign-magnitude minifloat code with `ebits` exponent and `mbits` mantissa bits,
// subnormals included.
inline float minifloat(u32 code, int ebits, int mbits, int bias) {
  const u32 m = code & ((1u << mbits) - 1);
  const int e = (int)((code >> mbits) & ((1u << ebits) - 1));
  const float v = e == 0 ? std::ldexp((float)m, 1 - bias - mbits)
                         : std::ldexp((float)(m | (1u << mbits)), e - bias - mbits);
  return (code >> (ebits + mbits)) & 1 ? -v : v;
}

inline float e4m3fn(u32 c) { return (c & 0x7f) == 0x7f ? nan() : minifloat(c, 4, 3, 7); }
inline float e4m3fnuz(u32 c) { return c == 0x80 ? nan() : minifloat(c, 4, 3, 8); }
inline float e5m2(u32 c) {
  if ((c & 0x7c) != 0x7c) return minifloat(c, 5, 2, 15);
  if (c & 0x03) return nan();
  return c & 0x80 ? -std::numeric_limits<float>::infinity()
                  : std::numeric_limits<float>::infinity();
}
inline float e5m2fnuz(u32 c) { return c == 0x80 ? nan() : minifloat(c, 5, 2, 16); }

inline float bf16(u16 h) {
  const u32 u = (u32)h << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float f16(u16 h) { return (float)__builtin_bit_cast(_Float16, h); }

// The element of the fp8 MFMA (v_mfma_f32_16x16x32_fp8_fp8): e4m3fnuz on gfx942, e4m3fn
// (OCP) on gfx950.
inline float fp8_mfma(u32 c) { return FM_SIM_GFX == 942 ? e4m3fnuz(c) : e4m3fn(c); }

// An element of the gfx950 scaled MFMA in the format its CBSZ / BLGP field names:
// 0 FP8 E4M3, 1 BF8 E5M2, 2 FP6 E2M3, 3 BF6 E3M2, 4 FP4 E2M1 (ISA §7.1.6.2: CBSZ / BLGP
// name the data type; the numbering as AMD's ROCm blog above gives it for
// __builtin_amdgcn_mfma_scale_f32_*_f8f6f4).
inline float f8f6f4(u32 code, int fmt) {
  switch (fmt) {
    case 0: return e4m3fn(code);
    case 1: return e5m2(code);
    case 2: return minifloat(code, 2, 3, 1);
    case 3: return minifloat(code, 3, 2, 3);
    case 4: return minifloat(code, 2, 1, 1);
    default: std::abort();  // no such format: the instruction is undefined
  }
}

// An e8m0 block scale: NaN for 0xFF, else the exponent code - 127 (in -127..127), which
// the scaled MFMA applies to a block's dot product.
inline bool e8m0_is_nan(u32 code) { return (code & 0xff) == 0xff; }
inline int e8m0_exponent(u32 code) { return (int)(code & 0xff) - 127; }
}  // namespace fm_sim::hw
