"""Noise2Map (paper §III-D; released code ``noise2map/model.py``).

A diffusers ``UNet2DModel`` in the google/ddpm-church-256 configuration between a 3×3 input
conv (3 or 6 channels → 3) and a 3×3 output conv (3 → classes): 113.7M parameters.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from noise2map.models.noising import TaskNoising

# google/ddpm-church-256's own config.json, shipped as published (113,673,219 parameters with
# diffusers 0.42). Read, not re-typed: its "attention_head_dim": null means ONE attention head
# over all channels, where UNet2DModel's default (8) would give 64 heads of 8 at 512 channels:
# the same parameters, another function. The released code loads its backbones with this file.
CHURCH_CONFIG = Path(__file__).with_name("ddpm_church_256.json")


DDPM_CHURCH_256 = {k: v for k, v in json.loads(CHURCH_CONFIG.read_text()).items() if not k.startswith("_")}


def church_config() -> dict:
    """The ddpm-church-256 UNet config as published (``_``-prefixed metadata dropped); a copy."""
    return copy.deepcopy(DDPM_CHURCH_256)


# diffusers' UNet2DModel() defaults (unchanged from 0.27 to 0.42): what the released code builds
# for `pretrained: None`, Table III's scratch row (274,056,163 parameters, not the church layout).
DIFFUSERS_DEFAULT_UNET = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
}


def build_unet(config: dict | None = None):
    """The denoising UNet: ``UNet2DModel.from_config`` of the ddpm-church-256 config, with
    ``config`` overriding some of its fields (the demo preset shrinks it)."""
    from diffusers import UNet2DModel

    return UNet2DModel.from_config({**church_config(), **(config or {})})


def check_unet_folder(folder: str | Path, overrides: dict | None = None) -> None:
    """A diffusers UNet folder to initialise from must have the architecture we build: every
    field its config.json shares with ours equal (a checkpoint built with another attention
    layout would load its weights into a different function)."""
    from noise2map.errors import CheckpointError

    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: the UNet folder has no config (fetch it again)")
    theirs, ours = json.loads(path.read_text()), {**church_config(), **(overrides or {})}
    differ = {k: (theirs[k], ours[k]) for k in ours if k in theirs and theirs[k] != ours[k]}
    if differ:
        detail = ", ".join(f"{k}: {a!r} in the file, {b!r} here" for k, (a, b) in sorted(differ.items()))
        raise CheckpointError(f"{path} is not the UNet this model builds ({detail})")


class _NoTimeEmbedding(nn.Module):
    """Stands in for the UNet's time MLP: no embedding reaches the residual blocks."""

    def forward(self, t_emb):
        return None


def drop_time_embedding(unet) -> list[str]:
    """Remove the timestep embedding from a UNet2DModel in place (Table II, "without diffusion").

    The released code's ``use_timestep=False``: no time MLP and no per-block time projection,
    so the residual blocks add nothing (diffusers skips the addition when temb is None).
    Returns the state-dict keys that were removed, so a pretrained UNet can still be loaded.
    """
    from diffusers.models.resnet import ResnetBlock2D

    before = set(unet.state_dict())
    unet.time_embedding = _NoTimeEmbedding()
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            module.time_emb_proj = None
    return sorted(before - set(unet.state_dict()))


class Noise2Map(nn.Module):
    """Noise2Map for SS (image → logits) or CD (pre, post → logits).

    ``forward(*images, timesteps=None)`` noises the inputs with the task noising and predicts
    logits in one UNet pass. Without ``timesteps`` it uses t = T−1 for every sample, as the
    released evaluate.py does.

    Args:
        task: ``"ss"`` or ``"cd"``.
        num_classes: output classes (2: background / building or no-change / change).
        unet: overrides of the ddpm-church-256 UNet config (the demo preset shrinks it).
        scheduler: ``make_scheduler`` keyword arguments (T, βs, scheduler name).
        ss_noise: ``"image"`` (released code) or ``"gaussian"`` (paper text).
        diffusion: False is Table II's "without diffusion" model: the same UNet without its
            timestep embedding, trained on the clean inputs (no noising, no timesteps).
    """

    def __init__(self, task: str, num_classes: int = 2, unet: dict | None = None,
                 scheduler: dict | None = None, ss_noise: str = "image", diffusion: bool = True):
        super().__init__()
        self.task = task
        self.noising = TaskNoising(task, scheduler, ss_noise)
        in_channels = 6 if task == "cd" else 3
        self.input_conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.unet = build_unet(unet)
        self.output_conv = nn.Conv2d(3, num_classes, 3, padding=1)
        # The training task draws timesteps only for timestep-conditioned models.
        self.timestep_conditioned = diffusion
        self._dropped_keys = [] if diffusion else drop_time_embedding(self.unet)

    @property
    def num_train_timesteps(self) -> int:
        return self.noising.num_train_timesteps

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes, H, W] from the noised input [B, 3|6, H, W]."""
        h = self.input_conv(x_t)
        size = self.unet.config.sample_size  # None (diffusers' default UNet): any size, no resampling
        resample = size is not None and (h.shape[-1] != size or h.shape[-2] != size)
        # Tiles of another size than the UNet's (neither preset has them) are resized bilinearly
        # around it. The release instead learns its resampling (Upsample with align_corners=True
        # plus a 3x3 conv on each side): a difference listed in the fidelity table.
        if resample:
            h = F.interpolate(h, size=(size, size), mode="bilinear", align_corners=False)
        h = self.unet(h, timesteps).sample
        if resample:
            h = F.interpolate(h, size=x_t.shape[-2:], mode="bilinear", align_corners=False)
        return self.output_conv(h)

    def forward(self, *images: torch.Tensor, timesteps: torch.Tensor | None = None,
                noise_keys: torch.Tensor | None = None) -> torch.Tensor:
        if not self.timestep_conditioned:  # clean [pre, post] or image, no t
            x = torch.cat(images, 1)
            t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # unused: no time MLP
            return self.denoise(x, t)
        if timesteps is None:
            timesteps = torch.full((images[0].shape[0],), self.num_train_timesteps - 1,
                                   dtype=torch.long, device=images[0].device)
        return self.denoise(self.noising(images, timesteps, noise_keys=noise_keys), timesteps)

    def load_pretrained_unet(self, state_dict: dict) -> None:
        """Start fine-tuning from a pretrained denoising UNet (the AID pretraining stage).

        Without diffusion the pretrained time-embedding weights have nowhere to go; every
        other key must match."""
        state_dict = {k: v for k, v in state_dict.items() if k not in self._dropped_keys}
        self.unet.load_state_dict(state_dict)
