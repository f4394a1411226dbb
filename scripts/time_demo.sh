#!/usr/bin/env bash
# Time the README's demo from nothing: removes the demo's data, results, logs and benchmarks,
# runs the default demo target with the report (the README's snakemake command), then prints
# the wall time in total and per rule (Snakemake's benchmark files), where a training job's
# seconds go (each run's timing.json) and how many Table I models learned something.
#
#   . .venv/bin/activate && bash scripts/time_demo.sh        # CORES=2 by default; TARGET= to time another
set -euo pipefail
cd "$(dirname "$0")/.."
CORES=${CORES:-2}
# Each snakemake start imports its executor plugins; where SLURM's commands are installed but
# no controller answers, the SLURM plugin waits 9 s for `scontrol show config`.
python -c "import time; t = time.time(); import snakemake.cli; \
print(f\"Snakemake's own start (import snakemake.cli, executor plugins included): {time.time() - t:.1f} s\")"
rm -rf results/demo data/demo logs/demo benchmarks/demo
start=$(python -c "import time; print(time.time())")
if [ -n "${TARGET:-}" ]; then
    mkdir -p logs
    snakemake --cores "$CORES" "$TARGET" --configfile workflow/config/demo.yaml > logs/time_demo.log 2>&1 || status=$?
else
    mkdir -p logs
    snakemake --cores "$CORES" --report results/demo/report.html --report-after-run \
        --configfile workflow/config/demo.yaml > logs/time_demo.log 2>&1 || status=$?
fi
[ "${status:-0}" -eq 0 ] || { tail -n 30 logs/time_demo.log; echo "snakemake failed (exit $status); log: logs/time_demo.log"; exit 1; }
python -m noise2map.cli bench demo-times --since "$start" --cores "$CORES"
