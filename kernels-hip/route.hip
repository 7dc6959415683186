// Routing in one launch, as kernels-cuda/route.cu: router logits [tokens, E] -> top-k
// expert ids and weights, as fleetmoe::moe::Router defines them (ties to the lower
// index). One 64-lane wavefront per token; the token's scores live in LDS.
//
// mode: 0 softmax top-k, 1 sigmoid top-k, 2 grouped (DeepSeek), 3 sigmoid top-1 (Llama 4).
#include "prelude.h"

#define ROUTE_WAVES 4
#define ROUTE_MAX_E 1024
#define ROUTE_MAX_G 64
#define ROUTE_NEG_INF __builtin_bit_cast(float, 0xff800000u)

FM_INLINE void wave_argmax(float& v, int& i) {
#pragma unroll
  for (int o = FM_WAVE / 2; o > 0; o >>= 1) {
    const float ov = shfl_xor(v, o);
    const int oi = shfl_xor_i(i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

extern "C" __global__ void __launch_bounds__(ROUTE_WAVES * FM_WAVE)
fm_route(const float* __restrict__ logits, int tokens, int E, int k, int mode, int renormalize,
         int groups, int topk_groups, int group_sigmoid, const float* __restrict__ bias,
         float scaling, int* __restrict__ ids, float* __restrict__ weights) {
  __shared__ float s_score[ROUTE_WAVES][ROUTE_MAX_E];
  __shared__ float s_choice[ROUTE_WAVES][ROUTE_MAX_E];
  __shared__ float s_group[ROUTE_WAVES][ROUTE_MAX_G];
  const int wave = tid_x() / FM_WAVE, lane = tid_x() % FM_WAVE;
  const int t = bid_x() * ROUTE_WAVES + wave;
  if (t >= tokens) return;
  const float* x = logits + (long)t * E;
  float* score = s_score[wave];
  float* choice = s_choice[wave];

  const bool sig = mode == 1 || mode == 3 || (mode == 2 && group_sigmoid);
  if (sig) {
    for (int e = lane; e < E; e += FM_WAVE) score[e] = 1.0f / (1.0f + exp_(-x[e]));
  } else {
    float m = ROUTE_NEG_INF;
    for (int e = lane; e < E; e += FM_WAVE) m = fmax_(m, x[e]);
    m = wave_max(m);
    float s = 0.0f;
    for (int e = lane; e < E; e += FM_WAVE) { score[e] = exp_(x[e] - m); s += score[e]; }
    s = wave_sum(s);
    for (int e = lane; e < E; e += FM_WAVE) score[e] /= s;
  }
  for (int e = lane; e < E; e += FM_WAVE)
    choice[e] = mode == 3 ? x[e] : (mode == 2 && bias ? score[e] + bias[e] : score[e]);
  wave_barrier();

  if (mode == 2) {
    const int per = E / groups;
    for (int g = lane; g < groups; g += FM_WAVE) {
      float a = ROUTE_NEG_INF, b = ROUTE_NEG_INF;
      for (int e = g * per; e < (g + 1) * per; ++e) {
        const float v = choice[e];
        if (v > a) { b = a; a = v; } else if (v > b) { b = v; }
      }
      s_group[wave][g] = bias ? (per >= 2 ? a + b : a) : a;
    }
    wave_barrier();
    if (lane == 0) {
      u64 kept = 0;
      for (int r = 0; r < topk_groups; ++r) {
        int best = -1;
        for (int g = 0; g < groups; ++g)
          if (!((kept >> g) & 1ull) && (best < 0 || s_group[wave][g] > s_group[wave][best])) best = g;
        kept |= 1ull << best;
      }
      for (int g = 0; g < groups; ++g)
        if (!((kept >> g) & 1ull))
          for (int e = g * per; e < (g + 1) * per; ++e) choice[e] = ROUTE_NEG_INF;
    }
    wave_barrier();
  }

  float sum = 0.0f, w_lane = 0.0f;
  for (int r = 0; r < k; ++r) {
    float v = ROUTE_NEG_INF;
    int i = 0x7fffffff;
    for (int e = lane; e < E; e += FM_WAVE)
      if (choice[e] > v || (choice[e] == v && e < i)) { v = choice[e]; i = e; }
    wave_argmax(v, i);
    // Every candidate NaN (softmax of +inf or of an all -inf row): no expert wins. Report
    // expert 0 with a NaN weight, which the host refuses as the host router's would be,
    // rather than read past the token's scores.
    const bool found = i < E;
    const float w = found ? score[i] : __builtin_nanf("");
    if (lane == r) w_lane = w;
    sum += w;
    if (lane == 0) {
      ids[(long)t * k + r] = found ? i : 0;
      if (found) choice[i] = ROUTE_NEG_INF;
    }
    wave_barrier();
  }
  if (lane < k) {
    float w = w_lane;
    if (renormalize && mode != 3 && sum > 0.0f) w /= sum;
    if (mode == 2) w *= scaling;
    weights[(long)t * k + lane] = w;
  }
}
