// LoRA deltas for the routed experts, next to the quantized base GEMMs (never by
// dequantizing them): for each expert-sorted slot whose token has an adapter,
//   shrink:  t[slot, r]     = sum_k A[adapter, expert][r, k] * x[row, k]
//   expand:  delta[slot, n] = sum_r B[adapter, expert][r, n] * t[slot, r]
// in f32, with the adapter's scaling folded into B on the host. gemm.cu's epilogues add
// `delta` where the emulation adds it: gate/up before the activation, down before the
// router-weighted combine. Tokens without an adapter (adapter < 0) are skipped; the GEMMs
// check the same index, so their delta rows are never read.
//
// Both kernels are segmented GEMMs over one token block (one expert) at a time. The
// block's live slots are listed once, in parallel, sorted by adapter, so neither kernel
// walks padding slots one dependent load after another, and a run of slots with one
// adapter shares each A or B value loaded (kernels-cuda/NOTES.md, 2026-12-06, has the
// earlier designs and why they lost: they walked the slots serially or took blocks from
// the grid). The shrink splits K across the grid (`splits` partial sums per slot, added
// by the expand in a fixed order, so results do not depend on scheduling).

#define LR_THREADS 256
#define LR_MAX_BT 256
// Slots per shrink pass (registers per thread) and x columns staged per step.
#define LR_GROUP 8
#define LR_KSTEP 256
// Ranks per expand pass (B held in registers) and slots whose t is staged at once.
#define LR_RCHUNK 64
#define LR_SGROUP 32

// The block's live slots (in range, not padding, token with an adapter) sorted by adapter,
// ties by slot: their slot, x row and adapter, and how many there are. Every thread gets
// the same count, so callers' loops and barriers stay uniform.
__device__ __forceinline__ int lora_live(int tb, int bt, int x_by_slot, const int* num_slots,
                                         const int* sorted, int pairs, int top_k,
                                         const int* token_adapter, int* s_slot, int* s_row,
                                         int* s_ad, int* s_raw_ad, int* s_raw_row) {
  const int j = threadIdx.x;
  int ad = -1, row = 0;
  if (j < bt) {
    const int slot = tb * bt + j;
    if (slot < num_slots[0]) {
      const int pair = sorted[slot];
      if (pair < pairs) {
        ad = token_adapter[pair / top_k];
        row = x_by_slot ? slot : pair / top_k;
      }
    }
    s_raw_ad[j] = ad;
    s_raw_row[j] = row;
  }
  const int live = __syncthreads_count(ad >= 0);
  if (ad >= 0) {
    int pos = 0;
    for (int i = 0; i < bt; ++i) {
      const int o = s_raw_ad[i];
      pos += (o >= 0) & ((o < ad) | ((o == ad) & (i < j)));
    }
    s_slot[pos] = tb * bt + j;
    s_row[pos] = row;
    s_ad[pos] = ad;
  }
  __syncthreads();
  return live;
}

__device__ __forceinline__ float x_value(const u16* xr, int k, int is_f16) {
  return is_f16 ? f16_to_f32(xr[k]) : bf16_to_f32(xr[k]);
}

// grid (token blocks, splits): a block takes K columns [split * kc, split * kc + kc) of
// every live slot of its token block, LR_GROUP slots at a time. Threads are (rank, K
// part): min(R, 256) ranks per pass, rounded to a warp, and 256 / that many parts of each
// staged step, reduced through shared memory at the end of the pass. The group's x rows
// are staged in shared memory (read once per pass, not once per rank); A comes through L1,
// once per group when the group has one adapter. t is `[splits][slots][R]`; x rows are
// bf16 (or f16 when is_f16), by token (x_by_slot = 0: gemm1's input) or by slot (1).
extern "C" __global__ void __launch_bounds__(LR_THREADS)
fm_lora_shrink(const u16* __restrict__ x, int x_by_slot, int is_f16, int K,
               const int* __restrict__ sorted, const int* __restrict__ num_slots,
               const int* __restrict__ block_expert, int bt, int pairs, int top_k,
               const int* __restrict__ token_adapter, int experts, const float* __restrict__ A,
               int R, float* __restrict__ t, int kc, int slots) {
  const int tb = blockIdx.x, split = blockIdx.y;
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  if (e < 0) return;
  __shared__ int s_slot[LR_MAX_BT], s_row[LR_MAX_BT], s_ad[LR_MAX_BT];
  __shared__ int s_raw_ad[LR_MAX_BT], s_raw_row[LR_MAX_BT];
  __shared__ __align__(16) float xs[LR_GROUP][LR_KSTEP];
  __shared__ float part[LR_THREADS * LR_GROUP];
  const int n = lora_live(tb, bt, x_by_slot, num_slots, sorted, pairs, top_k, token_adapter,
                          s_slot, s_row, s_ad, s_raw_ad, s_raw_row);
  const int k_begin = split * kc, k_end = min(K, k_begin + kc);
  const int rt = min(LR_THREADS, (R + 31) / 32 * 32);  // ranks per pass
  const int parts = LR_THREADS / rt;                     // K parts per staged step
  const int rl = threadIdx.x % rt, part_id = threadIdx.x / rt;
  const bool vec = (K & 3) == 0;
  for (int g0 = 0; g0 < n; g0 += LR_GROUP) {
    const int gn = min(LR_GROUP, n - g0);
    const bool one_adapter = s_ad[g0] == s_ad[g0 + gn - 1];  // sorted by adapter
    for (int r0 = 0; r0 < R; r0 += rt) {
      const int r = r0 + rl;
      float acc[LR_GROUP];
#pragma unroll
      for (int s = 0; s < LR_GROUP; ++s) acc[s] = 0.0f;
      for (int k0 = k_begin; k0 < k_end; k0 += LR_KSTEP) {
        const int kn = min(LR_KSTEP, k_end - k0);
        __syncthreads();
        for (int idx = threadIdx.x; idx < LR_GROUP * LR_KSTEP; idx += LR_THREADS) {
          const int s = idx / LR_KSTEP, kk = idx % LR_KSTEP;
          float v = 0.0f;
          if (s < gn && kk < kn) v = x_value(x + (long)s_row[g0 + s] * K, k0 + kk, is_f16);
          xs[s][kk] = v;
        }
        __syncthreads();
        if (r >= R) continue;
        // This thread's share of the step, in fours (zero-padded past kn in xs).
        const int per = (kn + 4 * parts - 1) / (4 * parts) * 4;
        const int kb = part_id * per, ke = min(kn, kb + per);
        if (one_adapter) {
          const float* ar = A + (((long)s_ad[g0] * experts + e) * R + r) * K + k0;
          for (int kk = kb; kk < ke; kk += 4) {
            float4 a;
            if (vec) {
              a = __ldg(reinterpret_cast<const float4*>(ar + kk));
            } else {
              a.x = __ldg(ar + kk);
              a.y = kk + 1 < ke ? __ldg(ar + kk + 1) : 0.0f;
              a.z = kk + 2 < ke ? __ldg(ar + kk + 2) : 0.0f;
              a.w = kk + 3 < ke ? __ldg(ar + kk + 3) : 0.0f;
            }
#pragma unroll
            for (int s = 0; s < LR_GROUP; ++s) {
              const float4 v = *reinterpret_cast<const float4*>(&xs[s][kk]);
              acc[s] += a.x * v.x + a.y * v.y + a.z * v.z + a.w * v.w;
            }
          }
        } else {
          // Unrolled with constant indices so acc stays in registers.
#pragma unroll
          for (int s = 0; s < LR_GROUP; ++s) {
            if (s >= gn) continue;
            const float* ar = A + (((long)s_ad[g0 + s] * experts + e) * R + r) * K + k0;
            float sum = 0.0f;
            for (int kk = kb; kk < ke; ++kk) sum += __ldg(ar + kk) * xs[s][kk];
            acc[s] += sum;
          }
        }
      }
      // Sum the K parts: part[(s * parts + part_id) * rt + rl].
      __syncthreads();
#pragma unroll
      for (int s = 0; s < LR_GROUP; ++s) part[(s * parts + part_id) * rt + rl] = acc[s];
      __syncthreads();
      for (int idx = threadIdx.x; idx < gn * rt; idx += LR_THREADS) {
        const int s = idx / rt, q = idx % rt;
        if (r0 + q >= R) continue;
        float sum = 0.0f;
        for (int p = 0; p < parts; ++p) sum += part[(s * parts + p) * rt + q];
        t[((long)split * slots + s_slot[g0 + s]) * R + r0 + q] = sum;
      }
    }
  }
}

// grid (token blocks, ceil(N / 256)): one output column per thread. For each run of live
// slots with one adapter the thread holds that adapter's B column (LR_RCHUNK ranks at a
// time) in registers and applies it to every slot of the run; t (the shrink's `splits`
// partial sums, added here in split order) is staged in shared memory LR_SGROUP slots at a
// time. B is `[adapter, expert][R, N]`, so a warp's 32 columns are one coalesced read.
extern "C" __global__ void __launch_bounds__(LR_THREADS)
fm_lora_expand(const float* __restrict__ t, int R, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const int* __restrict__ token_adapter, int experts,
               const float* __restrict__ B, int N, float* __restrict__ delta, int splits,
               int slots) {
  const int tb = blockIdx.x;
  if (tb * bt >= num_slots[0]) return;
  const int e = block_expert[tb];
  if (e < 0) return;
  __shared__ int s_slot[LR_MAX_BT], s_row[LR_MAX_BT], s_ad[LR_MAX_BT];
  __shared__ int s_raw_ad[LR_MAX_BT], s_raw_row[LR_MAX_BT];
  __shared__ __align__(16) float ts[LR_SGROUP][LR_RCHUNK];
  const int n_live = lora_live(tb, bt, 1, num_slots, sorted, pairs, top_k, token_adapter,
                               s_slot, s_row, s_ad, s_raw_ad, s_raw_row);
  const int n = blockIdx.y * LR_THREADS + threadIdx.x;
  for (int r0 = 0; r0 < R; r0 += LR_RCHUNK) {
    const int rn = min(LR_RCHUNK, R - r0);
    float b[LR_RCHUNK];
    int held = -1;  // the adapter whose B column is in b
    for (int g0 = 0; g0 < n_live; g0 += LR_SGROUP) {
      const int gn = min(LR_SGROUP, n_live - g0);
      __syncthreads();
      for (int idx = threadIdx.x; idx < gn * LR_RCHUNK; idx += LR_THREADS) {
        const int s = idx / LR_RCHUNK, q = idx % LR_RCHUNK;
        float sum = 0.0f;
        if (q < rn) {
          const float* tp = t + (long)s_slot[g0 + s] * R + r0 + q;
          for (int p = 0; p < splits; ++p) sum += tp[(long)p * slots * R];
        }
        ts[s][q] = sum;
      }
      __syncthreads();
      if (n >= N) continue;
      for (int s = 0; s < gn; ++s) {
        const int a = s_ad[g0 + s];
        if (a != held) {
          const float* bc = B + ((long)a * experts + e) * R * N + (long)r0 * N + n;
#pragma unroll
          for (int q = 0; q < LR_RCHUNK; ++q) b[q] = q < rn ? __ldg(bc + (long)q * N) : 0.0f;
          held = a;
        }
        float d = 0.0f;
#pragma unroll
        for (int q = 0; q < LR_RCHUNK; q += 4) {
          const float4 v = *reinterpret_cast<const float4*>(&ts[s][q]);
          d += b[q] * v.x + b[q + 1] * v.y + b[q + 2] * v.z + b[q + 3] * v.w;
        }
        float* out = delta + (long)s_slot[g0 + s] * N + n;
        *out = r0 == 0 ? d : *out + d;
      }
    }
  }
}
