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

// One block per slot; each warp takes rows r of A. x rows are bf16 (or f16 when is_f16),
// indexed by token (x_by_slot = 0: gemm1's input) or by slot (1: gemm2's input).
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_shrink(const u16* __restrict__ x, int x_by_slot, int is_f16, int K,
               const int* __restrict__ sorted, const int* __restrict__ num_slots,
               const int* __restrict__ block_expert, int bt, int pairs, int top_k,
               const int* __restrict__ token_adapter, int experts, const float* __restrict__ A,
               int R, float* __restrict__ t) {
  const int slot = blockIdx.x;
  int pair, a;
  if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) return;
  const int e = block_expert[slot / bt];
  const u16* xr = x + (long)(x_by_slot ? slot : pair / top_k) * K;
  const float* Ae = A + ((long)a * experts + e) * R * K;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < R; r += L_THREADS / 32) {
    const float* ar = Ae + (long)r * K;
    float s = 0.0f;
    for (int k = lane; k < K; k += 32) s += ar[k] * (is_f16 ? f16_to_f32(xr[k]) : bf16_to_f32(xr[k]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) t[(long)slot * R + r] = s;
  }
}

// grid (slots, ceil(N / L_THREADS)): one output row per thread.
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_expand(const float* __restrict__ t, int R, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ token_adapter, int experts,
               const float* __restrict__ B, int N, float* __restrict__ delta) {
  const int slot = blockIdx.x;
  int pair, a;
  if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) return;
  const int n = blockIdx.y * L_THREADS + threadIdx.x;
  if (n >= N) return;
  const int e = block_expert[slot / bt];
  const float* br = B + (((long)a * experts + e) * N + n) * R;
  const float* tr = t + (long)slot * R;
  float s = 0.0f;
  for (int r = 0; r < R; ++r) s += br[r] * tr[r];
  delta[(long)slot * N + n] = s;
}
