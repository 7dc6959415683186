// Routing alignment, as kernels-cuda/align.cu: (token, choice) pairs sorted by expert,
// each expert's run padded to a multiple of the GEMM's token tile. One workgroup, no host
// synchronisation.
//
// Outputs:
//   sorted[slot]       pair id (token * top_k + choice) or `pairs` for a padding slot
//   block_expert[b]    expert of token block b, -1 past the last used block
//   num_slots[0]       slots in use (a multiple of bt)
//   expert_counts[e]   pairs routed to expert e
// Dynamic LDS: 3 * E + 1 ints.
#include "prelude.h"

#define ALIGN_THREADS 1024

extern "C" __global__ void __launch_bounds__(ALIGN_THREADS)
fm_align(const int* __restrict__ ids, int pairs, int num_experts, int bt, int max_blocks,
         int* __restrict__ sorted, int* __restrict__ block_expert, int* __restrict__ num_slots,
         int* __restrict__ expert_counts) {
  FM_DYNAMIC_SHARED(int, sm);
  int* cnt = sm;                       // [E]
  int* off = sm + num_experts;         // [E + 1], padded exclusive prefix
  int* cursor = off + num_experts + 1; // [E]
  const int tid = tid_x(), nt = bdim_x();

  for (int e = tid; e < num_experts; e += nt) { cnt[e] = 0; cursor[e] = 0; }
  sync_threads();
  for (int p = tid; p < pairs; p += nt) {
    const int e = ids[p];
    if (e >= 0 && e < num_experts) atomic_add_i(&cnt[e], 1);
  }
  sync_threads();
  // Padded sizes, then a serial prefix by one lane (E is at most a few hundred).
  if (tid == 0) {
    off[0] = 0;
    for (int e = 0; e < num_experts; ++e) off[e + 1] = off[e] + (cnt[e] + bt - 1) / bt * bt;
  }
  sync_threads();
  const int total = off[num_experts];
  for (int e = tid; e < num_experts; e += nt) {
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
  for (int b = total / bt + tid; b < max_blocks; b += nt) block_expert[b] = -1;
  for (int p = tid; p < pairs; p += nt) {
    const int e = ids[p];
    if (e >= 0 && e < num_experts) {
      const int pos = atomic_add_i(&cursor[e], 1);
      sorted[off[e] + pos] = p;
    }
  }
  if (tid == 0) num_slots[0] = total;
}
