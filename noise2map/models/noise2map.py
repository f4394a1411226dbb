"""Noise2Map (paper §III-D; released code ``noise2map/model.py``).

A diffusers ``UNet2DModel`` in the google/ddpm-church-256 configuration between a 3×3 input
conv (3 or 6 channels → 3) and a 3×3 output conv (3 → classes): 113.7M parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from noise2map.models.noising import TaskNoising

# google/ddpm-church-256's config.json: 113,673,219 parameters (diffusers 0.42).
DDPM_CHURCH_256 = {
    "sample_size": 256,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
    "time_embedding_type": "positional",
}


def build_unet(config: dict | None = None):
    """The denoising UNet; ``config`` overrides fields of the ddpm-church-256 configuration."""
    from diffusers import UNet2DModel

    return UNet2DModel(**{**DDPM_CHURCH_256, **(config or {})})


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
        size = self.unet.config.sample_size
        resample = h.shape[-1] != size or h.shape[-2] != size
        if resample:  # as the released code: the UNet always sees its own sample size
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
