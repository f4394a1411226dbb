"""Counter-based randomness: each draw is a function of a key, not of a generator's history.

Training draws (Noise2Map's timestep per sample, Gaussian noise) keyed by (seed, epoch,
sample index) are the same whichever device, process or resumed run makes them — what lets
N-device training and a resumed run equal one uninterrupted process (see
:mod:`noise2map.training.seeding`).
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


