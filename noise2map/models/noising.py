"""Task noising of Noise2Map (paper §III-B/C), with ᾱ_t from a diffusers scheduler.

CD: ``X(t) = √ᾱ_t·[x1, x2] + √(1−ᾱ_t)·[x2, x1]`` — the swapped pair is the structured
noise, so at t = T−1 (ᾱ ≈ 4e-5) the input is ≈ [x2, x1] ("X(T) = [x_t2, x_t1]").
SS: the released train.py uses the image itself as the noise (``x(t) ≈ x`` for every t);
the paper text writes Gaussian noise n ~ N(0, I) — both are offered (``ss_noise``).
"""

from __future__ import annotations

import torch

from noise2map.errors import ConfigError, UnknownNameError

# The schedulers of Table V. Each defines the βs, hence the ᾱ_t used for training.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "heun": "HeunDiscreteScheduler",
}
SS_NOISES = ("image", "gaussian")
SIGMA_SCHEDULERS = {"HeunDiscreteScheduler"}


def make_scheduler(name: str = "ddim", num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                   beta_start: float = 1e-4, beta_end: float = 0.02):
    """Build a diffusers scheduler with every field the paper relies on stated explicitly."""
    import diffusers

    if name not in SCHEDULERS:
        raise UnknownNameError("scheduler", name, SCHEDULERS)
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
               beta_start=beta_start, beta_end=beta_end)


class TaskNoising(torch.nn.Module):
    """Turns clean task inputs into the noised model input ``x(t)`` for timesteps ``t``.

    Args:
        task: ``"ss"`` or ``"cd"``.
        scheduler: a diffusers scheduler config dict (``make_scheduler`` keyword arguments).
        ss_noise: ``"image"`` (released code) or ``"gaussian"`` (paper text), SS only.
    """

    def __init__(self, task: str, scheduler: dict | None = None, ss_noise: str = "image"):
        super().__init__()
        if task not in ("ss", "cd"):
            raise ConfigError(f"task must be 'ss' or 'cd', got {task!r}")
        if ss_noise not in SS_NOISES:
            raise ConfigError(f"ss_noise must be one of {SS_NOISES}, got {ss_noise!r}")
        self.task, self.ss_noise = task, ss_noise
        self.scheduler_config = dict(scheduler or {})
        sched = make_scheduler(**self.scheduler_config)
        # A buffer, so ᾱ follows the model to its device and into checkpoints.
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.clone().float(), persistent=False)
        # All four schedulers of Table V define the same ᾱ_t for the same βs; what differs is
        # add_noise, which the released code calls: the Karras-style schedulers (Heun) add
        # σ_t-scaled noise to the unscaled input instead of the variance-preserving mix.
        self.sigma_noising = SCHEDULERS[self.scheduler_config.get("name", "ddim")] in SIGMA_SCHEDULERS

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    def clean_and_noise(self, images: tuple[torch.Tensor, ...], generator=None, noise_keys=None):
        """Return (x, n): the clean input and the task's noise, both [B, C, H, W].

        ``noise_keys`` (int64 [B]) draws each sample's Gaussian noise from its own key, so the
        noise does not depend on which device or batch the sample lands in.
        """
        if self.task == "cd":
            pre, post = images
            return torch.cat([pre, post], 1), torch.cat([post, pre], 1)
        (image,) = images
        if self.ss_noise == "image":
            return image, image
        if noise_keys is not None:
            from noise2map.keyed_random import keyed_normal

            return image, keyed_normal(noise_keys, tuple(image.shape[1:]), image.device, image.dtype)
        noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        return image, noise

    def forward(self, images: tuple[torch.Tensor, ...], timesteps: torch.Tensor, generator=None,
                noise_keys=None) -> torch.Tensor:
        """x(t) = √ᾱ_t·x + √(1−ᾱ_t)·n, per sample.

        Args:
            images: (image,) for SS or (pre, post) for CD, each float [B, 3, H, W] in [-1, 1].
            timesteps: int64 [B] in [0, T).
        """
        x, noise = self.clean_and_noise(images, generator, noise_keys)
        abar = self.alphas_cumprod.to(x.device)[timesteps].to(x.dtype).view(-1, 1, 1, 1)
        if self.sigma_noising:  # x + σ_t·n, σ_t = √((1−ᾱ_t)/ᾱ_t): Heun's add_noise
            return x + ((1 - abar) / abar).sqrt() * noise
        return abar.sqrt() * x + (1 - abar).sqrt() * noise
