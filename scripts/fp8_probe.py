# Run on the GPU machine (PyTorch there): does the fp8 tensor-core GEMM (cuBLASLt -> QGMMA on
# Hopper) flush e4m3 subnormal inputs, and how precise is one k32 step? torch._scaled_mm
# against an exact f64 product of the same fp8 values (kernels-cuda/NOTES.md, 2026-12-03).
import torch

torch.manual_seed(0)
dev = "cuda"


def run(name, a8, b8, K):
    one = torch.tensor(1.0, device=dev)
    for fast in (False, True):
        c = torch._scaled_mm(a8, b8.t(), scale_a=one, scale_b=one, out_dtype=torch.float32,
                             use_fast_accum=fast)
        ref = a8.double() @ b8.double().t()
        err = (c.double() - ref).norm() / ref.norm()
        mx = ((c.double() - ref).abs().max() / ref.abs().max()).item()
        print(f"{name:34s} K={K:5d} fast_accum={fast!s:5s} rel_l2 {err.item():.2e}  max/max {mx:.2e}")


for K in (32, 128, 2048):
    M, N = 64, 64
    a = torch.randn(M, K, device=dev)
    b = torch.randn(N, K, device=dev)
    run("normal (randn)", a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), K)
    sub = (a * 2**-8).to(torch.float8_e4m3fn)  # mostly e4m3 subnormals (|x| < 2^-6)
    frac = ((sub.float().abs() < 2**-6) & (sub.float() != 0)).float().mean().item()
    run(f"A subnormal-heavy ({frac:.0%} subn.)", sub, b.to(torch.float8_e4m3fn), K)
    a2 = a.clone()
    a2[:, 0] = 448.0  # one outlier per row, the rest small: per-tensor scaling of activations
    run("A one outlier per row", a2.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), K)
