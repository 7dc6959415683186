// fleetmoe HIP prelude: included by every kernels-hip/*.hip. Self-contained (no HIP or
// ROCm headers, no device libraries), so clang compiles it with
// `-x hip --cuda-device-only -nogpuinc -nogpulib` for gfx90a, gfx942 and gfx950 alike.
// Wavefronts are 64 lanes. bf16 / f16 are carried as raw 16-bit patterns, fp8 / fp6 /
// fp4 as codes; every conversion is written out here, round to nearest even, so the
// kernels compute what fleetmoe's emulation defines.
#pragma once

// Scalar and vector types, and the wavefront width, for the GPU and the simulator alike.
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef short v4s __attribute__((ext_vector_type(4)));
typedef _Float16 v4h __attribute__((ext_vector_type(4)));
typedef float v4f __attribute__((ext_vector_type(4)));
typedef int v8i __attribute__((ext_vector_type(8)));
typedef int v4i __attribute__((ext_vector_type(4)));

#define FM_WAVE 64

#ifdef FM_SIM
// The CPU simulator (kernels-hip/sim/): each lane a host thread, wave-wide operations
// through a rendezvous, matrix instructions computed in software. Used to test the host
// code and the kernels' logic against the emulation on machines without an AMD GPU.
#include "sim/sim.h"
#else
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __launch_bounds__(n) __attribute__((amdgpu_flat_work_group_size(1, n)))
#define FM_INLINE __device__ __attribute__((always_inline)) inline
#define FM_DYNAMIC_SHARED(T, name) extern __shared__ T name[]

FM_INLINE int tid_x() { return __builtin_amdgcn_workitem_id_x(); }
FM_INLINE int bid_x() { return __builtin_amdgcn_workgroup_id_x(); }
FM_INLINE int bid_y() { return __builtin_amdgcn_workgroup_id_y(); }
FM_INLINE int bdim_x() { return __builtin_amdgcn_workgroup_size_x(); }
FM_INLINE int gdim_x() { return __builtin_amdgcn_grid_size_x() / __builtin_amdgcn_workgroup_size_x(); }

// Workgroup barrier with the memory ordering __syncthreads gives.
FM_INLINE void sync_threads() {
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "workgroup");
  __builtin_amdgcn_s_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "workgroup");
}
FM_INLINE void wave_barrier() { __builtin_amdgcn_wave_barrier(); }

// Lane `src`'s value of `v` (ds_bpermute takes a byte address).
FM_INLINE int lane_value(int v, int src) { return __builtin_amdgcn_ds_bpermute(src << 2, v); }

FM_INLINE int atomic_add_i(int* p, int v) {
  return __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_WORKGROUP);
}
FM_INLINE void atomic_add_f(float* p, float v) {
  __hip_atomic_fetch_add(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}
FM_INLINE void atomic_max_u(u32* p, u32 v) {
  __hip_atomic_fetch_max(p, v, __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
}

// Matrix instructions (16x16 output tiles).
FM_INLINE v4f mfma_bf16_k16(v4s a, v4s b, v4f c) {
  return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a, b, c, 0, 0, 0);
}
FM_INLINE v4f mfma_f16_k16(v4s a, v4s b, v4f c) {
  return __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(v4h, a), __builtin_bit_cast(v4h, b), c, 0, 0, 0);
}
#if defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || defined(__gfx950__)
#define FM_HAS_FP8_MFMA 1
FM_INLINE v4f mfma_fp8_k32(u64 a, u64 b, v4f c) {
  return __builtin_amdgcn_mfma_f32_16x16x32_fp8_fp8((long)a, (long)b, c, 0, 0, 0);
}
#endif
// Eight s8 codes per lane against eight, i32 sums (exact): one 16x16x32 MFMA on gfx942 /
// gfx950, two 16x16x16 ones over the same eight K values on gfx90a.
#if defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || defined(__gfx950__)
FM_INLINE v4i mfma_i8_k32(u64 a, u64 b, v4i c) {
  return __builtin_amdgcn_mfma_i32_16x16x32_i8((long)a, (long)b, c, 0, 0, 0);
}
#else
FM_INLINE v4i mfma_i8_k32(u64 a, u64 b, v4i c) {
  c = __builtin_amdgcn_mfma_i32_16x16x16i8((int)(u32)a, (int)(u32)b, c, 0, 0, 0);
  return __builtin_amdgcn_mfma_i32_16x16x16i8((int)(u32)(a >> 32), (int)(u32)(b >> 32), c, 0, 0, 0);
}
#endif
#if defined(__gfx950__)
#define FM_HAS_SCALED_MFMA 1
#define FM_MFMA_SCALE(a, b, c, W, A, sa, sb) \
  __builtin_amdgcn_mfma_scale_f32_16x16x128_f8f6f4(a, b, c, W, A, 0, sa, 0, sb)
#endif
#define FM_TRAP() __builtin_trap()
#endif

FM_INLINE float as_float(u32 u) { return __builtin_bit_cast(float, u); }
FM_INLINE u32 as_u32(float f) { return __builtin_bit_cast(u32, f); }

// Lane exchange within the wavefront.
FM_INLINE float shfl_xor(float v, int m) {
  return as_float((u32)lane_value((int)as_u32(v), (tid_x() & (FM_WAVE - 1)) ^ m));
}
FM_INLINE int shfl_xor_i(int v, int m) { return lane_value(v, (tid_x() & (FM_WAVE - 1)) ^ m); }
FM_INLINE float wave_max(float v) {
#pragma unroll
  for (int o = FM_WAVE / 2; o > 0; o >>= 1) v = __builtin_fmaxf(v, shfl_xor(v, o));
  return v;
}
FM_INLINE float wave_sum(float v) {
#pragma unroll
  for (int o = FM_WAVE / 2; o > 0; o >>= 1) v += shfl_xor(v, o);
  return v;
}

// Non-negative float max through the integer order of its bits.
FM_INLINE void atomic_max_nonneg(u32* p, float v) { atomic_max_u(p, as_u32(v)); }

FM_INLINE float fabs_(float x) { return __builtin_fabsf(x); }
FM_INLINE float fmin_(float a, float b) { return __builtin_fminf(a, b); }
FM_INLINE float fmax_(float a, float b) { return __builtin_fmaxf(a, b); }
FM_INLINE float clampf(float x, float lo, float hi) { return fmin_(fmax_(x, lo), hi); }
FM_INLINE float exp_(float x) { return __builtin_expf(x); }

// ---- 16-bit floats ------------------------------------------------------------------
FM_INLINE float bf16_to_f32(u16 h) { return as_float(((u32)h) << 16); }
FM_INLINE u16 f32_to_bf16(float f) {
  u32 u = as_u32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (u16)(u >> 16);
}
FM_INLINE float f16_to_f32(u16 h) { return (float)__builtin_bit_cast(_Float16, h); }
FM_INLINE u16 f32_to_f16(float f) { return __builtin_bit_cast(u16, (_Float16)f); }
// The model dtype: f16 when `is_f16`, else bf16.
FM_INLINE float model_to_f32(u16 h, int is_f16) { return is_f16 ? f16_to_f32(h) : bf16_to_f32(h); }
FM_INLINE u16 f32_to_model(float f, int is_f16) { return is_f16 ? f32_to_f16(f) : f32_to_bf16(f); }

// ---- minifloats ---------------------------------------------------------------------
FM_INLINE float rint_(float x) { return __builtin_rintf(x); }
#include "../kernels-common/minifloat.h"

// fp8 e4m3: OCP e4m3fn (bias 7, max 448 = 0x7E) or e4m3fnuz (bias 8, max 240 = 0x7F,
// 0x80 is NaN so -0 becomes +0). The gfx942 matrix cores read fnuz, gfx950 fn.
#define FM_E4M3FN_MAX 448.0f
#define FM_E4M3FNUZ_MAX 240.0f
FM_INLINE float e4m3_max(int fnuz) { return fnuz ? FM_E4M3FNUZ_MAX : FM_E4M3FN_MAX; }
FM_INLINE u8 f32_to_e4m3(float x, int fnuz) {
  return (u8)(fnuz ? encode_minifloat(x, 4, 3, 8, 0x7f, false)
                   : encode_minifloat(x, 4, 3, 7, 0x7e, true));
}
FM_INLINE float e4m3_to_f32(u8 c, int fnuz) {
  return decode_minifloat(c, 4, 3, fnuz ? 8 : 7);
}

// ---- AITER layouts ------------------------------------------------------------------
// Byte offset of byte `kb` of row `n` of matrix `m` ([rows, row_bytes]) after AITER's
// 16x16 shuffle with 1-byte elements: tiles of 16 rows x 32 bytes, each stored as two
// 16-byte slabs holding the 16 rows' chunks one after another (src/backends/rocm/shuffle.rs).
FM_INLINE long shuffled_byte(long m, int rows, int row_bytes, int n, int kb) {
  const long tile = ((m * (rows / 16) + n / 16) * (row_bytes / 32) + kb / 32);
  return tile * 512 + ((kb % 32) / 16) * 256 + (n % 16) * 16 + (kb % 16);
}
// The same for 2-byte elements (bf16 / f16): tiles of 16 rows x 32 elements, four slabs
// of 8 elements; returns the element index.
FM_INLINE long shuffled_elem16(long m, int rows, int cols, int n, int k) {
  const long tile = ((m * (rows / 16) + n / 16) * (cols / 32) + k / 32);
  return tile * 512 + ((k % 32) / 8) * 128 + (n % 16) * 8 + (k % 8);
}
// Index of e8m0 scale (r, c) of a [rows, cols] matrix after AITER's e8m0 shuffle (padded
// to [256k, 8j]; src/backends/rocm/scale_shuffle.rs), `pc` the padded column count.
FM_INLINE long shuffled_scale(int pc, long r, int c) {
  const long a = r / 32, b = (r / 16) % 2, cc = r % 16;
  const long d = c / 8, e = (c / 4) % 2, f = c % 4;
  return ((((a * (pc / 8) + d) * 4 + f) * 16 + cc) * 2 + e) * 2 + b;
}

// ---- activations --------------------------------------------------------------------
// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), exp only.
FM_INLINE float erf_(float x) {
  const float z = fabs_(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float r =
      t * exp_(-z * z - 1.26551223f +
               t * (1.00002368f +
                    t * (0.37409196f +
                         t * (0.09678418f +
                              t * (-0.18628806f +
                                   t * (0.27886807f +
                                        t * (-1.13520398f +
                                             t * (1.48851587f +
                                                  t * (-0.82215223f + t * 0.17087277f)))))))));
  return x >= 0.0f ? 1.0f - r : r - 1.0f;
}
FM_INLINE float tanh_(float x) {
  const float e = exp_(-2.0f * fabs_(x));
  const float t = (1.0f - e) / (1.0f + e);
  return x >= 0.0f ? t : -t;
}
FM_INLINE float silu_(float x) { return x / (1.0f + exp_(-x)); }
FM_INLINE float gelu_(float x) { return 0.5f * x * (1.0f + erf_(x * 0.70710678f)); }
FM_INLINE float gelu_tanh_(float x) {
  return 0.5f * x * (1.0f + tanh_(0.7978846f * (x + 0.044715f * x * x * x)));
}

#ifdef FM_SIM
#include "sim/sim_mfma.h"
#endif
