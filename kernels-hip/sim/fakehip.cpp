// A stand-in for the HIP runtime (`libamdhip64`) that runs fleetmoe's kernels on the CPU
// through the simulator, so `HipDevice` and `HipExperts` can be driven end to end on a
// machine without an AMD GPU (tests/rocm_sim.rs). It implements exactly the entry points
// src/device/hip/runtime.rs opens; "device memory" is host memory, streams are
// synchronous, and a module's code object is ignored: kernels are looked up by name among
// the simulated ones. Build: clang++ -std=c++20 -O2 -shared -fPIC -DFM_SIM
// -DFM_SIM_GFX=942 (or 950, 90) -I kernels-hip kernels-hip/sim/fakehip.cpp -o libfakehip.so
#include "../align.hip"
#include "../gemm.hip"
#include "../lora.hip"
#include "../quant.hip"
#include "../route.hip"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

namespace {

using Call = std::function<void(void**)>;

template <typename... A, size_t... I>
void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
  f(*static_cast<std::remove_reference_t<A>*>(p[I])...);
}
template <typename... A>
Call wrap(void (*f)(A...)) {
  return [f](void** p) { call_with(f, p, std::index_sequence_for<A...>{}); };
}

struct Kernel {
  const char* name;
  Call call;
};

#define FM_K(n) Kernel{#n, wrap(n)}
const Kernel kKernels[] = {
    FM_K(fm_align),          FM_K(fm_route),           FM_K(fm_amax_rows),
    FM_K(fm_quant_rows),     FM_K(fm_mx_quant_rows),   FM_K(fm_act),
    FM_K(fm_scale_rows),     FM_K(fm_gemm_bf16_up),    FM_K(fm_gemm_bf16_down),
    FM_K(fm_gemm_f16_up),    FM_K(fm_gemm_f16_down),   FM_K(fm_gemm_fp8_up),
    FM_K(fm_gemm_fp8_down),  FM_K(fm_gemm_mxa16_up), FM_K(fm_gemm_mxa16_down),
    FM_K(fm_gemm_mx_up),     FM_K(fm_gemm_mx_down),   FM_K(fm_gemm_wna16_up),
    FM_K(fm_gemm_wna16_down), FM_K(fm_gemm_nvfp4a16_up), FM_K(fm_gemm_nvfp4a16_down),
    FM_K(fm_gemm_mxfp8_up), FM_K(fm_gemm_mxfp8_down), FM_K(fm_gemm_w8a8_up),
    FM_K(fm_gemm_w8a8_down), FM_K(fm_gemm_w4a8_up), FM_K(fm_gemm_w4a8_down),
    FM_K(fm_nvfp4_qdq_rows), FM_K(fm_quant_slots),    FM_K(fm_shared_gate),
    FM_K(fm_finalize),       FM_K(fm_clamp_slots),     FM_K(fm_lora_shrink),
    FM_K(fm_lora_expand),
};

// Runs the grid one workgroup at a time on `dim` host threads that live for the whole
// launch; each workgroup gets fresh barriers (a lane that returns leaves them).
void run(const Kernel& k, unsigned gx, unsigned gy, unsigned dim, unsigned smem, void** params) {
  const unsigned waves = (dim + FM_WAVE - 1) / FM_WAVE;
  std::vector<fm_sim::Wave> wave_state(waves);
  fm_sim::Block blk{(int)dim, (int)gx, (int)gy, 0, 0, nullptr, {}, {}};
  for (auto& w : wave_state) blk.waves.push_back(&w);
  std::barrier<> step(dim);
  auto fresh = [&](unsigned b) {
    delete blk.bar;
    blk.bar = new std::barrier<>(dim);
    for (unsigned w = 0; w < waves; ++w) {
      delete wave_state[w].bar;
      wave_state[w].bar = new std::barrier<>(std::min<unsigned>(FM_WAVE, dim - w * FM_WAVE));
    }
    blk.bx = (int)(b % gx);
    blk.by = (int)(b / gx);
    blk.dyn.assign(smem, 0xA5);
  };
  for (auto& w : wave_state) w.bar = nullptr;
  std::vector<std::thread> threads;
  threads.reserve(dim);
  for (unsigned t = 0; t < dim; ++t)
    threads.emplace_back([&, t] {
      fm_sim::t_block = &blk;
      fm_sim::t_tid = (int)t;
      for (unsigned b = 0; b < gx * gy; ++b) {
        step.arrive_and_wait();
        if (t == 0) fresh(b);
        step.arrive_and_wait();
        k.call(params);
        fm_sim::wave().bar->arrive_and_drop();
        blk.bar->arrive_and_drop();
      }
    });
  for (auto& th : threads) th.join();
  delete blk.bar;
  for (auto& w : wave_state) delete w.bar;
}

}  // namespace

extern "C" {
typedef int hipError_t;
const hipError_t OK = 0, INVALID_VALUE = 1, NOT_FOUND = 500;

hipError_t hipInit(unsigned) { return OK; }
hipError_t hipGetDeviceCount(int* n) { *n = 1; return OK; }
hipError_t hipDeviceGetAttribute(int* v, int attr, int) {
  switch (attr) {
    case 63: *v = 8; return OK;        // multiprocessors
    case 74: *v = 65536; return OK;    // shared memory per block
    case 87: *v = 64; return OK;       // warp size
    default: return INVALID_VALUE;
  }
}
hipError_t hipDeviceGetName(char* name, int len, int) {
  std::snprintf(name, len, "fleetmoe CPU simulator (gfx%d)", FM_SIM_GFX);
  return OK;
}
hipError_t hipDeviceTotalMem(size_t* bytes, int) { *bytes = size_t(1) << 34; return OK; }
// Writes the arch name deep inside the buffer: fleetmoe must not rely on a struct layout.
hipError_t hipGetDevicePropertiesR0600(void* p, int) {
  char* c = static_cast<char*>(p);
  std::snprintf(c, 64, "fleetmoe CPU simulator");
  if (FM_SIM_GFX == 90) std::snprintf(c + 1000, 64, "gfx90a:sramecc+:xnack-");
  else std::snprintf(c + 1000, 64, "gfx%d:sramecc+:xnack-", FM_SIM_GFX);
  return OK;
}
hipError_t hipSetDevice(int) { return OK; }
hipError_t hipMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  if (!*p) return INVALID_VALUE;
  std::memset(*p, 0xFF, n);  // not zero: catch reads of memory nobody wrote
  return OK;
}
hipError_t hipFree(void* p) { std::free(p); return OK; }
hipError_t hipMemcpyHtoDAsync(void* d, const void* s, size_t n, void*) { std::memcpy(d, s, n); return OK; }
hipError_t hipMemcpyDtoHAsync(void* d, void* s, size_t n, void*) { std::memcpy(d, s, n); return OK; }
hipError_t hipMemsetAsync(void* d, int v, size_t n, void*) { std::memset(d, v, n); return OK; }
hipError_t hipStreamCreateWithFlags(void** s, unsigned) { *s = reinterpret_cast<void*>(0x51); return OK; }
hipError_t hipStreamSynchronize(void*) { return OK; }
hipError_t hipStreamDestroy(void*) { return OK; }
// Stream 0xD1 stands for a stream of a second GPU, so the tests can hand one in.
hipError_t hipStreamGetDevice(void* s, int* dev) { *dev = s == reinterpret_cast<void*>(0xD1) ? 1 : 0; return OK; }
hipError_t hipModuleLoadData(void** m, const void* image) { *m = const_cast<void*>(image); return OK; }
hipError_t hipModuleUnload(void*) { return OK; }
hipError_t hipModuleGetFunction(void** f, void*, const char* name) {
  for (const auto& k : kKernels)
    if (std::string(k.name) == name) { *f = const_cast<Kernel*>(&k); return OK; }
  return NOT_FOUND;
}
hipError_t hipModuleLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                 unsigned by, unsigned bz, unsigned smem, void*, void** params,
                                 void**) {
  if (gz != 1 || by != 1 || bz != 1) return INVALID_VALUE;
  run(*static_cast<const Kernel*>(f), gx, gy, bx, smem, params);
  return OK;
}
const char* hipGetErrorString(hipError_t e) {
  return e == OK ? "hipSuccess (simulated)" : "simulated HIP error";
}
}
