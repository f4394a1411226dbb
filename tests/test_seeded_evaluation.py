"""Evaluation is a function of the checkpoint and the tiles: the test-time draws of the
stochastic models (DDPM-CD's feature noise, Noise2Map-SS with Gaussian noise) are keyed by
(seed, stage, tile), so re-scoring a run, scoring it on two processes and Fig. 6 at the test
timestep give the same counts, whatever torch's global generator holds."""

import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import whu_cd_demo_store

from noise2map.config import deep_merge, prepared_dir
from noise2map.keyed_random import evaluation_keys, keyed_uniform, sample_keys, substream_keys


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The demo config with a WHU-CD and a WHU-SS store (both synthetic)."""
    from noise2map.data import generate, prepare

    root = tmp_path_factory.mktemp("seeded")
    config = whu_cd_demo_store(root)
    generate("whu", root / "data" / "raw", seed=0)
    prepare("whu-ss", root / "data" / "raw", prepared_dir(config, "whu", "ss"), config["tile_size"])
    return root, deep_merge(config, {"training": {"datasets": {"whu": {t: {"max_epochs": 1} for t in ("ss", "cd")}}}})


RUNS = {"ddpm-cd": ("cd", {}), "noise2map-ss": ("ss", {"noise2map": {"ss_noise": "gaussian"}})}


@pytest.fixture(scope="module")
def trained(stores):
    from noise2map.training.run import train_run

    root, config = stores
    runs = {}
    for model, (task, override) in RUNS.items():
        run = root / "runs" / task / "whu" / model / "seed3"
        run_config = deep_merge(config, override)
        train_run(run_config, task, "whu", model, 3, run, threads=1)
        runs[model] = run
    return runs


@pytest.mark.parametrize("model", sorted(RUNS))
def test_re_evaluation_rewrites_the_same_counts_whatever_the_global_generator(trained, model):
    from noise2map.training.run import evaluate_run

    run = trained[model]
    first = (run / "tile_counts.csv").read_bytes()
    torch.manual_seed(12345)  # a global generator in another state than at training's end
    evaluate_run(run)
    assert (run / "tile_counts.csv").read_bytes() == first
    torch.manual_seed(999)
    torch.rand(1000)
    evaluate_run(run)
    assert (run / "tile_counts.csv").read_bytes() == first


def test_fig6_at_the_test_timestep_equals_metrics_json(trained):
    """Gaussian SS noise: the sweep draws the test's own noise per tile."""
    import json

    from noise2map.reporting.figures import timestep_sweep

    run = trained["noise2map-ss"]
    metrics = json.loads((run / "metrics.json").read_text())
    row = timestep_sweep(run, [999]).iloc[0]
    assert [int(row[c]) for c in ("tp", "fp", "fn", "tn")] == [metrics[c] for c in ("tp", "fp", "fn", "tn")]


@pytest.mark.slow
def test_ddpm_cd_on_two_processes_scores_as_one(trained):
    run = trained["ddpm-cd"]
    one = pd.read_csv(run / "tile_counts.csv")
    done = subprocess.run([sys.executable, "-m", "noise2map.cli", "evaluate", str(run), "--devices", "2",
                           "--accelerator", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert pd.read_csv(run / "tile_counts.csv").equals(one)


def test_evaluation_keys_depend_on_seed_stage_and_tile_only():
    index = torch.arange(6)
    keys = evaluation_keys(3, "test", index)
    assert torch.equal(keys, evaluation_keys(3, "test", index))
    assert torch.equal(keys[2:4], evaluation_keys(3, "test", index[2:4]))  # not on the batch
    assert keys.unique().numel() == 6
    for other in (evaluation_keys(4, "test", index), evaluation_keys(3, "val", index),
                  sample_keys(3, 0, index)):  # another seed, stage, or a training epoch
        assert not torch.isin(keys, other).any()
    # DDPM-CD's six noised passes per tile draw from six substreams
    streams = torch.stack([substream_keys(keys, s) for s in range(6)])
    assert streams.unique().numel() == 36
    u = keyed_uniform(evaluation_keys(0, "test", torch.arange(20000)))
    assert u.dtype == torch.float64 and 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01


def test_ddpm_cd_keyed_features_do_not_depend_on_the_batch():
    from baselines import build_model

    torch.manual_seed(0)
    model = build_model("ddpm-cd", "demo", num_classes=2).eval()
    pre, post = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    keys = evaluation_keys(0, "test", torch.arange(3))
    whole = model(pre, post, noise_keys=keys)
    torch.manual_seed(7)
    assert torch.equal(model(pre, post, noise_keys=keys), whole)
    split = torch.cat([model(pre[:1], post[:1], noise_keys=keys[:1]), model(pre[1:], post[1:], noise_keys=keys[1:])])
    assert (split - whole).abs().max() < 1e-5  # the same draws; only the batched kernels' rounding differs
    assert (model(pre, post, noise_keys=keys + 1) - whole).abs().max() > 1e-3  # other keys, other noise
