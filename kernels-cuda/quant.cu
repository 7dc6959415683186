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
// per 128 columns, 3 = static (scale `static_scale`). Writes codes [rows, cols] and scales:
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
  if (mode == 1) {
    float m = 0.0f;
    for (int c = tid; c < cols; c += Q_THREADS) m = fmaxf(m, fabsf(bf16_to_f32(x[c])));
    m = warp_max(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    if (tid < 32) {
      float v = tid < Q_THREADS / 32 ? red[tid] : 0.0f;
      v = warp_max(v);
      if (tid == 0) row_scale = scale_from_amax(v);
    }
    __syncthreads();
    s = row_scale;
    if (tid == 0) scales[row] = s;
  } else {
    s = mode == 0 ? scale_from_amax(__uint_as_float(amax[0])) : static_scale;
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
