"""Noise2Map: the denoising UNet used discriminatively, and its task noising."""

from noise2map.models.noise2map import DDPM_CHURCH_256, Noise2Map, build_unet
from noise2map.models.noising import SCHEDULERS, TaskNoising, make_scheduler

__all__ = ["DDPM_CHURCH_256", "Noise2Map", "build_unet", "SCHEDULERS", "TaskNoising", "make_scheduler"]
