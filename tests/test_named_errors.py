"""Bad input through the real entry points: a named error (file, problem, what to do), exit
2, no traceback, and nothing created or lost."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from noise2map import cli
from noise2map.config import deep_merge, load_config, validate_config
from noise2map.errors import ConfigError, DataFormatError

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "noise2map.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _named(done, *parts):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for part in parts:
        assert part in done.stderr, (part, done.stderr[-2000:])


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path):
    _named(_cli("evaluate", tmp_path), f"{tmp_path} is not a run folder (it has no config.yaml)")


def test_a_corrupt_checkpoint_is_named(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(load_config(ROOT / "workflow/config/demo.yaml")))
    (run / "checkpoints" / "best.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    _named(_cli("evaluate", run), f"{run / 'checkpoints' / 'best.ckpt'} cannot be loaded", "retrain the run")


def test_train_with_an_unknown_data_set_or_model_creates_no_run_folder(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**load_config(ROOT / "workflow/config/demo.yaml"), "data_dir": str(tmp_path)}))
    base = ["train", "--config", cfg, "--task", "cd", "--seed", "0"]
    for extra, message in ((["--dataset", "mars", "--model", "fc-siam-conc"], "unknown data set 'mars'; available"),
                           (["--dataset", "whu", "--model", "unet9"], "unknown model 'unet9'; available"),
                           (["--dataset", "whu", "--model", "unet"], "model unet is a SS model"),
                           (["--dataset", "whu", "--model", "fc-siam-conc"], "whu is not prepared for cd")):
        run = tmp_path / "run"
        _named(_cli(*base, *extra, "--run-dir", run), message)
        assert not run.exists()


def test_a_truncated_state_file_is_named_with_what_to_do(tmp_path):
    cache = tmp_path / "weights"
    cache.mkdir()
    (cache / "weights.lock.json").write_text('{"resnet50": {"sha256": "ab')
    _named(_cli("weights", "list", "--cache", cache), f"{cache / 'weights.lock.json'} is not valid JSON",
           "cut short", "noise2map weights fetch")
    from noise2map.data import TileDataset

    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{")
    with pytest.raises(DataFormatError, match=r"manifest.json is not valid JSON .*prepare it again"):
        TileDataset(store, "test")


def test_os_errors_name_the_path_and_what_to_do(tmp_path, monkeypatch, capsys):
    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.csv"))

    monkeypatch.setattr(cli, "cmd_rank", disk_full)
    assert cli.main(["rank", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert f"noise2map rank: error: {tmp_path / 'out.csv'}: No space left on device; the disk is full" in err
    monkeypatch.setenv("NOISE2MAP_DEBUG", "1")  # the traceback stays available
    with pytest.raises(OSError):
        cli.main(["rank", "x.csv"])
    monkeypatch.delenv("NOISE2MAP_DEBUG")
    with pytest.raises(OSError):
        cli.main(["--debug", "rank", "x.csv"])


@pytest.mark.parametrize("content, message", [
    ("", "is empty: expected a CSV with columns task, model, dataset, f1, iou"),
    ("task,model,f1,iou\nss,A,1,1\n", "lacks column(s) dataset"),
    ("task,model,dataset,f1,iou\n", "has a header but no rows"),
    ("task,model,dataset,f1,iou\nss,A,WHU,90.1,80\nss,B,WHU,n/a,80\n", "column f1, row 3 (line 3 of the file) holds "
                                                                       "'n/a', not a finite number"),
    ('task,model,dataset,f1,iou\nss,A,WHU,"90,5",80\n', "column f1, row 2 (line 2 of the file) holds '90,5'"),
    ("task,model,dataset,f1,iou\nss,A,WHU,90,inf\n", "column iou, row 2"),
])
def test_rank_refuses_what_it_cannot_rank(tmp_path, capsys, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    assert cli.main(["rank", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"noise2map rank: error: {path}") and message in err


def test_tables_refuse_counts_that_are_not_integers(tmp_path):
    from noise2map.reporting.tables import collect_metrics

    row = {"task": "cd", "model": "M", "dataset": "WHU", "seed": 0, "tp": "88", "fp": 1, "fn": 1, "tn": 10}
    (tmp_path / "metrics.json").write_text(json.dumps(row))
    with pytest.raises(DataFormatError, match=r"metrics.json: tp = '88' is not a non-negative integer count"):
        collect_metrics([tmp_path / "metrics.json"])
    (tmp_path / "metrics.json").write_text(json.dumps({**row, "tp": -1}))
    with pytest.raises(DataFormatError, match="tp = -1"):
        collect_metrics([tmp_path / "metrics.json"])
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="holds a list, not a run's metrics object"):
        collect_metrics([tmp_path / "metrics.json"])


def test_tile_counts_that_are_not_counts_are_named(tmp_path):
    import pandas as pd

    from noise2map.evaluation.intervals import load_tile_counts

    metrics = pd.DataFrame([{"task": "cd", "model": "M", "dataset": "WHU", "seed": 0}])
    (tmp_path / "tile_counts.csv").write_text("tile_id,tp,fp,fn,tn\na,1.5,0,0,1\n")
    with pytest.raises(DataFormatError, match="tile_counts.csv: the counts are not all non-negative integers"):
        load_tile_counts(metrics, [tmp_path])
    (tmp_path / "tile_counts.csv").write_text("tile_id,tp\na,1\n")
    with pytest.raises(DataFormatError, match="needs columns tile_id, tp, fp, fn, tn"):
        load_tile_counts(metrics, [tmp_path])


def test_an_unknown_config_key_gets_its_close_match_and_the_allowed_keys():
    config = deep_merge(load_config(), {"training": {"lerning_rate": 1}})
    config["tile_sise"] = 256
    with pytest.raises(ConfigError) as err:
        validate_config(config, source="my.yaml")
    message = str(err.value)
    assert "<top>: unknown key 'tile_sise' (did you mean 'tile_size'?). Allowed here: ablations," in message
    assert "training: unknown key 'lerning_rate'. Allowed here: accelerator, accumulation," in message
    assert "Additional properties" not in message


def test_snakemake_prints_the_short_config_message(tmp_path):
    done = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "-n", "--cores", "1", "--config", "tile_sise=3", "--", "results/table1.csv"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "unknown key 'tile_sise' (did you mean 'tile_size'?)" in out
    assert len(out.splitlines()) < 40  # not the schema dump


def test_a_mirror_page_saved_as_weights_is_refused_and_removed(file_server, tmp_path):
    from noise2map.errors import CheckpointError
    from noise2map.weights import CHECKPOINTS, LOCK, check_format, fetch, read_lock

    name = "resnet50.imagenet.safetensors"
    file_server.files[CHECKPOINTS[name].path] = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=rf"{name} is an HTML/XML page .*it was removed"):
        fetch([name], cache, base_url=file_server.url, quiet=True)
    assert not (cache / name).exists() and name not in read_lock(cache)
    assert not (cache / LOCK).exists() or name not in json.loads((cache / LOCK).read_text())
    # each format by its own bytes
    bad = {"a.safetensors": b"\xff" * 8 + b"{}", "b.safetensors": (2).to_bytes(8, "little") + b"[]",
           "c.pth": b"GIF89a....", "d.json": b"[1, 2]", "e.json": b"{not json"}
    for file, body in bad.items():
        (tmp_path / file).write_bytes(body)
        with pytest.raises(CheckpointError, match=rf"{file} is (not|JSON, but not)"):
            check_format(tmp_path / file)
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "ok.safetensors"))
    torch.save({"w": torch.zeros(2)}, tmp_path / "ok.pth")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    for ok in ("ok.safetensors", "ok.pth", "ok.json"):
        check_format(tmp_path / ok)


def test_outputs_get_the_users_file_mode_not_mkstemps_0600(tmp_path):
    import os

    from noise2map.io import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.csv", "x")
        os.umask(0o027)
        write_text(tmp_path / "b.csv", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o640


def test_damaged_acquisition_records_are_named(tmp_path):
    from noise2map.data import acquire as acq

    (tmp_path / acq.LOCK).write_text("{\"SN7")
    with pytest.raises(DataFormatError, match=rf"{acq.LOCK} is not valid JSON .*run acquire again"):
        acq.read_lock(tmp_path)
    record = acq.manifest_path(tmp_path, "whu")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_bytes(b"\xff\xfe")
    with pytest.raises(DataFormatError, match=r"is not a text file .*noise2map acquire whu"):
        acq.read_manifest(tmp_path, "whu")
