#!/bin/bash
# The GPU check of the wgpu backend, on a Linux machine with a GPU (GNU sed, coreutils).
#
#   cargo build --release --features wgpu
#   scripts/gpu_check.sh target/release/ssmkit [OUT]
#
# 1. The selective scan alone, forward + backward, timed on the GPU (the CubeCL kernels and
#    the reference loop) and on the CPU (the fused kernel), at batch 8 and 64. (Their values
#    are checked by `cargo test --features wgpu --lib scan_cube`, which needs the sources.)
# 2. Small Mamba on a slice of Phase 0 (its config with USERS users, default 4,000):
#    `--backend wgpu` and `--backend cpu` with the same seed for STEPS steps (default 300),
#    so their validation DCG@10 at every 100 steps can be compared, and turns/s;
#    then the reference scan on the GPU (its validation still uses the kernels), and both
#    backends for 100 steps of 64 users a batch. turns/s is the median over the steps after
#    the first (which compiles the GPU's kernels).
# Each training run's metrics.csv is copied to OUT (default gpu-check/). Every step has a
# time limit, and the whole script stops starting runs after BUDGET seconds (default 520).
set -u
BIN=${1:?usage: scripts/gpu_check.sh SSMKIT_BINARY [OUT]}
OUT=${2:-gpu-check}
USERS=${USERS:-4000}
STEPS=${STEPS:-300}
BUDGET=${BUDGET:-520}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")/.." && pwd)
t0=$(date +%s)
stamp() { echo "=== $(($(date +%s) - t0)) s: $*"; }
# Wall time and peak RSS where GNU time is installed, wall time alone otherwise.
timed() {
    local label=$1
    shift
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "$label: %e s wall, %M KB peak RSS" "$@"
    else
        local s=$(date +%s)
        "$@"
        local rc=$?
        echo "$label: $(($(date +%s) - s)) s wall"
        return $rc
    fi
}

# The slice of Phase 0: the same generator and curriculum, fewer users.
sed -e "s/^users = .*/users = $USERS/" -e "s/^steps = .*/steps = $STEPS/" \
    -e "s/^eval_every = .*/eval_every = 100/" "$here/configs/phase0.toml" >"$WORK/slice.toml"
sed -e "s/^steps = .*/steps = 100\nbatch_users = 64/" "$WORK/slice.toml" >"$WORK/slice64.toml"

stamp start
command -v nvidia-smi >/dev/null && nvidia-smi -L
echo "cpu threads: $(nproc)"

stamp "scan kernels: a first tiny call (shader compilation), then timings"
timeout 60 "$BIN" bench scan --backend wgpu --batch 2 --d-inner 8 --d-state 4 --len 3 --repeats 1
for impl in fast reference; do
    for b in 8 64; do
        timeout 45 "$BIN" bench scan --backend wgpu --impl "$impl" --batch "$b" \
            --d-inner 128 --d-state 32 --len 64 --repeats 10 ||
            echo "wgpu $impl, batch $b: failed or over 45 s"
    done
done
for b in 8 64; do
    timeout 45 "$BIN" bench scan --backend cpu --batch "$b" --d-inner 128 --d-state 32 \
        --len 64 --repeats 10
done

stamp "gen: $USERS users of Phase 0"
timed gen timeout 180 "$BIN" gen --config "$WORK/slice.toml" --out "$WORK/data" --quiet

# train NAME BACKEND STEPS CONFIG LIMIT [extra flags]
train() {
    local name=$1 backend=$2 steps=$3 config=$4 limit=$5
    shift 5
    local left=$((BUDGET - ($(date +%s) - t0)))
    if ((left < 20)); then
        echo "$name: not started, out of time"
        return
    fi
    ((limit > left)) && limit=$left
    stamp "train $name ($backend, $steps steps, limit $limit s)"
    timed "$name" timeout "$limit" "$BIN" train --config "$config" --data "$WORK/data" --run "$WORK/run-$name" \
        --backend "$backend" --steps "$steps" --seed 1 --quiet "$@" 2>&1 | tail -3
    local csv="$WORK/run-$name/metrics.csv"
    [ -f "$csv" ] || return
    cp "$csv" "$OUT/metrics-$name.csv"
    awk -F, -v n="$name" 'NR > 1 && $5 != "NaN" { print n ": step " $1 ", val DCG@10 " $5 ", HR@10 " $6 }' "$csv"
    local rates
    rates=$(awk -F, 'NR > 2 { print $9 }' "$csv" | sort -g)
    local count
    count=$(wc -l <<<"$rates")
    if [ -n "$rates" ]; then
        echo "$name: $((count + 1)) steps, median $(sed -n "$(((count + 1) / 2))p" <<<"$rates") turns/s after the first"
    else
        echo "$name: fewer than two steps"
    fi
}
train gpu wgpu "$STEPS" "$WORK/slice.toml" 150
train cpu cpu "$STEPS" "$WORK/slice.toml" 150
train gpu-b64 wgpu 100 "$WORK/slice64.toml" 60
train gpu-reference-scan wgpu 40 "$WORK/slice.toml" 45 --scan reference
train cpu-b64 cpu 100 "$WORK/slice64.toml" 60
stamp end
