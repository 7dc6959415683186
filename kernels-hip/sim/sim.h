// CPU simulator for the HIP kernels (host C++20, `-DFM_SIM -DFM_SIM_GFX=942|950|90`).
// A workgroup runs as one host thread per lane; wave-wide operations (lane exchange,
// matrix instructions) meet at a per-wave barrier, workgroup barriers at a per-group one.
// Matrix instructions are computed in software from the lane layouts the kernels assume
// (see sim_mfma.h), so the simulator checks the kernels' logic and the host code, not the
// hardware's layouts.
#pragma once
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __shared__ static
#define __launch_bounds__(n)
#define FM_INLINE static inline
#define FM_DYNAMIC_SHARED(T, name) T* name = (T*)fm_sim::dynamic_shared()
#define FM_TRAP() __builtin_trap()
// u8 ... v8i and FM_WAVE come from prelude.h, which includes this file.

#if FM_SIM_GFX == 942 || FM_SIM_GFX == 950
#define FM_HAS_FP8_MFMA 1
#endif
#if FM_SIM_GFX == 950
#define FM_HAS_SCALED_MFMA 1
#endif

namespace fm_sim {
struct Wave {
  std::barrier<>* bar;
  alignas(16) unsigned char slots[FM_WAVE][64];
};
struct Block {
  int dim, gx, gy, bx, by;
  std::barrier<>* bar;
  std::vector<Wave*> waves;
  std::vector<unsigned char> dyn;
};
inline thread_local Block* t_block;
inline thread_local int t_tid;
inline void* dynamic_shared() { return t_block->dyn.data(); }
inline Wave& wave() { return *t_block->waves[t_tid / FM_WAVE]; }
// Every lane's `bytes`-byte value (lane order) into `all`.
inline void exchange(const void* mine, size_t bytes, void* all) {
  Wave& w = wave();
  std::memcpy(w.slots[t_tid % FM_WAVE], mine, bytes);
  w.bar->arrive_and_wait();
  for (int l = 0; l < FM_WAVE; ++l) std::memcpy((char*)all + l * bytes, w.slots[l], bytes);
  w.bar->arrive_and_wait();
}
}  // namespace fm_sim

FM_INLINE int tid_x() { return fm_sim::t_tid; }
FM_INLINE int bid_x() { return fm_sim::t_block->bx; }
FM_INLINE int bid_y() { return fm_sim::t_block->by; }
FM_INLINE int bdim_x() { return fm_sim::t_block->dim; }
FM_INLINE int gdim_x() { return fm_sim::t_block->gx; }
FM_INLINE void sync_threads() { fm_sim::t_block->bar->arrive_and_wait(); }
FM_INLINE void wave_barrier() { fm_sim::wave().bar->arrive_and_wait(); }
FM_INLINE int lane_value(int v, int src) {
  int all[FM_WAVE];
  fm_sim::exchange(&v, sizeof v, all);
  return all[src & (FM_WAVE - 1)];
}
FM_INLINE int atomic_add_i(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
FM_INLINE void atomic_add_f(float* p, float v) { std::atomic_ref<float>(*p).fetch_add(v); }
FM_INLINE void atomic_max_u(u32* p, u32 v) {
  std::atomic_ref<u32> a(*p);
  u32 cur = a.load();
  while (cur < v && !a.compare_exchange_weak(cur, v)) {
  }
}
