"""training.logger: the CSV log the suite reads, and TensorBoard / wandb / MLflow beside it,
offline and inside the run folder. The fingerprint does not depend on the logger."""

import struct

import pandas as pd
import pytest
from conftest import whu_cd_demo_store

from noise2map.config import deep_merge
from noise2map.errors import ConfigError
from noise2map.training.run import experiment_loggers, run_fingerprint, train_run


def _scalar_tags(event_file) -> dict[str, int]:
    """Scalar tags of a TensorBoard event file and how often each was written (TFRecord
    framing: u64 length, u32 crc, payload, u32 crc; payload an Event protobuf)."""
    from tensorboardX.proto import event_pb2

    data, tags, at = event_file.read_bytes(), {}, 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at: at + 8])
        event = event_pb2.Event.FromString(data[at + 12: at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            tags[value.tag] = tags.get(value.tag, 0) + 1
    return tags


def test_tensorboard_log_beside_the_csv_log(tmp_path):
    pytest.importorskip("tensorboardX")
    config = deep_merge(whu_cd_demo_store(tmp_path), {"training": {"logger": "tensorboard",
                                                                    "datasets": {"whu": {"cd": {"max_epochs": 2}}}}})
    run = tmp_path / "runs" / "cd" / "whu" / "fc-siam-conc" / "seed0"
    train_run(config, "cd", "whu", "fc-siam-conc", 0, run, threads=1)
    csv = pd.read_csv(run / "train_log" / "metrics.csv")
    events = list((run / "tb_log" / "train_log").glob("events.out.tfevents.*"))
    assert len(events) == 1
    tags = _scalar_tags(events[0])
    steps = int(csv["train/loss"].notna().sum())
    assert steps > 0 and tags["train/loss"] == steps  # every logged step in both logs
    assert tags["val/loss"] == tags["val/f1_pos"] == int(csv["val/loss"].notna().sum()) == 2
    csv_config = deep_merge(config, {"training": {"logger": "csv"}})
    assert run_fingerprint(config, "cd", "whu", "fc-siam-conc", 0) == run_fingerprint(csv_config, "cd", "whu",
                                                                                      "fc-siam-conc", 0)


def test_csv_is_the_default_and_a_missing_package_is_named(tmp_path, monkeypatch):
    config = {"training": {}}
    (csv,) = experiment_loggers(config, tmp_path, "train_log")
    assert type(csv).__name__ == "CSVLogger"
    import lightning.pytorch.loggers as loggers

    def absent(**_):
        raise ModuleNotFoundError("No module named 'wandb'")

    monkeypatch.setattr(loggers, "WandbLogger", absent)
    with pytest.raises(ConfigError, match=r"training.logger: wandb needs the wandb package \(pip install wandb\), "
                                          r"or set training.logger: csv"):
        experiment_loggers({"training": {"logger": "wandb"}}, tmp_path, "train_log")
