// Routing in one launch: router logits [tokens, E] -> top-k expert ids and weights, as
// fleetmoe::moe::Router defines them (ties to the lower index). One warp per token; the
// token's scores live in shared memory (E <= ROUTE_MAX_E).
//
// mode: 0 softmax top-k, 1 sigmoid top-k, 2 grouped (DeepSeek), 3 sigmoid top-1 (Llama 4).
// Grouped: scores by `group_sigmoid` (else softmax), plus the correction bias when given to
// choose; a group scores the sum of its top two biased scores with a bias, else its max;
// the best `topk_groups` groups are kept; weights are the unbiased scores, renormalized if
// asked, times `scaling`.

#define ROUTE_WARPS 4
#define ROUTE_MAX_E 1024
#define ROUTE_MAX_G 64
#define ROUTE_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

extern "C" __global__ void __launch_bounds__(ROUTE_WARPS * 32)
fm_route(const float* __restrict__ logits, int tokens, int E, int k, int mode, int renormalize,
         int groups, int topk_groups, int group_sigmoid, const float* __restrict__ bias,
         float scaling, int* __restrict__ ids, float* __restrict__ weights) {
  __shared__ float s_score[ROUTE_WARPS][ROUTE_MAX_E];
  __shared__ float s_choice[ROUTE_WARPS][ROUTE_MAX_E];
  __shared__ float s_group[ROUTE_WARPS][ROUTE_MAX_G];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int t = blockIdx.x * ROUTE_WARPS + warp;
  if (t >= tokens) return;
  const float* x = logits + (long)t * E;
  float* score = s_score[warp];
  float* choice = s_choice[warp];

  const bool sig = mode == 1 || mode == 3 || (mode == 2 && group_sigmoid);
  if (sig) {
    for (int e = lane; e < E; e += 32) score[e] = 1.0f / (1.0f + expf(-x[e]));
  } else {
    float m = ROUTE_NEG_INF;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, x[e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.0f;
    for (int e = lane; e < E; e += 32) { score[e] = expf(x[e] - m); s += score[e]; }
    s = warp_sum(s);
    for (int e = lane; e < E; e += 32) score[e] /= s;
  }
  // What the top-k is taken over.
  for (int e = lane; e < E; e += 32)
    choice[e] = mode == 3 ? x[e] : (mode == 2 && bias ? score[e] + bias[e] : score[e]);
  __syncwarp();

  if (mode == 2) {
    const int per = E / groups;
    for (int g = lane; g < groups; g += 32) {
      float a = ROUTE_NEG_INF, b = ROUTE_NEG_INF;  // best two
      for (int e = g * per; e < (g + 1) * per; ++e) {
        const float v = choice[e];
        if (v > a) { b = a; a = v; } else if (v > b) { b = v; }
      }
      s_group[warp][g] = bias ? (per >= 2 ? a + b : a) : a;
    }
    __syncwarp();
    // Keep the best topk_groups groups: mask the others' experts.
    if (lane == 0) {
      unsigned long long kept = 0;
      for (int r = 0; r < topk_groups; ++r) {
        int best = -1;
        for (int g = 0; g < groups; ++g)
          if (!((kept >> g) & 1ull) && (best < 0 || s_group[warp][g] > s_group[warp][best])) best = g;
        kept |= 1ull << best;
      }
      for (int g = 0; g < groups; ++g)
        if (!((kept >> g) & 1ull))
          for (int e = g * per; e < (g + 1) * per; ++e) choice[e] = ROUTE_NEG_INF;
    }
    __syncwarp();
  }

  float sum = 0.0f;
  float w_lane = 0.0f;
  for (int r = 0; r < k; ++r) {
    float v = ROUTE_NEG_INF;
    int i = 0x7fffffff;
    for (int e = lane; e < E; e += 32)
      if (choice[e] > v || (choice[e] == v && e < i)) { v = choice[e]; i = e; }
    warp_argmax(v, i);
    const float w = score[i];
    if (lane == r) w_lane = w;
    sum += w;
    if (lane == 0) { ids[(long)t * k + r] = i; choice[i] = ROUTE_NEG_INF; }
    __syncwarp();
  }
  if (lane < k) {
    float w = w_lane;
    if (renormalize && mode != 3 && sum > 0.0f) w /= sum;
    if (mode == 2) w *= scaling;
    weights[(long)t * k + lane] = w;
  }
}
