#!/usr/bin/env bash
# Mutation tests of the test suites: each fault of src/fault.rs is planted in turn
# (FLEETMOE_FAULT, feature `faults`) and the suite that guards it must fail; the suite
# must pass without one. A fault a suite misses is a hole in that suite.
#
#   scripts/mutants.sh cpu        layout suites (cuda_packed, cuda_layout, rocm_layout); CI
#   scripts/mutants.sh sim        the AMD layer on the HIP simulator (rocm_sim, rocm_sim_lora);
#                                 CI (.ci/rocm)
#   scripts/mutants.sh gpu DIR    DIR/cuda_parity, built by scripts/gpu-check.sh, on an
#                                 NVIDIA GPU
#
# Logs go to $MUTANTS_LOG (default target/mutants/<mode>/); $MUTANTS_JOBS faults run at
# once (default 1), $MUTANTS_ONLY picks some. Exit 1 if a fault is missed or the
# unfaulted suite fails or skips.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/mutants.sh cpu|sim|gpu DIR}

# Which suites must catch which fault. "-": the fault has no code to live in there (AMD
# has no zero-point path; fnuz exists only on gfx942; the CPU layout suites run no kernels
# and no launch geometry).
#  fault                 cpu sim gpu
table="
   nibble-order          y   y   y
   scale-next-group      y   y   y
   scale-next-row        y   y   y
   dropped-zero-point    y   -   y
   missed-tail-tile      -   y   y
   expert-id-off-by-one  -   y   y
   lora-wrong-slot       -   y   y
   fnuz-as-fn            y   y   -
"
column=$(case $mode in cpu) echo 2 ;; sim) echo 3 ;; gpu) echo 4 ;; *) echo 0 ;; esac)
[ "$column" != 0 ] || { echo "unknown mode $mode (cpu, sim or gpu DIR)" >&2; exit 2; }
faults=$(awk -v c="$column" 'NF == 4 && $c == "y" { print $1 }' <<<"$table")
# $MUTANTS_ONLY (names, space-separated) narrows the run to those faults.
if [ -n "${MUTANTS_ONLY:-}" ]; then
    faults=$(for f in $faults; do if [[ " $MUTANTS_ONLY " == *" $f "* ]]; then echo "$f"; fi; done)
fi

logs=${MUTANTS_LOG:-target/mutants/$mode}
mkdir -p "$logs"

# Test executables of `cargo test --no-run` for the given features and tests.
build() { # features test...
    local features=$1
    shift
    cargo test --features "$features" --no-run --message-format=json "${@/#/--test=}" \
        | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])'
}

case $mode in
    cpu) mapfile -t bins < <(build faults cuda_packed cuda_layout rocm_layout) ;;
    sim)
        export FLEETMOE_REQUIRE_HIP_CLANG=1
        mapfile -t bins < <(build rocm,faults rocm_sim rocm_sim_lora)
        ;;
    gpu) bins=("${2:?gpu mode needs the folder of scripts/gpu-check.sh}/cuda_parity") ;;
esac
[ ${#bins[@]} -gt 0 ] || { echo "no test executables built" >&2; exit 2; }

# Runs every suite with FLEETMOE_FAULT=$1 (empty: none) into $logs/$1.log; prints the
# failed tests, one line.
run_all() {
    local fault=$1 log="$logs/${1:-none}.log" failed=""
    : >"$log"
    for bin in "${bins[@]}"; do
        if ! FLEETMOE_FAULT=$fault "$bin" --test-threads 1 --show-output >"$log.part" 2>&1; then
            failed+=" $(basename "$bin" | sed 's/-[0-9a-f]*$//'):"
            failed+=$(grep -oE '^test [a-z_:]+ \.\.\. FAILED' "$log.part" | awk '{print $2}' | sort -u | paste -sd, -)
        fi
        cat "$log.part" >>"$log"
    done
    rm -f "$log.part"
    if grep -q "is not a fault" "$log"; then
        echo "FLEETMOE_FAULT=$fault is not a fault of this build" >&2
        exit 2
    fi
    echo "$failed"
}

status=0
baseline=$(run_all "")
if [ -n "$baseline" ] || grep -q '^skipped' "$logs/none.log"; then
    echo "the suite does not pass (or skips) without a fault:$baseline; see $logs/none.log" >&2
    exit 1
fi
echo "no fault: pass"
jobs=${MUTANTS_JOBS:-1}
for fault in $faults; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    run_all "$fault" >"$logs/$fault.failed" &
done
wait
for fault in $faults; do
    failed=$(cat "$logs/$fault.failed")
    if [ -n "$failed" ]; then
        printf 'caught  %-22s by%s\n' "$fault" "$failed"
    else
        printf 'MISSED  %-22s (log: %s)\n' "$fault" "$logs/$fault.log"
        status=1
    fi
done
exit $status
