#!/usr/bin/env bash
# Builds the CUDA test and bench executables here (no GPU or toolkit needed) and copies
# them into .gpu/ (git-ignored), then prints the command to run on a GPU machine, e.g.
# through the device tool with carry [".gpu"]. See ../shared/GPU.md. The tests carry feature
# `faults` (inert unless FLEETMOE_FAULT is set) for `scripts/mutants.sh gpu .gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu
cargo build --release --features cuda --bins
cp target/release/fleetmoe .gpu/
cargo test --release --features cuda,faults --no-run --message-format=json --test cuda_parity --test cuda_compile --test lora_regressions --test device_forward 2>/dev/null \
  | python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], ".gpu/" + m["target"]["name"])
        print("copied", m["target"]["name"])
'
ls -la .gpu
cat <<'CMD'
On the GPU machine (from the repository root):
  export FLEETMOE_CACHE_DIR=/tmp/fleetmoe-cache
  ./.gpu/cuda_parity --nocapture --test-threads 1
  ./.gpu/lora_regressions
  ./.gpu/device_forward --nocapture
  ./.gpu/fleetmoe run --scheme fp8-block128
  ./.gpu/fleetmoe bench
  scripts/mutants.sh gpu .gpu     # each planted fault must fail cuda_parity
CMD
