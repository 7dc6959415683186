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

// grid (token blocks, R): one block of S_THREADS per (token block, row of A). It walks the
// block's slots (all of one expert), so an adapter's row is read from memory once per block
// and from L1 for the other slots; K is split across the threads, so many independent loads
// are in flight even for a single token. x rows are bf16 (or f16 when is_f16), indexed by
// token (x_by_slot = 0: gemm1's input) or by slot (1: gemm2's input).
#define S_THREADS 128
extern "C" __global__ void __launch_bounds__(S_THREADS)
fm_lora_shrink(const u16* __restrict__ x, int x_by_slot, int is_f16, int K,
               const int* __restrict__ sorted, const int* __restrict__ num_slots,
               const int* __restrict__ block_expert, int bt, int pairs, int top_k,
               const int* __restrict__ token_adapter, int experts, const float* __restrict__ A,
               int R, float* __restrict__ t) {
  const int tb = blockIdx.x, r = blockIdx.y;
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  if (e < 0) return;
  __shared__ float part[S_THREADS / 32];
  for (int j = 0; j < bt; ++j) {
    const int slot = tb * bt + j;
    int pair, a;
    // The same answer for every thread, so the barriers below stay uniform.
    if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) continue;
    const u16* xr = x + (long)(x_by_slot ? slot : pair / top_k) * K;
    const float* ar = A + (((long)a * experts + e) * R + r) * K;
    float s = 0.0f;
#pragma unroll 4
    for (int k = threadIdx.x; k < K; k += S_THREADS)
      s += __ldg(ar + k) * (is_f16 ? f16_to_f32(xr[k]) : bf16_to_f32(xr[k]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      float total = 0.0f;
      for (int w = 0; w < S_THREADS / 32; ++w) total += part[w];
      t[(long)slot * R + r] = total;
    }
    __syncthreads();
  }
}

// grid (token blocks, ceil(N / L_THREADS)): one output row per thread, walking the block's
// slots so the adapter's columns come from L1 after the first slot. B is stored transposed,
// [adapter, expert][R, N], so a warp's 32 rows are one coalesced read per rank.
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_expand(const float* __restrict__ t, int R, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ token_adapter, int experts,
               const float* __restrict__ B, int N, float* __restrict__ delta) {
  const int tb = blockIdx.x;
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  if (e < 0) return;
  __shared__ float ts[L_THREADS];
  const int n = blockIdx.y * L_THREADS + threadIdx.x;
  for (int j = 0; j < bt; ++j) {
    const int slot = tb * bt + j;
    int pair, a;
    if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) continue;
    const float* bt_ = B + ((long)a * experts + e) * R * N + n;
    float s = 0.0f;
    // Ranks above L_THREADS (2 x rank for gate|up) go through shared memory in chunks.
    for (int r0 = 0; r0 < R; r0 += L_THREADS) {
      const int rn = min(L_THREADS, R - r0);
      if (threadIdx.x < rn) ts[threadIdx.x] = t[(long)slot * R + r0 + threadIdx.x];
      __syncthreads();
      if (n < N) {
#pragma unroll 8
        for (int r = 0; r < rn; ++r) s += __ldg(bt_ + (long)(r0 + r) * N) * ts[r];
      }
      __syncthreads();
    }
    if (n < N) delta[(long)slot * N + n] = s;
  }
}

