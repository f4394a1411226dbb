#!/usr/bin/env bash
# The GPU check: everything a paper run needs, once, at paper size, in under 8 minutes on one
# H100/H200. Writes its figures under results/bench/ (JSON + Markdown, each naming the GPU).
#
#   bash scripts/gpu_check.sh                 # PYTHON=.venv/bin/python to choose the interpreter
#
# 1. bench step: one optimiser step, validation and test scoring of every Table I model
#    through train_run, in the preset's precision, and one DDPM pretraining step (bf16-mixed)
# 2. bench efficiency --device cuda: parameters, FLOPs and latency side by side
# 3. bench train: Noise2Map-SS training throughput and MFU, fp32 / bf16 / channels_last / compile
# 4. the fused selective scan (mamba_ssm) against the pure-PyTorch reference (pytest -m gpu)
# Each part has its own time limit; a failing part is reported and the others still run.
# Exit status: the number of failing parts. tests/test_gpu_check.py runs the same script on the
# CPU at demo size (DEVICE=cpu PRESET=workflow/config/demo.yaml SIZE=demo VARIANTS="fp32 bf16"
# TIME_SCALE=10).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT_DIR:-results/bench}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-paper}
read -r -a VARIANTS <<< "${VARIANTS:-fp32 bf16 channels_last compile}"
preset=(); [ -n "${PRESET:-}" ] && preset=(--config "$PRESET")
tag=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu)
mkdir -p "$OUT"
failed=0
SCALE=${TIME_SCALE:-1}  # the limits are for a GPU: the CPU test stretches them
part() {  # name, seconds, command...
    local name=$1 limit=$(( $2 * SCALE )); shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s)"
    if timeout --signal=INT --kill-after=20 "$limit" "$@"; then
        echo "== $name: ok in $((SECONDS - start)) s"
    else
        echo "== $name: FAILED (exit $?) after $((SECONDS - start)) s"
        failed=$((failed + 1))
    fi
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
part step 240 "$PY" -m noise2map.cli bench step --device "$DEVICE" "${preset[@]}" --output "$OUT/step_$tag.json"
part efficiency 60 "$PY" -m noise2map.cli bench efficiency --device "$DEVICE" "${preset[@]}" --repeats 10 \
    --output "$OUT/efficiency_$tag.csv"
part train 120 "$PY" -m noise2map.cli bench train --device "$DEVICE" --size "$SIZE" --batch-size 8 --steps 10 --warmup 3 \
    --variants "${VARIANTS[@]}" --output "$OUT/train_$tag.json"
part mamba 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_mamba_dpt.py
echo "gpu_check: $failed part(s) failed; figures in $OUT/"
exit "$failed"
