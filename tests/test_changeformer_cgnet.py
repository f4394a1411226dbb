"""ChangeFormer-v6 and CGNet-CD: paper-size counts, demo forward/backward, training signal."""

import pytest
import torch
import torch.nn.functional as F

from baselines import changeformer, cgnet
from baselines.cgnet import SPECS as CGNET_SPECS
from baselines.changeformer import SPECS as CHANGEFORMER_SPECS

MODULES = {"changeformer-v6": changeformer, "cgnet-cd": cgnet}


pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(module, *args, **kwargs):
    try:
        with torch.device("meta"):
            return module.build(*args, **kwargs)
    except (RuntimeError, NotImplementedError):  # an .item() the meta device forbids
        return module.build(*args, **kwargs)


def _count(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def test_specs():
    (cf,), (cg,) = CHANGEFORMER_SPECS, CGNET_SPECS
    assert (cf.key, cf.name, cf.task, cf.paper_params_m, cf.weights) == ("changeformer-v6", "ChangeFormer-v6", "cd",
                                                                         41.0, ())
    assert (cg.key, cg.name, cg.task, cg.paper_params_m) == ("cgnet-cd", "CGNet-CD", "cd", 39.0)
    assert cg.weights == ("vgg16_bn.tv_in1k.safetensors",)  # ImageNet VGG16-BN into the encoder
    assert cf.build is changeformer.build and cg.build is cgnet.build


def test_changeformer_paper_size_is_exact():
    model = _meta(changeformer, "paper")
    assert _count(model) == 41_026_674
    assert _count(model.Tenc_x2) == 28_937_408 and _count(model.TDec_x2) == 12_089_266
    # the four side heads are frozen while forward returns only the final map
    assert _count(model, trainable_only=True) == 41_026_674 - 4 * 4_652
    model.side_outputs = True
    assert _count(model, trainable_only=True) == 41_026_674


def test_cgnet_paper_size():
    official = _meta(cgnet, "paper", num_classes=1)
    model = _meta(cgnet, "paper")
    assert _count(official) == 38_989_317  # the notes' 38.99M
    assert _count(model) == 38_989_317 + (64 * 9 + 1) + (64 + 1) == 38_989_959
    assert abs(_count(model) / 39.0e6 - 1) <= 0.02
    assert _count(model.encoder) == 14_723_136
    unused = sum(_count(getattr(model, f"up_layer{i}")) for i in (2, 3, 4))
    assert unused == 5_310_976
    assert _count(model, trainable_only=True) == 38_989_959 - unused == 33_678_983


def test_cgnet_encoder_is_torchvision_vgg16_bn_features():
    from torchvision.models.vgg import cfgs, make_layers

    with torch.device("meta"):
        tv = make_layers(cfgs["D"], batch_norm=True)  # = vgg16_bn().features, without VGG's slow meta init
        model = cgnet.build("paper")
    ours = {k: v.shape for k, v in model.encoder.state_dict().items()}
    # a torchvision/timm VGG16-BN checkpoint's features.* keys load into model.encoder unchanged
    assert ours == {f"features.{k}": v.shape for k, v in tv.state_dict().items()}
    # the official checkpoint's inc/down1..4 slices map onto the same layers
    official = {}
    for prefix, (start, stop) in zip(cgnet.OFFICIAL_PREFIXES, cgnet.STAGE_SLICES):
        official.update({f"{prefix}.{k}": v for k, v in tv[start:stop].state_dict().items()})
    official["gamma_like.extra"] = torch.zeros(1, device="meta")
    renamed = cgnet.from_official_state_dict(official)
    assert {k: v.shape for k, v in renamed.items() if k.startswith("encoder.")} == {f"encoder.{k}": v
                                                                                    for k, v in ours.items()}


@pytest.mark.parametrize("key", sorted(MODULES))
@pytest.mark.parametrize("size", [32, 64])
def test_demo_forward_backward(key, size):
    torch.manual_seed(0)
    model = MODULES[key].build("demo")
    assert _count(model) < 300_000
    pre, post = (torch.rand(2, 3, size, size) * 2 - 1 for _ in range(2))
    logits = model(pre, post)
    assert logits.shape == (2, 2, size, size)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_changeformer_side_outputs_and_multi_scale_loss():
    torch.manual_seed(0)
    model = changeformer.build("demo", side_outputs=True)
    pre, post = (torch.rand(2, 3, 64, 64) * 2 - 1 for _ in range(2))
    outputs = model(pre, post)
    assert [tuple(o.shape[-2:]) for o in outputs] == [(2, 2), (4, 4), (8, 8), (16, 16), (64, 64)]
    target = (pre[:, 0] > 0).long()
    loss = changeformer.multi_scale_loss(outputs, target)
    loss.backward()
    assert all(p.grad is not None for p in model.TDec_x2.make_pred_c4.parameters())
    model.eval()
    model.side_outputs = False
    with torch.no_grad():
        torch.testing.assert_close(model(pre, post), model.forward_all(pre, post)[-1])


def test_cgnet_coarse_map_and_official_loss():
    torch.manual_seed(0)
    model = cgnet.build("demo").eval()
    pre, post = (torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        coarse, final = model.forward_both(pre, post)
        torch.testing.assert_close(final, model(pre, post))
    assert coarse.shape == final.shape == (2, 2, 32, 32)
    target = (pre[:, 0] > 0).long()
    assert torch.isfinite(cgnet.deep_supervision_loss(coarse, final, target))
    bce = cgnet.build("demo", num_classes=1)
    c1, f1 = bce.forward_both(pre, post)
    assert c1.shape == f1.shape == (2, 1, 32, 32)
    assert torch.isfinite(cgnet.deep_supervision_loss(c1, f1, target))


def test_cgm_matches_the_explicit_official_attention():
    torch.manual_seed(0)
    cgm = cgnet.ChangeGuideModule(16)
    torch.nn.init.constant_(cgm.gamma, 0.7)
    x, guide = torch.randn(2, 16, 5, 6), torch.rand(2, 1, 5, 6)
    b, c, h, w = x.shape
    q = (cgm.query_conv(x) * (1 + guide)).view(b, -1, h * w).permute(0, 2, 1)
    k = (cgm.key_conv(x) * (1 + guide)).view(b, -1, h * w)
    attention = torch.softmax(torch.bmm(q, k), dim=-1)
    v = (cgm.value_conv(x) * (1 + guide)).view(b, -1, h * w)
    expected = cgm.gamma * torch.bmm(v, attention.permute(0, 2, 1)).view(b, c, h, w) + x
    torch.testing.assert_close(cgm(x, guide), expected)


def test_changeformer_attention_matches_the_explicit_official_attention():
    torch.manual_seed(0)
    attn = changeformer.Attention(32, num_heads=2, sr_ratio=2).eval()
    x, h, w = torch.randn(2, 8 * 8, 32), 8, 8
    b, n, c = x.shape
    q = attn.q(x).reshape(b, n, 2, c // 2).permute(0, 2, 1, 3)
    x_ = attn.norm(attn.sr(x.permute(0, 2, 1).reshape(b, c, h, w)).reshape(b, c, -1).permute(0, 2, 1))
    k, v = attn.kv(x_).reshape(b, -1, 2, 2, c // 2).permute(2, 0, 3, 1, 4)
    weights = ((q @ k.transpose(-2, -1)) * (c // 2) ** -0.5).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x, h, w), expected)


def _change_batch():
    """Post = pre with random 8×8 blocks replaced; the label marks the replaced blocks."""
    g = torch.Generator().manual_seed(0)
    pre = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    mask = F.interpolate((torch.rand(4, 1, 4, 4, generator=g) > 0.5).float(), size=(32, 32), mode="nearest")
    post = torch.where(mask.bool(), torch.rand(4, 3, 32, 32, generator=g) * 2 - 1, pre)
    return pre, post, mask[:, 0].long()


@pytest.mark.parametrize("key", sorted(MODULES))
def test_loss_decreases_on_a_fixed_batch(key, adam_losses):
    torch.manual_seed(0)
    model = MODULES[key].build("demo")
    pre, post, target = _change_batch()
    losses = adam_losses(model, (pre, post), target)
    assert losses[-1] < 0.5 * losses[0], losses
