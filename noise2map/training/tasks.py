"""Lightning modules: task logic only (the Trainer owns devices, precision, accumulation)."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from noise2map.metrics import tile_counts


def task_inputs(batch: dict, task: str) -> tuple[torch.Tensor, ...]:
    """(image,) for SS, (pre, post) for CD — each float [B, 3, H, W] in [-1, 1]."""
    return (batch["image"],) if task == "ss" else (batch["pre"], batch["post"])


class DiscriminativeTask(L.LightningModule):
    """Weighted cross-entropy training of any registered model (SS or CD).

    A timestep-conditioned model (Noise2Map) gets t ~ U[0, T) per sample in training,
    ``val_timestep`` in validation (released: T // 2) and ``test_timestep`` at test
    (released: T − 1); a baseline just maps its inputs to logits.

    Args:
        model_key: registry key of the model.
        task: ``"ss"`` or ``"cd"``.
        model_size: ``"paper"`` or ``"demo"``.
        model_options: extra builder keyword arguments (Noise2Map: scheduler, ss_noise).
        class_weights: cross-entropy weights [background, positive].
        optimizer: ``"adam"`` or ``"adamw"``; lr: its learning rate.
        val_timestep, test_timestep: fixed timesteps for timestep-conditioned models.
    """

    def __init__(self, model_key: str, task: str, model_size: str = "paper", model_options: dict | None = None,
                 class_weights=(1.0, 1.0), optimizer: str = "adam", lr: float = 1e-4,
                 val_timestep: int = 500, test_timestep: int = 999):
        super().__init__()
        from baselines import build_model

        self.save_hyperparameters()
        self.model = build_model(model_key, model_size, num_classes=2, **(model_options or {}))
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        self.test_rows: list[torch.Tensor] = []

    @property
    def timestep_conditioned(self) -> bool:
        return getattr(self.model, "timestep_conditioned", False)

    def forward(self, batch: dict, stage: str = "test") -> torch.Tensor:
        images = task_inputs(batch, self.hparams.task)
        if not self.timestep_conditioned:
            return self.model(*images)
        n = images[0].shape[0]
        if stage == "train":
            t = torch.randint(0, self.model.num_train_timesteps, (n,), device=self.device)
        else:
            fixed = self.hparams.val_timestep if stage == "val" else self.hparams.test_timestep
            t = torch.full((n,), fixed, dtype=torch.long, device=self.device)
        return self.model(*images, timesteps=t)

    def _loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), mask, weight=self.class_weights)

    def training_step(self, batch, batch_idx):
        loss = self._loss(self(batch, "train"), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch, "val")
        n = batch["mask"].shape[0]
        self.log("val/loss", self._loss(logits, batch["mask"]), prog_bar=True, batch_size=n, sync_dist=True)
        counts = tile_counts(logits, batch["mask"]).sum(0).float()
        tp, fp, fn, _ = counts
        self.log("val/f1_pos", 2 * tp / (2 * tp + fp + fn).clamp(min=1), batch_size=n, sync_dist=True)

    def test_step(self, batch, batch_idx):
        counts = tile_counts(self(batch, "test"), batch["mask"])
        self.test_rows.append(torch.cat([batch["index"].view(-1, 1).long().cpu(), counts.cpu()], 1))

    def on_test_epoch_start(self):
        self.test_rows = []

    def configure_optimizers(self):
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.hparams.optimizer]
        return cls(self.parameters(), lr=self.hparams.lr)


class _Pretraining(L.LightningModule):
    """Self-supervised pretraining of a denoising UNet on the AID sample (paper §IV-B): AdamW,
    linear warm-up then cosine decay. Subclasses define ``self.unet`` and ``denoising_loss``."""

    def training_step(self, batch, batch_idx):
        loss = self.denoising_loss(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def configure_optimizers(self):
        from diffusers.optimization import get_cosine_schedule_with_warmup

        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        sched = get_cosine_schedule_with_warmup(opt, min(self.hparams.warmup_steps, total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DenoisingPretraining(_Pretraining):
    """DDPM ε-prediction pretraining of Noise2Map's UNet: MSE between ε and UNet(x_t, t).

    Args:
        unet: UNet2DModel config overrides (the size the fine-tuned model will use).
        scheduler: ``make_scheduler`` keyword arguments (DDPM, T = 1000 in the paper).
        lr, weight_decay, warmup_steps: the optimiser and its schedule.
        init_from: a local diffusers UNet2DModel folder to start from, or None.
    """

    def __init__(self, unet: dict | None = None, scheduler: dict | None = None, lr: float = 1e-4,
                 weight_decay: float = 0.01, warmup_steps: int = 500, init_from: str | None = None):
        super().__init__()
        from noise2map.models import build_unet, make_scheduler

        self.save_hyperparameters()
        self.unet = build_unet(unet)
        if init_from:
            from diffusers import UNet2DModel

            self.unet.load_state_dict(UNet2DModel.from_pretrained(init_from).state_dict())
        sched = make_scheduler(**(scheduler or {}))
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.clone().float(), persistent=False)

    def denoising_loss(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x)
        t = torch.randint(0, self.alphas_cumprod.numel(), (x.shape[0],), device=x.device)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x.dtype)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        return F.mse_loss(self.unet(x_t, t).sample.float(), noise.float())


class SR3Pretraining(_Pretraining):
    """DDPM-CD's SR3 UNet pretrained with its own objective (continuous noise level, cosine
    schedule with T = 2000, L2) on the same AID sample as Noise2Map."""

    def __init__(self, size: str = "paper", lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 500):
        super().__init__()
        from baselines.ddpm_cd import build_unet

        self.save_hyperparameters()
        self.unet = build_unet(size)

    def denoising_loss(self, x: torch.Tensor) -> torch.Tensor:
        from baselines.ddpm_cd import pretraining_loss

        return pretraining_loss(self.unet, x)
