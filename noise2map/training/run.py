"""Run folders: train a model on one (task, data set, seed), evaluate it, pretrain the UNet.

A run folder ``<results>/runs/<task>/<dataset>/<model>/seed<k>/`` holds ``config.yaml`` (the
resolved config of the run), ``checkpoints/{best,last}.ckpt``, ``train_log/metrics.csv``,
``tile_counts.csv`` (per test tile: tp, fp, fn, tn of the positive class) and
``metrics.json`` (their sums and every score). Re-running a killed training resumes from
``last.ckpt``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import torch
import yaml

from noise2map import __version__
from noise2map.config import (DATASET_NAMES, model_weight_names, prepared_dir, pretrain_init_names, task_settings,
                              validate_config)
from noise2map.errors import CheckpointError
from noise2map.io import atomic_path, write_json, write_text
from noise2map.metrics import COUNTS, scores_from_counts

log = logging.getLogger(__name__)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def model_options(config: dict, model_key: str) -> dict:
    """Builder options from the config (only Noise2Map has any)."""
    if not model_key.startswith("noise2map"):
        return {}
    n2m = config["noise2map"]
    options = {"scheduler": n2m["scheduler"], "ss_noise": n2m["ss_noise"]}
    if n2m.get("unet"):
        options["unet"] = n2m["unet"]
    return options


def _loader(dataset, batch_size: int, workers: int, shuffle: bool, seed: int):
    from noise2map.training.seeding import EpochShuffleSampler

    sampler = EpochShuffleSampler(len(dataset), seed) if shuffle else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def _trainer(config: dict, run: Path, max_epochs: int, callbacks=(), **kwargs):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    train = config["training"]
    return L.Trainer(
        default_root_dir=run, max_epochs=max_epochs, max_steps=train.get("max_steps", -1),
        accelerator=train["accelerator"], devices=train["devices"], precision=train["precision"],
        accumulate_grad_batches=train["grad_accumulation"],
        check_val_every_n_epoch=train.get("val_every_n_epochs", 1),
        logger=CSVLogger(run, name="train_log", version=""), callbacks=list(callbacks),
        deterministic="warn", enable_model_summary=False, log_every_n_steps=1, **kwargs)


def write_run_config(config: dict, run: Path, **run_fields) -> dict:
    """The run's resolved config: the preset plus what this run is, version and commit."""
    resolved = {**config, "run": {**run_fields, "noise2map_version": __version__, "git_commit": _git_commit()}}
    write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    return resolved


def train_run(config: dict, task: str, dataset: str, model_key: str, seed: int, run: Path,
              pretrained_unet: Path | None = None) -> dict:
    """Train one model, keep its best-by-validation checkpoint, then evaluate it on test."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from noise2map.data import TileDataset
    from noise2map.training.seeding import EpochSeed
    from noise2map.training.tasks import DiscriminativeTask

    validate_config(config)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    fields = {"task": task, "dataset": dataset, "model": model_key, "seed": seed,
              "pretrained_unet": str(pretrained_unet) if pretrained_unet else None}
    _discard_stale_checkpoints(run, config, fields)
    config = write_run_config(config, run, **fields)
    L.seed_everything(seed, workers=True)
    settings = task_settings(config, dataset, task)
    store = prepared_dir(config, dataset, task)
    val_split = config["training"]["validation_split"].get(dataset, "val")
    workers = config["training"]["num_workers"]
    train_loader = _loader(TileDataset(store, "train"), settings["batch_size"], workers, True, seed)
    val_loader = _loader(TileDataset(store, val_split), settings["batch_size"], workers, False, seed)

    module = DiscriminativeTask(
        model_key, task, config["model_size"], model_options(config, model_key), settings["class_weights"],
        config["training"]["optimizer"], config["training"]["lr"],
        config["noise2map"]["val_timestep"], config["noise2map"]["test_timestep"])
    if pretrained_unet is not None:
        # Noise2Map fine-tunes its pretrained UNet; DDPM-CD freezes its own as a feature extractor.
        loader = getattr(module.model, "load_pretrained_unet", None) or module.model.load_unet
        loader(_load_state(pretrained_unet))
    _load_pretrained_encoder(config, model_key, module.model)

    ckpt_dir = run / "checkpoints"
    # best.ckpt: weights of the best-by-validation epoch (all evaluation needs); last.ckpt:
    # full state for resuming a killed run, dropped once the run has finished.
    best_ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                save_weights_only=True, enable_version_counter=False)
    last_ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, enable_version_counter=False)
    trainer = _trainer(config, run, settings["max_epochs"], [best_ckpt, last_ckpt, EpochSeed(seed)])
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, train_loader, val_loader, ckpt_path=last if last.exists() else None)
    best = Path(best_ckpt.best_model_path) if best_ckpt.best_model_path else ckpt_dir / "best.ckpt"
    metrics = evaluate_run(run, best, config=config)
    last.unlink(missing_ok=True)
    return metrics


def _discard_stale_checkpoints(run: Path, config: dict, fields: dict) -> None:
    """Resume only a run of the same config: a changed config starts from scratch."""
    old_path, ckpts = run / "config.yaml", run / "checkpoints"
    if not ckpts.exists():
        return
    old = yaml.safe_load(old_path.read_text()) if old_path.is_file() else None
    old_fields = {k: v for k, v in (old or {}).get("run", {}).items() if k in fields}
    same = old is not None and old_fields == fields and {k: v for k, v in old.items() if k != "run"} == config
    if not same:
        log.warning("%s holds checkpoints of another config; starting afresh", ckpts)
        shutil.rmtree(ckpts)


def _load_pretrained_encoder(config: dict, model_key: str, model) -> None:
    """The ImageNet/DINO checkpoints the baseline's official setup starts from."""
    from baselines import get_model_spec
    from noise2map.weights import load_into, resolve

    spec = get_model_spec(model_key)
    if config["weights"] == "none" and spec.weights:
        log.warning("%s starts from random initialisation (weights: none)", spec.name)
    for name in model_weight_names(config, model_key):
        path = resolve(name, config["weights_dir"])
        if spec.weights_loader:
            spec.weights_loader(model, path)
        else:
            load_into(getattr(model, spec.weights_into), path)
        log.info("%s: %s loaded from %s", spec.name, spec.weights_into, path)


def _load_state(path: Path) -> dict:
    if not Path(path).is_file():
        raise CheckpointError(f"pretrained UNet {path} does not exist; run the pretraining target first "
                              f"(snakemake ... {path})")
    return torch.load(path, map_location="cpu", weights_only=True)


def evaluate_run(run: Path, checkpoint: Path | None = None, config: dict | None = None) -> dict:
    """Score the run's best checkpoint on the test split: tile_counts.csv + metrics.json."""
    from noise2map.data import TileDataset
    from noise2map.training.tasks import DiscriminativeTask

    run = Path(run)
    if config is None:
        config = yaml.safe_load((run / "config.yaml").read_text())
    fields = config.get("run", {})
    checkpoint = Path(checkpoint or run / "checkpoints" / "best.ckpt")
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint} does not exist: train the run first (noise2map train ...)")
    module = DiscriminativeTask.load_from_checkpoint(checkpoint, map_location="cpu")
    task, dataset = module.hparams.task, fields.get("dataset") or _dataset_from_run(run)
    test_set = TileDataset(prepared_dir(config, dataset, task), "test")
    loader = _loader(test_set, task_settings(config, dataset, task)["batch_size"], 0, False, 0)
    import lightning as L

    trainer = L.Trainer(accelerator=config["training"]["accelerator"], devices=1, logger=False,
                        precision=config["training"]["precision"], enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.test(module, loader, verbose=False)
    rows = torch.cat(module.test_rows).numpy()
    counts = pd.DataFrame(rows, columns=["index", *COUNTS]).sort_values("index")
    if counts["index"].duplicated().any() or len(counts) != len(test_set):
        raise RuntimeError(f"test scored {len(counts)} rows for {len(test_set)} tiles ({run})")
    counts.insert(0, "tile_id", [test_set.tile_ids[i] for i in counts["index"]])
    with atomic_path(run / "tile_counts.csv") as tmp:
        counts.drop(columns="index").to_csv(tmp, index=False)
    return _write_metrics(run, config, module, counts, checkpoint)


def _dataset_from_run(run: Path) -> str:
    return run.parent.parent.name  # runs/<task>/<dataset>/<model>/seed<k>


def _write_metrics(run: Path, config: dict, module, counts: pd.DataFrame, checkpoint: Path) -> dict:
    from baselines import get_model_spec

    fields = config.get("run", {})
    spec = get_model_spec(module.hparams.model_key)
    totals = {c: int(counts[c].sum()) for c in COUNTS}
    metrics = {
        "task": spec.task, "model": spec.name, "model_key": spec.key,
        "dataset": DATASET_NAMES[fields.get("dataset") or _dataset_from_run(run)],
        "seed": fields.get("seed"), "preset": config["preset"], "model_size": config["model_size"],
        "params_m": round(sum(p.numel() for p in module.model.parameters()) / 1e6, 3),
        "paper_params_m": spec.paper_params_m, "num_test_tiles": len(counts),
        **totals, **scores_from_counts(**totals), "checkpoint": str(checkpoint),
    }
    write_json(run / "metrics.json", metrics)
    return metrics


def pretrain_run(config: dict, out_dir: Path, unet_kind: str = "noise2map") -> Path:
    """Pretrain a denoising UNet on the AID sample → ``<out_dir>/<unet_kind>_unet.pt``.

    ``noise2map``: the ddpm-church-size UNet of Noise2Map (DDPM ε-MSE, from ddpm-church-256);
    ``sr3``: DDPM-CD's SR3 UNet with its own objective.
    """
    import lightning as L

    from baselines.noise2map_models import unet_config
    from noise2map.data import TileDataset
    from noise2map.training.seeding import EpochSeed
    from noise2map.training.tasks import DenoisingPretraining, SR3Pretraining

    validate_config(config)
    out_dir = Path(out_dir)
    pre = config["pretrain"]
    L.seed_everything(config["seeds"][0], workers=True)
    loader = _loader(TileDataset(prepared_dir(config, pre["dataset"], "pretrain"), "train"), pre["batch_size"],
                     config["training"]["num_workers"], True, config["seeds"][0])
    if unet_kind == "sr3":
        module = SR3Pretraining(config["model_size"], pre["lr"], pre["weight_decay"], pre["warmup_steps"])
    else:
        from noise2map.weights import resolve

        unet = unet_config(config["model_size"], config["noise2map"].get("unet"))
        init = [resolve(name, config["weights_dir"]) for name in pretrain_init_names(config)]
        module = DenoisingPretraining(unet, pre["scheduler"], pre["lr"], pre["weight_decay"], pre["warmup_steps"],
                                      str(init[0].parent) if init else None)
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    ckpt_dir = out_dir / f"checkpoints_{unet_kind}"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, enable_version_counter=False)
    trainer = L.Trainer(default_root_dir=out_dir, max_epochs=pre["epochs"], max_steps=pre.get("max_steps", -1),
                        accelerator=config["training"]["accelerator"], devices=config["training"]["devices"],
                        precision=pre.get("precision", "32-true"),
                        callbacks=[checkpoint, EpochSeed(config["seeds"][0])],
                        logger=CSVLogger(out_dir, name=f"train_log_{unet_kind}", version=""), deterministic="warn",
                        enable_model_summary=False, log_every_n_steps=1)
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, loader, ckpt_path=last if last.exists() else None)
    target = out_dir / f"{unet_kind}_unet.pt"
    with atomic_path(target) as tmp:
        torch.save(module.unet.state_dict(), tmp)
    unet_cfg = dict(module.unet.config) if hasattr(module.unet, "config") else {"size": config["model_size"]}
    write_json(out_dir / f"{unet_kind}_unet.json", {"unet": unet_cfg, "pretrain": pre, "noise2map_version": __version__})
    return target
