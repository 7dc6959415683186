#!/usr/bin/env bash
# Builds the candle + fleetmoe example on a machine with no CUDA toolkit and no GPU, and
# copies the binary to <repo>/.gpu/candle_moe (run it there on an NVIDIA GPU).
#
# - nvcc 13.0 comes from PyPI wheels (candle-kernels' build script runs nvcc; 13.0 so the
#   PTX it writes loads on a CUDA 13.0 driver, e.g. 580.x: a newer nvcc's PTX would not).
# - candle-core 0.11.1 is unpacked into patched/ with cudarc's `dynamic-linking` swapped
#   for `dynamic-loading` (what fleetmoe uses; cudarc refuses both at once).
# - candle-kernels links `-lcudart`; a link directory holding only libcudart.a (the wheel's
#   libcudart_static.a) makes that a static link, so the binary needs no libcudart.so.
#
# Env overrides: CUDA_WHEELS (wheel install dir), CARGO_TARGET_DIR, CUDA_COMPUTE_CAP.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CUDA_WHEELS="${CUDA_WHEELS:-/work/cuda13-wheels}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/candle-target}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
CANDLE_VERSION=0.11.1

# 1. nvcc 13.0 + headers (cccl, crt, nvvm) + cudart from PyPI.
C="$CUDA_WHEELS/nvidia/cu13"
if [ ! -x "$C/bin/nvcc" ]; then
    python3 -m pip install --quiet --target "$CUDA_WHEELS" \
        "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
        "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-runtime==13.0.96"
fi
chmod +x "$C"/bin/* "$C"/nvvm/bin/* 2>/dev/null || true
"$C/bin/nvcc" --version | tail -1

# 2. Static cudart under the name `-lcudart` looks for.
LINKDIR="$CARGO_TARGET_DIR/cudart-static"
mkdir -p "$LINKDIR"
cp -f "$C/lib/libcudart_static.a" "$LINKDIR/libcudart.a"

# 3. candle-core with cudarc's dynamic-loading.
PATCHED="$HERE/patched/candle-core"
if [ ! -f "$PATCHED/.fleetmoe-patched" ]; then
    CRATE="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/candle-core-$CANDLE_VERSION.crate 2>/dev/null | head -1 || true)"
    if [ -z "$CRATE" ]; then
        # Fetch it through cargo, from a scratch project that depends on it unpatched.
        SCRATCH="$(mktemp -d)"
        mkdir -p "$SCRATCH/src" && echo 'fn main() {}' > "$SCRATCH/src/main.rs"
        printf '[package]\nname = "fetch-candle"\nversion = "0.0.0"\nedition = "2021"\n[workspace]\n[dependencies]\ncandle-core = "=%s"\n' \
            "$CANDLE_VERSION" > "$SCRATCH/Cargo.toml"
        (cd "$SCRATCH" && cargo fetch --quiet)
        rm -rf "$SCRATCH"
        CRATE="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/candle-core-$CANDLE_VERSION.crate | head -1)"
    fi
    rm -rf "$PATCHED" && mkdir -p "$HERE/patched"
    tar xzf "$CRATE" -C "$HERE/patched"
    mv "$HERE/patched/candle-core-$CANDLE_VERSION" "$PATCHED"
    python3 - "$PATCHED/Cargo.toml" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
old = '    "cuda-version-from-build-system",\n    "dynamic-linking",\n'
if old not in s:
    sys.exit("candle-core Cargo.toml: cudarc feature list not as expected; patch by hand")
open(p, "w").write(s.replace(old, '    "dynamic-loading",\n'))
EOF
    touch "$PATCHED/.fleetmoe-patched"
fi

# 4. Build.
export PATH="$C/bin:$PATH" CUDA_HOME="$C" CUDA_ROOT="$C" CUDA_PATH="$C" NVCC="$C/bin/nvcc"
export NVCC_CCBIN="${NVCC_CCBIN:-$(command -v g++)}"
export CUDART_STATIC_DIR="$LINKDIR"   # read by build.rs
cd "$HERE"
cargo build --release --bin candle_moe

# 5. Hand it to the GPU machine.
BIN="$CARGO_TARGET_DIR/release/candle_moe"
mkdir -p "$REPO/.gpu"
cp -f "$BIN" "$REPO/.gpu/candle_moe"
strip "$REPO/.gpu/candle_moe" 2>/dev/null || true   # symbols only; ~31 MiB of it is candle's sm_90 fatbin
echo "built $BIN -> $REPO/.gpu/candle_moe"
echo "dynamic deps:"; readelf -d "$BIN" | grep NEEDED || true
