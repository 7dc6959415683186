// LoRA deltas for the routed experts, next to the quantized base GEMMs (never by
// dequantizing them): for each expert-sorted slot whose token has an adapter,
//   shrink:  t[slot, r]     = sum_k A[adapter, expert][r, k] * x[row, k]
//   expand:  delta[slot, n] = sum_r B[adapter, expert][n, r] * t[slot, r]
// in f32, with the adapter's scaling folded into B on the host. gemm.cu's epilogues add
// `delta` where the emulation adds it: gate/up before the activation, down before the
// router-weighted combine. Tokens without an adapter (adapter < 0) are skipped; the GEMMs
// check the same index, so their delta rows are never read.

#define L_THREADS 256

__device__ __forceinline__ bool lora_slot(int slot, const int* num_slots, const int* sorted, int pairs,
                                          int top_k, const int* token_adapter, int* pair_out,
                                          int* adapter_out) {
  if (slot >= num_slots[0]) return false;
  const int pair = sorted[slot];
  if (pair >= pairs) return false;
  const int a = token_adapter[pair / top_k];
  if (a < 0) return false;
  *pair_out = pair;
  *adapter_out = a;
  return true;
}

// grid (slots, R): one block of S_THREADS per (slot, row of A), K split across the
// threads, so many independent loads are in flight even for a single token (a decode step
// is latency-bound otherwise). x rows are bf16 (or f16 when is_f16), indexed by token
// (x_by_slot = 0: gemm1's input) or by slot (1: gemm2's input).
#define S_THREADS 128
extern "C" __global__ void __launch_bounds__(S_THREADS)
fm_lora_shrink(const u16* __restrict__ x, int x_by_slot, int is_f16, int K,
               const int* __restrict__ sorted, const int* __restrict__ num_slots,
               const int* __restrict__ block_expert, int bt, int pairs, int top_k,
               const int* __restrict__ token_adapter, int experts, const float* __restrict__ A,
               int R, float* __restrict__ t) {
  const int slot = blockIdx.x, r = blockIdx.y;
  int pair, a;
  if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) return;
  const int e = block_expert[slot / bt];
  const u16* xr = x + (long)(x_by_slot ? slot : pair / top_k) * K;
  const float* ar = A + (((long)a * experts + e) * R + r) * K;
  float s = 0.0f;
#pragma unroll 4
  for (int k = threadIdx.x; k < K; k += S_THREADS)
    s += ar[k] * (is_f16 ? f16_to_f32(xr[k]) : bf16_to_f32(xr[k]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  __shared__ float part[S_THREADS / 32];
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < S_THREADS / 32; ++w) total += part[w];
    t[(long)slot * R + r] = total;
  }
}

// grid (slots, ceil(N / L_THREADS)): one output row per thread. B is stored transposed,
// [adapter, expert][R, N], so a warp's 32 rows are one coalesced read per rank.
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_expand(const float* __restrict__ t, int R, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ token_adapter, int experts,
               const float* __restrict__ B, int N, float* __restrict__ delta) {
  const int slot = blockIdx.x;
  int pair, a;
  if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) return;
  __shared__ float ts[256];
  for (int r = threadIdx.x; r < R && r < 256; r += L_THREADS) ts[r] = t[(long)slot * R + r];
  __syncthreads();
  const int n = blockIdx.y * L_THREADS + threadIdx.x;
  if (n >= N) return;
  const int e = block_expert[slot / bt];
  const float* bt_ = B + ((long)a * experts + e) * R * N + n;
  float s = 0.0f;
#pragma unroll 8
  for (int r = 0; r < R; ++r) s += bt_[(long)r * N] * ts[r];
  delta[(long)slot * N + n] = s;
}
