#!/usr/bin/env bash
# The three benchmarks of issue #8 on a CUDA machine, at paper sizes: results/bench/*_gpu.{json,md}.
#
#   scripts/bench_gpu.sh            # all three (about 15-25 min on one H100, most of it torch.compile)
#   PYTHON=.venv/bin/python QUICK=1 scripts/bench_gpu.sh   # fewer steps/repeats, a first look
#
# Each command prints its table and writes JSON + Markdown; the figures name the GPU they ran on,
# so compare timings only between files from the same card.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT_DIR:-results/bench}
if [[ -n "${QUICK:-}" ]]; then steps=5; warm=3; reps=5; tiles=512; else steps=20; warm=5; reps=20; tiles=2048; fi
workers=$(( $(nproc) < 8 ? $(nproc) : 8 ))

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

# 1. loader: CPU-side, but on the GPU host (its cores feed the GPU); several worker counts.
$PY -m noise2map.cli bench loader --mosaics 32 --tiles "$tiles" --batch-size 8 \
    --workers 0 2 "$workers" --output "$OUT/loader_gpu.json"

# 2. train: Noise2Map-SS at paper size (113.7M, 256²), every variant; fp32 is the reference.
$PY -m noise2map.cli bench train --device cuda --size paper --batch-size 8 \
    --steps "$steps" --warmup "$warm" --output "$OUT/train_gpu.json"

# 3. infer: every registered model at paper size, latency at batch 1, throughput at batch 16.
$PY -m noise2map.cli bench infer --device cuda --size paper --batch-size 16 \
    --repeats "$reps" --warmup 3 --output "$OUT/infer_gpu.json"
