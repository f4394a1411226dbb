"""MambaBCD-Base: exact paper-size count, backbone/decoder split, demo forward/backward, training signal."""


import pytest
import torch
import torch.nn.functional as F

from baselines import mambabcd
from baselines.mambabcd import SPECS, build


pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _images(batch, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def test_spec():
    (spec,) = SPECS
    assert (spec.key, spec.name, spec.task, spec.paper_params_m, spec.weights) == (
        "mambabcd-base", "MambaBCD-Base", "cd", 92.4, ("vssm_base_0229_ckpt_epoch_237.pth",))
    assert spec.weights_loader is not None  # the VMamba pickle needs its own key mapping
    assert spec.build is build and spec.reference_params_m is None


def test_paper_size_is_exact_and_split_as_official():
    with torch.device("meta"):
        model = build("paper")
    assert all(p.is_meta for p in model.parameters())
    # The official STMambaBCD(vssm_base_224.yaml) module tree at 96c3240 has 92,399,874 parameters.
    assert _count(model) == 92_399_874
    assert _count(model, trainable_only=True) == 92_399_874  # nothing registered-but-unused
    assert _count(model.encoder) == 87_534_592 and _count(model.decoder) == 4_865_024
    assert _count(model.main_clf) == 258
    assert round(_count(model.encoder) / 1e6, 2) == 87.53
    assert round((_count(model.decoder) + _count(model.main_clf)) / 1e6, 2) == 4.87
    assert round(_count(model) / 1e6, 2) == 92.40
    # Base settings: depths 2/2/15/2, dims 128-1024, d_state 1, dt_rank ceil(d/16), no z-gate, conv without bias.
    assert [len(layer.blocks) for layer in model.encoder.layers] == [2, 2, 15, 2]
    assert model.encoder.dims == [128, 256, 512, 1024]
    op = model.encoder.layers[0].blocks[0].op
    assert op.A_logs.shape == (4 * 256, 1) and op.dt_projs_weight.shape == (4, 256, 8)
    assert op.in_proj.weight.shape == (256, 128) and op.conv2d.bias is None
    rates = [b.drop_path.drop_prob for layer in model.encoder.layers for b in layer.blocks]
    assert rates == pytest.approx([0.6 * i / 20 for i in range(21)])  # linspace(0, 0.6, 21)
    assert model.decoder.st_block_41[2].drop_path.drop_prob == pytest.approx(0.1)
    assert model.decoder.st_block_11[2].op.x_proj_weight.shape == (4, 8 + 2, 256)
    # Official state-dict names (an official checkpoint loads unchanged).
    keys = model.state_dict().keys()
    for key in ("encoder.patch_embed.7.weight", "encoder.layers.3.blocks.1.op.A_logs",
                "encoder.layers.2.downsample.1.weight", "encoder.outnorm3.bias", "decoder.st_block_42.2.mlp.fc2.weight",
                "decoder.fuse_layer_1.1.running_mean", "decoder.smooth_layer_3.bn2.weight", "main_clf.weight"):
        assert key in keys, key


def test_demo_stages_forward_and_backward():
    torch.manual_seed(0)
    model = build("demo")
    assert _count(model) < 1_000_000
    pre, post = _images(2, seed=1), _images(2, seed=2)
    stages = model.encoder(pre)
    assert [tuple(f.shape) for f in stages] == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2), (2, 128, 1, 1)]
    logits = model(pre, post)
    assert logits.shape == (2, 2, 32, 32)
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        assert model(_images(1, 64), _images(1, 64, seed=3)).shape == (1, 2, 64, 64)
        assert build("demo", num_classes=3).eval()(pre, post).shape == (2, 3, 32, 32)


def test_interleaving_and_input_normalisation():
    pre, post = torch.zeros(1, 1, 2, 3), torch.ones(1, 1, 2, 3)
    mixed = mambabcd.interleave_columns(pre, post)
    assert mixed.shape == (1, 1, 2, 6)
    assert mixed[..., ::2].eq(0).all() and mixed[..., 1::2].eq(1).all()
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = mambabcd.imagenet_normalise(x)
    mean, std = torch.tensor(mambabcd.IMAGENET_MEAN), torch.tensor(mambabcd.IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[0, :, 0, 1], (255 - mean) / std)


def test_lovasz_softmax_is_one_minus_iou_on_hard_predictions():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 0]]])  # the 255 pixel is ignored
    probas = F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    keep = labels != 255
    ious = []
    for c in (0, 1):
        g, p = (labels == c) & keep, (pred == c) & keep
        ious.append((g & p).sum() / (g | p).sum())
    expected = 1 - torch.stack(ious).float().mean()
    torch.testing.assert_close(mambabcd.lovasz_softmax(probas, labels), expected)
    assert mambabcd.lovasz_softmax(F.one_hot(labels.clamp(max=1), 2).permute(0, 3, 1, 2).float(), labels) == 0
    logits = torch.randn(1, 2, 2, 4, requires_grad=True)
    mambabcd.official_loss(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_vmamba_checkpoint_maps_into_the_encoder(tmp_path):
    torch.manual_seed(0)
    source = build("demo")
    state = {k: v for k, v in source.encoder.state_dict().items() if not k.startswith("outnorm")}
    state["classifier.head.weight"] = torch.zeros(1000, 128)  # the ImageNet head, dropped
    torch.save({"model": state, "epoch": 237}, tmp_path / "vssm.pth")
    target = build("demo")
    mambabcd.load_vmamba_backbone(target, tmp_path / "vssm.pth")
    for key, value in state.items():
        if not key.startswith("classifier."):
            torch.testing.assert_close(target.encoder.state_dict()[key], value)
    del state["patch_embed.0.weight"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="patch_embed.0.weight"):
        mambabcd.load_vmamba_backbone(target, tmp_path / "broken.pth")


def test_demo_loss_decreases_on_a_block_change_batch(adam_losses):
    # post = pre with random 8×8 blocks replaced by other content; the replaced blocks are the change.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    pre, other = _images(4, seed=5), _images(4, seed=6)
    blocks = torch.rand(4, 1, 4, 4, generator=g) < 0.4
    mask = blocks.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # [4, 1, 32, 32]
    post = torch.where(mask, other, pre)
    target = mask[:, 0].long()
    assert 0 < target.float().mean() < 1
    model = build("demo")
    losses = adam_losses(model, (pre, post), target)
    assert losses[-1] < 0.7 * losses[0], losses
