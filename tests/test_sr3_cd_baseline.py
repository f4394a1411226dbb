"""DDPM-CD: exact paper-size counts (meta device), demo-size features/forward/training,
the SR3 pretraining objective, the noise-level schedule and the checkpoint key mapping."""

import math

import pytest
import torch
import torch.nn.functional as F

from baselines import ModelSpec
from baselines.ddpm_cd import (
    CD_SCHEDULE, DEMO_UNET, PRETRAIN_SCHEDULE, SPECS, DDPMCD, CDHeadV2, SR3UNet, build, build_unet,
    make_schedule, pretraining_loss, q_sample, unet_state_dict_from,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def images(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2)]


def test_paper_size_counts_are_exact_on_meta():
    with torch.device("meta"):
        model = build("paper")
    assert all(p.is_meta for p in model.parameters())
    assert isinstance(model.unet, SR3UNet) and isinstance(model.head, CDHeadV2)
    assert n_params(model.unet) == 391_048_067
    assert n_params(model.head) == 46_405_126
    assert n_params(model) == 437_453_193
    assert abs(n_params(model) / 1e6 / 437.5 - 1) <= 0.02
    # The official quirk: the 256² Block (3·128→128 1×1, 128→128 3×3) is registered but unused.
    assert n_params(model.head.discarded_block) == 3 * 128 * 128 + 128 + 128 * 128 * 9 + 128
    assert model.unet.decoder_channels == [128] * 3 + [256] * 3 + [512] * 3 + [1024] * 6
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert model.head.feat_scales == [14, 11, 8, 5, 2] and model.time_steps == (50, 100, 400)


def test_spec_and_single_time_step_head():
    (spec,) = SPECS
    assert isinstance(spec, ModelSpec) and (spec.key, spec.name, spec.task) == ("ddpm-cd", "DDPM-CD", "cd")
    assert spec.paper_params_m == 437.5 and spec.weights == ()
    with torch.device("meta"):
        head = CDHeadV2(time_steps=[50])
    assert round(n_params(head) / 1e6, 2) == 39.08  # ../shared/notes/baselines.md


def test_demo_decoder_features_shapes():
    torch.manual_seed(0)
    unet = build_unet("demo").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        eps, feats = unet(x, torch.full((2,), 0.7), return_features=True)
        eps_only = unet(x, torch.tensor(0.7))
    assert eps.shape == x.shape and torch.allclose(eps, eps_only, atol=1e-5)
    assert len(feats) == 15
    c = DEMO_UNET["inner_channel"]
    # Official reversed order: 0-2 full resolution, …, 12-14 the coarsest level.
    expected = [(2, c * m, 32 >> lvl, 32 >> lvl) for lvl, m in enumerate(DEMO_UNET["channel_mults"]) for _ in range(3)]
    assert [tuple(f.shape) for f in feats] == expected
    # keep= frees the others; the kept ones are the same tensors.
    with torch.no_grad():
        _, some = unet(x, torch.full((2,), 0.7), return_features=True, keep=[2, 14])
    assert [i for i, f in enumerate(some) if f is not None] == [2, 14]
    assert torch.allclose(some[14], feats[14], atol=1e-5)


def test_demo_forward_shapes_reproducible_and_stochastic():
    torch.manual_seed(0)
    model = build("demo", seed=0)
    pre, post = images()
    with torch.no_grad():
        a = model(pre, post, generator=torch.Generator().manual_seed(3))
        b = model(pre, post, generator=torch.Generator().manual_seed(3))
        c = model(pre, post, generator=torch.Generator().manual_seed(4))
        model.fuse_passes = False  # the 6 passes one by one: the same draws, the same result
        d = model(pre, post, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 2, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a, d, atol=1e-5)


def test_gradients_reach_the_head_not_the_unet():
    torch.manual_seed(0)
    model = build("demo", seed=0).train()
    assert not model.unet.training and model.head.training  # the frozen UNet stays in eval mode
    pre, post = images()
    model(pre, post).square().mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.unet.parameters())
    discarded = {id(p) for p in model.head.discarded_block.parameters()}
    for name, p in model.head.named_parameters():
        if id(p) in discarded:
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # What the suite's loop sees: every trainable parameter gets a gradient.
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def change_pair(batch=4, seed=0):
    """pre, post = pre with random 8×8 blocks replaced, and the block mask as the target."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    changed = F.interpolate((torch.rand(batch, 1, 4, 4, generator=g) > 0.5).float(), scale_factor=8).bool()
    post = torch.where(changed, torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1, pre)
    return pre, post, changed[:, 0].long()


def test_loss_decreases_and_unet_stays_frozen():
    torch.manual_seed(0)
    model = build("demo")
    pre, post, target = change_pair(batch=2)
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)  # as the shared loop: all parameters
    losses = []
    for _ in range(15):  # a fixed generator: the same noisy features every step
        opt.zero_grad()
        loss = F.cross_entropy(model(pre, post, generator=torch.Generator().manual_seed(0)), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in unet_before.items())
    assert all(p not in opt.state for p in model.unet.parameters())  # Adam skipped the frozen UNet


def test_pretraining_loss_matches_the_objective_and_decreases():
    torch.manual_seed(0)
    unet = build_unet("demo").eval()  # dropout off: a deterministic check
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    loss = pretraining_loss(unet, x0, generator=torch.Generator().manual_seed(7))
    # By hand: t ~ U{1..T} for the batch, √ᾱ ~ U(prev[t-1], prev[t]) per sample, fresh ε, L2 on ε.
    g = torch.Generator().manual_seed(7)
    sched = make_schedule(**PRETRAIN_SCHEDULE)
    t = int(torch.randint(1, sched.num_timesteps + 1, (1,), generator=g))
    level = sched.continuous_noise_level(t, 2, g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        expected = F.mse_loss(unet(q_sample(x0, level, noise), level), noise)
    assert torch.isfinite(loss) and torch.allclose(loss, expected, atol=1e-6)
    l1 = pretraining_loss(unet, x0, generator=torch.Generator().manual_seed(7), loss_type="l1")
    assert torch.isfinite(l1) and not torch.allclose(l1, loss)

    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(5):  # the same t, levels and noise every step: a fixed-batch overfit check
        opt.zero_grad()
        loss = pretraining_loss(unet, x0, generator=torch.Generator().manual_seed(7))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.9 * losses[0], losses


def _hand_sqrt_alphas_cumprod(t, n=2000, start=1e-6, end=1e-2):
    prod = 1.0
    for i in range(t):
        prod *= 1.0 - (start + i * (end - start) / (n - 1))
    return math.sqrt(prod)


@pytest.mark.parametrize("t", [50, 400])
def test_cd_noise_levels_against_hand_computation(t):
    sched = make_schedule(**CD_SCHEDULE)
    prev = sched.sqrt_alphas_cumprod_prev
    assert sched.num_timesteps == 2000 and prev.numel() == 2001 and prev[0] == 1.0
    hi, lo = _hand_sqrt_alphas_cumprod(t - 1), _hand_sqrt_alphas_cumprod(t)
    assert prev[t - 1].item() == pytest.approx(hi, rel=1e-12)
    assert prev[t].item() == pytest.approx(lo, rel=1e-12)
    assert sched.sqrt_alphas_cumprod[t - 1].item() == pytest.approx(lo, rel=1e-12)
    levels = sched.continuous_noise_level(t, 1000, torch.Generator().manual_seed(0)).double()
    assert levels.min() >= lo - 1e-6 and levels.max() <= hi + 1e-6
    assert levels.max() - levels.min() > 0.9 * (hi - lo)  # spread over the interval


def test_cosine_pretraining_schedule_telescopes():
    sched = make_schedule(**PRETRAIN_SCHEDULE)
    f = lambda t: math.cos((t / 2000 + 8e-3) / (1 + 8e-3) * math.pi / 2) ** 2  # noqa: E731
    assert sched.alphas_cumprod[999].item() == pytest.approx(f(1000) / f(0), rel=1e-9)


def test_load_unet_maps_official_and_suite_checkpoints():
    torch.manual_seed(0)
    source = build("demo")
    sched = make_schedule(**CD_SCHEDULE)
    # Official I*_gen.pth: GaussianDiffusion.state_dict() = denoise_fn.* + schedule buffers.
    official = {f"denoise_fn.{k}": v.clone() for k, v in source.unet.state_dict().items()}
    official.update(betas=sched.betas.float(), alphas_cumprod=sched.alphas_cumprod.float(),
                    posterior_mean_coef2=torch.zeros(2000))
    assert set(unet_state_dict_from(official)) == set(source.unet.state_dict())
    target = build("demo").load_unet(official)
    assert all(torch.equal(v, target.unet.state_dict()[k]) for k, v in source.unet.state_dict().items())
    assert not any(p.requires_grad for p in target.unet.parameters()) and not target.unet.training
    # A Lightning checkpoint of the suite's CD task (model.unet.*, model.head.*).
    lightning = {"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}
    other = build("demo").load_unet(lightning).load_head(lightning)
    pre, post = images()
    with torch.no_grad():
        assert torch.equal(source(pre, post, generator=torch.Generator().manual_seed(1)),
                           other(pre, post, generator=torch.Generator().manual_seed(1)))
    # The official head checkpoint (cd_head_v2.state_dict()) loads as is.
    build("demo").load_head(source.head.state_dict())
    with pytest.raises(RuntimeError):
        build("demo").load_unet({"init_conv.weight": torch.zeros(1)})


def test_demo_build_takes_its_options():
    model = build("demo", time_steps=[50, 100], seed=1)
    assert isinstance(model, DDPMCD) and model.time_steps == (50, 100)
    with pytest.raises(ValueError):
        build("demo", time_steps=[0])
