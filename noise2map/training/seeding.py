"""Randomness keyed by (seed, epoch), so a run resumed at an epoch boundary is exact.

A killed training resumes from the last epoch-end checkpoint. For the rest of the run to
match an uninterrupted one, each epoch's shuffle and random draws (timesteps, dropout) must
depend only on the seed and the epoch number, not on how much randomness was used before.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**31


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A permutation of range(n) drawn from (seed, epoch); Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class EpochSeed(L.Callback):
    """Reseeds the global generators at the start of every training epoch."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        s = epoch_seed(self.seed, trainer.current_epoch)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
