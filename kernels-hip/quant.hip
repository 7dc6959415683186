// Activation quantization, the activation between the GEMMs, and the router weight on the
// input — as the emulation does them (kernels-cuda/quant.cu is the NVIDIA twin):
//   int8 (fm_quant_rows mode 4, INT8 W8A8): scale = amax / 127 per row, q = clamp(rne(x /
//        scale), -128, 127) as s8 bytes, all zeros (scale 0) for a zero row.
//   fp8: scale = amax / fp8 max (per tensor, per row, or per row per 128 columns) or a
//        static scale; q = rne(clamp(x / scale, -max, max)).
//        fp8_mode 0: e4m3fn codes (gfx950). 1: e4m3fnuz codes of an e4m3fnuz checkpoint
//        (max 240). 2: an e4m3fn checkpoint on gfx942: the codes are quantized by the
//        e4m3fn rule and re-read as e4m3fnuz exactly as the weights are (0x80 -> 0x00,
//        stored scale doubled), so the matrix cores multiply the very values the
//        emulation does (fnuz's extra code, 240, is not used).
//        Static scales calibrated per expert: fm_quant_slots, one scale per slot.
//   MX:  Quark's "even" e8m0 scale per 32 columns, elements rne and saturating.
// Rows of the expert-sorted intermediate whose slot is padding (sorted[r] >= pairs) are
// skipped; `num_rows` (device) bounds the rows when given.
#include "prelude.h"

#define Q_THREADS 256
#define Q_WAVES (Q_THREADS / FM_WAVE)

FM_INLINE int live_rows(int rows, const int* num_rows) {
  return num_rows ? (rows < num_rows[0] ? rows : num_rows[0]) : rows;
}

// amax over the live rows of a [rows, cols] model-dtype matrix into amax[0] (float bits,
// zeroed by the caller).
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_amax_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
             const int* __restrict__ sorted, int pairs, int is_f16, u32* __restrict__ amax) {
  __shared__ float red[Q_WAVES];
  const int nr = live_rows(rows, num_rows);
  float m = 0.0f;
  const long total = (long)nr * cols;
  for (long i = (long)bid_x() * Q_THREADS + tid_x(); i < total; i += (long)gdim_x() * Q_THREADS) {
    if (sorted && sorted[i / cols] >= pairs) continue;
    m = fmax_(m, fabs_(model_to_f32(src[i], is_f16)));
  }
  m = wave_max(m);
  if (tid_x() % FM_WAVE == 0) red[tid_x() / FM_WAVE] = m;
  sync_threads();
  if (tid_x() == 0) {
    float v = 0.0f;
    for (int w = 0; w < Q_WAVES; ++w) v = fmax_(v, red[w]);
    if (v > 0.0f) atomic_max_nonneg(amax, v);
  }
}

// The rule's largest value, its code, and the scale the GEMM reads (see fp8_mode above).
FM_INLINE float rule_max(int fp8_mode) { return fp8_mode == 1 ? FM_E4M3FNUZ_MAX : FM_E4M3FN_MAX; }
FM_INLINE float scale_from_amax(float amax, int fp8_mode) {
  return fmax_(amax, 1e-12f) / rule_max(fp8_mode);
}
FM_INLINE u8 encode_act(float x, float s, int fp8_mode) {
  const float m = rule_max(fp8_mode);
  const float v = clampf(x / s, -m, m);
  if (fp8_mode == 1) return f32_to_e4m3(v, 1);
  const u8 c = f32_to_e4m3(v, 0);
  return fp8_mode == 2 && c == 0x80 ? 0 : c;
}
FM_INLINE float stored_scale(float s, int fp8_mode) { return fp8_mode == 2 ? 2.0f * s : s; }

// One workgroup per row. mode: 0 per tensor (scale from amax[0]), 1 per row, 2 per row per
// 128 columns, 3 static, 4 int8 per row. Scales: mode 0/3 -> scales[0]; 1, 4 -> scales[row];
// 2 -> scales[row * ceil(cols/128) + g].
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_quant_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
              const int* __restrict__ sorted, int pairs, int mode, const u32* __restrict__ amax,
              float static_scale, int fp8_mode, int is_f16, u8* __restrict__ codes,
              float* __restrict__ scales) {
  __shared__ float red[Q_WAVES];
  const int row = bid_x();
  if (row >= live_rows(rows, num_rows)) return;
  if ((mode == 0 || mode == 3) && row == 0 && tid_x() == 0)
    scales[0] = stored_scale(mode == 0 ? scale_from_amax(as_float(amax[0]), fp8_mode) : static_scale, fp8_mode);
  if (sorted && sorted[row] >= pairs) return;
  const u16* x = src + (long)row * cols;
  u8* q = codes + (long)row * cols;
  const int tid = tid_x(), lane = tid % FM_WAVE, wave = tid / FM_WAVE;

  if (mode == 2) {
    // Each wave takes 128-column groups, two values per lane.
    const int groups = (cols + 127) / 128;
    for (int g = wave; g < groups; g += Q_WAVES) {
      const int c = g * 128 + lane * 2;
      float v[2];
      float m = 0.0f;
      for (int j = 0; j < 2; ++j) {
        v[j] = c + j < cols ? model_to_f32(x[c + j], is_f16) : 0.0f;
        m = fmax_(m, fabs_(v[j]));
      }
      const float s = scale_from_amax(wave_max(m), fp8_mode);
      for (int j = 0; j < 2; ++j)
        if (c + j < cols) q[c + j] = encode_act(v[j], s, fp8_mode);
      if (lane == 0) scales[(long)row * groups + g] = stored_scale(s, fp8_mode);
    }
    return;
  }
  float s;
  if (mode == 1 || mode == 4) {
    float m = 0.0f;
    for (int c = tid; c < cols; c += Q_THREADS) m = fmax_(m, fabs_(model_to_f32(x[c], is_f16)));
    m = wave_max(m);
    if (lane == 0) red[wave] = m;
    sync_threads();
    float v = 0.0f;
    for (int w = 0; w < Q_WAVES; ++w) v = fmax_(v, red[w]);
    s = mode == 4 ? v / 127.0f : scale_from_amax(v, fp8_mode);
    if (tid == 0) scales[row] = mode == 4 ? s : stored_scale(s, fp8_mode);
  } else {
    s = mode == 0 ? scale_from_amax(as_float(amax[0]), fp8_mode) : static_scale;
  }
  if (mode == 4) {
    for (int c = tid; c < cols; c += Q_THREADS) {
      const float r = s > 0.0f ? __builtin_rintf(model_to_f32(x[c], is_f16) / s) : 0.0f;
      q[c] = (u8)(signed char)(int)clampf(r, -128.0f, 127.0f);
    }
    return;
  }
  for (int c = tid; c < cols; c += Q_THREADS)
    q[c] = encode_act(model_to_f32(x[c], is_f16), s, fp8_mode);
}

// Static fp8 scales calibrated per expert (kernels-cuda/quant.cu's fm_quant_slots, the
// same leading arguments): for every slot in use, e = its block's expert, x = its token's
// row (`by_slot` 0: the hidden states, gemm1) or the slot's own (1: the intermediate,
// gemm2), codes[slot] = the fp8_mode rule of x / expert_scales[e] (as mode 3 above) and
// scales[slot] = that scale as the GEMM reads it (doubled for fp8_mode 2, per expert as per
// tensor); the GEMMs then read codes and scales per slot (gemm1 with act_by_slot). One
// workgroup per slot; padding slots are left alone.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_quant_slots(const u16* __restrict__ src, int cols, int by_slot, const int* __restrict__ sorted,
               const int* __restrict__ num_slots, const int* __restrict__ block_expert, int bt,
               int pairs, int top_k, const float* __restrict__ expert_scales, int fp8_mode,
               int is_f16, u8* __restrict__ codes, float* __restrict__ scales) {
  const int slot = bid_x();
  if (slot >= num_slots[0]) return;
  const int pair = sorted[slot];
  if (pair >= pairs) return;
  const int e = block_expert[slot / bt];
  if (e < 0) return;
  const float s = expert_scales[e];
  if (tid_x() == 0) scales[slot] = stored_scale(s, fp8_mode);
  const u16* x = src + (long)(by_slot ? slot : pair / top_k) * cols;
  u8* q = codes + (long)slot * cols;
  for (int c = tid_x(); c < cols; c += Q_THREADS)
    q[c] = encode_act(model_to_f32(x[c], is_f16), s, fp8_mode);
}

// MX quantization of activation rows for the gfx950 scaled MFMA: one lane per 32-column
// block; codes packed as checkpoints pack them (fp4 two per byte, low nibble first; fp6 an
// LSB-first bit stream; fp8 one per byte) into [rows, cols * bits / 8], e8m0 scales into
// [rows, cols / 32].
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_mx_quant_rows(const u16* __restrict__ src, int rows, int cols, const int* __restrict__ num_rows,
                 const int* __restrict__ sorted, int pairs, int fmt, int is_f16,
                 u8* __restrict__ codes, u8* __restrict__ scales) {
  const int blocks = cols / 32;
  const long i = (long)bid_x() * Q_THREADS + tid_x();
  const int row = (int)(i / blocks), b = (int)(i % blocks);
  if (row >= live_rows(rows, num_rows)) return;
  if (sorted && sorted[row] >= pairs) return;
  const u16* x = src + (long)row * cols + b * 32;
  float v[32];
  float m = 0.0f;
  bool nan = false;
  for (int j = 0; j < 32; ++j) {
    v[j] = model_to_f32(x[j], is_f16);
    nan |= v[j] != v[j];  // fmax_ would skip it
    m = fmax_(m, fabs_(v[j]));
  }
  const int bits = mx_bits(fmt);
  u8* out = codes + ((long)row * cols + b * 32) * bits / 8;
  if (nan) {
    // A NaN amax: the block's scale is the e8m0 NaN code, as quant::mx gives, and the
    // scaled MFMA turns the whole block's contribution into NaN.
    scales[(long)row * blocks + b] = 0xff;
    for (int o = 0; o < 4 * bits; ++o) out[o] = 0;
    return;
  }
  const int e = mx_shared_exponent(m, fmt);
  const float s = exp2i(e);
  scales[(long)row * blocks + b] = (u8)(e + 127);
  u64 acc = 0;
  int filled = 0, o = 0;
  for (int j = 0; j < 32; ++j) {
    acc |= (u64)mx_encode(v[j] / s, fmt) << filled;
    filled += bits;
    while (filled >= 8) { out[o++] = (u8)(acc & 0xff); acc >>= 8; filled -= 8; }
  }
}

// NVFP4 W4A4 activations, quantize-dequantized per 16 columns with the static `global`
// (1 / the checkpoint's input scale), as quant/activation.rs does: block scale
// sc = e4m3(min(global * (amax / 6), 448)) (0 -> 0.125), step = sc / global, code =
// e2m1(clamp(x / step, -6, 6)). Written as bf16(code * sc), exact (six significant bits
// at most); the GEMM multiplies its dot products by 1 / global. bf16 rows only (the
// scheme's model dtype). One thread per block of 16.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_nvfp4_qdq_rows(const u16* __restrict__ src, int rows, int cols,
                  const int* __restrict__ num_rows, const int* __restrict__ sorted, int pairs,
                  float global, u16* __restrict__ dst) {
  const int bpr = cols / 16;  // cols % 16 == 0, checked by the host
  const long total = (long)live_rows(rows, num_rows) * bpr;
  for (long i = (long)bid_x() * Q_THREADS + tid_x(); i < total; i += (long)gdim_x() * Q_THREADS) {
    if (sorted && sorted[i / bpr] >= pairs) continue;
    const u16* x = src + i * 16;
    float amax = 0.0f;
    for (int j = 0; j < 16; ++j) amax = fmax_(amax, fabs_(bf16_to_f32(x[j])));
    float sc = e4m3_to_f32(f32_to_e4m3(fmin_(global * (amax / 6.0f), FM_E4M3FN_MAX), 0), 0);
    if (sc == 0.0f) sc = 0.125f;
    const float step = sc / global;
    for (int j = 0; j < 16; ++j) {
      const float v = clampf(bf16_to_f32(x[j]) / step, -6.0f, 6.0f);
      dst[i * 16 + j] = f32_to_bf16(mx_decode(mx_encode(v, FM_MX_FP4), FM_MX_FP4) * sc);
    }
  }
}

// The activation on gemm1's f32 output (bias included): rounded to the model dtype, the
// activation, rounded again — as the emulation does. kind: 0 silu*up, 1 gelu*up,
// 2 gelu_tanh*up, 3 swigluoai (gate/up interleaved), 4 relu^2, 5 silu (not gated).
// Gate and up are halves of the row ([gate | up]) except for swigluoai.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_act(const float* __restrict__ g, int rows, int inter, const int* __restrict__ num_rows,
       const int* __restrict__ sorted, int pairs, int kind, float alpha, float limit, int is_f16,
       u16* __restrict__ out) {
  const int row = bid_x();
  if (row >= live_rows(rows, num_rows)) return;
  if (sorted && sorted[row] >= pairs) return;
  const bool gated = kind <= 3;
  const float* h = g + (long)row * (gated ? 2 * inter : inter);
  for (int j = tid_x(); j < inter; j += Q_THREADS) {
    const float a = model_to_f32(f32_to_model(kind == 3 ? h[2 * j] : h[j], is_f16), is_f16);
    const float u = gated ? model_to_f32(f32_to_model(kind == 3 ? h[2 * j + 1] : h[inter + j], is_f16), is_f16) : 0.0f;
    float r;
    switch (kind) {
      case 0: r = silu_(a) * u; break;
      case 1: r = gelu_(a) * u; break;
      case 2: r = gelu_tanh_(a) * u; break;
      case 3: {
        const float gg = fmin_(a, limit);
        const float uu = clampf(u, -limit, limit);
        r = (uu + 1.0f) * gg / (1.0f + exp_(-alpha * gg));
        break;
      }
      case 4: { const float p = fmax_(a, 0.0f); r = p * p; break; }
      default: r = silu_(a); break;
    }
    out[(long)row * inter + j] = f32_to_model(r, is_f16);
  }
}

// Router weight on the input (top-1 layers such as Llama 4): dst[t] = round(src[t] * w[t]).
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_scale_rows(const u16* __restrict__ src, int rows, int cols, const float* __restrict__ w,
              int is_f16, u16* __restrict__ dst) {
  const int row = bid_x();
  if (row >= rows) return;
  const float s = w[row];
  for (int c = tid_x(); c < cols; c += Q_THREADS) {
    const long i = (long)row * cols + c;
    dst[i] = f32_to_model(model_to_f32(src[i], is_f16) * s, is_f16);
  }
}

// The shared expert's gate (Qwen2-MoE's shared_expert_gate): gate[t] = sigmoid(x[t] · g),
// x in the model dtype, f32 sums; the one-expert shared MLP takes it as its router weight.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_shared_gate(const u16* __restrict__ x, int rows, int cols, const float* __restrict__ g,
               int is_f16, float* __restrict__ gate) {
  __shared__ float red[Q_WAVES];
  const int row = bid_x();
  if (row >= rows) return;
  float s = 0.0f;
  for (int c = tid_x(); c < cols; c += Q_THREADS)
    s += model_to_f32(x[(long)row * cols + c], is_f16) * g[c];
  s = wave_sum(s);
  if (tid_x() % FM_WAVE == 0) red[tid_x() / FM_WAVE] = s;
  sync_threads();
  if (tid_x() == 0) {
    float v = 0.0f;
    for (int w = 0; w < Q_WAVES; ++w) v += red[w];
    gate[row] = 1.0f / (1.0f + exp_(-v));
  }
}

// The layer's f32 sum in the caller's dtype: out[i] = acc[i] rounded to f16 or bf16;
// acc[i] is zeroed behind, so the next forward adds into zeros without a memset.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_finalize(float* __restrict__ acc, long n, int is_f16, u16* __restrict__ out) {
  for (long i = (long)bid_x() * Q_THREADS + tid_x(); i < n; i += (long)gdim_x() * Q_THREADS) {
    out[i] = f32_to_model(acc[i], is_f16);
    acc[i] = 0.0f;
  }
}

// Adapter slots from the caller's memory, which the host never reads: a slot outside
// 0..adapters becomes -1 (no adapter), so no LoRA kernel indexes past the resident ones.
extern "C" __global__ void __launch_bounds__(Q_THREADS)
fm_clamp_slots(const int* __restrict__ src, int n, int adapters, int* __restrict__ dst) {
  for (int i = bid_x() * Q_THREADS + tid_x(); i < n; i += gdim_x() * Q_THREADS) {
    const int a = src[i];
#ifdef FM_FAULT_LORA_WRONG_SLOT  // a planted bug for the mutation tests (src/fault.rs)
    dst[i] = a >= 0 && a < adapters ? (a + 1) % adapters : -1;
#else
    dst[i] = a >= 0 && a < adapters ? a : -1;
#endif
  }
}
