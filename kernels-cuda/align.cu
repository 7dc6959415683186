// Routing alignment: (token, choice) pairs sorted by expert, each expert's run padded to a
// multiple of the GEMM's token tile. One block, no host synchronisation, so it can live
// inside a CUDA graph.
//
// Outputs:
//   sorted[slot]       pair id (token * top_k + choice) or `pairs` for a padding slot
//   block_expert[b]    expert of token block b, -1 past the last used block
//   num_slots[0]       slots in use (a multiple of bt)
//   expert_counts[e]   pairs routed to expert e (for expert parallelism)
// Dynamic shared memory: 3 * E + 1 ints.

#define ALIGN_THREADS 1024

extern "C" __global__ void __launch_bounds__(ALIGN_THREADS)
fm_align(const int* __restrict__ ids, int pairs, int num_experts, int bt, int max_blocks,
         int* __restrict__ sorted, int* __restrict__ block_expert, int* __restrict__ num_slots,
         int* __restrict__ expert_counts) {
  extern __shared__ int sm[];
  int* cnt = sm;                       // [E]
  int* off = sm + num_experts;         // [E + 1], padded exclusive prefix
  int* cursor = off + num_experts + 1; // [E]
  const int tid = threadIdx.x;

  for (int e = tid; e < num_experts; e += blockDim.x) { cnt[e] = 0; cursor[e] = 0; }
  __syncthreads();
  for (int p = tid; p < pairs; p += blockDim.x) {
    int e = ids[p];
    if (e >= 0 && e < num_experts) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();

  // Padded sizes, then an inclusive scan in chunks of blockDim.x: shuffles within each
  // warp, then across the warp totals (two barriers per chunk, whatever E is).
  for (int e = tid; e < num_experts; e += blockDim.x) off[e + 1] = (cnt[e] + bt - 1) / bt * bt;
  if (tid == 0) off[0] = 0;
  __shared__ int warp_total[ALIGN_THREADS / 32];
  const int lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  int carry = 0;
  __syncthreads();
  for (int base = 0; base < num_experts; base += blockDim.x) {
    const int i = base + tid;
    int v = i < num_experts ? off[i + 1] : 0;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, v, d);
      if (lane >= d) v += u;
    }
    if (lane == 31) warp_total[warp] = v;
    __syncthreads();
    if (warp == 0) {
      int w = lane < warps ? warp_total[lane] : 0;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int u = __shfl_up_sync(0xffffffffu, w, d);
        if (lane >= d) w += u;
      }
      if (lane < warps) warp_total[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += warp_total[warp - 1];
    if (i < num_experts) off[i + 1] = v + carry;
    carry += warp_total[warps - 1];
    __syncthreads();
  }
  const int total = off[num_experts];

  for (int e = tid; e < num_experts; e += blockDim.x) {
    if (expert_counts) expert_counts[e] = cnt[e];
    // FM_FAULT_*: a planted bug for the mutation tests (src/fault.rs), never in a release.
#ifdef FM_FAULT_EXPERT_ID_OFF_BY_ONE
    const int be = (e + 1) % num_experts;
#else
    const int be = e;
#endif
    for (int b = off[e] / bt; b < off[e + 1] / bt; ++b) block_expert[b] = be;
    for (int s = off[e] + cnt[e]; s < off[e + 1]; ++s) sorted[s] = pairs;
  }
  for (int b = total / bt + tid; b < max_blocks; b += blockDim.x) block_expert[b] = -1;
  for (int p = tid; p < pairs; p += blockDim.x) {
    int e = ids[p];
    if (e >= 0 && e < num_experts) {
      int pos = atomicAdd(&cursor[e], 1);
      sorted[off[e] + pos] = p;
    }
  }
  if (tid == 0) num_slots[0] = total;
}
