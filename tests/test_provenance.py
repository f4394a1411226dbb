"""Every run records what produced it (library versions, device, threads) and a fingerprint
of the settings that determine its result; Table I refuses a run whose fingerprint is not
what the preset gives now."""

import json

import pytest
import torch
import yaml
from conftest import whu_cd_demo_store

from noise2map.config import deep_merge
from noise2map.errors import DataFormatError
from noise2map.reporting.tables import write_table1
from noise2map.training.run import run_fingerprint, train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    config = deep_merge(whu_cd_demo_store(root), {"training": {"datasets": {"whu": {"cd": {"max_epochs": 1}}}}})
    path = root / "runs" / "cd" / "whu" / "fc-siam-conc" / "seed0"
    train_run(config, "cd", "whu", "fc-siam-conc", 0, path, threads=1)
    return config, path


def test_a_run_records_versions_device_threads_and_its_fingerprint(run):
    config, path = run
    fields = yaml.safe_load((path / "config.yaml").read_text())["run"]
    metrics = json.loads((path / "metrics.json").read_text())
    versions = fields["versions"]
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert set(versions) >= {"python", "torch", "diffusers", "segmentation-models-pytorch", "timm", "lightning",
                             "torchmetrics", "cuda", "cudnn"}
    assert fields["num_threads"] == 1 and fields["device"]
    assert metrics["versions"] == versions and metrics["device"] == fields["device"]
    assert metrics["fingerprint"] == fields["fingerprint"] == run_fingerprint(config, "cd", "whu", "fc-siam-conc", 0)
    assert len(metrics["fingerprint"]) == 16
    # what changes the result changes the fingerprint; execution settings do not
    assert run_fingerprint(config, "cd", "whu", "fc-siam-conc", 1) != metrics["fingerprint"]
    assert run_fingerprint(deep_merge(config, {"training": {"lr": 0.5}}), "cd", "whu", "fc-siam-conc", 0) \
        != metrics["fingerprint"]
    assert run_fingerprint(deep_merge(config, {"training": {"num_workers": 3, "devices": 2}}), "cd", "whu",
                           "fc-siam-conc", 0) == metrics["fingerprint"]
    assert run_fingerprint(config, "cd", "whu", "fc-siam-conc", 0, "released aid-10k backbone") \
        != metrics["fingerprint"]


def test_table1_carries_the_fingerprint_and_refuses_a_stale_run(run, tmp_path):
    config, path = run
    metrics = path / "metrics.json"
    table = write_table1([metrics], tmp_path / "table1.csv", resamples=5, config=config)
    assert table["fingerprint"].tolist() == [json.loads(metrics.read_text())["fingerprint"]]
    edited = deep_merge(config, {"training": {"lr": 0.5}})
    with pytest.raises(DataFormatError, match=rf"{metrics} is stale: its settings fingerprint \w+ is not the \w+ "
                                              r"that preset `demo` gives now"):
        write_table1([metrics], tmp_path / "t2.csv", resamples=5, config=edited)
    assert not (tmp_path / "t2.csv").exists()
    old = tmp_path / "old" / "metrics.json"
    old.parent.mkdir()
    row = json.loads(metrics.read_text())
    del row["fingerprint"]
    old.write_text(json.dumps(row))
    with pytest.raises(DataFormatError, match="has no settings fingerprint"):
        write_table1([old], tmp_path / "t3.csv", resamples=5, config=config)
