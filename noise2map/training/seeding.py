"""Randomness keyed by what it is for, so resumed and data-parallel runs equal a plain one.

Three properties the benchmark relies on:

* **Resume at any step.** Each epoch's order is drawn from (seed, epoch), and the global
  generators are reseeded from (seed, epoch, batch) before every batch, so a run resumed
  from a mid-epoch checkpoint draws what the uninterrupted run drew — however much
  randomness was used before the kill.
* **Device count does not change the run.** The per-sample draws of the training objective
  (Noise2Map's timestep, Gaussian noise) are keyed by (seed, epoch, sample index), never by
  the device that happens to process the sample; and each device takes its slice of the same
  global batch (:class:`GlobalBatchSampler`), so N processes see exactly the samples one
  process would.
* **Exactly once at evaluation.** :func:`shard` gives rank r the tiles r, r+N, ... — no
  padding, no dropped tail (a padded distributed sampler scores some tiles twice).
"""

from __future__ import annotations

import logging
import random
import signal

import lightning as L
import numpy as np
import torch

from noise2map.errors import ConfigError
from noise2map.keyed_random import epoch_seed
from noise2map.training.schedule import LAST_BATCHES, keeps_batch

log = logging.getLogger(__name__)

def shard(n: int, rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s indices of range(n) for evaluation: each index on exactly one rank."""
    return list(range(rank, n, world_size))


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's slice of each global batch of a (seed, epoch) permutation.

    Global batch i is ``perm[i*B:(i+1)*B]``; rank r of N takes the r-th of N near-equal
    slices, so the union over ranks of every step is the batch one process would see.
    ``last_batch`` (:func:`~noise2map.training.schedule.last_batch_rule`): ``fold`` merges a
    last global batch of one sample, or too short to give every rank one, into the batch
    before it (BatchNorm cannot train on one sample; DDP needs the same number of steps on
    every rank); ``keep`` leaves it as the released DataLoader (no ``drop_last``) yields it,
    so the batches stepped are exactly the release's (a model without BatchNorm). ``done``
    counts the batches of the current epoch already trained (kept up to date by
    :class:`ResumableEpochs`); a resumed epoch skips them.

    Args:
        n: data set size. global_batch: samples per step over all ranks.
        seed: run seed. shuffle: permute (training) or keep order.
        rank, world_size: this process and the number of processes.
        keep_every: 1, or k of the released accumulation: only batches k-1, 2k-1, … of each
            epoch's permutation are yielded.
        last_batch: ``fold`` or ``keep``. With ``keep`` on N > 1 devices a stepped last batch
            of fewer than N samples cannot be split: refused (ConfigError), since folding it
            would make the run depend on the device count.
    """

    def __init__(self, n: int, global_batch: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, keep_every: int = 1, last_batch: str = "fold"):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} devices")
        if last_batch not in LAST_BATCHES:
            raise ValueError(f"last_batch must be one of {LAST_BATCHES}, got {last_batch!r}")
        self.n, self.global_batch, self.seed, self.shuffle = n, global_batch, seed, shuffle
        self.keep_every, self.last_batch = keep_every, last_batch
        self.rank, self.world_size = rank, world_size
        self.epoch, self.done, self.skip, self.resumed = 0, 0, 0, False
        batches, rest = -(-n // global_batch), n % global_batch
        if (last_batch == "keep" and world_size > 1 and batches > 1 and 0 < rest < world_size
                and keeps_batch(batches - 1, keep_every, "released")):
            raise ConfigError(
                f"the released loop steps on a last batch of {rest} sample(s) ({n} samples in batches of "
                f"{global_batch}), which cannot be split over {world_size} devices: train this run on at most "
                f"{rest} device(s) (training.devices), or with training.accumulation: sum")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        batches = [order[i:i + self.global_batch] for i in range(0, self.n, self.global_batch)]
        if self.last_batch == "fold" and len(batches) > 1 and len(batches[-1]) < max(2, self.world_size):
            # a last batch of one sample (or too few for every rank to get one) joins the one
            # before it: BatchNorm cannot train on a batch of one, and no sample is dropped.
            # ("keep": the released DataLoader's last batch as it is, one sample or more.)
            batches[-2:] = [batches[-2] + batches[-1]]
        # The released loop backpropagates only batch i with (i + 1) % k == 0 and drops the
        # others' losses: training on every k-th batch alone is the same run, without their
        # wasted forward passes (they move no weight; a BatchNorm model's running statistics
        # would have seen them in the release).
        return [b for i, b in enumerate(batches) if keeps_batch(i, self.keep_every, "released")]

    def __iter__(self):
        for batch in self.global_batches()[self.skip:]:
            yield np.array_split(batch, self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        # The whole epoch, also when resuming: the Trainer counts the skipped batches as done.
        return len(self.global_batches())


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over a :class:`GlobalBatchSampler` whose position goes into checkpoints.

    The Trainer saves ``state_dict()`` with every checkpoint and calls ``load_state_dict``
    before it iterates on resume, so a run killed mid-epoch carries on with the next batch.
    """

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "done": self.batch_sampler.done}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.batch_sampler
        sampler.epoch, sampler.done = state["epoch"], state["done"]
        finished = state["done"] >= len(sampler.global_batches())
        if finished:  # saved at the end of the epoch: the next one starts from its beginning
            sampler.epoch, sampler.done = state["epoch"] + 1, 0
        sampler.skip, sampler.resumed = sampler.done, not finished


class ResumableEpochs(L.Callback):
    """Keys the run's randomness to (seed, epoch, batch) and writes resumable checkpoints.

    Before each batch the global generators are reseeded from (seed, epoch, batch, rank).
    Every ``every_n_steps`` optimiser steps the full training state (the loader's position
    included) goes to ``checkpoint_path``. On SIGTERM or SIGUSR1 (what SLURM sends before a
    time limit) every rank writes that checkpoint at the next optimiser step and the run
    exits with status 128 + signal, so the scheduler's rerun resumes from there.

    Args:
        seed: run seed. sampler: the training loader's :class:`GlobalBatchSampler`.
        checkpoint_path: the run's ``last.ckpt``. every_n_steps: 0 = only on a signal.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, seed: int, sampler: GlobalBatchSampler, checkpoint_path=None, every_n_steps: int = 0):
        self.seed, self.sampler = seed, sampler
        self.checkpoint_path, self.every_n_steps = checkpoint_path, every_n_steps
        self.signalled = 0
        self._previous: dict = {}
        self._first_step = 0

    # signals: installed after the Trainer's own, which would stop mid-accumulation ------------
    def on_train_start(self, trainer, pl_module) -> None:
        # The checkpoint and the loader's position are restored by now: say where this process
        # starts, and (on_train_end) how many steps it took, so a log tells a resume from a restart.
        self._first_step = trainer.global_step
        if trainer.ckpt_path and trainer.global_rank == 0:
            # (an epoch-end checkpoint restores no loader position: the next epoch starts at 0)
            s = self.sampler
            log.info("resumed from %s at optimiser step %d: epoch %d from batch %d of %d", trainer.ckpt_path,
                     trainer.global_step, trainer.current_epoch, s.done if s.resumed else 0, len(s))
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: no handler
                pass

    def _restore_signals(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_signals()
        if trainer.global_rank == 0:
            log.info("this process took optimiser steps %d to %d", self._first_step, trainer.global_step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_signals()

    def _on_signal(self, signum, frame) -> None:
        log.warning("signal %d: writing a checkpoint at the next optimiser step, then stopping", signum)
        self.signalled = int(signum)

    # epochs and batches -------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sampler = self.sampler
        sampler.set_epoch(trainer.current_epoch)
        if not sampler.resumed:
            sampler.done = sampler.skip = 0
        sampler.resumed = False
        pl_module.sample_seed, pl_module.sample_epoch = self.seed, trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.sampler.skip = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Lightning 2.6 skips on_train_epoch_start on a mid-epoch restart: key the draws here,
        # and end the resumed state so the next epoch starts from batch 0.
        pl_module.sample_seed, pl_module.sample_epoch = self.seed, trainer.current_epoch
        self.sampler.resumed = False
        s = epoch_seed(self.seed, self.sampler.epoch) * 65_537 + self.sampler.done * 257 + trainer.global_rank
        s %= 2**31
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sampler.done += 1
        if self.sampler.done % trainer.accumulate_grad_batches:
            return  # mid-accumulation: summed gradients are not in a checkpoint
        signalled = self._signal_on_any_rank(trainer)
        due = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if self.checkpoint_path is not None and (due or signalled):
            trainer.save_checkpoint(self.checkpoint_path)
        if signalled:
            raise SystemExit(128 + signalled)

    def _signal_on_any_rank(self, trainer) -> int:
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return self.signalled
        flag = torch.tensor([self.signalled], device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())
