"""Two rules of the released train.py's loop, tested by behaviour.

1. **The last batch.** The released DataLoader (no ``drop_last``) yields a final batch of one
   sample where n ≡ 1 (mod B), and its "accumulation" steps on batch i only when
   ``(i + 1) % k == 0``. Under ``accumulation: released`` a model without BatchNorm trains on
   exactly those batches (``last_batch: keep``); a BatchNorm model never gets a batch of one
   (``fold``). (``noise2map.training.schedule.last_batch_rule``, ``GlobalBatchSampler``.)
2. **Best-checkpoint selection.** The released loop saves when ``val_loss < best`` (strict),
   at the validated epochs ``epoch % val_period == 0``: best.ckpt must be the weights of the
   earliest validated epoch with the lowest loss, for every selection rule the suite offers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from types import SimpleNamespace

import pytest
import torch

from noise2map.config import deep_merge, load_config
from noise2map.errors import ConfigError
from noise2map.keyed_random import epoch_seed
from noise2map.training.schedule import (
    accumulation_plan,
    has_batchnorm,
    last_batch_rule,
    model_has_batchnorm,
    model_last_batch,
    validation_epochs,
)

PAPER = "workflow/config/paper.yaml"
DEMO = "workflow/config/demo.yaml"
CORRECTED = "workflow/config/corrected.yaml"
GROUPNORM, BATCHNORM = "noise2map-cd", "fc-siam-conc"


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER)


# ---------------------------------------------------------------------------------------------
# 1. the last batch
# ---------------------------------------------------------------------------------------------
def released_steps(order: list[int], batch: int, k: int) -> list[list[int]]:
    """The released loop, from its rule: a plain DataLoader over the epoch's order (batch B,
    no drop_last), backward + step only on batch i with (i + 1) % k == 0."""
    loader = torch.utils.data.DataLoader(order, batch_size=batch, shuffle=False)
    return [b.tolist() for i, b in enumerate(loader) if (i + 1) % k == 0]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    if not shuffle:
        return list(range(n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()


def suite_steps(config: dict, model_key: str, n: int, batch: int, k: int, seed: int, epoch: int,
                shuffle: bool = True, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The batches a run of ``model_key`` steps on, built as train_run builds its loader."""
    from noise2map.training.run import _train_loader
    from noise2map.training.seeding import GlobalBatchSampler

    train = {**config["training"], "grad_accumulation": k}
    accumulate, keep_every = accumulation_plan(train)
    assert accumulate == (1 if train["accumulation"] == "released" else k)
    last_batch = model_last_batch({**config, "training": train}, model_key)
    if shuffle:
        loader = _train_loader(list(range(n)), batch, 0, seed,
                               SimpleNamespace(global_rank=rank, world_size=world_size), keep_every, last_batch)
    else:
        sampler = GlobalBatchSampler(n, batch, seed, False, rank, world_size, keep_every, last_batch)
        loader = torch.utils.data.DataLoader(list(range(n)), batch_sampler=sampler)
    loader.batch_sampler.set_epoch(epoch)
    return [b.tolist() for b in loader]


def test_the_rule_keeps_the_last_batch_only_for_released_accumulation_without_batchnorm(paper):
    assert {m: model_last_batch(paper, m) for m in ("noise2map-ss", "noise2map-cd", "ddpm-cd")} == \
        dict.fromkeys(("noise2map-ss", "noise2map-cd", "ddpm-cd"), "keep")
    assert {m: model_last_batch(paper, m) for m in ("fc-siam-conc", "unet", "segformer", "changeformer-v6")} == \
        dict.fromkeys(("fc-siam-conc", "unet", "segformer", "changeformer-v6"), "fold")
    corrected = load_config(CORRECTED)
    assert corrected["training"]["accumulation"] == "sum"
    assert model_last_batch(corrected, GROUPNORM) == model_last_batch(corrected, BATCHNORM) == "fold"
    assert last_batch_rule({"accumulation": "released"}, batchnorm=False) == "keep"
    assert last_batch_rule({"accumulation": "released"}, batchnorm=True) == "fold"
    assert last_batch_rule({"accumulation": "sum"}, batchnorm=False) == "fold"


def test_the_rule_sees_the_batchnorm_of_every_registered_model_as_built():
    from baselines import MODELS, build_model

    demo = load_config(DEMO)
    for key in MODELS:
        built = build_model(key, "demo")
        assert model_has_batchnorm(demo, key) == has_batchnorm(built), key
        if not has_batchnorm(built):  # the models that train on a batch of one
            assert not any("BatchNorm" in type(m).__name__ for m in built.modules()), key
    assert has_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.SyncBatchNorm(1)))
    assert not has_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.GroupNorm(1, 1)))


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_groupnorm_model_steps_on_exactly_the_released_batches(paper, shuffle):
    differ = set()
    for batch in range(1, 9):
        for n in range(1, 41):
            for k in range(1, 4):
                for epoch in (0, 1) if shuffle else (0,):
                    expected = released_steps(epoch_order(n, 11, epoch, shuffle), batch, k)
                    got = suite_steps(paper, GROUPNORM, n, batch, k, 11, epoch, shuffle)
                    assert got == expected, (batch, n, k, epoch)
                    folded = suite_steps(paper, BATCHNORM, n, batch, k, 11, epoch, shuffle)
                    if folded != expected:
                        differ.add((batch, n, k))
    # the fold would have changed the run exactly where n ≡ 1 (mod B), n > B, and the last batch
    # or the one before it (which the fold grows) is stepped
    assert differ == {(b, n, k) for b in range(1, 9) for n in range(b + 1, 41, b) for k in range(1, 4)
                      if -(-n // b) % k == 0 or (-(-n // b) - 1) % k == 0}
    assert (2, 5, 1) in differ  # xView2-CD's batch of 2 with an odd training set


def test_a_batchnorm_model_never_gets_a_batch_of_one(paper):
    for batch in range(1, 9):
        for n in range(2, 41):
            for k in range(1, 4):
                steps = suite_steps(paper, BATCHNORM, n, batch, k, 3, 0)
                assert all(len(b) >= 2 for b in steps) or batch == 1, (batch, n, k)
                if k == 1:  # every sample once per epoch, none dropped by the fold
                    assert sorted(i for b in steps for i in b) == list(range(n))


def test_the_kept_last_batch_splits_over_devices_or_is_refused(paper):
    for batch in (2, 4, 6, 8):
        for n in range(2, 30):  # (n = 1 cannot give 2 devices a sample under either rule)
            for k in (1, 2):
                one = suite_steps(paper, GROUPNORM, n, batch, k, 5, 0)
                try:
                    ranks = [suite_steps(paper, GROUPNORM, n, batch, k, 5, 0, rank=r, world_size=2) for r in (0, 1)]
                except ConfigError as err:
                    assert len(one[-1]) == 1 and n > batch, (batch, n, k)  # a stepped last batch of one
                    assert "cannot be split over 2 devices" in str(err)
                    continue
                assert [a + b for a, b in zip(*ranks)] == one and all(len(b) >= 1 for r in ranks for b in r)


def _old_fingerprint(config, task, dataset, model_key, seed, variant=None) -> str:
    """run_fingerprint's payload before the last-batch rule existed."""
    from noise2map.config import run_settings, store_name

    settings = run_settings(config, task, dataset, model_key)
    settings.pop("last_batch", None)
    payload = {"settings": settings, "seed": int(seed), "variant": variant,
               "store": store_name(config, f"{dataset}-{task}")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_only_runs_that_keep_the_last_batch_change_fingerprint(paper):
    from noise2map.training.run import run_fingerprint

    corrected = load_config(CORRECTED)
    for config in (paper, corrected, load_config(DEMO)):
        for task, model in (("cd", BATCHNORM), ("ss", "unet"), ("ss", "segformer"), ("cd", GROUPNORM),
                            ("ss", "noise2map-ss"), ("cd", "ddpm-cd")):
            new, old = run_fingerprint(config, task, "whu", model, 0), _old_fingerprint(config, task, "whu", model, 0)
            if model_last_batch(config, model) == "keep":
                assert new != old, (config["preset"], model)
            else:
                assert new == old, (config["preset"], model)  # byte-identical: no rerun, no stale run
    assert model_last_batch(paper, GROUPNORM) == "keep" and model_last_batch(corrected, GROUPNORM) == "fold"


# ---------------------------------------------------------------------------------------------
# 2. best-checkpoint selection
# ---------------------------------------------------------------------------------------------
def _toy_module(losses: dict[int, float]):
    """A one-weight model whose validation logs ``losses[epoch]``; it keeps its weights at each
    validation so that best.ckpt can be matched to the epoch it came from."""
    import lightning as L

    class Toy(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))
            self.snapshots, self.validated = {}, []

        def training_step(self, batch, batch_idx):
            return ((self.w - batch.float().mean()) ** 2).sum()

        def validation_step(self, batch, batch_idx):
            pass

        def on_validation_epoch_end(self):
            if self.trainer.sanity_checking:
                return
            self.validated.append(self.current_epoch)
            self.snapshots[self.current_epoch] = self.w.detach().clone()
            self.log("val/loss", losses[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Toy()


def _toy_fit(tmp_path, module, max_epochs: int, schedule: str, every: int, resume: bool = False):
    """Fit through the suite's own Trainer settings and selection_checkpoints."""
    from noise2map.training.run import _fit_trainer, selection_checkpoints

    config = {"training": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "grad_accumulation": 1,
                           "accumulation": "sum", "val_schedule": schedule, "val_every_n_epochs": every}}
    best, last = selection_checkpoints(tmp_path / "checkpoints")
    trainer = _fit_trainer(config, tmp_path, max_epochs, [best, last], val_every=every, enable_progress_bar=False)
    data = torch.utils.data.DataLoader(torch.arange(8.0).view(4, 2), batch_size=2)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    trainer.fit(module, data, data, ckpt_path=ckpt if resume else None)
    return best


def _released_choice(losses: dict[int, float], epochs: list[int]) -> int:
    """train.py: ``if val_loss < best: save`` over the validated epochs (best starts at inf)."""
    best, chosen = math.inf, None
    for e in epochs:
        if losses[e] < best:
            best, chosen = losses[e], e
    return chosen


@pytest.mark.parametrize("schedule,every,max_epochs,losses,expected", [
    ("released", 1, 4, [3.0, 2.0, 1.0, 2.0], 2),          # the lowest
    ("released", 1, 4, [1.0, 2.0, 3.0, 4.0], 0),          # not the highest, not the latest
    ("released", 1, 5, [2.0, 1.0, 3.0, 1.0, 1.0], 1),     # ties: the earliest (strict <)
    ("released", 1, 4, [math.nan, 2.0, 2.0, 3.0], 1),     # a NaN loss is never the best
    # the released validation schedule: only epochs 0, 5, 10 are compared (1, 4 … are lower but
    # never validated)
    ("released", 5, 11, [3.0, 0.1, 0.1, 0.1, 0.1, 1.0, 0.1, 0.1, 0.1, 0.1, 1.0], 5),
    ("lightning", 5, 11, [0.1, 0.1, 0.1, 0.1, 3.0, 0.1, 0.1, 0.1, 0.1, 2.0, 0.1], 9),
])
def test_best_checkpoint_is_the_earliest_lowest_validated_loss(tmp_path, schedule, every, max_epochs, losses,
                                                               expected):
    losses = dict(enumerate(losses))
    module = _toy_module(losses)
    best = _toy_fit(tmp_path, module, max_epochs, schedule, every)
    assert module.validated == validation_epochs(max_epochs, every, schedule)
    assert _released_choice(losses, module.validated) == expected
    saved = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    assert best.best_model_path.endswith("best.ckpt")
    assert saved["epoch"] == expected
    assert torch.equal(saved["state_dict"]["w"], module.snapshots[expected])
    assert all(not torch.equal(saved["state_dict"]["w"], w) for e, w in module.snapshots.items() if e != expected)


def test_a_resumed_run_keeps_the_earlier_of_tied_best_losses(tmp_path):
    """Killed after epoch 2, resumed: the restored best (epoch 1) is not displaced by the equal
    loss of epoch 3."""
    losses = {0: 2.0, 1: 1.0, 2: 3.0, 3: 1.0, 4: 1.5}
    first = _toy_module(losses)
    _toy_fit(tmp_path, first, 3, "released", 1)
    resumed = _toy_module(losses)
    best = _toy_fit(tmp_path, resumed, 5, "released", 1, resume=True)
    assert resumed.validated == [3, 4]
    saved = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and torch.equal(saved["state_dict"]["w"], first.snapshots[1])


@pytest.fixture(scope="module")
def store_config(tmp_path_factory):
    from conftest import whu_cd_demo_store

    return whu_cd_demo_store(tmp_path_factory.mktemp("release_loop_rules"))


@pytest.mark.parametrize("selection,val_loss", [("released", "batch_mean"), ("val", "split_mean")])
def test_a_run_keeps_the_best_epoch_for_each_selection_rule(store_config, tmp_path, monkeypatch, selection,
                                                           val_loss):
    """A real run (the suite's model, loaders, Trainer, callbacks) whose logged validation loss
    is forced per epoch; the loss the rule computed is still computed and then replaced."""
    from noise2map.training.run import train_run
    from noise2map.training.tasks import DiscriminativeTask

    forced = {0: 0.7, 1: 0.4, 2: 0.9, 3: 0.4}  # best: epoch 1 (tied with 3)
    computed, snapshots = {}, {}
    original = DiscriminativeTask.on_validation_epoch_end

    def on_validation_epoch_end(self):
        log = self.log

        def forced_log(name, value, **kwargs):
            if name == "val/loss" and not self.trainer.sanity_checking:
                computed[self.current_epoch] = float(value)
                snapshots[self.current_epoch] = copy.deepcopy(self.model.state_dict())
                value = forced[self.current_epoch]
            log(name, value, **kwargs)

        self.log = forced_log
        try:
            original(self)
        finally:
            del self.log

    monkeypatch.setattr(DiscriminativeTask, "on_validation_epoch_end", on_validation_epoch_end)
    config = deep_merge(store_config, {"selection": selection, "training": {"val_loss": val_loss,
                                                                            "val_schedule": "released"}})
    config["training"]["datasets"]["whu"]["cd"].update(max_epochs=4, val_every_n_epochs=1)
    run = tmp_path / "run"
    metrics = train_run(config, "cd", "whu", BATCHNORM, 0, run)
    assert sorted(computed) == [0, 1, 2, 3] and all(math.isfinite(v) for v in computed.values())
    saved = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1
    state = {k.removeprefix("model."): v for k, v in saved["state_dict"].items()}
    assert all(torch.equal(state[k], v) for k, v in snapshots[1].items())
    assert any(not torch.equal(state[k], v) for k, v in snapshots[3].items())  # not the later tie
    assert metrics["checkpoint"] == str(run / "checkpoints" / "best.ckpt") and metrics["selection"] == selection
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["last_batch"] == "fold"  # a BatchNorm model


@pytest.mark.parametrize("model,last_batch", [(GROUPNORM, "keep"), (BATCHNORM, "fold")])
def test_a_run_trains_on_the_released_batches_or_folds(store_config, tmp_path, monkeypatch, caplog, model, last_batch):
    """19 training pairs in batches of 6, k = 2 (the demo's released accumulation): the release
    steps on batches 1 ([6:12]) and 3 (the single last pair); a BatchNorm model's fold makes 3
    batches (the last one of 7 pairs, not stepped at k = 2), so it steps on [6:12] only."""
    import logging

    import yaml

    from noise2map.training.run import train_run
    from noise2map.training.tasks import DiscriminativeTask

    trained = []
    original = DiscriminativeTask.training_step

    def training_step(self, batch, batch_idx):
        trained.append((self.current_epoch, batch["index"].tolist()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(DiscriminativeTask, "training_step", training_step)
    config = copy.deepcopy(store_config)
    assert (config["training"]["accumulation"], config["training"]["grad_accumulation"]) == ("released", 2)
    config["training"]["datasets"]["whu"]["cd"].update(batch_size=6, max_epochs=2)
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="noise2map.training.run"):
        train_run(config, "cd", "whu", model, 3, run)
    assert f"last batch of an epoch: {last_batch} (" in caplog.text
    for epoch in (0, 1):
        order = epoch_order(19, 3, epoch, True)
        expected = released_steps(order, 6, 2) if last_batch == "keep" else [order[6:12]]
        assert [b for e, b in trained if e == epoch] == expected
    assert released_steps(list(range(19)), 6, 2) == [list(range(6, 12)), [18]]
    fields = yaml.safe_load((run / "config.yaml").read_text())["run"]
    assert fields["last_batch"] == last_batch
    assert (fields["fingerprint"] != _old_fingerprint(config, "cd", "whu", model, 3)) == (last_batch == "keep")
