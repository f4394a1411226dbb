"""Noise2Map equals the released model (alishibli97/noise2map ``noise2map/model.py``).

The reference below is written from the released structure: ``input_conv`` (3 or 6 → 3,
3×3), the ddpm-church-256 ``UNet2DModel`` built from its published config, ``output_conv``
(3 → classes, 3×3), noised by ``DDIMScheduler().add_noise`` with the released train.py's
task noise (CD: [post, pre]; SS: the image). Our Noise2Map must give its logits on shared
weights at paper size.
"""

import json

import pytest
import torch
from torch import nn

from noise2map.models import Noise2Map, build_unet
from noise2map.models.noise2map import CHURCH_CONFIG

# google/ddpm-church-256's config.json field by field (the hub file, as ../shared/notes lists it).
PUBLISHED = {
    "act_fn": "silu", "attention_head_dim": None, "block_out_channels": [128, 128, 256, 256, 512, 512],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "out_channels": 3,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-6, "norm_num_groups": 32,
    "sample_size": 256, "time_embedding_type": "positional",
}


class ReleasedNoise2Map(nn.Module):
    """The released wrapper at img_scale 256 (no resampling), with its own noising."""

    def __init__(self, in_channels: int, out_channels: int = 2):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel.from_config(json.loads(CHURCH_CONFIG.read_text()))
        self.input_conv = nn.Conv2d(in_channels, 3, kernel_size=3, stride=1, padding=1)
        self.output_conv = nn.Conv2d(3, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x, timesteps):
        return self.output_conv(self.unet(self.input_conv(x), timesteps).sample)


def released_logits(model, task, images, timesteps):
    from diffusers import DDIMScheduler

    if task == "cd":
        pre, post = images
        x, noise = torch.cat([pre, post], 1), torch.cat([post, pre], 1)
    else:
        x = noise = images[0]
    return model(DDIMScheduler().add_noise(x, noise, timesteps), timesteps)


def test_shipped_config_is_the_published_ddpm_church_256_config():
    shipped = json.loads(CHURCH_CONFIG.read_text())
    assert {k: v for k, v in shipped.items() if not k.startswith("_")} == PUBLISHED
    assert shipped["_class_name"] == "UNet2DModel"


def test_unet_has_one_attention_head_over_all_channels():
    unet = build_unet()
    attention = [m for m in unet.modules() if m.__class__.__name__ == "Attention"]
    # AttnDownBlock2D (2 layers), AttnUpBlock2D (3 layers), the mid block: 6, each one head
    assert [(a.heads, a.inner_dim) for a in attention] == [(1, 512)] * 6
    assert sum(p.numel() for p in unet.parameters()) == 113_673_219


def test_unet_equals_unet2dmodel_from_the_published_config_output_for_output():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    ours = build_unet().eval()
    theirs = UNet2DModel.from_config(json.loads(CHURCH_CONFIG.read_text())).eval()
    theirs.load_state_dict(ours.state_dict())
    x, t = torch.randn(1, 3, 64, 64), torch.tensor([417])
    with torch.no_grad():
        a, b = ours(x, t).sample, theirs(x, t).sample
        # teeth: UNet2DModel's default attention_head_dim (8 → 64 heads of 8 at 512 channels)
        # has the same parameters and computes another function
        eight = UNet2DModel(**{k: v for k, v in PUBLISHED.items() if k != "attention_head_dim"}).eval()
        eight.load_state_dict(ours.state_dict())
        c = eight(x, t).sample
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


@pytest.mark.parametrize("task", ["cd", "ss"])
def test_noise2map_logits_equal_the_released_model_at_paper_size(task):
    torch.manual_seed(1)
    ours = Noise2Map(task).eval()  # paper size, the paper preset's DDIM defaults, released SS noise
    reference = ReleasedNoise2Map(6 if task == "cd" else 3).eval()
    # the same parameter names as the released state dict: it loads without renaming
    assert reference.load_state_dict(ours.state_dict()) is not None
    # CD: evaluate.py's T - 1 and a training timestep; SS (the same UNet path): validation's T // 2
    n, t = (2, torch.tensor([999, 137])) if task == "cd" else (1, torch.tensor([500]))
    images = tuple(torch.rand(n, 3, 256, 256) * 2 - 1 for _ in range(2 if task == "cd" else 1))
    with torch.no_grad():
        got = ours(*images, timesteps=t)
        want = released_logits(reference, task, images, t)
    assert got.shape == (n, 2, 256, 256)
    assert (got - want).abs().max().item() < 1e-5
    assert sum(p.numel() for p in ours.parameters()) == 113_673_440 - (0 if task == "cd" else 81)


def test_a_unet_folder_with_another_architecture_is_refused(tmp_path):
    from noise2map.errors import CheckpointError
    from noise2map.models.noise2map import check_unet_folder

    (tmp_path / "config.json").write_text(CHURCH_CONFIG.read_text())
    check_unet_folder(tmp_path)  # the published file itself
    (tmp_path / "config.json").write_text(json.dumps({**PUBLISHED, "attention_head_dim": 8, "add_attention": True}))
    with pytest.raises(CheckpointError, match=r"config.json is not the UNet this model builds \(attention_head_dim: 8"):
        check_unet_folder(tmp_path)
    with pytest.raises(CheckpointError, match="has no config"):
        check_unet_folder(tmp_path / "missing")


def test_table3_scratch_row_builds_what_the_released_code_builds_for_pretrained_none():
    from diffusers import UNet2DModel

    from noise2map.reporting.ablations import ablation_config, variants
    from noise2map.config import load_config
    from noise2map.models.noise2map import DIFFUSERS_DEFAULT_UNET

    # the pinned dict is UNet2DModel()'s own defaults (released: UNet2DModelFlex() for pretrained=None)
    defaults = UNet2DModel().config
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items() if k in DIFFUSERS_DEFAULT_UNET} \
        == DIFFUSERS_DEFAULT_UNET
    paper = load_config("workflow/config/paper.yaml")
    assert variants(paper)["table3"]["scratch"] == {"noise2map": {"unet": DIFFUSERS_DEFAULT_UNET}}
    config = ablation_config(paper, "table3", "scratch")
    model = Noise2Map("cd", unet=config["noise2map"]["unet"])
    assert sum(p.numel() for p in model.unet.parameters()) == 274_056_163
    with torch.no_grad():  # no sample size: any tile size, no resampling around the UNet
        assert model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    church = load_config("workflow/config/demo.yaml")  # demo: the church layout at demo size
    assert variants(church)["table3"]["scratch"] == {}
