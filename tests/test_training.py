"""The training loop on a synthetic tile store: determinism, evaluation-only reruns, init."""

import pandas as pd
import pytest
import torch
import yaml
from conftest import kill_once_written

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
    it (traced: its first step is the checkpoint's, at the next epoch's first batch, and it
    trains on the uninterrupted run's remaining batches only) and ends with the weights and
    test counts of a run never interrupted."""
    import subprocess

    import traced_cli

    config = {**config, "training": {**config["training"], "max_epochs": 12, "checkpoint_every_n_epochs": 3,
                                     "datasets": {"whu": {"ss": {"batch_size": 4},
                                                          "cd": {"batch_size": 4, "class_weights": [1, 1],
                                                                 "max_epochs": 12}}}}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))

    def train(run):  # one thread in all three processes: the same sums in the same order
        return traced_cli.command("train", "--config", str(cfg), "--task", "cd", "--dataset", "whu", "--model",
                                  "fc-siam-conc", "--seed", "5", "--run-dir", str(run), "--threads", "1")

    killed, trace = tmp_path / "killed", tmp_path / "trace"
    proc = subprocess.Popen(train(killed), env=traced_cli.environment(trace), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    last = killed / "checkpoints" / "last.ckpt"
    kill_once_written(proc, last)
    assert last.exists() and not (killed / "metrics.json").exists(), "the run was not killed mid-training"
    state = torch.load(last, map_location="cpu", weights_only=False)
    # 19 pairs in batches of 4 = 5 batches; the demo's released accumulation (k = 2) trains on
    # batches 2 and 4 alone: 2 steps an epoch, 24 in 12 epochs
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["done"] == 2  # an epoch end
    assert state["global_step"] < 24, "last.ckpt first appeared after the last epoch: no epoch end wrote one"
    assert state["global_step"] % 6 == 0, "checkpoint_every_n_epochs: 3 writes it at every 3rd epoch end (6 steps)"
    resume = subprocess.run(train(killed), env=traced_cli.environment(trace), check=False, capture_output=True,
                            text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in resume.stderr
    whole = subprocess.run(train(tmp_path / "whole"), env=traced_cli.environment(tmp_path / "trace_whole"),
                           check=False, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = traced_cli.read_trace(tmp_path / "trace_whole")
    assert len(uninterrupted) == 24 and uninterrupted[-1]["step"] == 23
    traced_cli.assert_resumed(traced_cli.read_trace(trace), uninterrupted, state, resume.stderr, batches=2)
    assert _counts(killed).equals(_counts(tmp_path / "whole"))
    resumed, fresh = (torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
                      ["state_dict"] for run in (killed, tmp_path / "whole"))
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)


def test_val_selection_trains_on_the_rest_and_records_its_tiles(config, tmp_path):
    run = tmp_path / "run"
    metrics = train_run({**config, "selection": "val"}, "cd", "whu", "fc-siam-conc", 0, run)
    held = pd.read_csv(run / "val_tiles.csv")["tile_id"]
    train_ids = pd.read_csv(prepared_dir(config, "whu", "cd") / "train" / "tiles.csv")["tile_id"]
    assert len(held) == -(-len(train_ids) // 10) and set(held) <= set(train_ids)
    assert metrics["selection"] == "val" and metrics["selected_on"] == "val-carve"


def test_ablation_run_uses_its_variant_and_half_the_training_scenes(config, tmp_path):
    from noise2map.reporting.ablations import ablation_config

    ablated = ablation_config({**config, "ablations": {**config["ablations"], "max_epochs": 1}}, "table4", "T500")
    train_run(ablated, "cd", "whu", "noise2map-cd", 0, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["noise2map"]["scheduler"]["num_train_timesteps"] == 500 and saved["noise2map"]["test_timestep"] == 499
    steps = pd.read_csv(tmp_path / "run" / "train_log" / "metrics.csv")["train/loss"].notna().sum()
    n_train = len(pd.read_csv(prepared_dir(config, "whu", "cd") / "train" / "tiles.csv"))
    batches = -(-(-(-n_train // 2)) // config["training"]["datasets"]["whu"]["cd"]["batch_size"])
    from noise2map.training.schedule import keeps_batch

    train = config["training"]  # one epoch over half the scenes, the batches the accumulation steps on
    assert steps == sum(keeps_batch(i, train["grad_accumulation"], train.get("accumulation", "sum"))
                        for i in range(batches)) >= 1


def test_a_batchnorm_model_trains_where_the_last_batch_would_hold_one_sample(tmp_path):
    """19 WHU-CD training pairs in batches of 2 leave one sample over: merged into the batch
    before it, ChangeFormer-v6's BatchNorm never sees a batch of one (it raised "Expected more
    than 1 value per channel" on the demo's validation carve)."""
    from conftest import whu_cd_demo_store

    from noise2map.config import deep_merge

    config = deep_merge(whu_cd_demo_store(tmp_path), {
        "training": {"accumulation": "sum", "grad_accumulation": 1,
                     "datasets": {"whu": {"cd": {"batch_size": 2, "max_epochs": 1}}}}})
    metrics = train_run(config, "cd", "whu", "changeformer-v6", 0, tmp_path / "run", threads=1)
    assert metrics["num_test_tiles"] == 5 and metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"] > 0
