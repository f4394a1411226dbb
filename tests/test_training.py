"""The training loop on a synthetic tile store: determinism, evaluation-only reruns, init."""

import pandas as pd
import pytest
import torch
import yaml

from noise2map.config import load_config, prepared_dir
from noise2map.data import generate, prepare
from noise2map.training.run import evaluate_run, train_run

DEMO = "workflow/config/demo.yaml"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    config = load_config(DEMO)
    config.update(data_dir=str(root / "data"), results_dir=str(root / "results"), datasets=["whu"])
    config["training"]["max_epochs"] = 2
    config["training"]["datasets"]["whu"]["cd"]["max_epochs"] = 2
    raw = root / "data" / "raw"
    generate("whu-cd", raw, seed=0)
    prepare("whu-cd", raw, prepared_dir(config, "whu", "cd"), config["tile_size"])
    return config


def _counts(run):
    return pd.read_csv(run / "tile_counts.csv")


def test_determinism_same_seed_and_config_give_identical_metrics(config, tmp_path):
    first = train_run(config, "cd", "whu", "fc-siam-conc", 3, tmp_path / "a")
    second = train_run(config, "cd", "whu", "fc-siam-conc", 3, tmp_path / "b")
    assert {k: first[k] for k in ("tp", "fp", "fn", "tn")} == {k: second[k] for k in ("tp", "fp", "fn", "tn")}
    assert _counts(tmp_path / "a").equals(_counts(tmp_path / "b"))
    assert not (tmp_path / "a" / "checkpoints" / "last.ckpt").exists()  # dropped after success


def test_evaluation_only_rerun_gives_the_same_counts(config, tmp_path):
    run = tmp_path / "run"
    metrics = train_run(config, "cd", "whu", "noise2map-cd", 0, run)
    before = _counts(run)
    again = evaluate_run(run)
    assert _counts(run).equals(before)
    assert again["f1"] == metrics["f1"] and again["seed"] == 0 and again["dataset"] == "WHU"
    assert list(before.columns) == ["tile_id", "tp", "fp", "fn", "tn"]
    assert before["tile_id"].is_unique and len(before) == metrics["num_test_tiles"]


def test_pretraining_starts_from_a_diffusers_folder(tmp_path):
    from baselines.noise2map_models import DEMO_UNET
    from noise2map.models import build_unet
    from noise2map.training.tasks import DenoisingPretraining

    torch.manual_seed(1)
    source = build_unet(DEMO_UNET)
    source.save_pretrained(tmp_path / "unet")
    module = DenoisingPretraining(DEMO_UNET, {"name": "ddpm", "num_train_timesteps": 1000},
                                  init_from=str(tmp_path / "unet"))
    for key, value in source.state_dict().items():
        assert torch.equal(module.unet.state_dict()[key], value)


def test_resume_after_kill_matches_an_uninterrupted_run(config, tmp_path):
    """kill -9 a training once its first epoch-end checkpoint exists; the rerun resumes from
    it and ends with the same test counts as a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = {**config, "training": {**config["training"], "max_epochs": 12,
                                     "datasets": {"whu": {"ss": {"batch_size": 4},
                                                          "cd": {"batch_size": 4, "class_weights": [1, 1],
                                                                 "max_epochs": 12}}}}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))

    def train(run):
        return [sys.executable, "-m", "noise2map.cli", "train", "--config", str(cfg), "--task", "cd",
                "--dataset", "whu", "--model", "fc-siam-conc", "--seed", "5", "--run-dir", str(run)]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (killed / "metrics.json").exists(), "the run was not killed mid-training"
    subprocess.run(train(killed), check=True, capture_output=True)
    subprocess.run(train(tmp_path / "whole"), check=True, capture_output=True)
    assert _counts(killed).equals(_counts(tmp_path / "whole"))


def test_val_selection_trains_on_the_rest_and_records_its_tiles(config, tmp_path):
    run = tmp_path / "run"
    metrics = train_run({**config, "selection": "val"}, "cd", "whu", "fc-siam-conc", 0, run)
    held = pd.read_csv(run / "val_tiles.csv")["tile_id"]
    train_ids = pd.read_csv(prepared_dir(config, "whu", "cd") / "train" / "tiles.csv")["tile_id"]
    assert len(held) == -(-len(train_ids) // 10) and set(held) <= set(train_ids)
    assert metrics["selection"] == "val" and metrics["selected_on"] == "val-carve"


def test_ablation_run_uses_its_variant_and_half_the_training_scenes(config, tmp_path):
    from noise2map.ablations import ablation_config

    ablated = ablation_config({**config, "ablations": {**config["ablations"], "max_epochs": 1}}, "table4", "T500")
    train_run(ablated, "cd", "whu", "noise2map-cd", 0, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["noise2map"]["scheduler"]["num_train_timesteps"] == 500 and saved["noise2map"]["test_timestep"] == 499
    steps = pd.read_csv(tmp_path / "run" / "train_log" / "metrics.csv")["train/loss"].notna().sum()
    n_train = len(pd.read_csv(prepared_dir(config, "whu", "cd") / "train" / "tiles.csv"))
    batches = -(-(-(-n_train // 2)) // config["training"]["datasets"]["whu"]["cd"]["batch_size"])
    assert steps == -(-batches // config["training"]["grad_accumulation"])  # one epoch over half the scenes
