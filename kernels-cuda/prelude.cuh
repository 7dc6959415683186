// fleetmoe CUDA prelude: prepended to every kernels-cuda/*.cu before NVRTC compiles it.
// Self-contained (no CUDA headers), so the same text compiles under any NVRTC install.
// Number formats: bf16 and f16 are carried as raw 16-bit patterns, fp8 e4m3fn as bytes.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define FM_E4M3_MAX 448.0f

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Round-to-nearest-even f32 -> bf16; NaN stays NaN.
__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (u16)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// The portable names kernels-common/minifloat.h is written in (the HIP prelude has them
// too); the module assembly places that file right after this one.
#define FM_INLINE __device__ __forceinline__
FM_INLINE float as_float(u32 u) { return __uint_as_float(u); }
FM_INLINE u32 as_u32(float f) { return __float_as_uint(f); }
FM_INLINE float fabs_(float x) { return fabsf(x); }
FM_INLINE float rint_(float x) { return rintf(x); }

// f32 -> e4m3fn, round to nearest even, saturating to +-448 (values are clamped by the
// caller as the scheme says; saturation here only guards rounding at the edge).
__device__ __forceinline__ u8 f32_to_e4m3(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  u16 r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(0.0f), "f"(x));
  return (u8)(r & 0xff);
#else
  if (x != x) return 0x7f;
  u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
  float a = fminf(fabsf(x), FM_E4M3_MAX);
  u32 code;
  if (a < 0.015625f) {  // below the smallest normal 2^-6: steps of 2^-9
    code = (u32)__float2int_rn(a * 512.0f);
  } else {
    int e;
    float m = frexpf(a, &e);  // a = m * 2^e, m in [0.5, 1)
    int mant = __float2int_rn((m * 2.0f - 1.0f) * 8.0f);
    int ex = e - 1 + 7;
    if (mant == 8) { mant = 0; ex += 1; }
    code = ((u32)ex << 3) | (u32)mant;
    if (code > 0x7eu) code = 0x7eu;
  }
  return (u8)(sign | code);
#endif
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
  return (u32)__cvta_generic_to_shared(p);
}

// 16-byte asynchronous global->shared copy; `bytes` = 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(u32 addr, u32& r0, u32& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr));
}

// Element types of the matrix units: 0 = bf16, 1 = f16, 2 = fp8 e4m3fn.
// Each instruction consumes 32 bytes of K per row (k16 for 16-bit types, k32 for fp8),
// with the same register layout, so the kernels are written in bytes.
template <int DT>
__device__ __forceinline__ void mma_32B(float* d, const u32* a, const u32* b) {
  if constexpr (DT == 0) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (DT == 1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // fp8 tensor cores need sm_89+; the oracle never picks fp8 below that.
#endif
  }
}

// int8 tensor cores (sm_80+): d += a · b with s8 operands in the byte layout of the k32
// instructions above and exact s32 accumulators (the m16n8 accumulator layout).
__device__ __forceinline__ void mma_s8_32B(int* d, const u32* a, const u32* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Non-negative float max through integer compare (valid for values >= 0).
__device__ __forceinline__ void atomic_max_nonneg(u32* addr, float v) {
  atomicMax(addr, __float_as_uint(v));
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
