"""The demo DAG through Snakemake: synthetic raw data → tiles → pretraining → training → every
table and figure → the HTML report.

A reduced DAG (one data set, both tasks, Noise2Map and one baseline per task, fewer ablation
variants, one epoch per ablation run) in a temporary working directory, with the same rules
and code paths as the full demo's default target.
"""

import json
import os
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
        "ablations": {"timesteps": [500, 1000], "schedulers": ["ddim"], "multitask_lambdas": [[0.7, 1.3]],
                      "max_epochs": 1},
    }))
    # --configfile takes several files: targets and flags go before it.
    configs = ["--configfile", str(ROOT / "workflow/config/demo.yaml"), str(override)]

    def snakemake(*args):  # PS1 as a venv's activate exports it (the jobs' shell drops it)
        cmd = SNAKEMAKE + ["--directory", str(work), *args, *configs]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PS1": "(.venv) "})

    # the default target (every table and figure), the report after it, and selection_delta
    done = snakemake("--report", "results/demo/report.html", "--report-after-run", "all",
                     "results/demo/selection_delta.csv")
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
def test_every_job_forked_from_the_warm_server(demo_run):
    """The demo's warm_start: each job of the run started from the one warm server."""
    work, _ = demo_run
    lines = [line.split(" ", 2)[2] for line in (work / "logs/demo/warm_start.log").read_text().splitlines()]
    jobs = [line for line in lines if not line.startswith("warm server")]
    assert [line for line in jobs if not line.startswith("forked")] == []
    trained = sum(1 for line in jobs if "['train'," in line)
    assert trained == len(list((work / "results/demo").rglob("timing.json"))) > 10


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
    dry = snakemake("-n", "all", "results/demo/selection_delta.csv")
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


ABLATION_ROWS = {
    "table2": {("with diffusion", "ss"), ("with diffusion", "cd"),
               ("without diffusion (no noising, no timestep embedding)", "ss"),
               ("without diffusion (no noising, no timestep embedding)", "cd"),
               ("with diffusion, SS noise: Gaussian (paper text)", "ss")},
    "table3": {(f"pretraining: {p}", t) for p in ("none (scratch)", "AID 10k", "ImageNet 10k",
                                                  "MAJOR-TOM Sentinel-2 10k") for t in ("ss", "cd")},
    "table4": {(f"timesteps {n}", t) for n in (500, 1000) for t in ("ss", "cd")},
    "table5": {("scheduler DDIM", "ss"), ("scheduler DDIM", "cd")},
    "multitask": {(s, t) for s in ("single-task", "multi-task lambda_cd=0.7 lambda_ss=1.3") for t in ("ss", "cd")},
}


@pytest.mark.slow
@pytest.mark.parametrize("table", sorted(ABLATION_ROWS))
def test_ablation_tables_have_every_row_beside_the_paper(demo_run, table):
    work, _ = demo_run
    rows = pd.read_csv(work / f"results/demo/{table}.csv")
    assert set(zip(rows.setting, rows.task)) == ABLATION_ROWS[table]
    assert rows.f1.between(0, 100).all() and (rows.n_seeds == 1).all()
    paper = rows.dropna(subset=["paper_f1"])
    assert len(paper) == len(rows) - (table == "table2")  # the SS-noise row is ours alone
    assert ((paper.f1 - paper.paper_f1) - paper.delta_f1).abs().max() < 1e-3
    assert (work / f"results/demo/{table}.md").read_text().startswith("# Table " if table != "multitask" else "# Multi")


@pytest.mark.slow
def test_no_op_variants_share_the_base_run_and_table3_pretrains_each_sample(demo_run):
    work, _ = demo_run
    t2, t4 = (pd.read_csv(work / f"results/demo/{t}.csv").set_index(["variant", "task"]) for t in ("table2", "table4"))
    assert t2.loc[("diffusion", "cd"), "f1"] == t4.loc[("T1000", "cd"), "f1"]  # one run behind both rows
    assert not (work / "results/demo/ablations/table4/T1000").exists()
    for sample in ("aid", "imagenet", "majortom"):
        assert (work / f"results/demo/pretrain/{sample}/noise2map_unet.pt").is_file()
    scratch = yaml.safe_load((work / "results/demo/ablations/table3/scratch/cd/seed0/config.yaml").read_text())
    imagenet = yaml.safe_load((work / "results/demo/ablations/table3/imagenet/cd/seed0/config.yaml").read_text())
    assert scratch["run"]["pretrained_unet"] is None
    assert imagenet["run"]["pretrained_unet"].endswith("pretrain/imagenet/noise2map_unet.pt")
    plain = yaml.safe_load((work / "results/demo/ablations/table2/nodiffusion/ss/seed0/config.yaml").read_text())
    assert plain["noise2map"]["diffusion"] is False and plain["training"]["train_fraction"] == 0.5
    mt = json.loads((work / "results/demo/ablations/multitask/cd0p7ss1p3/seed0/cd/metrics.json").read_text())
    assert (mt["model"], mt["lambda_cd"], mt["lambda_ss"]) == ("Noise2Map-MT", 0.7, 1.3)


@pytest.mark.slow
def test_figures_efficiency_and_the_report(demo_run):
    work, _ = demo_run
    figures = work / "results/demo/figures"
    for name in ("fig4", "fig5", "fig6"):
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (figures / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    sweep = pd.read_csv(figures / "fig6.csv")
    assert list(sweep.timestep) == [999, 900, 800, 700, 600, 500, 400, 300, 200, 100, 50, 10, 0]
    cd = pd.read_csv(work / "results/demo/table1.csv").query("model == 'Noise2Map-CD'").iloc[0]
    at_test_t = sweep[sweep.timestep == 999].iloc[0]
    assert [at_test_t[c] for c in ("tp", "fp", "fn", "tn")] == [cd.tp, cd.fp, cd.fn, cd.tn]
    assert set(pd.read_csv(work / "results/demo/efficiency.csv").model) >= {"Noise2Map-SS", "Noise2Map-CD"}
    report = (work / "results/demo/report.html").read_text()
    for name in ("table1.csv", "table2.csv", "table3.csv", "table4.csv", "table5.csv", "multitask.csv", "efficiency.csv",
                 "fig4.png", "fig5.png", "fig6.png"):
        assert name in report, name
