// LoRA deltas for the routed experts, next to the quantized base GEMMs (never by
// dequantizing them) — kernels-cuda/lora.cu's twin, same arguments, same packing
// (src/gpu/lora.rs): for each expert-sorted slot whose token has an adapter,
//   shrink:  t[slot, r]     = sum_k A[adapter, expert][r, k] * x[row, k]
//   expand:  delta[slot, n] = sum_r B[adapter, expert][r, n] * t[slot, r]
// in f32, with the adapter's scaling folded into B on the host. gemm.hip's epilogues add
// `delta` where the emulation adds it: gate/up before the activation (stage 1 stores
// them into the rows fm_act reads), down before the router-weighted combine. Tokens
// without an adapter (adapter < 0) are skipped; the GEMMs check the same index, so their
// delta rows are never read.
#include "prelude.h"

#define L_THREADS 256
#define L_WAVES (L_THREADS / FM_WAVE)

FM_INLINE bool lora_slot(int slot, const int* num_slots, const int* sorted, int pairs, int top_k,
                         const int* token_adapter, int* pair_out, int* adapter_out) {
  if (slot >= num_slots[0]) return false;
  const int pair = sorted[slot];
  if (pair >= pairs) return false;
  const int a = token_adapter[pair / top_k];
  if (a < 0) return false;
  *pair_out = pair;
  *adapter_out = a;
  return true;
}

// grid (token blocks, R): one workgroup per (token block, row of A); its four wavefronts
// take the block's slots (all of one expert) in turn, each slot's K split across the 64
// lanes and summed in the wavefront, so no workgroup barrier is needed. x rows are bf16
// (or f16 when is_f16), indexed by token (x_by_slot = 0: gemm1's input) or by slot
// (1: gemm2's input, the activation before its quantization).
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_shrink(const u16* __restrict__ x, int x_by_slot, int is_f16, int K,
               const int* __restrict__ sorted, const int* __restrict__ num_slots,
               const int* __restrict__ block_expert, int bt, int pairs, int top_k,
               const int* __restrict__ token_adapter, int experts, const float* __restrict__ A,
               int R, float* __restrict__ t) {
  const int tb = bid_x(), r = bid_y();
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  if (e < 0) return;
  const int lane = tid_x() % FM_WAVE, wave = tid_x() / FM_WAVE;
  for (int j = wave; j < bt; j += L_WAVES) {
    const int slot = tb * bt + j;
    int pair, a;
    // The same answer for every lane of the wavefront, so wave_sum below stays uniform.
    if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) continue;
    const u16* xr = x + (long)(x_by_slot ? slot : pair / top_k) * K;
    const float* ar = A + (((long)a * experts + e) * R + r) * K;
    float s = 0.0f;
    for (int k = lane; k < K; k += FM_WAVE) s += ar[k] * model_to_f32(xr[k], is_f16);
    s = wave_sum(s);
    if (lane == 0) t[(long)slot * R + r] = s;
  }
}

// grid (token blocks, ceil(N / L_THREADS)): one output row per lane, walking the block's
// slots so the adapter's columns are re-read from cache after the first slot. B is stored
// transposed, [adapter, expert][R, N], so a wavefront's 64 rows are one coalesced read per
// rank; t[slot, r] is the same for every lane (a broadcast load).
extern "C" __global__ void __launch_bounds__(L_THREADS)
fm_lora_expand(const float* __restrict__ t, int R, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ token_adapter, int experts,
               const float* __restrict__ B, int N, float* __restrict__ delta) {
  const int tb = bid_x();
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  const int n = bid_y() * L_THREADS + tid_x();
  if (e < 0 || n >= N) return;
  for (int j = 0; j < bt; ++j) {
    const int slot = tb * bt + j;
    int pair, a;
    if (!lora_slot(slot, num_slots, sorted, pairs, top_k, token_adapter, &pair, &a)) continue;
    const float* bcol = B + ((long)a * experts + e) * R * N + n;
    const float* ts = t + (long)slot * R;
    float s = 0.0f;
    for (int r = 0; r < R; ++r) s += bcol[(long)r * N] * ts[r];
    delta[(long)slot * N + n] = s;
  }
}
