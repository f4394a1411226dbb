"""The demo DAG through Snakemake: synthetic raw data → tiles → pretraining → training → Table I.

A reduced DAG (one data set, both tasks, Noise2Map and one baseline per task) in a temporary
working directory, with the same rules and code paths as the full demo.
"""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    override = work / "reduced.yaml"
    override.write_text(yaml.safe_dump({
        "datasets": ["whu"],
        "models": {"ss": ["noise2map-ss", "unet"], "cd": ["noise2map-cd", "fc-siam-conc"]},
    }))
    # --configfile takes several files: targets and flags go before it.
    configs = ["--configfile", str(ROOT / "workflow/config/demo.yaml"), str(override)]

    def snakemake(*args):
        cmd = SNAKEMAKE + ["--directory", str(work), *args, *configs]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)

    done = snakemake("results/demo/table1.csv", "results/demo/selection_delta.csv")
    assert done.returncode == 0, done.stderr[-4000:]
    return work, snakemake


@pytest.mark.slow
def test_demo_dag_writes_table1_with_every_model(demo_run):
    work, _ = demo_run
    table = pd.read_csv(work / "results/demo/table1.csv")
    assert set(zip(table.task, table.model)) == {("ss", "Noise2Map-SS"), ("ss", "UNet"),
                                                ("cd", "Noise2Map-CD"), ("cd", "FCSiamConc")}
    assert set(table.dataset) == {"WHU"} and set(table.preset) == {"demo"}
    assert table[["precision", "recall", "f1", "iou"]].stack().between(0, 100).all()
    assert "| Noise2Map-SS |" in (work / "results/demo/table1.md").read_text()


@pytest.mark.slow
def test_table_counts_are_the_sums_of_the_tile_counts(demo_run):
    work, _ = demo_run
    table = pd.read_csv(work / "results/demo/table1.csv")
    for row in table.itertuples():
        run = work / "results/demo/runs" / row.task / "whu" / row.model_key / f"seed{row.seed}"
        tiles = pd.read_csv(run / "tile_counts.csv")
        assert tiles["tile_id"].is_unique
        assert [int(tiles[c].sum()) for c in ("tp", "fp", "fn", "tn")] == [row.tp, row.fp, row.fn, row.tn]
        manifest = json.loads((work / "data/demo/prepared" / f"whu-{row.task}" / "manifest.json").read_text())
        assert len(tiles) == manifest["splits"]["test"]["count"]
        resolved = yaml.safe_load((run / "config.yaml").read_text())
        assert resolved["run"]["model"] == row.model_key and resolved["preset"] == "demo"


@pytest.mark.slow
def test_selection_delta_has_both_selections_for_every_model(demo_run):
    work, _ = demo_run
    delta = pd.read_csv(work / "results/demo/selection_delta.csv")
    table = pd.read_csv(work / "results/demo/table1.csv")
    assert sorted(zip(delta.task, delta.model)) == sorted(zip(table.task, table.model))
    assert set(delta.released_selected_on) == {"test"}  # WHU: the released code's choice
    assert delta[["f1_released", "f1_val", "iou_released", "iou_val"]].notna().all().all()
    assert (delta.delta_f1 - (delta.f1_val - delta.f1_released)).abs().max() < 1e-3
    val_run = work / "results/demo/selection-val/runs/cd/whu/fc-siam-conc/seed0"
    assert (val_run / "val_tiles.csv").is_file() and (val_run / "tile_counts.csv").is_file()
    assert "Checkpoints selected on" in (work / "results/demo/table1.md").read_text()


@pytest.mark.slow
def test_noise2map_started_from_the_pretrained_unet(demo_run):
    work, _ = demo_run
    assert (work / "results/demo/pretrain/aid/noise2map_unet.pt").is_file()
    resolved = yaml.safe_load((work / "results/demo/runs/cd/whu/noise2map-cd/seed0/config.yaml").read_text())
    assert resolved["run"]["pretrained_unet"].endswith("pretrain/aid/noise2map_unet.pt")


@pytest.mark.slow
def test_rerun_has_nothing_to_do(demo_run):
    _, snakemake = demo_run
    dry = snakemake("-n", "results/demo/table1.csv", "results/demo/selection_delta.csv")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slow
def test_a_preset_edit_plans_the_jobs_it_affects_in_one_run(demo_run):
    """Editing the learning rate replans every training (and nothing upstream) in the same
    invocation; the resolved config is written at start, not by a rule the DAG waits on."""
    work, _ = demo_run
    edit = work / "edit.yaml"
    edit.write_text(yaml.safe_dump({"training": {"lr": 0.002}}))
    cmd = SNAKEMAKE + ["--directory", str(work), "-n", "results/demo/table1.csv", "--configfile",
                       str(ROOT / "workflow/config/demo.yaml"), str(work / "reduced.yaml"), str(edit)]
    dry = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    out = dry.stdout + dry.stderr
    stats = out[out.index("Job stats"):].split("\n\n")[0]
    assert "train_model " in stats and "write_table1" in stats
    assert "pretrain_unet" not in stats and "prepare_dataset" not in stats
