"""Counter-based randomness: each draw is a function of a key, not of a generator's history.

Training draws (Noise2Map's timestep per sample, Gaussian noise) keyed by (seed, epoch,
sample index) are the same whichever device, process or resumed run makes them — what lets
N-device training and a resumed run equal one uninterrupted process (see
:mod:`noise2map.training.seeding`). Validation and test draws (Gaussian SS noise, DDPM-CD's
noise levels and noise) are keyed by (seed, stage, tile index) the same way, so re-scoring
a run, scoring it on N devices and Fig. 6 at the test timestep give the same counts.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**31


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors: cheap, stateless, same on any device."""
    x = x & _MASK32
    x = (x ^ (x >> 16)) * 0x7FEB352D & _MASK32
    x = (x ^ (x >> 15)) * 0x846CA68B & _MASK32
    return x ^ (x >> 16)


def sample_keys(seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """One 31-bit key per sample from (seed, epoch, sample index)."""
    base = _mix32(torch.tensor(epoch_seed(seed, epoch), dtype=torch.int64, device=index.device))
    return _mix32(_mix32(index.long()) ^ base) & 0x7FFFFFFF


# Evaluation draws use "epochs" no training reaches, one per stage.
EVALUATION_EPOCHS = {"val": 2**30, "test": 2**30 + 1}


def evaluation_keys(seed: int, stage: str, index: torch.Tensor) -> torch.Tensor:
    """Keys of a validation or test tile's draws: (seed, stage, tile index)."""
    return sample_keys(seed, EVALUATION_EPOCHS[stage], index)


def substream_keys(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Independent keys for the ``stream``-th draw of each sample (e.g. one per noised pass)."""
    salt = _mix32(torch.tensor(0x9E3779B9 ^ stream, dtype=torch.int64, device=keys.device))
    return _mix32(keys.long() ^ salt) & 0x7FFFFFFF


def keyed_uniform(keys: torch.Tensor) -> torch.Tensor:
    """A float64 in [0, 1) per key."""
    return _mix32(keys.long() ^ 0x68E31DA4).double() / 2**32


def keyed_randint(keys: torch.Tensor, high: int) -> torch.Tensor:
    """An integer in [0, high) per key (the training timestep of each sample)."""
    return _mix32(keys ^ 0x5BD1E995) % high


def keyed_normal(keys: torch.Tensor, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
    """N(0, I) noise of ``shape`` per key, drawn on ``device`` from a generator seeded by the key."""
    out = []
    for key in keys.tolist():
        generator = torch.Generator(device=device).manual_seed(int(key))
        out.append(torch.randn(shape, generator=generator, device=device, dtype=dtype))
    return torch.stack(out)


