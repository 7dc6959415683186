// Dynamic and static fp8 e4m3fn quantization of bf16 activation rows, as the emulation does
// it: scale = amax / 448 (per tensor, per row, or per row per 128 columns) or a static
// scale; q = round_to_nearest_even(clamp(x / scale, -448, 448)).

#define Q_THREADS 256

// amax over rows of a [rows, cols] bf16 matrix into amax[0] (as float bits; zero it
// first). With `sorted` non-null, row r counts only when sorted[r] < pairs (padding rows of
// the expert-sorted intermediate are skipped); `num_rows` (device) bounds the rows.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_amax_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
             const int* __restrict__ sorted, int pairs, u32* __restrict__ amax) {
  __shared__ float red[Q_THREADS / 32];
  int nr = num_rows ? min(rows, num_rows[0]) : rows;
  float m = 0.0f;
  const long total8 = (long)nr * cols / 8;  // cols % 8 == 0
  for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total8;
       i += (long)gridDim.x * blockDim.x) {
    long r = i * 8 / cols;
    if (sorted && sorted[r] >= pairs) continue;
    uint4 v = reinterpret_cast<const uint4*>(src)[i];
    u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      m = fmaxf(m, fabsf(bf16_to_f32((u16)(w[j] & 0xffff))));
      m = fmaxf(m, fabsf(bf16_to_f32((u16)(w[j] >> 16))));
    }
  }
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < Q_THREADS / 32 ? red[threadIdx.x] : 0.0f;
    v = warp_max(v);
    if (threadIdx.x == 0 && v > 0.0f) atomic_max_nonneg(amax, v);
  }
}

__device__ __forceinline__ float scale_from_amax(float amax) {
  return fmaxf(amax, 1e-12f) / FM_E4M3_MAX;
}

// One block per row. mode: 0 = per tensor (scale from amax[0]), 1 = per row, 2 = per row
// per 128 columns, 3 = static (scale `static_scale`), 4 = int8 per row (INT8 W8A8, as the
// emulation's `Int8PerToken`: scale = amax / 127, q = clamp(rint(x / scale), -128, 127) as
// s8 bytes, all zeros with scale 0 for a zero row). Writes codes [rows, cols] and scales:
// mode 0/3 -> scales[0]; mode 1 -> scales[row]; mode 2 -> scales[row * ceil(cols/128) + g].
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_quant_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
              const int* __restrict__ sorted, int pairs, int mode, const u32* __restrict__ amax,
              float static_scale, u8* __restrict__ codes, float* __restrict__ scales) {
  __shared__ float red[Q_THREADS / 32];
  __shared__ float row_scale;
  const int row = blockIdx.x;
  int nr = num_rows ? min(rows, num_rows[0]) : rows;
  if (row >= nr) return;
  if ((mode == 0 || mode == 3) && row == 0 && threadIdx.x == 0)
    scales[0] = mode == 0 ? scale_from_amax(__uint_as_float(amax[0])) : static_scale;
  if (sorted && sorted[row] >= pairs) return;
  const u16* x = src + (long)row * cols;
  u8* q = codes + (long)row * cols;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  if (mode == 2) {
    // Each warp takes 128-column groups; each lane 4 consecutive values.
    const int groups = (cols + 127) / 128;
    for (int g = warp; g < groups; g += Q_THREADS / 32) {
      int c = g * 128 + lane * 4;
      float v[4];
      float m = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j] = c + j < cols ? bf16_to_f32(x[c + j]) : 0.0f;
        m = fmaxf(m, fabsf(v[j]));
      }
      m = warp_max(m);
      float s = scale_from_amax(m);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (c + j < cols) q[c + j] = f32_to_e4m3(fminf(fmaxf(v[j] / s, -FM_E4M3_MAX), FM_E4M3_MAX));
      if (lane == 0) scales[(long)row * groups + g] = s;
    }
    return;
  }

  float s;
  if (mode == 1 || mode == 4) {
    float m = 0.0f;
    for (int c = tid; c < cols; c += Q_THREADS) m = fmaxf(m, fabsf(bf16_to_f32(x[c])));
    m = warp_max(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    if (tid < 32) {
      float v = tid < Q_THREADS / 32 ? red[tid] : 0.0f;
      v = warp_max(v);
      if (tid == 0) row_scale = mode == 4 ? v / 127.0f : scale_from_amax(v);
    }
    __syncthreads();
    s = row_scale;
    if (tid == 0) scales[row] = s;
  } else {
    s = mode == 0 ? scale_from_amax(__uint_as_float(amax[0])) : static_scale;
  }
  if (mode == 4) {
    for (int c = tid; c < cols; c += Q_THREADS)
      q[c] = s > 0.0f ? (u8)(signed char)min(max(__float2int_rn(bf16_to_f32(x[c]) / s), -128), 127) : 0;
    return;
  }
  for (int c = tid; c < cols; c += Q_THREADS)
    q[c] = f32_to_e4m3(fminf(fmaxf(bf16_to_f32(x[c]) / s, -FM_E4M3_MAX), FM_E4M3_MAX));
}

// Router weight on the input (top-1 layers such as Llama 4): dst[t] = round(src[t] * w[t]) in
// the model dtype (f16 when `is_f16`, else bf16), as the emulation scales before quantizing.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_scale_rows(const u16* __restrict__ src, int rows, int cols, const float* __restrict__ w,
              int is_f16, u16* __restrict__ dst) {
  const int row = blockIdx.x;
  if (row >= rows) return;
  const float s = w[row];
  for (int c = threadIdx.x; c < cols; c += Q_THREADS) {
    const long i = (long)row * cols + c;
    dst[i] = is_f16 ? f32_to_f16(f16_to_f32(src[i]) * s) : f32_to_bf16(bf16_to_f32(src[i]) * s);
  }
}

// The shared expert's gate (Qwen2-MoE's shared_expert_gate): gate[t] = sigmoid(x[t] · g),
// x in the model dtype (f16 when `is_f16`, else bf16), f32 sums. The one-expert shared MLP
// takes it as its router weight, so its output arrives scaled.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_shared_gate(const u16* __restrict__ x, int rows, int cols, const float* __restrict__ g,
               int is_f16, float* __restrict__ gate) {
  __shared__ float red[Q_THREADS / 32];
  const int row = blockIdx.x;
  if (row >= rows) return;
  float s = 0.0f;
  for (int c = threadIdx.x; c < cols; c += Q_THREADS) {
    const u16 v = x[(long)row * cols + c];
    s += (is_f16 ? f16_to_f32(v) : bf16_to_f32(v)) * g[c];
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) s += __shfl_xor_sync(0xffffffffu, s, d);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = 0.0f;
    for (int w = 0; w < Q_THREADS / 32; ++w) v += red[w];
    gate[row] = 1.0f / (1.0f + expf(-v));
  }
}

// The layer's f32 sum in the caller's dtype: out[i] = acc[i] rounded to f16 (`is_f16`) or
// bf16, round to nearest even; acc[i] is zeroed behind, so the next forward's GEMMs add
// into zeros without a memset of their own.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_finalize(float* __restrict__ acc, long n, int is_f16, u16* __restrict__ out) {
  for (long i = (long)blockIdx.x * Q_THREADS + threadIdx.x; i < n; i += (long)gridDim.x * Q_THREADS) {
    out[i] = is_f16 ? f32_to_f16(acc[i]) : f32_to_bf16(acc[i]);
    acc[i] = 0.0f;
  }
}

// Adapter slots from the caller's memory, which the host never reads: a slot outside
// 0..adapters becomes -1 (no adapter), so no LoRA kernel indexes past the resident ones.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_clamp_slots(const int* __restrict__ src, int n, int adapters, int* __restrict__ dst) {
  for (int i = blockIdx.x * Q_THREADS + threadIdx.x; i < n; i += gridDim.x * Q_THREADS) {
    const int a = src[i];
#ifdef FM_FAULT_LORA_WRONG_SLOT  // a planted bug for the mutation tests (src/fault.rs)
    dst[i] = a >= 0 && a < adapters ? (a + 1) % adapters : -1;
#else
    dst[i] = a >= 0 && a < adapters ? a : -1;
#endif
  }
}

// GPTQ act-order: each expert's weights were laid out with K sorted by group (packed.rs
// `act_order_perm`, Marlin's per-expert `g_idx` sort), so its GEMM input must be gathered
// the same way: dst[slot, k] = src[row, perm[e, k]] for every slot in use, e = the slot's
// expert and row = its token (`by_slot` = 0: the hidden states) or the slot itself (`by_slot`
// = 1: the intermediate). One block per slot; padding slots are left alone (the GEMMs never
// read them). The copy is exact: a permutation of bf16 values.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_gather_cols(const u16* __restrict__ src, int cols, int by_slot, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ perm, u16* __restrict__ dst) {
  const int slot = blockIdx.x;
  if (slot >= num_slots[0]) return;
  const int pair = sorted[slot];
  if (pair >= pairs) return;
  const int e = block_expert[slot / bt];
  if (e < 0) return;
  const u16* s = src + (long)(by_slot ? slot : pair / top_k) * cols;
  const int* pe = perm + (long)e * cols;
  u16* d = dst + (long)slot * cols;
  for (int c = threadIdx.x; c < cols; c += Q_THREADS) d[c] = s[pe[c]];
}

// Static fp8 scales calibrated per expert: codes[slot] = e4m3(clamp(x / s, -448, 448)) with
// s = expert_scales[e] for every slot in use, e = the slot's expert and x = its token's row
// (`by_slot` = 0: the hidden states) or the slot's own (1: the intermediate), as
// `fm_quant_rows` mode 3 rounds; scales[slot] = s, which the GEMMs then read per row (gemm1
// reads its input by slot). One block per slot; padding slots are left alone.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_quant_slots(const u16* __restrict__ src, int cols, int by_slot, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const float* __restrict__ expert_scales, u8* __restrict__ codes,
               float* __restrict__ scales) {
  const int slot = blockIdx.x;
  if (slot >= num_slots[0]) return;
  const int pair = sorted[slot];
  if (pair >= pairs) return;
  const int e = block_expert[slot / bt];
  if (e < 0) return;
  const float s = expert_scales[e];
  if (threadIdx.x == 0) scales[slot] = s;
  const u16* x = src + (long)(by_slot ? slot : pair / top_k) * cols;
  u8* q = codes + (long)slot * cols;
  if (cols % 8 == 0) {
    // Eight values per thread: one 16-byte load, one 8-byte store (rows stay aligned).
    for (int c = threadIdx.x * 8; c < cols; c += Q_THREADS * 8) {
      const uint4 v = *reinterpret_cast<const uint4*>(x + c);
      const u32 w[4] = {v.x, v.y, v.z, v.w};
      u32 o[2] = {0u, 0u};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float f = bf16_to_f32((u16)(j & 1 ? w[j / 2] >> 16 : w[j / 2] & 0xffffu));
        o[j / 4] |= (u32)f32_to_e4m3(fminf(fmaxf(f / s, -FM_E4M3_MAX), FM_E4M3_MAX)) << (8 * (j % 4));
      }
      *reinterpret_cast<uint2*>(q + c) = uint2{o[0], o[1]};
    }
    return;
  }
  for (int c = threadIdx.x; c < cols; c += Q_THREADS)
    q[c] = f32_to_e4m3(fminf(fmaxf(bf16_to_f32(x[c]) / s, -FM_E4M3_MAX), FM_E4M3_MAX));
}

// e4m3fn byte (sign ignored: block scales are >= 0) -> f32, exactly.
__device__ __forceinline__ float e4m3_to_f32_abs(u8 b) {
  const u32 ex = (b >> 3) & 0xfu, man = b & 7u;
  return ex == 0 ? (float)man * 0.001953125f : __uint_as_float(((ex + 120u) << 23) | (man << 20));
}

// Nearest e2m1 value (0, 0.5, 1, 1.5, 2, 3, 4, 6) of v, ties to the even code, sign kept
// (-0 for a negative value that rounds to zero), as `F4E2M1::from_f32`; |v| <= 6 here.
__device__ __forceinline__ float e2m1_round(float v) {
  const float a = fabsf(v);
  const float q = a <= 0.25f ? 0.0f
                  : a < 0.75f ? 0.5f
                  : a <= 1.25f ? 1.0f
                  : a < 1.75f ? 1.5f
                  : a <= 2.5f ? 2.0f
                  : a < 3.5f ? 3.0f
                  : a <= 5.0f ? 4.0f
                  : 6.0f;
  return copysignf(q, v);
}

// NVFP4 W4A4: the activation quantize-dequantize of the emulation (quant/activation.rs
// `nvfp4_block_qdq`, compressed-tensors' rule) per 16-element block of bf16 rows: block scale
// s = e4m3(min(global * (amax / 6), 448)), 0.125 where it is 0; step = s / global; q =
// e2m1(clamp(x / step, -6, 6)). The emulation's value is q * step; this writes q * s, which
// bf16 holds exactly (a 2-bit e2m1 significand times a 4-bit e4m3 one; 2^-10 .. 2688), and
// `factor_out[0]` = `step_factor` (the host's 1 / global), which the GEMM epilogue applies
// per tensor (`ascale` with stride 0): so the bf16 GEMM input carries no rounding and the
// only difference from the emulation is where f32 rounds the one per-tensor product.
// Divisions are IEEE (NVRTC's default -prec-div=true), as in Rust. Rows past `num_rows` or
// whose `sorted` entry is padding are skipped.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_nvfp4_qdq_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
                  const int* __restrict__ sorted, int pairs, float global, float step_factor,
                  u16* __restrict__ dst, float* __restrict__ factor_out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) factor_out[0] = step_factor;
  const int nr = num_rows ? min(rows, num_rows[0]) : rows;
  const int bpr = cols / 16;  // cols % 16 == 0
  const long total = (long)nr * bpr;
  for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long)gridDim.x * blockDim.x) {
    if (sorted && sorted[i / bpr] >= pairs) continue;
    const uint4* s = reinterpret_cast<const uint4*>(src + i * 16);
    const uint4 v0 = s[0], v1 = s[1];
    const u32 w[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    float x[16];
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      x[2 * j] = bf16_to_f32((u16)(w[j] & 0xffffu));
      x[2 * j + 1] = bf16_to_f32((u16)(w[j] >> 16));
      amax = fmaxf(amax, fmaxf(fabsf(x[2 * j]), fabsf(x[2 * j + 1])));
    }
    float sc = e4m3_to_f32_abs(f32_to_e4m3(fminf(global * (amax / 6.0f), FM_E4M3_MAX)));
    if (sc == 0.0f) sc = 0.125f;
    const float step = sc / global;
    u32 o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float lo = e2m1_round(fminf(fmaxf(x[2 * j] / step, -6.0f), 6.0f)) * sc;
      const float hi = e2m1_round(fminf(fmaxf(x[2 * j + 1] / step, -6.0f), 6.0f)) * sc;
      o[j] = (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
    }
    uint4* d = reinterpret_cast<uint4*>(dst + i * 16);
    d[0] = uint4{o[0], o[1], o[2], o[3]};
    d[1] = uint4{o[4], o[5], o[6], o[7]};
  }
}

// MX activations for the fp8 tensor cores (cuda-mx-fp8): each 32-column block of a bf16
// row is quantized as quant/activation.rs does (Quark's "even" shared exponent e, each
// element x / 2^e encoded in the MX element type `fmt`, FM_MX_* of minifloat.h), and the
// element's value — exact in e4m3, as every fp4 / fp6 value is — is stored as an e4m3fn
// byte: codes [rows, cols], scales [rows, cols / 32] = 2^e in f32, which the GEMM folds
// into each k32 partial sum. A block with a NaN gets a NaN scale (the emulation makes the
// whole block NaN). One warp per block, one lane per element; `sorted` / `pairs` skip
// padding rows as fm_quant_rows does.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_mx_quant_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
                 const int* __restrict__ sorted, int pairs, int fmt, u8* __restrict__ codes,
                 float* __restrict__ scales) {
  const int blocks = cols / 32;
  const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;  // the warp's MX block
  const int lane = threadIdx.x & 31;
  const int row = (int)(w / blocks), b = (int)(w % blocks);
  const int nr = num_rows ? min(rows, num_rows[0]) : rows;
  // The whole warp shares `row`, so these exits are uniform.
  if (row >= nr) return;
  if (sorted && sorted[row] >= pairs) return;
  const long at = (long)row * cols + b * 32 + lane;
  const float v = bf16_to_f32(src[at]);
  const bool nan = __any_sync(0xffffffffu, v != v);  // warp_max's fmaxf would skip it
  const float m = warp_max(fabsf(v));
  if (nan) {
    codes[at] = 0;
    if (lane == 0) scales[(long)row * blocks + b] = __uint_as_float(0x7fc00000u);
    return;
  }
  const int e = mx_shared_exponent(m, fmt);
  const float s = exp2i(e);
  codes[at] = f32_to_e4m3(mx_decode(mx_encode(v / s, fmt), fmt));
  if (lane == 0) scales[(long)row * blocks + b] = s;
}
