"""Selective scan (reference vs naive loop, hand case, fused kernel), cross-scan, RS3Mamba, DPT."""

import math
import sys

import pytest
import torch

from baselines import build_model, count_params
from baselines.mamba.selective_scan import cross_merge, cross_scan, selective_scan, selective_scan_ref

ss = sys.modules["baselines.mamba.selective_scan"]


pytestmark = pytest.mark.usefixtures("one_thread")


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence written out per batch, channel, step and state, on Python floats."""
    batch, channels, length = u.shape
    n_state, groups = A.shape[1], B.shape[1]
    per_group = channels // groups
    u, delta, A, B, C = (t.tolist() for t in (u, delta, A, B, C))
    D, z, delta_bias = (None if t is None else t.tolist() for t in (D, z, delta_bias))
    out = torch.zeros(batch, channels, length, dtype=torch.float64)
    for b in range(batch):
        for d in range(channels):
            g = d // per_group
            h = [0.0] * n_state
            for t in range(length):
                dt = delta[b][d][t] + (delta_bias[d] if delta_bias is not None else 0.0)
                if delta_softplus:
                    dt = math.log1p(math.exp(dt))
                y = 0.0
                for n in range(n_state):
                    h[n] = math.exp(dt * A[d][n]) * h[n] + dt * B[b][g][n][t] * u[b][d][t]
                    y += C[b][g][n][t] * h[n]
                if D is not None:
                    y += D[d] * u[b][d][t]
                if z is not None:
                    y *= z[b][d][t] / (1 + math.exp(-z[b][d][t]))
                out[b, d, t] = y
    return out


def random_inputs(batch=2, channels=6, n_state=3, length=7, groups=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        u=torch.randn(batch, channels, length, generator=g),
        delta=torch.randn(batch, channels, length, generator=g) * 0.5,
        A=-torch.rand(channels, n_state, generator=g) * 2,
        B=torch.randn(batch, groups, n_state, length, generator=g),
        C=torch.randn(batch, groups, n_state, length, generator=g),
        D=torch.randn(channels, generator=g),
        delta_bias=torch.randn(channels, generator=g) * 0.1,
    )


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("block", [128, 3])
def test_reference_scan_matches_the_naive_loop(softplus, block):
    x = random_inputs()
    if not softplus:
        x["delta"] = x["delta"].abs()
    z = torch.randn_like(x["u"])
    y, last = selective_scan_ref(**x, z=z, delta_softplus=softplus, return_last_state=True, block=block)
    expected = naive_scan(**x, z=z, delta_softplus=softplus)
    assert y.shape == (2, 6, 7) and last.shape == (2, 6, 3)
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)
    # Ungrouped [batch, N, L] B/C and no optional terms.
    x1 = random_inputs(groups=1, seed=1)
    y1 = selective_scan_ref(x1["u"], x1["delta"].abs(), x1["A"], x1["B"][:, 0], x1["C"][:, 0], block=block)
    expected1 = naive_scan(x1["u"], x1["delta"].abs(), x1["A"], x1["B"], x1["C"])
    torch.testing.assert_close(y1.double(), expected1, atol=1e-5, rtol=1e-5)


def test_grouped_b_c_equal_per_channel_copies():
    x = random_inputs(channels=4, groups=2)
    per_channel = {k: x[k].repeat_interleave(2, dim=1) for k in ("B", "C")}  # G = D
    y_grouped = selective_scan_ref(**x, delta_softplus=True)
    y_expanded = selective_scan_ref(**{**x, **per_channel}, delta_softplus=True)
    torch.testing.assert_close(y_grouped, y_expanded)


def test_hand_computed_case_n1_l3():
    # u = 1, 2, 3; delta = 0.5; A = -1; B = 1, 2, 1; C = 1, 1, 2; D = 0.5; no softplus.
    u = torch.tensor([[[1.0, 2.0, 3.0]]])
    delta = torch.full((1, 1, 3), 0.5)
    A = torch.tensor([[-1.0]])
    B = torch.tensor([1.0, 2.0, 1.0]).reshape(1, 1, 1, 3)
    C = torch.tensor([1.0, 1.0, 2.0]).reshape(1, 1, 1, 3)
    D = torch.tensor([0.5])
    a = math.exp(-0.5)
    h1 = 0.5 * 1 * 1
    h2 = a * h1 + 0.5 * 2 * 2
    h3 = a * h2 + 0.5 * 1 * 3
    expected = torch.tensor([[[h1 + 0.5, h2 + 1.0, 2 * h3 + 1.5]]])
    torch.testing.assert_close(selective_scan_ref(u, delta, A, B, C, D), expected)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D), expected)


def test_gradients_flow_through_the_reference_scan():
    x = {k: v.requires_grad_() for k, v in random_inputs().items()}
    selective_scan_ref(**x, delta_softplus=True).square().sum().backward()
    for name, value in x.items():
        assert value.grad is not None and torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0, name


def test_dispatcher_uses_the_reference_off_cuda(monkeypatch):
    u = torch.zeros(1, 2, 3)
    assert not ss.uses_fused(u)
    monkeypatch.setattr(ss, "_fused_kernel", lambda: (lambda *a, **k: "fused"))
    assert not ss.uses_fused(u)  # CPU tensors never go to the kernel
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert ss.uses_fused(u)
    monkeypatch.setattr(ss, "FORCE_REFERENCE", True)
    assert not ss.uses_fused(u)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not ss.fused_available(),
                    reason="needs CUDA and mamba_ssm's fused selective scan")
def test_fused_kernel_matches_the_reference(monkeypatch):
    x = {k: v.cuda() for k, v in random_inputs(batch=2, channels=16, n_state=4, length=64, groups=4).items()}
    z = torch.randn_like(x["u"])
    assert ss.uses_fused(x["u"])
    fused = selective_scan(**x, z=z, delta_softplus=True)
    monkeypatch.setattr(ss, "FORCE_REFERENCE", True)
    reference = selective_scan(**x, z=z, delta_softplus=True)
    torch.testing.assert_close(fused, reference, atol=1e-3, rtol=1e-3)


def test_cross_merge_of_cross_scan_is_four_times_the_input():
    x = torch.randn(2, 3, 4, 5)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 20)
    torch.testing.assert_close(xs[:, 1, :, :4], x[:, :, :, 0])  # column-major starts with column 0
    torch.testing.assert_close(xs[:, 3], xs[:, 1].flip(-1))  # its reverse
    torch.testing.assert_close(xs[:, 2, :, 0], x[:, :, -1, -1])  # reversed row-major starts bottom-right
    torch.testing.assert_close(cross_merge(xs, 4, 5), 4 * x.flatten(2))
    # The same through a selective scan that is the identity (delta = 0, D = 1: y = u).
    u = xs.reshape(2, 12, 20)
    y = selective_scan(u, torch.zeros_like(u), -torch.ones(12, 2), torch.randn(2, 4, 2, 20),
                       torch.randn(2, 4, 2, 20), torch.ones(12))
    torch.testing.assert_close(cross_merge(y.reshape(2, 4, 3, 20), 4, 5), 4 * x.flatten(2))


# --------------------------------------------------------------------------- RS3Mamba, DPT


def test_paper_size_counts():
    # RS3Mamba: the official RS3Mamba(num_classes=2) at 707b454 has 43,324,638 parameters
    # (ResNet-18 11.18 + stem 0.007 + VSS 22.14 + fusion 9.49 + decoder 0.51).
    assert count_params("rs3mamba") == 43_324_638
    assert count_params("dpt") == 121_009_410


def test_rs3mamba_breakdown_follows_the_official_code():
    with torch.device("meta"):
        model = build_model("rs3mamba", "paper")
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters()) / 1e6
             for name in ("backbone", "stem", "vssm_encoder", "Fuse", "decoder")}
    assert {k: round(v, 2) for k, v in parts.items()} == {
        "backbone": 11.18, "stem": 0.01, "vssm_encoder": 22.14, "Fuse": 9.49, "decoder": 0.51}
    assert round(parts["stem"], 4) == 0.0072
    blocks = model.vssm_encoder.layers
    assert [len(layer.blocks) for layer in blocks] == [2, 2, 9, 2]
    assert blocks[0].blocks[0].self_attention.A_logs.shape == (4 * 192, 16)


@pytest.mark.parametrize("key", ["rs3mamba", "dpt"])
def test_demo_forward_backward_shapes(key):
    torch.manual_seed(0)
    model = build_model(key, "demo", num_classes=3)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    logits = model(x)
    assert logits.shape == (2, 3, 32, 32)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64) * 2 - 1).shape == (1, 3, 64, 64)


def test_rs3mamba_demo_loss_decreases_on_a_fixed_batch():
    # RS3Mamba predicts at 1/4 resolution (UNetFormer head, then bilinear upsampling), so the
    # target is a blocky (8×8) one it can represent, not per-pixel noise.
    torch.manual_seed(0)
    model = build_model("rs3mamba", "demo")
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    coarse = torch.nn.functional.avg_pool2d(images[:, :1], 8)
    target = (torch.nn.functional.interpolate(coarse, scale_factor=8)[:, 0] > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
