"""Task noising against hand computation and diffusers' own add_noise."""

import math

import pytest
import torch

from noise2map.errors import ConfigError, UnknownNameError
from noise2map.models import TaskNoising, make_scheduler
from noise2map.models.noising import SCHEDULERS


def alpha_bar(t, beta_start=1e-4, beta_end=0.02, T=1000):
    betas = [beta_start + (beta_end - beta_start) * i / (T - 1) for i in range(T)]
    return math.prod(1 - b for b in betas[: t + 1])


def test_cd_noising_is_the_swapped_pair_weighted_by_alpha_bar():
    noising = TaskNoising("cd", {"name": "ddim", "num_train_timesteps": 1000})
    pre, post = torch.full((1, 3, 2, 2), 0.5), torch.full((1, 3, 2, 2), -1.0)
    t = 300
    x = noising((pre, post), torch.tensor([t]))
    a = alpha_bar(t)
    assert x.shape == (1, 6, 2, 2)
    assert x[0, 0, 0, 0].item() == pytest.approx(math.sqrt(a) * 0.5 + math.sqrt(1 - a) * -1.0, abs=1e-5)
    assert x[0, 3, 0, 0].item() == pytest.approx(math.sqrt(a) * -1.0 + math.sqrt(1 - a) * 0.5, abs=1e-5)


def test_cd_at_last_timestep_is_almost_the_reversed_pair():
    noising = TaskNoising("cd")
    pre, post = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    x = noising((pre, post), torch.tensor([999, 999]))
    assert alpha_bar(999) == pytest.approx(4.04e-5, rel=0.01)
    assert torch.allclose(x, torch.cat([post, pre], 1), atol=1e-2)
    x0 = noising((pre, post), torch.tensor([0, 0]))
    assert torch.allclose(x0, torch.cat([pre, post], 1), atol=1e-2)


def test_ss_image_noise_keeps_image_scaled_by_sqrt_sum():
    noising = TaskNoising("ss", ss_noise="image")
    image = torch.ones(1, 3, 2, 2)
    t = 500
    a = alpha_bar(t)
    x = noising((image,), torch.tensor([t]))
    assert x[0, 0, 0, 0].item() == pytest.approx(math.sqrt(a) + math.sqrt(1 - a), abs=1e-5)


def test_ss_gaussian_noise_matches_diffusers_add_noise():
    scheduler = make_scheduler("ddpm")
    noising = TaskNoising("ss", {"name": "ddpm", "num_train_timesteps": 1000}, ss_noise="gaussian")
    image = torch.rand(3, 3, 8, 8)
    t = torch.tensor([10, 400, 990])
    x = noising((image,), t, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x, scheduler.add_noise(image, noise, t), atol=1e-5)


def test_every_scheduler_defines_alpha_bar():
    for name in SCHEDULERS:  # one test, not one id per name: keeps `pytest -k ddp` to DDP tests
        noising = TaskNoising("cd", {"name": name, "num_train_timesteps": 750})
        assert noising.num_train_timesteps == 750, name
        assert noising.alphas_cumprod[0] > 0.99 and noising.alphas_cumprod[-1] < noising.alphas_cumprod[0], name


def test_bad_names_are_clear():
    with pytest.raises(UnknownNameError, match="available: ddim"):
        make_scheduler("euler")
    with pytest.raises(ConfigError, match="ss_noise"):
        TaskNoising("ss", ss_noise="pink")


def test_noising_equals_each_schedulers_add_noise():
    """Table V: the four schedulers share ᾱ_t; Heun's add_noise is x + σ_t·n (σ_t up to 157)."""
    torch.manual_seed(0)
    pre, post = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 500, 999])
    for name in SCHEDULERS:
        noising = TaskNoising("cd", {"name": name, "num_train_timesteps": 1000})
        reference = make_scheduler(name).add_noise(torch.cat([pre, post], 1), torch.cat([post, pre], 1), t)
        assert torch.allclose(noising((pre, post), t), reference, atol=1e-5), name
    heun = TaskNoising("cd", {"name": "heun", "num_train_timesteps": 1000})
    assert heun.sigma_noising and not TaskNoising("cd", {"name": "pndm", "num_train_timesteps": 1000}).sigma_noising
