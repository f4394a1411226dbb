"""The SLURM profile against a real scheduler: a reduced demo DAG submitted through
workflow/profiles/slurm with snakemake-executor-plugin-slurm.

Needs a running SLURM (``.ci/run`` starts a single-node one with tests/slurm/start_slurm.sh);
skipped, with the reason, where none answers.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from noise2map.config import load_config, rule_resources

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "workflow/config/demo.yaml"


def _slurm_unavailable() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return "SLURM is not installed: run `sudo bash tests/slurm/start_slurm.sh` (Debian slurm-wlm, munge)"
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if state.returncode != 0 or not any(s.startswith(("idle", "mixed", "allocated")) for s in state.stdout.split()):
        return f"no SLURM node answers (sinfo: {(state.stdout + state.stderr).strip() or 'nothing'}); " \
               "start one with `sudo bash tests/slurm/start_slurm.sh`"
    return None


def test_slurm_resources_come_from_the_config_per_rule():
    paper = load_config()
    train = rule_resources(paper, "train_model")
    assert train == {"cpus_per_task": 8, "mem_mb": 64000, "runtime": 1440, "slurm_extra": "--signal=USR1@300",
                     "gpu": 1}
    assert rule_resources(paper, "prepare_dataset") == {"cpus_per_task": 4, "mem_mb": 32000, "runtime": 240}
    assert "gpu" not in rule_resources(paper, "prepare_dataset")
    four = {**paper, "training": {**paper["training"], "devices": 4}}
    assert rule_resources(four, "train_model")["gpu"] == 4  # the GPUs asked for = processes started
    assert rule_resources(four, "write_efficiency")["gpu"] == 1
    demo = load_config(DEMO)
    assert rule_resources(demo, "train_model")["gpu"] == 0 and "slurm_extra" not in rule_resources(demo, "train_model")


@pytest.mark.slow
def test_slurm_profile_runs_a_reduced_demo_dag(tmp_path):
    reason = _slurm_unavailable()
    if reason:
        pytest.skip(reason)
    override = tmp_path / "reduced.yaml"
    override.write_text(yaml.safe_dump({
        "datasets": ["whu"], "tasks": ["cd"], "seeds": [0],
        "models": {"ss": ["unet"], "cd": ["fc-siam-conc"]},
        "training": {"datasets": {"whu": {"cd": {"batch_size": 8, "class_weights": [1, 1], "max_epochs": 2}}}},
    }))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--profile", str(ROOT / "workflow/profiles/slurm"), "--directory", str(tmp_path),
           # a test cluster: no accounting (squeue for status, no account) and quick polling
           "--slurm-status-command", "squeue", "--slurm-no-account",
           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3",
           "--slurm-keep-successful-logs",
           "results/demo/table1.csv", "--configfile", str(DEMO), str(override)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    table = pd.read_csv(tmp_path / "results/demo/table1.csv")
    assert list(zip(table.task, table.model, table.dataset)) == [("cd", "FCSiamConc", "WHU")]
    # the heavy jobs went through sbatch (one SLURM log each); the light ones ran locally
    logs = tmp_path / ".snakemake" / "slurm_logs"
    submitted = {p.name.removeprefix("rule_") for p in logs.iterdir()} if logs.is_dir() else set()
    assert {"synthesize_raw", "prepare_dataset", "train_model"} <= submitted, submitted
    assert not {"resolve_config", "write_table1"} & submitted
