"""One run identity decides resume: a killed run resumes exactly when its fingerprint (and what
it starts from) is unchanged; the checkpoints of another run are moved aside, never deleted,
and listed by ``noise2map runs``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import kill_once_written
from noise2map.cli import main
from noise2map.config import deep_merge, load_config, read_yaml
from noise2map.training.resume import remove_stale, run_states, same_run, set_aside_stale_checkpoints
from noise2map.runspec import run_spec, unet_fields

ROOT = Path(__file__).resolve().parent.parent
PAPER, DEMO = ROOT / "workflow/config/paper.yaml", ROOT / "workflow/config/demo.yaml"


def _fields(config: dict, task="cd", dataset="whu", model="fc-siam-conc", seed=0) -> dict:
    return {"task": task, "dataset": dataset, "model": model, "seed": seed, **unet_fields(None),
            "fingerprint": run_spec(config, task, dataset, model, seed).fingerprint}


# edits a user makes mid-campaign that change no run's result, and edits that do
KEEPS = {
    "a seed": {"seeds": [0, 1, 2]},
    "a model": {"models": {"cd": ["noise2map-cd", "fc-siam-conc", "bit"]}},
    "a figure": {"figures": {"tiles": 5, "dataset": "xview2"}},
    "bootstrap": {"bootstrap": {"resamples": 500, "seed": 3}},
    "an ablation": {"ablations": {"timesteps": [500, 1000], "max_epochs": 10}},
    "a mirror": {"data_mirror": "http://127.0.0.1:9/"},
    "warm start": {"warm_start": True},
    "the logger": {"training": {"logger": "tensorboard"}},
    "the devices": {"training": {"devices": 4, "num_workers": 3, "checkpoint_every_n_steps": 7}},
}
CHANGES = {
    "lr": ({"training": {"lr": 3e-4}}, "fc-siam-conc"),
    "epochs": ({"training": {"datasets": {"whu": {"cd": {"max_epochs": 7}}}}}, "fc-siam-conc"),
    "batch": ({"training": {"datasets": {"whu": {"cd": {"batch_size": 16}}}}}, "fc-siam-conc"),
    "a data rule": ({"preparation": {"whu_cd_pairs": "keep_all"}}, "fc-siam-conc"),
    "a model option": ({"noise2map": {"ss_noise": "gaussian"}}, "noise2map-cd"),
    "the weights": ({"weights": "none"}, "fc-siam-conc"),
    "the accumulation": ({"training": {"accumulation": "sum"}}, "fc-siam-conc"),
}


@pytest.mark.parametrize("edit", sorted(KEEPS))
def test_edits_outside_the_fingerprint_keep_a_killed_run_resumable(edit):
    before = load_config(PAPER)
    after = deep_merge(before, KEEPS[edit])
    for model in ("fc-siam-conc", "noise2map-cd"):
        assert same_run(_fields(before, model=model), _fields(after, model=model)), (edit, model)


@pytest.mark.parametrize("edit", sorted(CHANGES))
def test_edits_of_what_determines_the_result_start_afresh(edit):
    change, model = CHANGES[edit]
    before = load_config(PAPER)
    after = deep_merge(before, change)
    assert not same_run(_fields(before, model=model), _fields(after, model=model)), edit


def test_a_new_pretrained_unet_at_the_same_path_is_another_start(tmp_path):
    unet = tmp_path / "unet.pt"
    torch.save({"w": torch.zeros(2)}, unet)
    config = load_config(PAPER)
    first = {**_fields(config, model="noise2map-cd"), **unet_fields(unet)}
    torch.save({"w": torch.ones(2)}, unet)  # pretrained again (another pretrain setting), same file name
    second = {**_fields(config, model="noise2map-cd"), **unet_fields(unet)}
    assert first["pretrained_unet"] == second["pretrained_unet"] and not same_run(first, second)
    # a folder written before the content was recorded is judged on the rest
    older = {k: v for k, v in first.items() if k != "pretrained_unet_sha256"}
    assert same_run(older, second)


def _run_folder(run: Path, fields: dict, files=("last.ckpt", "best.ckpt"), epoch=3) -> dict:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"preset": "x", "run": fields}))
    data = {}
    for name in files:
        torch.save({"epoch": epoch, "name": name}, run / "checkpoints" / name)
        data[name] = (run / "checkpoints" / name).read_bytes()
    return data


def test_checkpoints_of_another_run_are_moved_aside_never_deleted(tmp_path, caplog):
    run = tmp_path / "runs/cd/whu/fc-siam-conc/seed0"
    old = {"task": "cd", "dataset": "whu", "model": "fc-siam-conc", "seed": 0, "fingerprint": "aaaa"}
    data = _run_folder(run, old)
    assert set_aside_stale_checkpoints(run, dict(old)) is None  # the same run: resumed, nothing moved
    assert (run / "checkpoints/last.ckpt").read_bytes() == data["last.ckpt"]
    with caplog.at_level(logging.WARNING):
        moved = set_aside_stale_checkpoints(run, {**old, "fingerprint": "bbbb"})
    assert moved == run / "checkpoints/stale-aaaa"
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == data  # byte for byte, nothing lost
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["stale-aaaa"]
    assert "moved to" in caplog.text and "stale-aaaa" in caplog.text and "--remove-stale" in caplog.text
    # the next run of fingerprint bbbb is killed, then its settings change again: a second folder
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {**old, "fingerprint": "bbbb"}}))
    torch.save({"epoch": 1}, run / "checkpoints/last.ckpt")
    assert set_aside_stale_checkpoints(run, {**old, "fingerprint": "cccc"}) == run / "checkpoints/stale-bbbb"
    # the same old fingerprint twice (edited back and forth) never overwrites the first folder
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {**old, "fingerprint": "aaaa"}}))
    torch.save({"epoch": 2}, run / "checkpoints/last.ckpt")
    assert set_aside_stale_checkpoints(run, {**old, "fingerprint": "cccc"}) == run / "checkpoints/stale-aaaa-2"
    assert {p.name: p.read_bytes() for p in (run / "checkpoints/stale-aaaa").iterdir()} == data
    # no record at all: the checkpoints are still kept
    (run / "config.yaml").unlink()
    torch.save({"epoch": 0}, run / "checkpoints/last.ckpt")
    assert set_aside_stale_checkpoints(run, old) == run / "checkpoints/stale-unknown"


def test_runs_lists_states_and_only_the_explicit_command_removes_stale_folders(tmp_path, capsys):
    root = tmp_path / "results"
    base = {"task": "cd", "dataset": "whu", "model": "bit"}
    _run_folder(root / "runs/cd/whu/bit/seed0", {**base, "seed": 0, "fingerprint": "f0"}, ("best.ckpt",), epoch=9)
    (root / "runs/cd/whu/bit/seed0/metrics.json").write_text("{}")
    _run_folder(root / "runs/cd/whu/bit/seed1", {**base, "seed": 1, "fingerprint": "f1"}, epoch=4)
    stale_run = root / "runs/cd/whu/bit/seed2"
    _run_folder(stale_run, {**base, "seed": 2, "fingerprint": "f2old"}, epoch=6)
    set_aside_stale_checkpoints(stale_run, {**base, "seed": 2, "fingerprint": "f2new"})
    (stale_run / "config.yaml").write_text(yaml.safe_dump({"run": {**base, "seed": 2, "fingerprint": "f2new"}}))
    rows = {(Path(r["run"]).relative_to(root).as_posix(), r["state"]): r for r in run_states(root)}
    assert set(rows) == {("runs/cd/whu/bit/seed0", "done"), ("runs/cd/whu/bit/seed1", "resumable"),
                         ("runs/cd/whu/bit/seed2", "started"), ("runs/cd/whu/bit/seed2/checkpoints/stale-f2old", "stale")}
    assert rows[("runs/cd/whu/bit/seed0", "done")]["epoch"] == 9
    assert rows[("runs/cd/whu/bit/seed1", "resumable")]["epoch"] == 4
    stale = rows[("runs/cd/whu/bit/seed2/checkpoints/stale-f2old", "stale")]
    assert stale["fingerprint"] == "f2old" and stale["epoch"] == 6 and stale["bytes"] > 0
    assert main(["runs", "--results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "stale-f2old" in out and "resumable" in out and "1 stale checkpoint folder(s)" in out
    assert (stale_run / "checkpoints/stale-f2old").is_dir()  # listing never deletes
    assert main(["runs", "--results", str(root), "--remove-stale"]) == 0
    assert "removed 1 stale checkpoint folder(s)" in capsys.readouterr().out
    assert not (stale_run / "checkpoints/stale-f2old").exists()
    assert (root / "runs/cd/whu/bit/seed1/checkpoints/last.ckpt").is_file()  # a resumable run is untouched
    assert remove_stale(run_states(root)) == []


def test_the_cli_and_snakemake_see_the_same_defaults(tmp_path):
    """load_config fills the schema's defaults as Snakemake's validate(set_default=True) does:
    a run started by one and resumed by the other is judged on the same config."""
    from snakemake.utils import validate

    raw = deep_merge(read_yaml(PAPER), read_yaml(DEMO))
    for key in ("warm_start", "model_modules", "downloads_dir"):
        raw.pop(key, None)
    raw["training"].pop("logger", None)
    raw["training"].pop("checkpoint_every_n_epochs", None)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    ours = load_config(tmp_path / "p.yaml", base=None)
    theirs = yaml.safe_load(yaml.safe_dump(raw))
    validate(theirs, str(ROOT / "workflow/schemas/config.schema.yaml"), set_default=True)
    assert ours == theirs
    assert ours["training"]["logger"] == "csv" and ours["training"]["checkpoint_every_n_epochs"] == 1
    assert ours["warm_start"] is False and ours["model_modules"] == [] and ours["downloads_dir"] == "data/downloads"


def test_the_run_spec_is_the_one_identity_and_keeps_earlier_fingerprints(tmp_path):
    import hashlib
    import json

    from noise2map.config import run_dir, run_settings, store_name
    from noise2map.training.run import run_fingerprint

    config = load_config(PAPER)
    spec = run_spec(config, "ss", "xview2", "unet", 3, "a variant")
    payload = {"settings": run_settings(config, "ss", "xview2", "unet"), "seed": 3, "variant": "a variant",
               "store": store_name(config, "xview2-ss")}
    assert spec.fingerprint == hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert spec.fingerprint == run_fingerprint(config, "ss", "xview2", "unet", 3, "a variant")
    assert spec.settings == run_settings(config, "ss", "xview2", "unet") and spec.store == "xview2-ss"
    assert spec.run_dir == run_dir(config, "ss", "xview2", "unet", 3)
    assert spec.fields() == {"task": "ss", "dataset": "xview2", "model": "unet", "seed": 3, "pretrained_unet": None,
                             "variant": "a variant", "display_name": "UNet (a variant)", "fingerprint": spec.fingerprint}
    with pytest.raises(Exception):
        spec.seed = 4  # frozen


# --------------------------------------------------------------------------------------------
# a real run, killed and resumed through Snakemake and the CLI across preset edits

TARGET = "results/demo/runs/cd/whu/fc-siam-conc/seed{seed}/metrics.json"


def _preset(path: Path, **edits) -> None:
    preset = deep_merge(read_yaml(DEMO), {
        "datasets": ["whu"], "tasks": ["cd"], "seeds": [4], "warm_start": False,
        "models": {"ss": ["unet"], "cd": ["fc-siam-conc"]},
        "training": {"checkpoint_every_n_steps": 1, "grad_accumulation": 2,
                     "datasets": {"whu": {"cd": {"batch_size": 4, "class_weights": [1, 1], "max_epochs": 4}}}}})
    path.write_text(yaml.safe_dump(deep_merge(preset, edits)))


def _snakemake(tmp_path, preset, *args, popen=False):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2",
           "--directory", str(tmp_path), *args, "--configfile", str(preset)]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)


def _fingerprint(run: Path) -> str:
    return yaml.safe_load((run / "config.yaml").read_text())["run"]["fingerprint"]


@pytest.mark.slow
def test_killed_runs_resume_across_preset_edits_and_restart_on_an_lr_edit(tmp_path):
    preset = tmp_path / "preset.yaml"
    _preset(preset)
    run4 = tmp_path / "results/demo/runs/cd/whu/fc-siam-conc/seed4"
    log4 = tmp_path / "logs/demo/train_model/cd_whu_fc-siam-conc_seed4.log"

    # 1. kill -9 mid-run; add a seed, a model and a figure; the Snakemake rerun resumes it
    kill_once_written(_snakemake(tmp_path, preset, TARGET.format(seed=4), popen=True),
                      run4 / "checkpoints/last.ckpt", group=True)
    first = _fingerprint(run4)
    killed_at = torch.load(run4 / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < killed_at < 8
    _preset(preset, seeds=[4, 5], models={"cd": ["fc-siam-conc", "bit"]}, figures={"tiles": 2},
            bootstrap={"resamples": 200, "seed": 1})
    assert _snakemake(tmp_path, preset, "--unlock").returncode == 0
    rerun = _snakemake(tmp_path, preset, TARGET.format(seed=4))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    text = log4.read_text()
    assert "Restoring states from the checkpoint path at" in text, text[-3000:]
    assert f"this process took optimiser steps {killed_at} to 8" in text
    assert _fingerprint(run4) == first and not list((run4 / "checkpoints").glob("stale-*"))

    # 2. a run started by Snakemake (the new seed) and resumed by `noise2map train` with the preset
    run5 = tmp_path / "results/demo/runs/cd/whu/fc-siam-conc/seed5"
    kill_once_written(_snakemake(tmp_path, preset, TARGET.format(seed=5), popen=True),
                      run5 / "checkpoints/last.ckpt", group=True)
    by_hand = subprocess.run([sys.executable, "-m", "noise2map.cli", "train", "--config", str(preset), "--task", "cd",
                              "--dataset", "whu", "--model", "fc-siam-conc", "--seed", "5", "--threads", "1"],
                             check=False, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    assert "Restoring states from the checkpoint path at" in by_hand.stderr
    assert not list((run5 / "checkpoints").glob("stale-*")) and (run5 / "metrics.json").is_file()

    # 3. lr changed: the finished run's checkpoint is set aside (kept), and it trains afresh
    _preset(preset, seeds=[4, 5], models={"cd": ["fc-siam-conc", "bit"]}, training={"lr": 3.0e-4})
    relr = _snakemake(tmp_path, preset, TARGET.format(seed=4))
    assert relr.returncode == 0, relr.stderr[-3000:]
    text = log4.read_text()
    assert "this process took optimiser steps 0 to 8" in text and f"stale-{first}" in text
    assert (run4 / f"checkpoints/stale-{first}/best.ckpt").is_file() and _fingerprint(run4) != first
    listing = subprocess.run([sys.executable, "-m", "noise2map.cli", "runs", "--results", str(tmp_path / "results")],
                             check=True, capture_output=True, text=True, timeout=300).stdout
    assert f"stale-{first}" in listing and "stale" in listing
