"""BIT and ELGC-Net: exact paper-size counts, official module names, demo forward/backward, training."""

from functools import cache

import pytest
import torch

from baselines import bit, elgcnet

MODULES = {"bit": bit, "elgc-net": elgcnet}
# Counts of the official constructors (../shared/notes/baselines.md), = Table I's 11.9M / 10.6M.
PAPER_COUNTS = {"bit": 11_943_754, "elgc-net": 10_574_338}


pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@cache  # the tests only read these models
def build_on_meta(module, size="paper"):
    with torch.device("meta"):
        return module.build(size)


@pytest.mark.parametrize("key", sorted(MODULES))
def test_paper_size_counts_exactly_as_the_official_code(key):
    assert n_params(build_on_meta(MODULES[key])) == PAPER_COUNTS[key]


def test_bit_counts_the_unused_resnet_layers_like_the_paper():
    model = build_on_meta(bit)
    unused = n_params(model.resnet.layer4) + n_params(model.resnet.fc)
    assert unused == 8_393_728 + 513_000
    assert PAPER_COUNTS["bit"] - unused == 3_037_026  # the parameters the forward uses


@pytest.mark.parametrize("key, names", [
    ("bit", ["resnet.conv1.weight", "resnet.layer3.0.downsample.0.weight", "resnet.fc.bias",
             "conv_a.weight", "pos_embedding", "transformer.layers.0.0.fn.fn.to_qkv.weight",
             "transformer_decoder.layers.7.0.fn.norm.weight", "transformer_decoder.layers.7.1.fn.fn.net.3.bias",
             "classifier.1.running_var", "classifier.3.weight", "conv_pred.bias"]),
    ("elgc-net", ["enc.patch_embed4.proj.weight", "enc.block3.3.attn.qkvl.weight", "enc.block1.0.mlp.pos.bias",
                  "enc.block4.2.layer_norm2.weight", "dec.linear_c4.proj.weight", "dec.diff_c1.proj.bias",
                  "dec.linear_fuse.1.running_mean", "dec.dense_1x.0.conv2.conv2d.weight",
                  "dec.change_probability.conv2d.bias"]),
])
def test_state_dict_names_follow_the_official_code(key, names):
    state = build_on_meta(MODULES[key]).state_dict()
    assert set(names) <= set(state)


def test_bit_backbone_stops_at_one_eighth_and_elgca_heads_are_four():
    model = build_on_meta(bit)
    assert model.resnet.layer2[0].conv1.stride == (2, 2)
    assert all(m.stride == (1, 1) for m in model.resnet.layer3.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.transformer.layers[0][0].fn.fn.scale == 32 ** -0.5  # dim^-0.5, not dim_head^-0.5
    assert model.transformer_decoder.layers[0][0].fn.fn.to_q.out_features == 8 * 8  # dedim8
    enc = build_on_meta(elgcnet).enc
    assert [len(getattr(enc, f"block{i}")) for i in range(1, 5)] == [3, 3, 4, 3]
    assert enc.block4[0].attn.heads == 4 and enc.block4[0].attn.qkvl.out_channels == 256


@pytest.mark.parametrize("key", sorted(MODULES))
def test_paper_size_output_shape_at_256_on_meta(key):
    model = build_on_meta(MODULES[key])
    with torch.device("meta"):
        pre, post = torch.empty(2, 3, 256, 256), torch.empty(2, 3, 256, 256)
        assert model(pre, post).shape == (2, 2, 256, 256)


@pytest.mark.parametrize("key", sorted(MODULES))
@pytest.mark.parametrize("side", [32, 64])
def test_demo_forward_backward(key, side):
    torch.manual_seed(0)
    model = MODULES[key].build("demo")
    assert n_params(model) < 100_000
    pre, post = (torch.rand(2, 3, side, side) * 2 - 1 for _ in range(2))
    logits = model(pre, post)
    assert logits.shape == (2, 2, side, side)
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("key", sorted(MODULES))
def test_demo_logits_match_sizes_the_official_code_cannot_take(key):
    model = MODULES[key].build("demo", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 50, 70), torch.zeros(1, 3, 50, 70)).shape == (1, 3, 50, 70)


@pytest.mark.parametrize("key", sorted(MODULES))
def test_loss_decreases_on_a_fixed_batch(key, adam_losses):
    torch.manual_seed(0)
    model = MODULES[key].build("demo")
    pre, other = (torch.rand(4, 3, 32, 32) * 2 - 1 for _ in range(2))
    # A change-detection batch: post = pre with random 8×8 blocks replaced; the target marks them.
    # (A per-pixel target such as pre[:, 0] > 0 is not what BIT can learn: its features are at 1/4.)
    changed = torch.nn.functional.interpolate((torch.rand(4, 1, 4, 4) > 0.5).float(), scale_factor=8)
    post = torch.where(changed.bool(), other, pre)
    target = changed[:, 0].long()
    losses = adam_losses(model, (pre, post), target)
    assert losses[-1] < 0.5 * losses[0], losses


def test_specs():
    (b,), (e,) = bit.SPECS, elgcnet.SPECS
    assert (b.key, b.name, b.task, b.paper_params_m, b.weights) == ("bit", "BIT", "cd", 11.9, ())
    assert (e.key, e.name, e.task, e.paper_params_m, e.weights) == ("elgc-net", "ELGC-Net", "cd", 10.6, ())
    assert round(PAPER_COUNTS["bit"] / 1e6, 1) == b.expected_params_m
    assert round(PAPER_COUNTS["elgc-net"] / 1e6, 1) == e.expected_params_m
    with pytest.raises(ValueError, match="size"):
        bit.build("large")
