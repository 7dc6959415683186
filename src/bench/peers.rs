//! vLLM 0.33's Triton fused-MoE kernel on the lent H100 (median of CUDA-graph replays,
//! routing alignment excluded, fp8 = per-tensor weights with dynamic per-tensor
//! activations), from `../shared/reference/h100-anchors.md`, measured 2026-11-22.

/// (shape, scheme, M, µs).
const VLLM: &[(&str, &str, usize, f64)] = &[
    ("mixtral-8x7b", "bf16", 1, 272.3),
    ("mixtral-8x7b", "bf16", 16, 974.7),
    ("mixtral-8x7b", "bf16", 64, 996.0),
    ("mixtral-8x7b", "bf16", 256, 1593.8),
    ("mixtral-8x7b", "bf16", 1024, 2687.8),
    ("mixtral-8x7b", "bf16", 4096, 7521.4),
    ("mixtral-8x7b", "fp8", 1, 188.4),
    ("mixtral-8x7b", "fp8", 16, 546.8),
    ("mixtral-8x7b", "fp8", 64, 580.1),
    ("mixtral-8x7b", "fp8", 256, 758.4),
    ("mixtral-8x7b", "fp8", 1024, 1619.6),
    ("mixtral-8x7b", "fp8", 4096, 5633.4),
    ("qwen3-30b-a3b", "bf16", 1, 55.3),
    ("qwen3-30b-a3b", "bf16", 16, 284.3),
    ("qwen3-30b-a3b", "bf16", 64, 430.0),
    ("qwen3-30b-a3b", "bf16", 256, 481.1),
    ("qwen3-30b-a3b", "bf16", 1024, 607.8),
    ("qwen3-30b-a3b", "bf16", 4096, 1255.8),
    ("qwen3-30b-a3b", "fp8", 1, 58.4),
    ("qwen3-30b-a3b", "fp8", 16, 202.5),
    ("qwen3-30b-a3b", "fp8", 64, 285.1),
    ("qwen3-30b-a3b", "fp8", 256, 326.5),
    ("qwen3-30b-a3b", "fp8", 1024, 495.9),
    ("qwen3-30b-a3b", "fp8", 4096, 1300.6),
    ("deepseek-v3", "fp8", 1, 180.7),
    ("deepseek-v3", "fp8", 16, 1646.4),
    ("deepseek-v3", "fp8", 64, 3301.2),
    ("deepseek-v3", "fp8", 256, 4002.4),
    ("deepseek-v3", "fp8", 1024, 4602.1),
    ("deepseek-v3", "fp8", 4096, 7080.9),
    ("gpt-oss-120b", "bf16", 1, 97.8),
    ("gpt-oss-120b", "bf16", 16, 812.6),
    ("gpt-oss-120b", "bf16", 64, 1847.3),
    ("gpt-oss-120b", "bf16", 256, 2167.0),
    ("gpt-oss-120b", "bf16", 1024, 2466.8),
    ("gpt-oss-120b", "bf16", 4096, 3608.3),
    ("gpt-oss-120b", "fp8", 1, 94.5),
    ("gpt-oss-120b", "fp8", 16, 558.8),
    ("gpt-oss-120b", "fp8", 64, 1080.0),
    ("gpt-oss-120b", "fp8", 256, 1323.9),
    ("gpt-oss-120b", "fp8", 1024, 1650.3),
    ("gpt-oss-120b", "fp8", 4096, 2914.2),
];

/// vLLM's time for a cell, where it was measured.
pub fn vllm_us(shape: &str, scheme: &str, tokens: usize) -> Option<f64> {
    VLLM.iter()
        .find(|(s, q, m, _)| *s == shape && *q == scheme && *m == tokens)
        .map(|r| r.3)
}
