"""scripts/gpu_check.sh, run as written but on the CPU at demo size (DEVICE, PRESET, SIZE and
VARIANTS are its knobs): every part runs and writes its figures, and a failing part is counted
in the exit status while the others still run."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(tmp_path, **env):
    base = {**os.environ, "DEVICE": "cpu", "PRESET": "workflow/config/demo.yaml", "SIZE": "demo",
            "VARIANTS": "fp32 bf16", "OUT_DIR": str(tmp_path), "TIME_SCALE": "10"}  # a loaded CPU, not a GPU
    return subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_every_part_runs_and_writes_its_figures(tmp_path):
    done = _check(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for part in ("step", "efficiency", "train", "mamba"):
        assert f"== {part}: ok in" in done.stdout
    step = json.loads((tmp_path / "step_cpu.json").read_text())
    assert len(step["models"]) == 17 and all(r["ok"] for r in step["models"])  # 16 models + pretraining
    train = json.loads((tmp_path / "train_cpu.json").read_text())
    assert [v["variant"] for v in train["variants"]] == ["fp32", "bf16"]
    assert (tmp_path / "efficiency_cpu.csv").read_text().count("\n") == 17  # header + 16 models


@pytest.mark.slow
def test_a_failing_part_is_counted_and_the_others_run(tmp_path):
    done = _check(tmp_path, VARIANTS="no-such-variant", PYTHON="python")
    assert done.returncode >= 1
    assert "== train: FAILED" in done.stdout and "== mamba: ok in" in done.stdout
