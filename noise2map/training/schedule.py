"""When a run validates and when it steps: the released train.py's loop as named options.

* **Validation epochs.** The released loop validates when ``epoch % val_period == 0``:
  epochs 0, 5, …, 195 of 200 (``val_schedule: released``). Lightning's
  ``check_val_every_n_epoch`` validates after epochs N−1, 2N−1, … (``lightning``).
* **Gradient accumulation.** The released loop calls ``backward`` and steps only when
  ``(i + 1) % grad_accumulation_steps == 0`` (``i`` the batch index in the epoch): the other
  batches' losses are computed and discarded (``accumulation: released``, ⌊n/k⌋ steps of
  one batch each per epoch; the loader yields only those batches, see
  ``GlobalBatchSampler(keep_every=k)``). ``sum`` is real accumulation: k batches' gradients
  summed per step (Lightning's ``accumulate_grad_batches``).
* **The last batch of an epoch.** The released DataLoader (no ``drop_last``) ends an epoch with
  whatever is left, a batch of one sample included, and under ``accumulation: released`` that
  batch is stepped alone when ``(i + 1) % k == 0``. BatchNorm cannot train on one sample, so
  the suite merges a last batch of one into the batch before it (``fold``). The rule
  (:func:`last_batch_rule`): ``keep`` (the release's batches exactly) when
  ``training.accumulation`` is ``released`` and the model holds no BatchNorm layer
  (:func:`has_batchnorm`: no ``torch.nn.modules.batchnorm._BatchNorm``, i.e. BatchNorm1d/2d/3d,
  SyncBatchNorm and their lazy forms, anywhere in the built module — Noise2Map-SS/-CD and
  DDPM-CD, GroupNorm only); ``fold`` otherwise (every BatchNorm model, and any run with
  ``accumulation: sum``). A ``keep`` run records ``last_batch: keep`` in its fingerprint.
"""

from __future__ import annotations


import lightning as L
import torch

from noise2map.errors import ConfigError

VAL_SCHEDULES = ("released", "lightning")
ACCUMULATIONS = ("sum", "released")
LAST_BATCHES = ("fold", "keep")


def validation_due(epoch: int, every: int, schedule: str = "released") -> bool:
    """Whether epoch ``epoch`` (0-based) ends with a validation."""
    if schedule not in VAL_SCHEDULES:
        raise ConfigError(f"training.val_schedule must be one of {VAL_SCHEDULES}, got {schedule!r}")
    return epoch % every == 0 if schedule == "released" else (epoch + 1) % every == 0


def validation_epochs(max_epochs: int, every: int, schedule: str = "released") -> list[int]:
    return [e for e in range(max_epochs) if validation_due(e, every, schedule)]


def keeps_batch(position: int, every: int, accumulation: str) -> bool:
    """Whether the batch at ``position`` (0-based, in its epoch) is backpropagated."""
    if accumulation not in ACCUMULATIONS:
        raise ConfigError(f"training.accumulation must be one of {ACCUMULATIONS}, got {accumulation!r}")
    return accumulation == "sum" or (position + 1) % every == 0


def accumulation_plan(train: dict) -> tuple[int, int]:
    """(batches the Trainer sums per step, every how many batches the loader yields one) of a
    ``training`` block: ``sum`` → (grad_accumulation, 1); ``released`` → (1, grad_accumulation),
    the loader yielding only the batches the released loop backpropagates."""
    accumulation, k = train.get("accumulation", "sum"), train["grad_accumulation"]
    keeps_batch(0, k, accumulation)  # checks the name
    return (k, 1) if accumulation == "sum" else (1, k)


def has_batchnorm(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer (BatchNorm1d/2d/3d, SyncBatchNorm, lazy ones)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def last_batch_rule(train: dict, batchnorm: bool) -> str:
    """``keep`` (the released DataLoader's last batch, one sample or more, as it is) when the
    ``training`` block asks for the released accumulation and the model has no BatchNorm;
    ``fold`` (a last batch of one joins the batch before it) otherwise."""
    accumulation = train.get("accumulation", "sum")
    keeps_batch(0, 1, accumulation)  # checks the name
    return "keep" if accumulation == "released" and not batchnorm else "fold"


def model_has_batchnorm(config: dict, model_key: str) -> bool:
    """Whether ``model_key`` holds BatchNorm layers, as its spec declares (``ModelSpec.batchnorm``;
    the run checks it against the built model, :func:`has_batchnorm`)."""
    from baselines import get_model_spec

    return get_model_spec(model_key).batchnorm


def model_last_batch(config: dict, model_key: str) -> str:
    """:func:`last_batch_rule` of a run of ``model_key`` under ``config``."""
    from noise2map.config import last_batch

    return last_batch(config, model_key)


class ValidationSchedule(L.Callback):
    """Validates at the epochs :func:`validation_due` names.

    Lightning validates after epoch e when ``(e + 1) % trainer.check_val_every_n_epoch == 0``;
    before each epoch (and each batch: a mid-epoch restart skips ``on_train_epoch_start``)
    this sets that divisor to 1 for a due epoch and to e + 2 (never dividing e + 1) otherwise.
    """

    def __init__(self, every: int, schedule: str = "released"):
        validation_due(0, every, schedule)  # checks the name
        self.every, self.schedule = every, schedule

    def _set(self, trainer) -> None:
        epoch = trainer.current_epoch
        trainer.check_val_every_n_epoch = 1 if validation_due(epoch, self.every, self.schedule) else epoch + 2

    def on_train_start(self, trainer, pl_module) -> None:
        self._set(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._set(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._set(trainer)
