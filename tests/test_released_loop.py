"""The released train.py's loop as named switches: accumulation, validation epochs, validation
loss, the evaluated split (``noise2map.training.schedule``, ``DiscriminativeTask``)."""

import copy

import lightning as L
import pandas as pd
import pytest
import torch

from noise2map.config import evaluation_split, load_config, prepared_dir, task_settings
from noise2map.training.schedule import keeps_batch, validation_due, validation_epochs
from noise2map.training.tasks import DiscriminativeTask

PAPER = "workflow/config/paper.yaml"
DEMO = "workflow/config/demo.yaml"


def test_released_validation_epochs_are_0_5_to_195():
    assert validation_epochs(200, 5, "released") == list(range(0, 200, 5))
    assert len(validation_epochs(200, 5, "released")) == 40
    assert validation_epochs(200, 5, "lightning") == list(range(4, 200, 5))
    assert validation_epochs(500, 1, "released") == list(range(500))  # whu_cd.yaml: every epoch
    assert validation_due(0, 5) and not validation_due(4, 5)


def test_released_accumulation_keeps_every_second_batch():
    assert [keeps_batch(i, 2, "released") for i in range(5)] == [False, True, False, True, False]
    assert all(keeps_batch(i, 2, "sum") for i in range(5))
    assert sum(keeps_batch(i, 2, "released") for i in range(7)) == 3  # ⌊7 / 2⌋ steps per epoch


def test_paper_preset_follows_the_released_loop():
    config = load_config(PAPER)
    train = config["training"]
    assert (train["accumulation"], train["grad_accumulation"], train["precision"]) == ("released", 2, "32-true")
    assert (train["val_schedule"], train["val_loss"]) == ("released", "batch_mean")
    periods = {(d, t): task_settings(config, d, t)["val_every_n_epochs"] for d in config["datasets"] for t in ("ss", "cd")}
    assert periods == {**{k: 5 for k in periods}, ("whu", "cd"): 1}
    assert {d: evaluation_split(config, d) for d in config["datasets"]} == {
        "spacenet7": "val", "whu": "test", "xview2": "test"}


# ---------------------------------------------------------------------------------------------
# accumulation on fixed batches: optimiser steps and the gradient of each step
# ---------------------------------------------------------------------------------------------
def _samples(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(7)
    return [{"pre": torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8),
             "post": torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8),
             "mask": torch.randint(0, 2, (32, 32), generator=g), "index": i} for i in range(n)]


def _batches(n: int, size: int = 2) -> list[dict]:
    from torch.utils.data import default_collate

    samples = _samples(n * size)
    return [default_collate(samples[i * size:(i + 1) * size]) for i in range(n)]


def _module(accumulation: str, model: str = "noise2map-cd") -> DiscriminativeTask:
    torch.manual_seed(0)
    return DiscriminativeTask(model, "cd", "demo", class_weights=(1.0, 3.0), lr=1e-3,
                              accumulation=accumulation, accumulate_every=2)


def _fit(module: DiscriminativeTask, samples: list[dict], accumulation: str):
    """One epoch through the run's own loader and Trainer settings (batch 2, k = 2)."""
    from noise2map.training.schedule import accumulation_plan
    from noise2map.training.seeding import GlobalBatchSampler, ResumableLoader

    accumulate, keep_every = accumulation_plan({"accumulation": accumulation, "grad_accumulation": 2})
    sampler = GlobalBatchSampler(len(samples), 2, seed=5, keep_every=keep_every)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", accumulate_grad_batches=accumulate,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, ResumableLoader(samples, batch_sampler=sampler))
    return GlobalBatchSampler(len(samples), 2, seed=5).global_batches()  # the epoch's batches, all of them


def _adam_steps(module) -> int:
    optimizer = module.trainer.optimizers[0]
    return int(max(s["step"] for s in optimizer.state.values()))


def _by_hand(start: DiscriminativeTask, samples: list[dict], batches, weights: list[float]) -> dict:
    """One Adam step on Σ_i w_i · L(batch_i)."""
    from torch.utils.data import default_collate

    model = copy.deepcopy(start)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for indices, weight in zip(batches, weights):
        if weight == 0:
            continue
        batch = model.on_after_batch_transfer(default_collate([samples[i] for i in indices]), 0)
        nll, total = model._nll(model(batch, "train"), batch["mask"])
        (weight * nll / total).backward()
    optimizer.step()
    return model.state_dict()


def _worst(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in b)


@pytest.mark.parametrize("accumulation,weights", [
    ("released", [0.0, 1.0]),  # batch 0's loss is dropped: batch 1 is stepped alone
    ("sum", [0.5, 0.5]),       # both batches' gradients, averaged (Lightning divides by k)
])
def test_accumulation_modes_step_on_the_expected_gradient(accumulation, weights):
    samples = _samples(4)
    module = _module(accumulation)
    start = copy.deepcopy(module)
    batches = _fit(module, samples, accumulation)
    assert _adam_steps(module) == 1
    assert _worst(module.state_dict(), _by_hand(start, samples, batches, weights)) < 1e-6
    # and not the other mode's update
    other = [0.5, 0.5] if accumulation == "released" else [0.0, 1.0]
    assert _worst(module.state_dict(), _by_hand(start, samples, batches, other)) > 1e-5


def test_released_accumulation_takes_floor_n_over_2_steps_per_epoch():
    from noise2map.training.seeding import GlobalBatchSampler

    samples = _samples(14)  # 7 batches of 2
    module = _module("released")
    _fit(module, samples, "released")
    assert _adam_steps(module) == 3
    module = _module("sum")
    _fit(module, samples, "sum")
    assert _adam_steps(module) == 4  # Lightning steps the last, single batch at the epoch's end
    # the loader yields exactly the batches the released loop backpropagates, on any device count
    every = GlobalBatchSampler(14, 2, seed=5).global_batches()
    kept = [b for i, b in enumerate(every) if keeps_batch(i, 2, "released")]
    assert GlobalBatchSampler(14, 2, seed=5, keep_every=2).global_batches() == kept
    ranks = [list(GlobalBatchSampler(14, 2, seed=5, rank=r, world_size=2, keep_every=2)) for r in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(b) for b in kept]


# ---------------------------------------------------------------------------------------------
# validation loss: the released mean of batch means against one split-wide mean
# ---------------------------------------------------------------------------------------------
def test_validation_loss_modes_on_a_fixed_split():
    torch.manual_seed(0)
    batches = _batches(3)
    batches[2] = {k: v[:1] for k, v in batches[2].items()}  # an uneven last batch, all positive
    batches[2]["mask"] = torch.ones_like(batches[2]["mask"])
    values = {}
    for mode in ("split_mean", "batch_mean"):
        module = DiscriminativeTask("fc-siam-conc", "cd", "demo", class_weights=(1.0, 3.0), val_loss=mode).eval()
        module.load_state_dict(_module("sum", "fc-siam-conc").state_dict())
        logged = {}
        module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
        module.on_validation_epoch_start()
        parts = []
        with torch.no_grad():
            for i, batch in enumerate(batches):
                batch = module.on_after_batch_transfer(dict(batch), 0)
                module.validation_step(batch, i)
                parts.append(module._nll(module(batch, "val"), batch["mask"]))
        module.on_validation_epoch_end()
        values[mode] = (logged["val/loss"], parts)
    parts = values["split_mean"][1]
    split = sum(n for n, _ in parts) / sum(w for _, w in parts)
    batch_mean = sum(n / w for n, w in parts) / len(parts)
    assert values["split_mean"][0] == pytest.approx(split.item(), rel=1e-6)
    assert values["batch_mean"][0] == pytest.approx(batch_mean.item(), rel=1e-6)
    assert abs(split - batch_mean) > 1e-4  # the two definitions differ on this split


def test_an_unknown_switch_value_is_refused():
    from noise2map.errors import ConfigError

    with pytest.raises(ConfigError, match="training.val_loss must be one of"):
        DiscriminativeTask("fc-siam-conc", "cd", "demo", val_loss="mean")
    with pytest.raises(ConfigError, match="training.accumulation must be one of"):
        DiscriminativeTask("fc-siam-conc", "cd", "demo", accumulation="drop")
    with pytest.raises(ConfigError, match="training.val_schedule must be one of"):
        validation_due(0, 5, "every")


# ---------------------------------------------------------------------------------------------
# end to end on a synthetic WHU-CD store: the validated epochs and the evaluated split
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_config(tmp_path_factory):
    from conftest import whu_cd_demo_store

    return whu_cd_demo_store(tmp_path_factory.mktemp("released_loop"))


@pytest.mark.parametrize("schedule,validated", [("released", [0, 5]), ("lightning", [4])])
def test_a_run_validates_the_scheduled_epochs(store_config, tmp_path, schedule, validated):
    from noise2map.training.run import train_run

    config = copy.deepcopy(store_config)
    config["training"].update(val_schedule=schedule, val_every_n_epochs=5)
    config["training"]["datasets"]["whu"]["cd"].update(max_epochs=6, val_every_n_epochs=5)
    metrics = train_run(config, "cd", "whu", "fc-siam-conc", 0, tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "train_log" / "metrics.csv")
    assert sorted(log.dropna(subset=["val/loss"])["epoch"].astype(int).unique()) == validated
    assert metrics["evaluated_on"] == "test" and metrics["num_test_tiles"] > 0


def test_a_run_is_scored_on_the_evaluation_split(store_config, tmp_path):
    from noise2map.data import TileDataset
    from noise2map.training.run import train_run

    config = copy.deepcopy(store_config)
    config["training"]["evaluation_split"] = {"whu": "val"}
    config["training"]["datasets"]["whu"]["cd"].update(max_epochs=1)
    metrics = train_run(config, "cd", "whu", "fc-siam-conc", 0, tmp_path / "run")
    val = TileDataset(prepared_dir(config, "whu", "cd"), "val")
    assert len(val) > 0
    assert metrics["evaluated_on"] == "val" and metrics["num_test_tiles"] == len(val)
    counts = pd.read_csv(tmp_path / "run" / "tile_counts.csv")
    assert list(counts["tile_id"]) == list(val.tile_ids)
