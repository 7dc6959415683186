// Register expansion of packed low-bit weights, for gemm.cu. The layout (which bits of a
// lane's word hold which element of the mma.sync A fragment) is defined and tested in
// src/backends/cuda/packed.rs; each function here turns one lane's bytes of a fragment
// tile into the four A registers. Everything is exact except where noted: e2m1 values
// and their power-of-two or e4m3 scales fit bf16; int4 - 8 fits e4m3.

#define FM_BF16X2_ONE 0x3f803f80u
#define FM_BF16X2_NEG0 0x80008000u
#define FM_POW2_127 1.7014118346046923e38f

__device__ __forceinline__ u32 bf16x2_fma(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ u32 bf16x2_splat(u32 h) { return (h & 0xffffu) | (h << 16); }
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}
// f32 pair -> bf16x2 (lo in the low half), round to nearest even.
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}

// ---- scales -------------------------------------------------------------------------

// e8m0 s as bf16x2 2^(s-1) in both halves: with the 2^-126 of the e2m1 bit trick below,
// 2^(s-127). Each half is (s + 126) << 7, made by one multiply-add; the host refuses
// s > 128, so the low half never carries into the high one.
__device__ __forceinline__ u32 mx_scale_bf16x2(u8 s) { return (u32)s * 0x00800080u + 0x3f003f00u; }

// e4m3 block scale b as bf16x2 b * 2^7 in both halves; the expanded weight is then 2^-119
// of the true one (the host's NVFP4 row scale carries 2^119 with the global scale).
__device__ __forceinline__ u32 nvfp4_scale_bf16x2(u8 b) {
  const float f = __uint_as_float((((u32)b & 0x7fu) << 20) | (((u32)b & 0x80u) << 24));
  u16 h;  // f is b * 2^-120; times 2^127 it is exact in bf16
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f * FM_POW2_127));
  return (u32)h * 0x00010001u;
}

// e8m0 s as the f32 factor folded after an fp8 MMA: 2^(s-127) times the 2^6 the e2m1 ->
// e4m3 trick takes away. The host refuses s > 248.
__device__ __forceinline__ float mx_fold_f32(u8 s) { return __uint_as_float(((u32)s + 6u) << 23); }

// ---- bf16 activations (mma.m16n8k16: register j = row (j & 1 ? g + 8 : g), columns of
// half j >> 1) ------------------------------------------------------------------------

// e2m1 nibbles at bits 0-3 and 16-19 of t -> bf16x2 worth 2^-126 of the values (the
// 3 magnitude bits land on bf16's exponent and top mantissa bit; code 1 = 0.5 becomes a
// bf16 subnormal, which fma keeps).
__device__ __forceinline__ u32 e2m1x2_bf16(u32 t) {
  return ((t & 0x00070007u) << 6) | ((t & 0x00080008u) << 12);
}

// MXFP4 / NVFP4: S0, S1 = bf16x2 scales of rows g and g + 8.
__device__ __forceinline__ void expand_e2m1_bf16(u32 w, u32 S0, u32 S1, u32* a) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    a[j] = bf16x2_fma(e2m1x2_bf16(w >> (4 * j)), (j & 1) ? S1 : S0, FM_BF16X2_NEG0);
}

// MX values as e4m3 bytes (MXFP6 re-encoded, packed.rs): register j's two bytes sit at
// bytes 2(j & 1) and 2(j & 1) + 1 of word j >> 1. prmt spreads them to bytes 0 and 2; the
// sign, exponent and mantissa then land on bf16's fields, worth 2^-120 of the value (e4m3
// subnormals become bf16 subnormals, exact); S = bf16x2 2^(s - 7) puts back 2^(s - 127).
__device__ __forceinline__ u32 mx8_scale_bf16x2(u8 s) { return (u32)s * 0x00800080u + 0x3c003c00u; }
__device__ __forceinline__ void expand_e4m3_bf16(u32 w0, u32 w1, u32 S0, u32 S1, u32* a) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const u32 t = prmt(j < 2 ? w0 : w1, 0u, (j & 1) ? 0x4342u : 0x4140u);
    const u32 b = ((t & 0x007f007fu) << 4) | ((t & 0x00800080u) << 8);
    a[j] = bf16x2_fma(b, (j & 1) ? S1 : S0, FM_BF16X2_NEG0);
  }
}

// int4: entries hold the bf16 scale (low half) and bf16 128 + zero (high half). 128 + code
// is built by placing the nibble in bf16's mantissa under exponent 2^7 (exact), the zero
// is subtracted exactly, and the scale multiply rounds once to bf16.
__device__ __forceinline__ void expand_u4_bf16(u32 w, u32 e0, u32 e1, u32* a) {
  const u32 S0 = bf16x2_splat(e0), S1 = bf16x2_splat(e1);
  const u32 Z0 = bf16x2_splat((e0 >> 16) ^ 0x8000u), Z1 = bf16x2_splat((e1 >> 16) ^ 0x8000u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const u32 v = ((w >> (4 * j)) & 0x000f000fu) | 0x43004300u;
    const u32 c = bf16x2_fma(v, FM_BF16X2_ONE, (j & 1) ? Z1 : Z0);
    a[j] = bf16x2_fma(c, (j & 1) ? S1 : S0, FM_BF16X2_NEG0);
  }
}

// int8: entries hold the bf16 scale and the bf16 zero. Each byte becomes the f32 2^23 +
// code (prmt under the exponent of 2^23), the zero is subtracted exactly, the scale is
// applied in f32 and the pair rounds once to bf16.
__device__ __forceinline__ void expand_u8_bf16(u32 w0, u32 w1, u32 e0, u32 e1, u32* a) {
  const float s[2] = {bf16_to_f32((u16)e0), bf16_to_f32((u16)e1)};
  const float z[2] = {8388608.0f + bf16_to_f32((u16)(e0 >> 16)),
                      8388608.0f + bf16_to_f32((u16)(e1 >> 16))};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const u32 w = j < 2 ? w0 : w1;
    const u32 b = 2 * (j & 1);
    const float lo = (__uint_as_float(prmt(w, 0x4b000000u, 0x7540u | b)) - z[j & 1]) * s[j & 1];
    const float hi = (__uint_as_float(prmt(w, 0x4b000000u, 0x7540u | (b + 1))) - z[j & 1]) * s[j & 1];
    a[j] = pack_bf16x2(lo, hi);
  }
}

// ---- fp8 activations (mma.m16n8k32 e4m3: register j = row (j & 1 ? g + 8 : g), four
// consecutive columns of half j >> 1; registers 2w, 2w+1 share word w, low / high nibbles)

// e2m1 in the low nibble of each byte -> e4m3 bytes worth 2^-6 of the values.
__device__ __forceinline__ u32 e2m1x4_e4m3(u32 t) {
  return ((t & 0x07070707u) << 2) | ((t & 0x08080808u) << 4);
}

__device__ __forceinline__ void expand_e2m1_fp8(u32 w0, u32 w1, u32* a) {
  a[0] = e2m1x4_e4m3(w0);
  a[1] = e2m1x4_e4m3(w0 >> 4);
  a[2] = e2m1x4_e4m3(w1);
  a[3] = e2m1x4_e4m3(w1 >> 4);
}

// int4 codes in the low nibble of each byte -> e4m3 bytes of code - 8, through f16:
// 1024 + code under f16's exponent of 2^10, minus 1032 exactly, then cvt (sm_89+).
__device__ __forceinline__ u32 u4x4_e4m3(u32 t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  u32 a = (t & 0x000f000fu) | 0x64006400u;         // columns 0 and 2
  u32 b = ((t >> 8) & 0x000f000fu) | 0x64006400u;  // columns 1 and 3
  asm("sub.rn.f16x2 %0, %0, %1;" : "+r"(a) : "r"(0x64086408u));
  asm("sub.rn.f16x2 %0, %0, %1;" : "+r"(b) : "r"(0x64086408u));
  u16 pa, pb;
  asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;" : "=h"(pa) : "r"(a));
  asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;" : "=h"(pb) : "r"(b));
  return prmt((u32)pa, (u32)pb, 0x5140u);
#else
  __trap();  // fp8 tensor cores need sm_89+; the oracle never picks fp8 below that.
  return 0;
#endif
}

__device__ __forceinline__ void expand_u4_fp8(u32 w0, u32 w1, u32* a) {
  a[0] = u4x4_e4m3(w0);
  a[1] = u4x4_e4m3(w0 >> 4);
  a[2] = u4x4_e4m3(w1);
  a[3] = u4x4_e4m3(w1 >> 4);
}
