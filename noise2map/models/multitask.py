"""Multi-task Noise2Map (paper §V-D5): one denoising UNet shared by an SS and a CD head.

Each task keeps what a single-task :class:`~noise2map.models.Noise2Map` has around the UNet —
its task noising, its 3×3 input conv (SS: 3 → 3, CD: 6 → 3) and its 3×3 output conv
(3 → classes) — and the UNet in between is one module trained by both tasks' losses.
"""

from __future__ import annotations

import torch
from torch import nn

from noise2map.errors import ConfigError
from noise2map.models.noise2map import Noise2Map, build_unet
from noise2map.models.noising import TaskNoising

TASKS = ("ss", "cd")
_IN_CHANNELS = {"ss": 3, "cd": 6}


class _Head:
    """The single-task layout (input_conv, unet, output_conv) of one task over shared modules,
    so :meth:`Noise2Map.denoise` runs unchanged for it. Not a module: registers nothing."""

    def __init__(self, model: MultiTaskNoise2Map, task: str):
        self.input_conv, self.output_conv = model.input_convs[task], model.output_convs[task]
        self.unet = model.unet


class MultiTaskNoise2Map(nn.Module):
    """Noise2Map with one shared UNet and per-task noising, input and output convs.

    ``forward(task, *images, timesteps=None, noise_keys=None)`` is what
    ``Noise2Map(task)(*images, ...)`` computes with this model's UNet and ``task``'s convs:
    the task noising at ``timesteps`` (default t = T−1 for every sample), then one UNet pass.

    Args:
        num_classes: output classes of each head.
        unet: overrides of the ddpm-church-256 UNet config (the demo preset shrinks it).
        scheduler: ``make_scheduler`` keyword arguments (T, βs, scheduler name), both tasks.
        ss_noise: ``"image"`` (released code) or ``"gaussian"`` (paper text).
    """

    timestep_conditioned = True

    def __init__(self, num_classes: int = 2, unet: dict | None = None, scheduler: dict | None = None,
                 ss_noise: str = "image"):
        super().__init__()
        self.unet = build_unet(unet)
        self.input_convs = nn.ModuleDict({t: nn.Conv2d(_IN_CHANNELS[t], 3, 3, padding=1) for t in TASKS})
        self.output_convs = nn.ModuleDict({t: nn.Conv2d(3, num_classes, 3, padding=1) for t in TASKS})
        self.noising = nn.ModuleDict({t: TaskNoising(t, scheduler, ss_noise) for t in TASKS})

    @property
    def num_train_timesteps(self) -> int:
        return self.noising["cd"].num_train_timesteps

    def _check(self, task: str) -> str:
        if task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
        return task

    def denoise(self, task: str, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes, H, W] of ``task``'s head from its noised input [B, 3|6, H, W]."""
        return Noise2Map.denoise(_Head(self, self._check(task)), x_t, timesteps)

    def forward(self, task: str, *images: torch.Tensor, timesteps: torch.Tensor | None = None,
                noise_keys: torch.Tensor | None = None) -> torch.Tensor:
        self._check(task)
        if timesteps is None:
            timesteps = torch.full((images[0].shape[0],), self.num_train_timesteps - 1,
                                   dtype=torch.long, device=images[0].device)
        x_t = self.noising[task](images, timesteps, noise_keys=noise_keys)
        return self.denoise(task, x_t, timesteps)

    def task_view(self, task: str) -> TaskView:
        """One head as a single-task model: ``view(*images, timesteps=None, noise_keys=None)``."""
        return TaskView(self, self._check(task))

    def load_pretrained_unet(self, state_dict: dict) -> None:
        """Start fine-tuning from a pretrained denoising UNet (the AID pretraining stage)."""
        self.unet.load_state_dict(state_dict)


class TaskView(nn.Module):
    """One task's head of a :class:`MultiTaskNoise2Map`, called like a single-task Noise2Map.

    The shared model is its only child (``view.model``): its parameters are the whole shared
    model's, ``.to()``/``.eval()`` reach the shared model, and its ``state_dict`` keys carry a
    ``model.`` prefix. Made on demand by :meth:`MultiTaskNoise2Map.task_view`, never stored in
    the shared model (which would register its weights twice).
    """

    timestep_conditioned = True

    def __init__(self, model: MultiTaskNoise2Map, task: str):
        super().__init__()
        self.model, self.task = model, task

    @property
    def num_train_timesteps(self) -> int:
        return self.model.num_train_timesteps

    @property
    def noising(self) -> TaskNoising:
        return self.model.noising[self.task]

    def forward(self, *images: torch.Tensor, timesteps: torch.Tensor | None = None,
                noise_keys: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(self.task, *images, timesteps=timesteps, noise_keys=noise_keys)
