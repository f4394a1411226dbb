"""Lightning modules: task logic only (the Trainer owns devices, precision, accumulation)."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F

from noise2map.errors import ConfigError
from noise2map.keyed_random import evaluation_keys, keyed_normal, keyed_randint, sample_keys
from noise2map.evaluation.metrics import tile_counts
from noise2map.training.schedule import keeps_batch

VAL_LOSSES = ("split_mean", "batch_mean")


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This rank's share of a mean over the global batch: DDP averages the ranks' gradients,
    so ``total · world / Σ_ranks count`` makes that average the one-process gradient, also
    when the ranks' slices differ in size or class weight."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        count = count.detach().clone()
        torch.distributed.all_reduce(count)
        return total * torch.distributed.get_world_size() / count.clamp(min=1e-12)
    return total / count.clamp(min=1e-12)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def task_inputs(batch: dict, task: str) -> tuple[torch.Tensor, ...]:
    """(image,) for SS, (pre, post) for CD — each float [B, 3, H, W] in [-1, 1]."""
    return (batch["image"],) if task == "ss" else (batch["pre"], batch["post"])


class _DeviceScaling:
    """Tile stores hand over uint8 tiles; they become model inputs on the device."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        from noise2map.data.store import to_model_input

        batch = dict(batch)
        for key in ("image", "pre", "post"):
            if key in batch:
                batch[key] = to_model_input(batch[key], self.dtype)
        if "mask" in batch:
            batch["mask"] = batch["mask"].long()
        return batch


class DiscriminativeTask(_DeviceScaling, L.LightningModule):
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
        accumulation, accumulate_every: recorded with the checkpoint; the loop applies them
            (:mod:`noise2map.training.schedule`: ``released`` trains on every
            ``accumulate_every``-th batch alone, ``sum`` accumulates).
        val_loss: ``split_mean`` (Σ weighted pixel losses / Σ weights over the split) or
            ``batch_mean`` (the released mean of each batch's weighted mean).
    """

    def __init__(self, model_key: str, task: str, model_size: str = "paper", model_options: dict | None = None,
                 class_weights=(1.0, 1.0), optimizer: str = "adam", lr: float = 1e-4,
                 val_timestep: int = 500, test_timestep: int = 999, accumulation: str = "sum",
                 accumulate_every: int = 1, val_loss: str = "split_mean"):
        super().__init__()
        from baselines import build_model

        self.save_hyperparameters()
        self.model = build_model(model_key, model_size, num_classes=2, **(model_options or {}))
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        self.test_rows: list[torch.Tensor] = []
        self.sample_seed, self.sample_epoch = 0, 0  # set each epoch by ResumableEpochs
        if val_loss not in VAL_LOSSES:
            raise ConfigError(f"training.val_loss must be one of {VAL_LOSSES}, got {val_loss!r}")
        keeps_batch(0, accumulate_every, accumulation)  # checks the name

    @property
    def timestep_conditioned(self) -> bool:
        return getattr(self.model, "timestep_conditioned", False)

    def draw_keys(self, batch: dict, stage: str) -> torch.Tensor:
        """Keys of the batch's random draws, by sample and not by device or batch (keyed_random):
        (seed, epoch, index) in training, (seed, stage, tile index) at validation and test."""
        index = batch["index"].to(self.device)
        if stage == "train":
            return sample_keys(self.sample_seed, self.sample_epoch, index)
        return evaluation_keys(self.sample_seed, stage, index)

    def forward(self, batch: dict, stage: str = "test") -> torch.Tensor:
        images = task_inputs(batch, self.hparams.task)
        if not self.timestep_conditioned:
            if getattr(self.model, "keyed_noise", False):  # DDPM-CD's feature noise
                return self.model(*images, noise_keys=self.draw_keys(batch, stage))
            return self.model(*images)
        keys = self.draw_keys(batch, stage)
        if stage == "train":
            t = keyed_randint(keys, self.model.num_train_timesteps)
        else:
            fixed = self.hparams.val_timestep if stage == "val" else self.hparams.test_timestep
            t = torch.full((images[0].shape[0],), fixed, dtype=torch.long, device=self.device)
        return self.model(*images, timesteps=t, noise_keys=keys)

    def _nll(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ of the class-weighted pixel losses and Σ of their weights (weighted CE = ratio)."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 → fp32
        weights = self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits, mask, weight=weights, reduction="sum"), weights[mask].sum()

    def training_step(self, batch, batch_idx):
        nll, weight = self._nll(self(batch, "train"), batch["mask"])
        loss = global_mean(nll, weight)
        # The ranks' mean of their shares is the global-batch loss.
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["mask"].shape[0],
                 sync_dist=_distributed())
        return loss

    def on_validation_epoch_start(self):
        # nll, weight, tp, fp, fn, Σ per-batch weighted means, batches
        self._val_sums = torch.zeros(7, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        logits = self(batch, "val")
        nll, weight = self._nll(logits, batch["mask"])
        tp, fp, fn, _ = tile_counts(logits, batch["mask"]).sum(0).double()
        batch_mean = nll.double() / weight.double().clamp(min=1e-12)
        self._val_sums += torch.stack([nll.double(), weight.double(), tp, fp, fn, batch_mean,
                                       torch.ones((), dtype=torch.float64, device=self.device)])

    def on_validation_epoch_end(self):
        sums = self._val_sums.clone()
        if _distributed():
            torch.distributed.all_reduce(sums)
        nll, weight, tp, fp, fn, means, batches = sums.tolist()
        # split_mean: one weighted mean over the whole split (each tile on one rank);
        # batch_mean: the released validate()'s mean over batches of each batch's mean.
        loss = nll / max(weight, 1e-12) if self.hparams.val_loss == "split_mean" else means / max(batches, 1.0)
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/f1_pos", 2 * tp / max(2 * tp + fp + fn, 1.0), sync_dist=False)

    def test_step(self, batch, batch_idx):
        counts = tile_counts(self(batch, "test"), batch["mask"])
        self.test_rows.append(torch.cat([batch["index"].view(-1, 1).long().cpu(), counts.cpu()], 1))

    def on_test_epoch_start(self):
        self.test_rows = []

    def on_test_epoch_end(self):
        """Every rank ends with all ranks' rows (the shards are disjoint, see seeding.shard)."""
        rows = torch.cat(self.test_rows) if self.test_rows else torch.zeros(0, 5, dtype=torch.long)
        if _distributed():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = torch.cat(gathered)
        self.test_rows = [rows]

    def configure_optimizers(self):
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.hparams.optimizer]
        return cls(self.parameters(), lr=self.hparams.lr)


class _Pretraining(_DeviceScaling, L.LightningModule):
    """Self-supervised pretraining of a denoising UNet on the AID sample (paper §IV-B): AdamW,
    linear warm-up then cosine decay. Subclasses define ``self.unet`` and ``denoising_loss``."""

    sample_seed, sample_epoch = 0, 0  # set each epoch by ResumableEpochs

    def training_step(self, batch, batch_idx):
        keys = sample_keys(self.sample_seed, self.sample_epoch, batch["index"].to(self.device))
        loss = self.denoising_loss(batch["image"], keys)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["image"].shape[0],
                 sync_dist=_distributed())
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

            from noise2map.models.noise2map import check_unet_folder

            check_unet_folder(init_from, unet)
            self.unet.load_state_dict(UNet2DModel.from_pretrained(init_from).state_dict())
        sched = make_scheduler(**(scheduler or {}))
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.clone().float(), persistent=False)

    def denoising_loss(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """ε-MSE over the global batch; ``keys`` (one per sample) fix each sample's t and ε."""
        if keys is None:
            keys = torch.randint(0, 2**31 - 1, (x.shape[0],), device=x.device)
        noise = keyed_normal(keys, tuple(x.shape[1:]), x.device, x.dtype)
        t = keyed_randint(keys, self.alphas_cumprod.numel())
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(x.dtype)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        wide = torch.promote_types(x.dtype, torch.float32)
        sq = F.mse_loss(self.unet(x_t, t).sample.to(wide), noise.to(wide), reduction="sum")
        return global_mean(sq, torch.tensor(float(noise.numel()), device=x.device))


class SR3Pretraining(_Pretraining):
    """DDPM-CD's SR3 UNet pretrained with its own objective (continuous noise level, cosine
    schedule with T = 2000, L2) on the same AID sample as Noise2Map."""

    def __init__(self, size: str = "paper", lr: float = 1e-4, weight_decay: float = 0.01, warmup_steps: int = 500):
        super().__init__()
        from baselines.ddpm_cd import build_unet

        self.save_hyperparameters()
        self.unet = build_unet(size)

    def denoising_loss(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """SR3's own draws come from the global generator, reseeded per batch and rank."""
        from baselines.ddpm_cd import pretraining_loss

        return pretraining_loss(self.unet, x)
