"""Registry entries for Noise2Map-SS and Noise2Map-CD (the method lives in noise2map.models)."""

from __future__ import annotations

from functools import partial

from baselines import ModelSpec

# The demo's tiny UNet: same block types (plain + attention), 3 levels, 8-group norms.
DEMO_UNET = {
    "sample_size": 32,
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
}


def unet_config(size: str, overrides: dict | None = None) -> dict:
    """UNet overrides of a model size; pretraining and fine-tuning must agree on them."""
    return {**(DEMO_UNET if size == "demo" else {}), **(overrides or {})}


def build(task: str, size: str, num_classes: int = 2, scheduler: dict | None = None,
          ss_noise: str = "image", unet: dict | None = None, diffusion: bool = True):
    from noise2map.models import Noise2Map

    return Noise2Map(task, num_classes, unet=unet_config(size, unet), scheduler=scheduler, ss_noise=ss_noise,
                     diffusion=diffusion)


_NOTE = "diffusers UNet2DModel (google/ddpm-church-256 config, 113.67M) + 3x3 in/out convs"
SPECS = [
    ModelSpec("noise2map-ss", "Noise2Map-SS", "ss", 113.7, partial(build, "ss"), build_note=_NOTE,
              pretrained_unet="noise2map", batchnorm=False),
    ModelSpec("noise2map-cd", "Noise2Map-CD", "cd", 113.7, partial(build, "cd"), build_note=_NOTE,
              pretrained_unet="noise2map", batchnorm=False),
]
