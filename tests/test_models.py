"""Models: paper-size parameter counts, demo-size forward/backward, Noise2Map specifics."""

import pytest
import torch

from baselines import MODELS, build_model, count_params, get_model_spec, models_for_task
from noise2map.errors import UnknownNameError

TABLE1_SS = {"noise2map-ss", "unet", "unetpp", "deeplabv3plus", "segformer", "upernet"}
TABLE1_CD = {"noise2map-cd", "fc-siam-conc"}
# DDPM-CD has its own module (tests/test_sr3_cd_baseline.py: exact counts, forward, gradients);
# it stays out of these ids so that `pytest -k ddp` selects the data-parallel tests only.
GENERIC = sorted(k for k in MODELS if k != "ddpm-cd")


@pytest.mark.parametrize("key", GENERIC)
def test_paper_size_parameter_count_within_two_percent(key):
    spec = MODELS[key]
    params_m = count_params(key, "paper") / 1e6
    assert abs(params_m / spec.expected_params_m - 1) <= 0.02, (key, params_m, spec.expected_params_m)


def test_exact_counts_of_the_paper_builds():
    # Measured builds (../shared/notes/baselines.md); the UNet of ddpm-church-256 is 113,673,219.
    assert count_params("noise2map-cd") == 113_673_219 + (6 * 3 * 9 + 3) + (3 * 2 * 9 + 2)
    assert count_params("noise2map-ss") == 113_673_219 + (3 * 3 * 9 + 3) + (3 * 2 * 9 + 2)
    assert count_params("segformer") == 5_549_634
    assert round(count_params("unet") / 1e6, 1) == 32.5
    assert round(count_params("fc-siam-conc") / 1e6, 2) == 40.35


@pytest.mark.parametrize("key", GENERIC)
def test_demo_size_forward_backward(key):
    torch.manual_seed(0)
    model = build_model(key, "demo")
    images = [torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(1 if MODELS[key].task == "ss" else 2)]
    logits = model(*images)
    assert logits.shape == (2, 2, 32, 32)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("key", ["noise2map-cd", "fc-siam-conc", "unet"])
def test_loss_decreases_on_a_fixed_batch(key, adam_losses):
    torch.manual_seed(0)
    model = build_model(key, "demo")
    n_inputs = 1 if MODELS[key].task == "ss" else 2
    images = [torch.rand(4, 3, 32, 32) * 2 - 1 for _ in range(n_inputs)]
    target = (images[0][:, 0] > 0).long()
    losses = adam_losses(model, images, target)
    assert losses[-1] < 0.8 * losses[0]


def test_registry_holds_table1_and_misses_list_names():
    assert TABLE1_SS <= set(models_for_task("ss"))
    assert TABLE1_CD <= set(models_for_task("cd"))
    assert get_model_spec("unetpp").name == "UNet++"
    with pytest.raises(UnknownNameError, match="available: .*unet"):
        get_model_spec("resnet")


def test_noise2map_resamples_other_sizes_around_the_unet():
    model = build_model("noise2map-ss", "demo")  # the demo UNet's sample size is 32
    assert model(torch.zeros(1, 3, 48, 48)).shape == (1, 2, 48, 48)


# Every CD model here knows which date is which (BIT through its token position embedding,
# despite its |x1 − x2| head). DDPM-CD's head is symmetric (|f_A − f_B|) but each date's
# features see fresh noise, so it is left out.
@pytest.mark.parametrize("key", sorted(k for k, s in MODELS.items() if s.task == "cd" and k != "ddpm-cd"))
def test_bitemporal_input_order_is_respected(key):
    torch.manual_seed(0)
    model = build_model(key, "demo").eval()
    pre, post = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(1)
        forward = model(pre, post)
        torch.manual_seed(1)
        swapped = model(post, pre)
    # Relative to the output's spread: some official initialisations (N(0, 0.02)) give tiny logits.
    diff = (forward - swapped).abs().max() / forward.std().clamp(min=1e-12)
    assert diff > 1e-3, key
