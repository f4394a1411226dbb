"""Presets and schema; Table I built from run metrics."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from baselines import MODELS
from noise2map.config import SCHEMA_PATH, load_config, task_settings, validate_config
from noise2map.errors import ConfigError, DataFormatError
from noise2map.evaluation.metrics import scores_from_counts
from noise2map.reporting.tables import PAPER_TABLE1, table1_markdown, write_table1

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "workflow" / "config" / "demo.yaml"


def test_paper_preset_states_the_paper_experiment():
    c = load_config()
    assert c["tile_size"] == 256 and c["model_size"] == "paper"
    assert c["noise2map"]["scheduler"] == {"name": "ddim", "num_train_timesteps": 1000, "beta_schedule": "linear",
                                           "beta_start": 0.0001, "beta_end": 0.02}
    assert (c["noise2map"]["val_timestep"], c["noise2map"]["test_timestep"]) == (500, 999)
    t = c["training"]
    assert (t["optimizer"], t["lr"], t["grad_accumulation"], t["precision"]) == ("adam", 1e-4, 2, "32-true")
    weights = {(d, k): tuple(task_settings(c, d, k)["class_weights"]) for d in c["datasets"] for k in ("ss", "cd")}
    assert weights == {("spacenet7", "cd"): (1, 3), ("xview2", "cd"): (1, 3), ("whu", "cd"): (1, 1),
                       ("xview2", "ss"): (1, 3), ("whu", "ss"): (1, 10), ("spacenet7", "ss"): (1, 5)}
    assert task_settings(c, "whu", "cd")["max_epochs"] == 500
    assert task_settings(c, "spacenet7", "ss")["max_epochs"] == 200
    p = c["pretrain"]
    assert (p["num_images"], p["epochs"], p["lr"], p["scheduler"]["name"]) == (10000, 200, 1e-4, "ddpm")


def test_demo_preset_merges_over_paper():
    c = load_config(DEMO)
    assert (c["preset"], c["results_dir"], c["tile_size"], c["model_size"]) == ("demo", "results/demo", 32, "demo")
    assert c["training"]["optimizer"] == "adam"  # inherited


def test_the_config_check_reads_model_names_from_the_registry():
    from noise2map.config import _schema_with_registry

    enums = _schema_with_registry()["properties"]["models"]["properties"]
    for task in ("ss", "cd"):
        assert set(enums[task]["items"]["enum"]) == {k for k, s in MODELS.items() if s.task == task}
    assert "enum" not in str(yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["models"])  # none kept by hand


def test_bad_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"lr": -1, "learning_rate": 3}}))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "training" in str(err.value) and "learning_rate" in str(err.value) and "bad.yaml" in str(err.value)
    c = load_config()
    c["models"]["ss"] = ["fc-siam-conc"]
    with pytest.raises(ConfigError):
        validate_config(c)


def _write_run(root, task, dataset, model_key, model, seed, counts):
    run = root / task / dataset / model_key / f"seed{seed}"
    run.mkdir(parents=True)
    tp, fp, fn, tn = counts
    row = {"task": task, "model": model, "model_key": model_key, "dataset": dataset, "seed": seed,
           "preset": "test", "params_m": 1.0, "paper_params_m": 2.0, "num_test_tiles": 3,
           "tp": tp, "fp": fp, "fn": fn, "tn": tn, **scores_from_counts(tp, fp, fn, tn)}
    (run / "metrics.json").write_text(json.dumps(row))
    return run / "metrics.json"


def test_table1_from_runs(tmp_path):
    paths = [
        _write_run(tmp_path, "ss", "WHU", "unet", "UNet", 0, (30, 10, 20, 40)),
        _write_run(tmp_path, "ss", "WHU", "unet", "UNet", 1, (35, 5, 15, 45)),
        _write_run(tmp_path, "ss", "WHU", "noise2map-ss", "Noise2Map-SS", 0, (45, 5, 5, 45)),
        _write_run(tmp_path, "cd", "WHU", "fc-siam-conc", "FCSiamConc", 0, (5, 5, 5, 85)),
    ]
    table = write_table1(paths, tmp_path / "table1.csv")
    on_disk = pd.read_csv(tmp_path / "table1.csv")
    assert list(on_disk.columns[:15]) == ["task", "model", "params_m", "dataset", "precision", "recall", "f1",
                                          "iou", "rank", "seed", "preset", "tp", "fp", "fn", "tn"]
    assert len(on_disk) == 4
    n2m = on_disk[on_disk.model == "Noise2Map-SS"].iloc[0]
    assert n2m["rank"] == 1 and n2m["f1"] == pytest.approx(90.0, abs=1e-3)
    assert set(on_disk[on_disk.model == "UNet"]["rank"]) == {2}
    md = (tmp_path / "table1.md").read_text()
    assert "| Noise2Map-SS |" in md and "averaged over 2 seeds" in md
    assert table.iloc[0]["task"] == "ss"


def test_markdown_shows_paper_value_and_delta(tmp_path):
    path = _write_run(tmp_path, "ss", "WHU", "unet", "UNet", 0, (30, 10, 20, 40))
    table = write_table1([path], tmp_path / "t.csv")
    md = table1_markdown(table, pd.read_csv(PAPER_TABLE1))
    f1 = table.iloc[0]["f1"]
    assert f"{f1:.2f} (91.51, {f1 - 91.51:+.2f})" in md
    assert "32.5" in md and "| 1 (3) |" in md


def test_table1_rejects_a_file_that_is_no_run_metrics(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"task": "ss"}))
    with pytest.raises(DataFormatError, match="m.json"):
        write_table1([bad], tmp_path / "t.csv")


def _write_scored_run(root, model_key, model, tiles, variant=None):
    """A run folder with per-tile counts (for the intervals) and its metrics.json."""
    run = root / model_key / (variant or "own") / "seed0"
    run.mkdir(parents=True)
    counts = pd.DataFrame(tiles, columns=["tp", "fp", "fn", "tn"])
    counts.insert(0, "tile_id", [f"t{i}" for i in range(len(tiles))])
    counts.to_csv(run / "tile_counts.csv", index=False)
    tp, fp, fn, tn = (int(counts[c].sum()) for c in ("tp", "fp", "fn", "tn"))
    row = {"task": "ss", "model": f"{model} ({variant})" if variant else model, "model_key": model_key,
           "paper_model": model, "variant": variant, "ranked": variant is None, "dataset": "WHU", "seed": 0,
           "preset": "test", "params_m": 1.0, "paper_params_m": 2.0, "num_test_tiles": len(tiles),
           "tp": tp, "fp": fp, "fn": fn, "tn": tn, **scores_from_counts(tp, fp, fn, tn)}
    (run / "metrics.json").write_text(json.dumps(row))
    return run / "metrics.json"


def test_a_variant_row_stands_beside_its_model_out_of_the_rank(tmp_path):
    # F1 order: released-backbone variant > UNet > Noise2Map (ours)
    paths = [
        _write_scored_run(tmp_path, "unet", "UNet", [(30, 10, 20, 40), (20, 5, 5, 70)]),
        _write_scored_run(tmp_path, "noise2map-ss", "Noise2Map-SS", [(10, 30, 40, 20), (5, 20, 20, 55)]),
        _write_scored_run(tmp_path, "noise2map-ss", "Noise2Map-SS", [(45, 5, 5, 45), (25, 1, 1, 73)],
                          variant="released aid-10k backbone"),
    ]
    table = write_table1(paths, tmp_path / "table1.csv", resamples=20)
    by_model = table.set_index("model")
    variant = "Noise2Map-SS (released aid-10k backbone)"
    # the paper's rank is over the ranked models only; rank_all places every row
    assert by_model.loc["UNet", "rank"] == 1 and by_model.loc["Noise2Map-SS", "rank"] == 2
    assert pd.isna(by_model.loc[variant, "rank"]) and not by_model.loc[variant, "ranked"]
    assert by_model[["rank_all"]].to_dict()["rank_all"] == {variant: 1, "UNet": 2, "Noise2Map-SS": 3}
    on_disk = pd.read_csv(tmp_path / "table1.csv").set_index("model")
    assert on_disk.loc["UNet", "rank"] == 1 and pd.isna(on_disk.loc[variant, "rank"])
    md = (tmp_path / "table1.md").read_text()
    paper = pd.read_csv(PAPER_TABLE1).set_index(["task", "model", "dataset"])
    paper_f1 = paper.loc[("ss", "Noise2Map-SS", "WHU"), "f1"]
    variant_line = next(line for line in md.splitlines() if line.startswith(f"| {variant} |"))
    # read against Noise2Map-SS's paper row, placed among all rows, out of the rank
    assert f"({paper_f1:.2f}, " in variant_line and variant_line.endswith("| – (all: 1) |")
    ours_line = next(line for line in md.splitlines() if line.startswith("| Noise2Map-SS |"))
    paper_rank = int(paper.loc[("ss", "Noise2Map-SS", "WHU"), "rank"])
    assert ours_line.endswith(f"| 2 ({paper_rank}; all: 3) |")
    # intervals for all three rows, rank stability among the two ranked models only
    cells = pd.read_csv(tmp_path / "table1_intervals.csv")
    assert sorted(cells["model"]) == sorted(["UNet", "Noise2Map-SS", variant])
    assert cells.set_index("model").loc[variant, "paper_f1"] == pytest.approx(paper_f1)
    ranks = pd.read_csv(tmp_path / "rank_stability.csv")
    assert sorted(ranks["model"]) == ["Noise2Map-SS", "UNet"]
    assert ranks["rank_ci_high"].max() <= 2
