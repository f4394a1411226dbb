"""Formulas checked against hand computations written from the papers, not from our code:
DDPM's ε-MSE pretraining loss, and the bootstrap's pairing across models and its resampling
of seeds."""

import numpy as np
import pytest
import torch

from noise2map.evaluation.intervals import bootstrap, class_mean_scores
from noise2map.keyed_random import keyed_normal, keyed_randint


def test_pretraining_loss_is_ddpm_epsilon_mse():
    """L = mean over the batch and pixels of (ε − ε_θ(√ᾱ_t·x + √(1−ᾱ_t)·ε, t))², with ᾱ_t of
    diffusers' own DDPMScheduler (linear β from 1e-4 to 0.02, T = 1000)."""
    from diffusers import DDPMScheduler

    from baselines.noise2map_models import DEMO_UNET
    from noise2map.training.tasks import DenoisingPretraining

    torch.manual_seed(0)
    module = DenoisingPretraining(DEMO_UNET, {"name": "ddpm", "num_train_timesteps": 1000}).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    keys = torch.tensor([11, 222, 3333])
    reference = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    eps = torch.cat([keyed_normal(keys[i:i + 1], (3, 32, 32), "cpu", torch.float32) for i in range(3)])
    t = keyed_randint(keys, 1000)
    assert t.unique().numel() == 3  # three different noise levels in one batch
    x_t = reference.add_noise(x, eps, t)
    with torch.no_grad():
        hand = ((module.unet(x_t, t).sample - eps) ** 2).mean()
        ours = module.denoising_loss(x, keys)
    assert ours.item() == pytest.approx(hand.item(), rel=1e-6)
    with torch.no_grad():  # another target, an L1 loss or another noise level is told apart
        pred = module.unet(x_t, t).sample
        wrong = [((pred - x) ** 2).mean(), (pred - eps).abs().mean(),
                 ((module.unet(reference.add_noise(x, eps, (t + 100) % 1000), t).sample - eps) ** 2).mean()]
    assert all(w.item() != pytest.approx(ours.item(), rel=1e-5) for w in wrong)


def _tiles(rng, n):
    """Per-tile (tp, fp, fn, tn) of an imperfect model on n tiles of 100 pixels."""
    tp = rng.integers(0, 30, n)
    fp = rng.integers(0, 10, n)
    fn = rng.integers(0, 10, n)
    return np.stack([tp, fp, fn, 100 - tp - fp - fn], 1)


def test_bootstrap_resamples_the_same_tiles_for_every_model():
    """Paired: a model with another model's per-tile counts gets the very same replicates, and
    a replicate's F1 is the F1 of one multinomial draw of tiles applied to each model."""
    rng = np.random.default_rng(0)
    a, b = _tiles(rng, 40), _tiles(rng, 40)
    runs = {("cd", "A", "WHU", 0): a, ("cd", "A copy", "WHU", 0): a.copy(), ("cd", "B", "WHU", 0): b}
    boot = bootstrap(runs, resamples=200, seed=1)
    f1_a, f1_copy, f1_b = (boot["cells"][("cd", m, "WHU")][0] for m in ("A", "A copy", "B"))
    assert np.array_equal(f1_a, f1_copy) and f1_a.std() > 0.1
    # the same draw for A and B: recover it from A's replicates by replaying the generator
    weights = np.random.default_rng(1).multinomial(40, np.full(40, 1 / 40), size=200)
    assert np.allclose(f1_a, class_mean_scores(weights @ a)[0])
    assert np.allclose(f1_b, class_mean_scores(weights @ b)[0])


def test_bootstrap_resamples_the_seeds_too():
    """Two seeds, one perfect and one that misses half the positives, on identical tiles (so
    resampling tiles alone changes nothing): a replicate is the mean over a draw of seeds with
    replacement — both picks seed 0 (¼), both seed 1 (¼) or one of each (½)."""
    tile_0, tile_1 = np.array([20, 0, 0, 80]), np.array([10, 0, 10, 80])
    runs = {("ss", "M", "WHU", 0): np.tile(tile_0, (30, 1)), ("ss", "M", "WHU", 1): np.tile(tile_1, (30, 1))}
    f1 = bootstrap(runs, resamples=4000, seed=3)["cells"][("ss", "M", "WHU")][0]
    f1_0, f1_1 = (class_mean_scores(t[None])[0][0] for t in (tile_0, tile_1))
    values, counts = np.unique(f1.round(9), return_counts=True)
    assert np.allclose(values, sorted([f1_1, (f1_0 + f1_1) / 2, f1_0]))
    assert np.allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
