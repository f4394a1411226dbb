"""Multi-task training of Noise2Map (paper §V-D5): L_MT = λ_CD·L_CD + λ_SS·L_SS.

One :class:`~noise2map.models.multitask.MultiTaskNoise2Map` (shared UNet, an SS and a CD
head) is trained on pairs of one SS and one CD tile per sample, so each optimiser step sees
a batch of each task. A run folder (``ablations/multitask/<variant>/seed<k>/``) holds
``config.yaml``, ``checkpoints/{best,last}.ckpt``, ``train_log/metrics.csv`` and, per head,
``ss/`` and ``cd/`` with ``tile_counts.csv`` and ``metrics.json`` in the format of a
single-task run (:func:`noise2map.training.run.evaluate_run`), plus ``lambda_cd``/``lambda_ss``.
Re-running a killed training resumes from ``last.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import torch
from torch.nn import functional as F

from noise2map.keyed_random import evaluation_keys, keyed_randint, sample_keys
from noise2map.evaluation.metrics import COUNTS, scores_from_counts, tile_counts
from noise2map.models.multitask import TASKS, MultiTaskNoise2Map
from noise2map.training.tasks import DiscriminativeTask, _DeviceScaling, _distributed, global_mean, task_inputs

MODEL_KEY, MODEL_NAME = "noise2map-mt", "Noise2Map-MT"


class PairedTasks(torch.utils.data.Dataset):
    """Sample i is ``{"ss": ss[i % n_ss], "cd": cd[i % n_cd], "index": i}``, max(n_ss, n_cd) long.

    An epoch is one pass over the larger data set; the smaller one is cycled (its tiles come
    round ⌊n_max / n_min⌋ or one more times). ``index`` is the pair's own index: the
    GlobalBatchSampler, resume state and keyed draws all work on it as on a single data set.
    """

    def __init__(self, ss, cd):
        if not len(ss) or not len(cd):
            raise ValueError(f"multi-task training needs samples of both tasks (ss: {len(ss)}, cd: {len(cd)})")
        self.ss, self.cd = ss, cd

    def __len__(self) -> int:
        return max(len(self.ss), len(self.cd))

    def __getitem__(self, i: int) -> dict:
        return {"ss": self.ss[i % len(self.ss)], "cd": self.cd[i % len(self.cd)], "index": i}


def task_keys(seed: int, epoch: int, index: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample keys of a pair's draws (timestep, noise): SS from 2i, CD from 2i + 1, so the
    two heads never share a draw."""
    return sample_keys(seed, epoch, 2 * index.long() + TASKS.index(task))


class MultiTaskTask(_DeviceScaling, L.LightningModule):
    """Trains both heads on λ_CD·L_CD + λ_SS·L_SS, each L the class-weighted CE over the global batch.

    Training batches are :class:`PairedTasks` batches; validation takes one dataloader per
    task in :data:`TASKS` order (``dataloader_idx``) and logs ``val/loss`` = λ_CD·val_CD +
    λ_SS·val_SS, each the whole split's weighted mean (what best.ckpt is chosen by). Testing
    scores the head ``eval_task`` (``test_rows`` as :class:`DiscriminativeTask` keeps them).

    Args:
        model_size: ``"paper"`` or ``"demo"``.
        model_options: ``scheduler``, ``ss_noise``, ``unet`` (config overrides of the UNet).
        class_weights: ``{"ss": [bg, pos], "cd": [bg, pos]}``.
        lambda_cd, lambda_ss: the loss weights.
        optimizer, lr, val_timestep, test_timestep: as :class:`DiscriminativeTask`.
    """

    # Testing one head is DiscriminativeTask's testing with ``forward`` scoring ``eval_task``.
    test_step = DiscriminativeTask.test_step
    on_test_epoch_start = DiscriminativeTask.on_test_epoch_start
    on_test_epoch_end = DiscriminativeTask.on_test_epoch_end
    configure_optimizers = DiscriminativeTask.configure_optimizers

    def __init__(self, model_size: str = "paper", model_options: dict | None = None, class_weights: dict | None = None,
                 lambda_cd: float = 1.0, lambda_ss: float = 1.0, optimizer: str = "adam", lr: float = 1e-4,
                 val_timestep: int = 500, test_timestep: int = 999):
        super().__init__()
        from baselines.noise2map_models import unet_config

        self.save_hyperparameters()
        options = dict(model_options or {})
        self.model = MultiTaskNoise2Map(2, unet=unet_config(model_size, options.get("unet")),
                                        scheduler=options.get("scheduler"), ss_noise=options.get("ss_noise", "image"))
        weights = class_weights or {t: (1.0, 1.0) for t in TASKS}
        for task in TASKS:
            self.register_buffer(f"class_weights_{task}", torch.tensor(weights[task], dtype=torch.float32),
                                 persistent=False)
        self.lambdas = {"cd": float(lambda_cd), "ss": float(lambda_ss)}
        self.eval_task = "ss"  # the head test_step and forward score
        self.test_rows: list[torch.Tensor] = []
        self.sample_seed, self.sample_epoch = 0, 0  # set before each batch by ResumableEpochs

    def on_after_batch_transfer(self, batch, dataloader_idx):
        scale = super().on_after_batch_transfer
        if "ss" in batch:  # a PairedTasks batch
            return {**batch, **{t: scale(batch[t], dataloader_idx) for t in TASKS}}
        return scale(batch, dataloader_idx)

    def logits(self, task: str, batch: dict, stage: str, index: torch.Tensor | None = None) -> torch.Tensor:
        """``task``'s logits of ``batch`` (that task's tiles): keyed t ~ U[0, T) and noise per
        pair ``index`` in training, ``val_timestep`` / ``test_timestep`` otherwise."""
        images = task_inputs(batch, task)
        if stage == "train":
            keys = task_keys(self.sample_seed, self.sample_epoch, index.to(self.device), task)
            t = keyed_randint(keys, self.model.num_train_timesteps)
            return self.model(task, *images, timesteps=t, noise_keys=keys)
        fixed = self.hparams.val_timestep if stage == "val" else self.hparams.test_timestep
        t = torch.full((images[0].shape[0],), fixed, dtype=torch.long, device=self.device)
        # the single-task run's keys for the same tile: a head is scored on the same draws
        keys = evaluation_keys(self.sample_seed, stage, batch["index"].to(self.device))
        return self.model(task, *images, timesteps=t, noise_keys=keys)

    def forward(self, batch: dict, stage: str = "test") -> torch.Tensor:
        return self.logits(self.eval_task, batch, stage)

    def _nll(self, task: str, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ of the class-weighted pixel losses and Σ of their weights (weighted CE = ratio)."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        weights = getattr(self, f"class_weights_{task}").to(logits.dtype)
        return F.cross_entropy(logits, mask, weight=weights, reduction="sum"), weights[mask].sum()

    def task_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each task's weighted CE over the global batch (this rank's share under DDP)."""
        losses = {}
        for task in TASKS:
            nll, weight = self._nll(task, self.logits(task, batch[task], "train", batch["index"]), batch[task]["mask"])
            losses[task] = global_mean(nll, weight)
        return losses

    def training_step(self, batch, batch_idx):
        losses = self.task_losses(batch)
        loss = sum(self.lambdas[t] * losses[t] for t in TASKS)
        n = batch["index"].shape[0]
        for name, value in (("train/loss", loss), *((f"train/loss_{t}", losses[t]) for t in TASKS)):
            self.log(name, value.detach(), prog_bar=name == "train/loss", batch_size=n, sync_dist=_distributed())
        return loss

    def on_validation_epoch_start(self):
        # per task (TASKS order): nll, weight, tp, fp, fn
        self._val_sums = torch.zeros(len(TASKS), 5, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        task = TASKS[dataloader_idx]
        logits = self.logits(task, batch, "val")
        nll, weight = self._nll(task, logits, batch["mask"])
        tp, fp, fn, _ = tile_counts(logits, batch["mask"]).sum(0).double()
        self._val_sums[dataloader_idx] += torch.stack([nll.double(), weight.double(), tp, fp, fn])

    def on_validation_epoch_end(self):
        sums = self._val_sums.clone()
        if _distributed():
            torch.distributed.all_reduce(sums)
        total = 0.0
        for task, (nll, weight, tp, fp, fn) in zip(TASKS, sums.tolist()):
            loss = nll / max(weight, 1e-12)
            total += self.lambdas[task] * loss
            self.log(f"val/loss_{task}", loss, sync_dist=False)
            self.log(f"val/f1_pos_{task}", 2 * tp / max(2 * tp + fp + fn, 1.0), sync_dist=False)
        self.log("val/loss", total, prog_bar=True, sync_dist=False)


def _fingerprint(config: dict, dataset: str, seed: int, lambda_cd: float, lambda_ss: float, single) -> str:
    """The multi-task run's identity: the two single-task runs' fingerprints it trains at once
    (their settings, stores and seed) and its loss weights."""
    import hashlib

    parts = [single(config, t, dataset, f"noise2map-{t}", seed) for t in ("ss", "cd")]
    return hashlib.sha256(f"mt:{parts[0]}:{parts[1]}:{lambda_cd!r}:{lambda_ss!r}".encode()).hexdigest()[:16]


def multitask_run(config: dict, lambdas: tuple[float, float], seed: int, run_dir: Path,
                  pretrained_unet: Path | None = None, dataset: str = "whu", threads: int | None = None) -> dict | None:
    """Train the multi-task model with (λ_CD, λ_SS) = ``lambdas``, keep its best-by-validation
    checkpoint, then score each head on its own test split: ``run_dir/{ss,cd}/metrics.json``.

    ``max_epochs`` is the larger of the two tasks' settings; the batch is the CD task's batch
    size in pairs (B SS tiles + B CD tiles per step; the paper preset's WHU sizes agree).
    ``train_fraction`` and ``selection`` apply per task as in a single-task run. Returns
    ``{task: metrics}`` (None on ranks other than 0).
    """
    from noise2map.config import prepared_dir, task_settings, validate_config
    from noise2map.errors import ConfigError
    from noise2map.training.execution import pin_execution
    from noise2map.training.run import (
        _eval_loader,
        _fit_trainer,
        _load_state,
        _rank,
        _train_loader,
        execution_fields,
        model_options,
        run_fingerprint,
        selection_checkpoints,
        selection_splits,
        write_run_config,
    )
    from noise2map.runspec import unet_fields
    from noise2map.training.resume import set_aside_stale_checkpoints
    from noise2map.training.schedule import accumulation_plan
    from noise2map.training.seeding import ResumableEpochs

    validate_config(config)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    lambda_cd, lambda_ss = map(float, lambdas)
    fields = {"task": "mt", "dataset": dataset, "model": MODEL_KEY, "seed": seed, "lambda_cd": lambda_cd,
              "lambda_ss": lambda_ss, **unet_fields(pretrained_unet),
              "fingerprint": _fingerprint(config, dataset, seed, lambda_cd, lambda_ss, run_fingerprint)}
    if _rank() == 0:
        set_aside_stale_checkpoints(run, fields)
    ckpt_dir = run / "checkpoints"
    execution = pin_execution(ckpt_dir, config, threads, resuming=(ckpt_dir / "last.ckpt").exists(),
                              write=_rank() == 0)
    config = write_run_config(config, run, write=_rank() == 0, **fields, **execution_fields(execution))
    L.seed_everything(seed, workers=True)
    settings = {t: task_settings(config, dataset, t) for t in TASKS}
    splits = {t: selection_splits(config, prepared_dir(config, dataset, t), dataset, seed,
                                  run / t if _rank() == 0 else None) for t in TASKS}
    options = model_options(config, "noise2map")
    if not options.pop("diffusion", True):
        raise ConfigError("the multi-task model is Noise2Map with diffusion (noise2map.diffusion: true)")
    train = config["training"]
    module = MultiTaskTask(config["model_size"], options, {t: settings[t]["class_weights"] for t in TASKS},
                           lambda_cd, lambda_ss, train["optimizer"], train["lr"],
                           config["noise2map"]["val_timestep"], config["noise2map"]["test_timestep"])
    module.sample_seed = seed  # validation draws keyed by (seed, stage, tile) from epoch 0 on
    if pretrained_unet is not None:
        module.model.load_pretrained_unet(_load_state(pretrained_unet))

    workers, batch = config["training"]["num_workers"], settings["cd"]["batch_size"]
    last = ckpt_dir / "last.ckpt"
    best_ckpt, last_ckpt = selection_checkpoints(ckpt_dir, config["training"].get("checkpoint_every_n_epochs", 1))
    resumable = ResumableEpochs(seed, None, last, config["training"].get("checkpoint_every_n_steps", 0))
    trainer = _fit_trainer(config, run, max(s["max_epochs"] for s in settings.values()),
                           [best_ckpt, last_ckpt, resumable],
                           val_every=min(s["val_every_n_epochs"] for s in settings.values()))
    train_loader = _train_loader(PairedTasks(*(splits[t][0] for t in TASKS)), batch, workers, seed, trainer,
                                 accumulation_plan(train)[1])
    resumable.sampler = train_loader.batch_sampler
    val_loaders = [_eval_loader(splits[t][1], settings[t]["batch_size"], workers, trainer) for t in TASKS]
    trainer.fit(module, train_loader, val_loaders, ckpt_path=last if last.exists() else None)
    best = Path(best_ckpt.best_model_path) if best_ckpt.best_model_path else ckpt_dir / "best.ckpt"
    metrics = evaluate_heads(run, best, config)
    if trainer.global_rank == 0:
        last.unlink(missing_ok=True)
    return metrics


def evaluate_heads(run: Path, checkpoint: Path, config: dict) -> dict | None:
    """Score each head of a multi-task checkpoint on its task's test split →
    ``run/<task>/{tile_counts.csv,metrics.json}``; ``{task: metrics}`` on rank 0, else None."""
    from noise2map.config import evaluation_split, prepared_dir, task_settings
    from noise2map.data import TileDataset
    from noise2map.io import atomic_path
    from noise2map.training.run import _eval_loader, _trainer, load_checkpoint

    fields = config["run"]
    module = load_checkpoint(MultiTaskTask, checkpoint)
    module.sample_seed = int(fields.get("seed") or 0)  # test draws keyed by (seed, "test", tile)
    trainer = _trainer(config, run, logger=False, enable_checkpointing=False)
    out = {}
    for task in TASKS:
        test_set = TileDataset(prepared_dir(config, fields["dataset"], task),
                               evaluation_split(config, fields["dataset"]), uint8=True)
        module.eval_task = task
        loader = _eval_loader(test_set, task_settings(config, fields["dataset"], task)["batch_size"], 0, trainer)
        trainer.test(module, loader, verbose=False)
        if trainer.global_rank != 0:
            continue
        counts = pd.DataFrame(torch.cat(module.test_rows).numpy(), columns=["index", *COUNTS]).sort_values("index")
        if counts["index"].duplicated().any() or len(counts) != len(test_set):
            raise RuntimeError(f"test scored {len(counts)} rows for {len(test_set)} {task} tiles ({run})")
        counts.insert(0, "tile_id", [test_set.tile_ids[i] for i in counts["index"]])
        with atomic_path(run / task / "tile_counts.csv") as tmp:
            counts.drop(columns="index").to_csv(tmp, index=False)
        out[task] = _write_head_metrics(run / task, config, task, module, counts, checkpoint)
    return out if trainer.global_rank == 0 else None


def _write_head_metrics(out: Path, config: dict, task: str, module: MultiTaskTask, counts: pd.DataFrame,
                        checkpoint: Path) -> dict:
    """metrics.json of one head: the keys of a single-task run's, and the λs."""
    from noise2map.config import DATASET_NAMES, evaluation_split
    from noise2map.io import write_json
    from noise2map.training.run import selected_on

    fields = config["run"]
    totals = {c: int(counts[c].sum()) for c in COUNTS}
    metrics = {
        "task": task, "model": MODEL_NAME, "model_key": MODEL_KEY, "dataset": DATASET_NAMES[fields["dataset"]],
        "seed": fields["seed"], "preset": config["preset"], "model_size": config["model_size"],
        "params_m": round(sum(p.numel() for p in module.model.parameters()) / 1e6, 3),  # the whole shared model
        "paper_params_m": None, "num_test_tiles": len(counts),
        "selection": config["selection"], "selected_on": selected_on(config, task, fields),
        "evaluated_on": evaluation_split(config, fields["dataset"]),
        **totals, **scores_from_counts(**totals), "checkpoint": str(checkpoint),
        "lambda_cd": module.hparams.lambda_cd, "lambda_ss": module.hparams.lambda_ss,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
