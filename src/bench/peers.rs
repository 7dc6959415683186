//! The peers' figures, each tagged with the GPU it was measured on, so the bench prints a
//! peer only beside a run on that same GPU (by the exact name the driver reports):
//! - NVIDIA H200: `../shared/reference/h200-anchors.md` (2026-12-02): vLLM 0.33's Triton
//!   `fused_moe_kernel` (tuned configs, routing alignment excluded, fp8 = per-tensor weights
//!   with dynamic per-tensor activations), vLLM 0.33's Marlin MoE (`moe_wna16_marlin_gemm`,
//!   int4 g128 and MXFP4), and DeepGEMM's grouped GEMMs (gemm1 + gemm2 only, a lower bound
//!   for a layer built on them);
//! - NVIDIA H100 80GB HBM3: `../shared/reference/h100-anchors.md` (2026-11-22), vLLM Triton.

/// (shape, scheme, M, µs).
type Cell = (&'static str, &'static str, usize, f64);

/// One peer's figures on one GPU.
struct Peer {
    name: &'static str,
    device: &'static str,
    cells: &'static [Cell],
}

const PEERS: &[Peer] = &[
    Peer {
        name: "vLLM-Triton",
        device: "NVIDIA H200",
        cells: H200_VLLM_TRITON,
    },
    Peer {
        name: "vLLM-Marlin",
        device: "NVIDIA H200",
        cells: H200_VLLM_MARLIN,
    },
    Peer {
        name: "DeepGEMM",
        device: "NVIDIA H200",
        cells: H200_DEEPGEMM,
    },
    Peer {
        name: "vLLM-Triton",
        device: "NVIDIA H100 80GB HBM3",
        cells: H100_VLLM_TRITON,
    },
];

/// Where the peers' figures for `device` come from, if there are any.
pub fn source(device: &str) -> Option<&'static str> {
    match device {
        "NVIDIA H200" => Some(
            "peers on NVIDIA H200 (h200-anchors.md, 2026-12-02): vLLM 0.33 Triton fused_moe, vLLM 0.33 Marlin MoE, DeepGEMM gemm1+gemm2 only",
        ),
        "NVIDIA H100 80GB HBM3" => {
            Some("peers on NVIDIA H100 80GB HBM3 (h100-anchors.md, 2026-11-22): vLLM Triton fused_moe")
        }
        _ => None,
    }
}

/// Every peer's time for a cell measured on `device`: (peer, µs).
pub fn peers_for(
    device: &str,
    shape: &str,
    scheme: &str,
    tokens: usize,
) -> Vec<(&'static str, f64)> {
    PEERS
        .iter()
        .filter(|p| p.device == device)
        .filter_map(|p| {
            p.cells
                .iter()
                .find(|(s, q, m, _)| *s == shape && *q == scheme && *m == tokens)
                .map(|c| (p.name, c.3))
        })
        .collect()
}

const H100_VLLM_TRITON: &[Cell] = &[
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

const H200_VLLM_TRITON: &[Cell] = &[
    ("mixtral-8x7b", "bf16", 1, 203.3),
    ("mixtral-8x7b", "bf16", 16, 672.8),
    ("mixtral-8x7b", "bf16", 64, 697.1),
    ("mixtral-8x7b", "bf16", 256, 852.2),
    ("mixtral-8x7b", "bf16", 1024, 1989.4),
    ("mixtral-8x7b", "bf16", 4096, 6540.2),
    ("mixtral-8x7b", "fp8", 1, 159.0),
    ("mixtral-8x7b", "fp8", 16, 406.1),
    ("mixtral-8x7b", "fp8", 64, 434.9),
    ("mixtral-8x7b", "fp8", 256, 588.1),
    ("mixtral-8x7b", "fp8", 1024, 1459.1),
    ("mixtral-8x7b", "fp8", 4096, 4943.6),
    ("qwen3-30b-a3b", "bf16", 1, 46.9),
    ("qwen3-30b-a3b", "bf16", 16, 216.1),
    ("qwen3-30b-a3b", "bf16", 64, 311.8),
    ("qwen3-30b-a3b", "bf16", 256, 358.5),
    ("qwen3-30b-a3b", "bf16", 1024, 471.9),
    ("qwen3-30b-a3b", "bf16", 4096, 1098.5),
    ("qwen3-30b-a3b", "fp8", 1, 52.6),
    ("qwen3-30b-a3b", "fp8", 16, 164.6),
    ("qwen3-30b-a3b", "fp8", 64, 219.3),
    ("qwen3-30b-a3b", "fp8", 256, 260.6),
    ("qwen3-30b-a3b", "fp8", 1024, 414.2),
    ("qwen3-30b-a3b", "fp8", 4096, 1108.2),
    ("deepseek-v3", "fp8", 1, 142.0),
    ("deepseek-v3", "fp8", 16, 1087.2),
    ("deepseek-v3", "fp8", 64, 2299.3),
    ("deepseek-v3", "fp8", 256, 2848.7),
    ("deepseek-v3", "fp8", 1024, 3651.6),
    ("deepseek-v3", "fp8", 4096, 6317.5),
    ("gpt-oss-120b", "bf16", 1, 79.7),
    ("gpt-oss-120b", "bf16", 16, 586.8),
    ("gpt-oss-120b", "bf16", 64, 1315.5),
    ("gpt-oss-120b", "bf16", 256, 1599.0),
    ("gpt-oss-120b", "bf16", 1024, 1938.4),
    ("gpt-oss-120b", "bf16", 4096, 3195.5),
    ("gpt-oss-120b", "fp8", 1, 82.9),
    ("gpt-oss-120b", "fp8", 16, 356.2),
    ("gpt-oss-120b", "fp8", 64, 805.8),
    ("gpt-oss-120b", "fp8", 256, 983.8),
    ("gpt-oss-120b", "fp8", 1024, 1300.8),
    ("gpt-oss-120b", "fp8", 4096, 2479.3),
];
const H200_VLLM_MARLIN: &[Cell] = &[
    ("mixtral-8x7b", "w4a16", 1, 85.6),
    ("mixtral-8x7b", "w4a16", 16, 260.2),
    ("mixtral-8x7b", "w4a16", 64, 402.9),
    ("mixtral-8x7b", "w4a16", 256, 979.5),
    ("mixtral-8x7b", "w4a16", 1024, 2938.1),
    ("mixtral-8x7b", "w4a16", 4096, 10827.8),
    ("mixtral-8x7b", "mxfp4", 1, 99.7),
    ("mixtral-8x7b", "mxfp4", 16, 301.9),
    ("mixtral-8x7b", "mxfp4", 64, 444.3),
    ("mixtral-8x7b", "mxfp4", 256, 900.7),
    ("mixtral-8x7b", "mxfp4", 1024, 3235.6),
    ("mixtral-8x7b", "mxfp4", 4096, 11803.5),
    ("qwen3-30b-a3b", "w4a16", 1, 31.2),
    ("qwen3-30b-a3b", "w4a16", 16, 94.1),
    ("qwen3-30b-a3b", "w4a16", 64, 137.8),
    ("qwen3-30b-a3b", "w4a16", 256, 216.4),
    ("qwen3-30b-a3b", "w4a16", 1024, 509.4),
    ("qwen3-30b-a3b", "w4a16", 4096, 1520.6),
    ("qwen3-30b-a3b", "mxfp4", 1, 32.8),
    ("qwen3-30b-a3b", "mxfp4", 16, 110.3),
    ("qwen3-30b-a3b", "mxfp4", 64, 156.6),
    ("qwen3-30b-a3b", "mxfp4", 256, 243.4),
    ("qwen3-30b-a3b", "mxfp4", 1024, 549.1),
    ("qwen3-30b-a3b", "mxfp4", 4096, 1659.5),
    ("deepseek-v3", "w4a16", 1, 86.2),
    ("deepseek-v3", "w4a16", 16, 805.8),
    ("deepseek-v3", "w4a16", 64, 1787.8),
    ("deepseek-v3", "w4a16", 256, 2379.1),
    ("deepseek-v3", "w4a16", 1024, 4222.9),
    ("deepseek-v3", "w4a16", 4096, 13167.1),
    ("deepseek-v3", "mxfp4", 1, 98.8),
    ("deepseek-v3", "mxfp4", 16, 935.4),
    ("deepseek-v3", "mxfp4", 64, 1990.8),
    ("deepseek-v3", "mxfp4", 256, 2646.8),
    ("deepseek-v3", "mxfp4", 1024, 4487.9),
    ("deepseek-v3", "mxfp4", 4096, 13941.5),
];
const H200_DEEPGEMM: &[Cell] = &[
    ("deepseek-v3", "fp8-block128", 1, 150.3),
    ("deepseek-v3", "fp8-block128", 16, 1286.7),
    ("deepseek-v3", "fp8-block128", 64, 2762.7),
    ("deepseek-v3", "fp8-block128", 256, 3959.2),
    ("deepseek-v3", "fp8-block128", 1024, 4014.1),
    ("deepseek-v3", "fp8-block128", 4096, 5108.0),
    ("qwen3-30b-a3b", "fp8-block128", 1, 38.4),
    ("qwen3-30b-a3b", "fp8-block128", 16, 135.8),
    ("qwen3-30b-a3b", "fp8-block128", 64, 240.6),
    ("qwen3-30b-a3b", "fp8-block128", 256, 240.0),
    ("qwen3-30b-a3b", "fp8-block128", 1024, 240.8),
    ("qwen3-30b-a3b", "fp8-block128", 4096, 455.1),
    ("mixtral-8x7b", "fp8-block128", 1, 110.9),
    ("mixtral-8x7b", "fp8-block128", 16, 454.6),
    ("mixtral-8x7b", "fp8-block128", 64, 459.2),
    ("mixtral-8x7b", "fp8-block128", 256, 465.3),
    ("mixtral-8x7b", "fp8-block128", 1024, 894.4),
    ("mixtral-8x7b", "fp8-block128", 4096, 2734.5),
    ("qwen3-30b-a3b", "bf16", 1, 47.4),
    ("qwen3-30b-a3b", "bf16", 16, 212.3),
    ("qwen3-30b-a3b", "bf16", 64, 387.3),
    ("qwen3-30b-a3b", "bf16", 256, 389.5),
    ("qwen3-30b-a3b", "bf16", 1024, 392.6),
    ("qwen3-30b-a3b", "bf16", 4096, 713.7),
    ("mixtral-8x7b", "bf16", 1, 182.0),
    ("mixtral-8x7b", "bf16", 16, 799.8),
    ("mixtral-8x7b", "bf16", 64, 805.4),
    ("mixtral-8x7b", "bf16", 256, 809.0),
    ("mixtral-8x7b", "bf16", 1024, 1502.7),
    ("mixtral-8x7b", "bf16", 4096, 4765.9),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_found_only_on_their_own_gpu() {
        let h200 = peers_for("NVIDIA H200", "mixtral-8x7b", "bf16", 1);
        assert_eq!(h200, vec![("vLLM-Triton", 203.3), ("DeepGEMM", 182.0)]);
        let h100 = peers_for("NVIDIA H100 80GB HBM3", "mixtral-8x7b", "bf16", 1);
        assert_eq!(h100, vec![("vLLM-Triton", 272.3)]);
        assert!(peers_for("NVIDIA A100-SXM4-80GB", "mixtral-8x7b", "bf16", 1).is_empty());
        assert_eq!(
            peers_for("NVIDIA H200", "qwen3-30b-a3b", "w4a16", 64),
            vec![("vLLM-Marlin", 137.8)]
        );
    }
}
