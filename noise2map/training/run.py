"""Run folders: train a model on one (task, data set, seed), evaluate it, pretrain the UNet.

A run folder ``<results>/runs/<task>/<dataset>/<model>/seed<k>/`` holds ``config.yaml`` (the
resolved config of the run), ``checkpoints/{best,last}.ckpt``, ``train_log/metrics.csv``,
``tile_counts.csv`` (per test tile: tp, fp, fn, tn of the positive class) and
``metrics.json`` (their sums and every score). Re-running a killed training resumes from
``last.ckpt``.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
from pathlib import Path

import pandas as pd
import torch
import yaml

from noise2map import __version__
from noise2map.config import (
    DATASET_NAMES,
    evaluation_split,
    model_weight_names,
    prepared_dir,
    pretrain_init_names,
    task_settings,
    validate_config,
)
from noise2map.errors import CheckpointError, ConfigError
from noise2map.io import atomic_path, write_json, write_text
from noise2map.evaluation.metrics import COUNTS, scores_from_counts
from noise2map.training.execution import apply_recorded_threads, pin_execution
from noise2map.runspec import run_spec
from noise2map.training.resume import set_aside_stale_checkpoints
from noise2map.training.schedule import accumulation_plan, has_batchnorm, model_last_batch

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
    if not n2m.get("diffusion", True):
        options["diffusion"] = False
    return options


def num_devices(train: dict) -> int:
    """Processes a job runs: ``devices`` as given, or every visible GPU for ``auto``."""
    devices = train["devices"]
    if devices == "auto":
        gpu = train["accelerator"] in ("gpu", "auto") and torch.cuda.is_available()
        return torch.cuda.device_count() if gpu else 1
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"training.devices must be a positive integer or 'auto', got {devices!r}")
    return devices


def _cluster_environment():
    """srun with one task per device: SLURM starts the processes; otherwise (a SLURM job with
    one task and N GPUs included) the Trainer starts its own N processes."""
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and SLURMEnvironment.detect():
        return SLURMEnvironment(auto_requeue=False)
    return LightningEnvironment()


def _trainer(config: dict, run: Path, max_epochs: int = 1, callbacks=(), devices: int | None = None,
             find_unused: bool = False, precision: str | None = None, **kwargs):
    """A Trainer on ``devices`` processes (DDP: NCCL on GPUs, gloo on CPUs) with atomic checkpoints."""
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from noise2map.training.checkpoints import AtomicCheckpointIO

    train = config["training"]
    n = devices or num_devices(train)
    strategy = DDPStrategy(find_unused_parameters=find_unused) if n > 1 else "auto"
    on_gpu = train["accelerator"] == "gpu" or (train["accelerator"] == "auto" and torch.cuda.is_available())
    return L.Trainer(
        default_root_dir=run, max_epochs=max_epochs, accelerator=train["accelerator"], devices=n,
        # BatchNorm statistics over the global batch, as one device would compute them
        # (torch's SyncBatchNorm is GPU-only: CPU processes keep per-process statistics).
        strategy=strategy, sync_batchnorm=n > 1 and on_gpu, use_distributed_sampler=False,
        precision=precision or train["precision"], plugins=[_cluster_environment(), AtomicCheckpointIO()],
        deterministic="warn", enable_model_summary=False, callbacks=list(callbacks), **kwargs)


# training.logger → (Lightning logger class, the package it needs, its folder in the run)
EXPERIMENT_LOGGERS = {"tensorboard": ("TensorBoardLogger", "tensorboard or tensorboardX", "tb_log"),
                      "wandb": ("WandbLogger", "wandb", "wandb"), "mlflow": ("MLFlowLogger", "mlflow", "mlruns")}


def experiment_loggers(config: dict, run: Path, name: str) -> list:
    """The CSV log the suite reads (``<run>/<name>/metrics.csv``), and the experiment log
    ``training.logger`` asks for beside it, offline and inside the run folder."""
    from lightning.pytorch import loggers

    csv = loggers.CSVLogger(run, name=name, version="")
    kind = config["training"].get("logger", "csv")
    if kind == "csv":
        return [csv]
    cls, package, folder = EXPERIMENT_LOGGERS[kind]
    options = {"tensorboard": {"save_dir": run, "name": folder, "version": name},
               "wandb": {"save_dir": run, "name": f"{run.name}-{name}", "offline": True, "project": "noise2map"},
               "mlflow": {"experiment_name": "noise2map", "run_name": f"{run.name}-{name}",
                          "tracking_uri": (run / folder).resolve().as_uri()}}[kind]
    try:
        return [csv, getattr(loggers, cls)(**options)]
    except ModuleNotFoundError as exc:
        raise ConfigError(f"training.logger: {kind} needs the {package} package (pip install "
                          f"{package.split()[0]}), or set training.logger: csv ({exc})") from exc


def _fit_trainer(config: dict, run: Path, max_epochs: int, callbacks=(), log_name="train_log",
                 val_every: int | None = None, **kwargs):
    """A fitting Trainer: validation at the epochs ``training.val_schedule`` names, every
    ``val_every`` epochs; accumulation as :func:`~noise2map.training.schedule.accumulation_plan`."""
    from noise2map.training.schedule import ValidationSchedule

    train = config["training"]
    schedule = ValidationSchedule(val_every or train.get("val_every_n_epochs", 1), train.get("val_schedule", "released"))
    return _trainer(config, run, max_epochs, [*callbacks, schedule], max_steps=train.get("max_steps", -1),
                    accumulate_grad_batches=accumulation_plan(train)[0],
                    logger=experiment_loggers(config, run, log_name), log_every_n_steps=1, **kwargs)


def _train_loader(dataset, global_batch: int, workers: int, seed: int, trainer, keep_every: int = 1,
                  last_batch: str = "fold"):
    """The rank's slices of the global batches (the same steps on any number of devices);
    ``keep_every`` k > 1: only every k-th batch of an epoch (the released accumulation);
    ``last_batch``: ``fold`` or ``keep`` (:func:`~noise2map.training.schedule.last_batch_rule`)."""
    from noise2map.training.seeding import GlobalBatchSampler, ResumableLoader

    if global_batch % trainer.world_size:
        raise ConfigError(f"batch size {global_batch} is not divisible by {trainer.world_size} devices: "
                          "the batch size in the config is the global batch, split evenly over devices")
    sampler = GlobalBatchSampler(len(dataset), global_batch, seed, True, trainer.global_rank, trainer.world_size,
                                 keep_every, last_batch)
    return ResumableLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
                           pin_memory=torch.cuda.is_available())


def _eval_loader(dataset, batch_size: int, workers: int, trainer):
    """Each tile on exactly one rank: no padding, no dropped tail."""
    from noise2map.training.seeding import shard

    if len(dataset) < trainer.world_size:
        raise ConfigError(f"{dataset!r} has {len(dataset)} tiles, fewer than the "
                          f"{trainer.world_size} devices: evaluate on fewer devices")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       sampler=shard(len(dataset), trainer.global_rank, trainer.world_size),
                                       num_workers=workers, pin_memory=torch.cuda.is_available())


def write_run_config(config: dict, run: Path, write: bool = True, **run_fields) -> dict:
    """The run's resolved config: the preset plus what this run is, version and commit."""
    resolved = {**config, "run": {**run_fields, "noise2map_version": __version__, "git_commit": _git_commit()}}
    if write:
        write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    return resolved


def execution_fields(execution: dict) -> dict:
    """The execution record as fields of the run's config.yaml (``run:`` block), with the
    library versions and the device's CUDA / cuDNN that produced the run."""
    return {"num_threads": execution["num_threads"], "device": execution["device"], "versions": library_versions()}


LIBRARIES = ("torch", "diffusers", "segmentation-models-pytorch", "timm", "lightning", "torchmetrics")


def library_versions() -> dict:
    """python, the libraries a result depends on, and CUDA / cuDNN where torch has them."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def run_fingerprint(config: dict, task: str, dataset: str, model_key: str, seed: int,
                    variant: str | None = None) -> str:
    """A hash of what determines a run's result: its settings as the workflow sees them
    (``run_settings``), the tile store it reads, the seed and its variant. Table I refuses a
    run whose fingerprint is not what the preset gives now (a stale run).

    A run that trains on the released DataLoader's last batch as it is (``last_batch: keep`` in
    its settings, :func:`~noise2map.config.last_batch`: released accumulation, no BatchNorm)
    has that in its payload; every other run's payload, and so its fingerprint, is the one it
    had before the rule existed (a fold run is trained as it was)."""
    return run_spec(config, task, dataset, model_key, seed, variant).fingerprint


LAST_BATCH_NOTES = {
    "keep": "keep (the released DataLoader's last batch as it is, one sample or more: released accumulation, "
            "a model without BatchNorm)",
    "fold": "fold (a last batch of one sample joins the batch before it: a BatchNorm model, or accumulation: sum; "
            "the released loop would train on it alone)"}


def _rank() -> int:
    """This process's global rank (0 outside DDP), known before the Trainer exists."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return _get_rank() or 0


def train_run(config: dict, task: str, dataset: str, model_key: str, seed: int, run: Path,
              pretrained_unet: Path | None = None, threads: int | None = None, variant: str | None = None) -> dict:
    """Train one model, keep its best-by-validation checkpoint, then evaluate it on test.

    On N devices every process runs this function (the Trainer re-launches the command);
    only rank 0 writes the run folder's files. ``threads``: CPU threads of a new run (default
    ``training.num_threads``); a resumed run keeps the count it started with
    (:mod:`noise2map.training.execution`). ``variant``: a Table I row beside the model's own,
    out of the paper's rank, e.g. "released aid-10k backbone" (:func:`noise2map.runspec.variant_fields`).
    """
    import lightning as L

    from noise2map.training.seeding import ResumableEpochs
    from noise2map.training.tasks import DiscriminativeTask

    from noise2map.training.phases import JOB

    JOB.new_run()
    validate_config(config)
    check_run_inputs(config, task, dataset, model_key)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    fields = run_spec(config, task, dataset, model_key, seed, variant, pretrained_unet, run).fields()
    if _rank() == 0:
        set_aside_stale_checkpoints(run, fields)
    ckpt_dir = run / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    execution = pin_execution(ckpt_dir, config, threads, resuming=last.exists(), write=_rank() == 0)
    # last_batch is recorded, not compared on resume: the fingerprint already carries a change
    config = write_run_config(config, run, write=_rank() == 0, **fields, **execution_fields(execution),
                              last_batch=model_last_batch(config, model_key))
    L.seed_everything(seed, workers=True)
    settings = task_settings(config, dataset, task)
    store = prepared_dir(config, dataset, task)
    workers = config["training"]["num_workers"]
    JOB.mark("config")
    train_set, val_set = selection_splits(config, store, dataset, seed, run if _rank() == 0 else None)
    JOB.mark("data")

    train = config["training"]
    last_batch = model_last_batch(config, model_key)
    module = DiscriminativeTask(
        model_key, task, config["model_size"], model_options(config, model_key), settings["class_weights"],
        train["optimizer"], train["lr"], config["noise2map"]["val_timestep"], config["noise2map"]["test_timestep"],
        accumulation=train.get("accumulation", "sum"), accumulate_every=train["grad_accumulation"],
        val_loss=train.get("val_loss", "split_mean"))
    module.sample_seed = seed  # validation draws are keyed by (seed, stage, tile) from epoch 0 on
    if pretrained_unet is not None:
        # Noise2Map fine-tunes its pretrained UNet; DDPM-CD freezes its own as a feature extractor.
        loader = getattr(module.model, "load_pretrained_unet", None) or module.model.load_unet
        loader(_load_state(pretrained_unet))
    _load_pretrained_encoder(config, model_key, module.model)
    if last_batch == "keep" and has_batchnorm(module.model):  # a batch of one would break its BatchNorm
        raise ConfigError(f"{model_key}: its ModelSpec says batchnorm=False, but the built model holds BatchNorm "
                          "layers; declare batchnorm=True in its spec (a last batch of one then joins the one before)")
    log.info("last batch of an epoch: %s", LAST_BATCH_NOTES[last_batch])
    JOB.mark("model")

    # best.ckpt: weights of the best-by-validation epoch (all evaluation needs); last.ckpt:
    # full state for resuming a killed run (every N steps and every M-th epoch end), dropped once
    # the run has finished.
    best_ckpt, last_ckpt = selection_checkpoints(ckpt_dir, config["training"].get("checkpoint_every_n_epochs", 1))
    resumable = ResumableEpochs(seed, None, last, config["training"].get("checkpoint_every_n_steps", 0))
    trainer = _fit_trainer(config, run, settings["max_epochs"], [best_ckpt, last_ckpt, resumable],
                           val_every=settings["val_every_n_epochs"], find_unused=not model_key.startswith("noise2map"))
    train_loader = _train_loader(train_set, settings["batch_size"], workers, seed, trainer, accumulation_plan(train)[1],
                                 last_batch)
    resumable.sampler = train_loader.batch_sampler
    val_loader = _eval_loader(val_set, settings["batch_size"], workers, trainer)
    JOB.mark("trainer")
    trainer.fit(module, train_loader, val_loader, ckpt_path=last if last.exists() else None)
    JOB.mark("fit")
    best = Path(best_ckpt.best_model_path) if best_ckpt.best_model_path else ckpt_dir / "best.ckpt"
    metrics = evaluate_run(run, best, config=config,
                           trainer=_trainer(config, run, logger=False, enable_checkpointing=False))
    JOB.mark("test")
    if trainer.global_rank == 0:
        last.unlink(missing_ok=True)
        write_json(run / "timing.json", {"seconds": JOB.seconds(), "model": model_key, "task": task,
                                         "dataset": dataset})
    return metrics


def selection_checkpoints(ckpt_dir: Path, every_n_epochs: int = 1):
    """best.ckpt (weights of the best-by-validation epoch), written when a validation ends;
    last.ckpt (full state, for resuming), written at every ``every_n_epochs``-th epoch end,
    validated or not (``training.checkpoint_every_n_epochs``: at every epoch end, the demo's
    one-second epochs spent a quarter of SegFormer's fit writing its 67 MB state)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    # save_top_k=1, mode min: Lightning replaces the kept one only when torch.lt(current, best),
    # as the released `if val_loss < best: save` — the lowest loss, the earliest of equal ones,
    # a NaN only while no loss is finite (tests/test_release_loop_rules.py); restored on resume.
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                           save_weights_only=True, enable_version_counter=False, save_on_train_epoch_end=False)
    # Not save_top_k=0 + save_last: Lightning 2.6 then writes last.ckpt only where another
    # checkpoint was saved, i.e. never before training ends. One unmonitored top-1 named
    # "last" is rewritten at every N-th epoch end (atomically, AtomicCheckpointIO).
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False,
                           save_on_train_epoch_end=True, every_n_epochs=every_n_epochs)
    return best, last


def selection_splits(config: dict, store: Path, dataset: str, seed: int, run: Path | None = None):
    """(train, validation) data sets of a run, by the config's ``selection``.

    ``released``: the whole training split, and the split ``training.validation_split`` names
    (the released code's choice: test for WHU and xView2). ``val``: a seeded 10 % of the
    training split in whole scenes (:func:`noise2map.data.selection.carve_validation`), listed
    in the run folder's ``val_tiles.csv``.
    """
    from noise2map.data import TileDataset
    from noise2map.data.selection import carve_validation, scene_subset

    train = TileDataset(store, "train", uint8=True)
    sources = [t["source"] for t in train.tiles]
    if config["selection"] == "released":
        keep, val = list(range(len(train))), TileDataset(store, config["training"]["validation_split"].get(dataset, "val"),
                                                        uint8=True)
    else:
        test = TileDataset(store, "test", uint8=True)
        keep, held = carve_validation(sources, [t["source"] for t in test.tiles], seed)
        if run is not None:
            with atomic_path(run / "val_tiles.csv") as tmp:
                pd.DataFrame({"tile_id": [train.tile_ids[i] for i in held]}).to_csv(tmp, index=False)
        val = torch.utils.data.Subset(train, held)
    fraction = config["training"].get("train_fraction", 1.0)
    if fraction < 1:  # the ablations' protocol: a seeded share of the training scenes
        keep = [keep[i] for i in scene_subset([sources[k] for k in keep], fraction, seed)]
    return (train if len(keep) == len(train) else torch.utils.data.Subset(train, keep)), val


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


def evaluate_run(run: Path, checkpoint: Path | None = None, config: dict | None = None,
                 devices: int | None = None, accelerator: str | None = None, trainer=None) -> dict | None:
    """Score the run's best checkpoint on the test split: tile_counts.csv + metrics.json.

    On N devices each rank scores its own shard (each tile exactly once) and rank 0 writes
    the files; other ranks return None.
    """
    from noise2map.data import TileDataset
    from noise2map.training.tasks import DiscriminativeTask

    run = Path(run)
    if config is None:
        config = read_run_config(run)
    if devices or accelerator:
        train = dict(config["training"])
        train.update({k: v for k, v in (("devices", devices), ("accelerator", accelerator)) if v})
        config = {**config, "training": train}
    fields = config.get("run", {})
    if trainer is None:  # a re-evaluation: the threads the run was scored with when it was trained
        apply_recorded_threads(run / "checkpoints")
    checkpoint = Path(checkpoint or run / "checkpoints" / "best.ckpt")
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint} does not exist: train the run first (noise2map train ...)")
    module = load_checkpoint(DiscriminativeTask, checkpoint)
    module.sample_seed = int(fields.get("seed") or 0)  # test draws keyed by (seed, "test", tile)
    task, dataset = module.hparams.task, fields.get("dataset") or _dataset_from_run(run)
    test_set = TileDataset(prepared_dir(config, dataset, task), evaluation_split(config, dataset), uint8=True)
    trainer = trainer or _trainer(config, run, logger=False, enable_checkpointing=False)
    loader = _eval_loader(test_set, task_settings(config, dataset, task)["batch_size"], 0, trainer)
    trainer.test(module, loader, verbose=False)
    if trainer.global_rank != 0:
        return None
    rows = torch.cat(module.test_rows).numpy()
    counts = pd.DataFrame(rows, columns=["index", *COUNTS]).sort_values("index")
    if counts["index"].duplicated().any() or len(counts) != len(test_set):
        raise RuntimeError(f"test scored {len(counts)} rows for {len(test_set)} tiles ({run})")
    counts.insert(0, "tile_id", [test_set.tile_ids[i] for i in counts["index"]])
    with atomic_path(run / "tile_counts.csv") as tmp:
        counts.drop(columns="index").to_csv(tmp, index=False)
    return _write_metrics(run, config, module, counts, checkpoint)


def check_run_inputs(config: dict, task: str, dataset: str, model_key: str) -> None:
    """Refuse an unknown model or data set, a model of the other task, or a store that is not
    prepared, before a run folder is created (nothing is left behind by a bad command)."""
    from baselines import get_model_spec
    from noise2map.config import DATASET_NAMES, prepared_dir
    from noise2map.errors import DataNotFoundError, UnknownNameError

    spec = get_model_spec(model_key)
    if spec.task != task:
        raise ConfigError(f"model {model_key} is a {spec.task.upper()} model; it cannot be trained for {task}")
    if dataset not in DATASET_NAMES:
        raise UnknownNameError("data set", dataset, DATASET_NAMES)
    manifest = prepared_dir(config, dataset, task) / "manifest.json"
    if not manifest.is_file():
        raise DataNotFoundError(f"{manifest} does not exist: {dataset} is not prepared for {task} "
                                f"(snakemake {manifest}, or noise2map prepare {dataset}-{task} --config CFG)")


def read_run_config(run: Path) -> dict:
    """A run folder's resolved config; a folder that is not a run is named as such."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run} is not a run folder (it has no config.yaml): give the folder that "
                              "`noise2map train` wrote, e.g. results/runs/cd/whu/noise2map-cd/seed0")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err.__class__.__name__}); the run's config is damaged: "
                          "retrain the run, or restore the file") from err
    if not isinstance(config, dict) or "training" not in config:
        raise ConfigError(f"{path} is not a run's resolved config (no training section)")
    return config


def load_checkpoint(cls, checkpoint: Path):
    """``cls.load_from_checkpoint`` on the CPU; an unreadable file is a named error."""
    try:
        return cls.load_from_checkpoint(checkpoint, map_location="cpu")
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError,
            pickle.UnpicklingError) as err:
        raise CheckpointError(f"{checkpoint} cannot be loaded ({err.__class__.__name__}: {str(err)[:200]}): the "
                              "file is damaged or is not a checkpoint of this suite; retrain the run (its "
                              "last.ckpt, if any, resumes it) or restore the file") from err


def selected_on(config: dict, task: str, fields: dict) -> str:
    """The split the run's checkpoint was chosen on, in words for the tables' notes."""
    if config["selection"] == "val":
        return "val-carve"  # 10 % of train, whole scenes
    return config["training"]["validation_split"].get(fields.get("dataset"), "val")


def _dataset_from_run(run: Path) -> str:
    return run.parent.parent.name  # runs/<task>/<dataset>/<model>/seed<k>


def _write_metrics(run: Path, config: dict, module, counts: pd.DataFrame, checkpoint: Path) -> dict:
    from baselines import get_model_spec

    fields = config.get("run", {})
    spec = get_model_spec(module.hparams.model_key)
    totals = {c: int(counts[c].sum()) for c in COUNTS}
    metrics = {
        "task": spec.task, "model": fields.get("display_name") or spec.name, "model_key": spec.key,
        "paper_model": spec.name, "variant": fields.get("variant"), "ranked": not fields.get("variant"),
        "dataset_key": fields.get("dataset") or _dataset_from_run(run), "fingerprint": fields.get("fingerprint"),
        "versions": fields.get("versions"), "device": fields.get("device"),
        "dataset": DATASET_NAMES[fields.get("dataset") or _dataset_from_run(run)],
        "seed": fields.get("seed"), "preset": config["preset"], "model_size": config["model_size"],
        "params_m": round(sum(p.numel() for p in module.model.parameters()) / 1e6, 3),
        "paper_params_m": spec.paper_params_m, "num_test_tiles": len(counts),
        "selection": config["selection"], "selected_on": selected_on(config, spec.task, fields),
        "evaluated_on": evaluation_split(config, fields.get("dataset") or _dataset_from_run(run)),
        **totals, **scores_from_counts(**totals), "checkpoint": str(checkpoint),
    }
    write_json(run / "metrics.json", metrics)
    return metrics


def pretrain_run(config: dict, out_dir: Path, unet_kind: str = "noise2map", threads: int | None = None) -> Path:
    """Pretrain a denoising UNet on the AID sample → ``<out_dir>/<unet_kind>_unet.pt``.

    ``noise2map``: the ddpm-church-size UNet of Noise2Map (DDPM ε-MSE, from ddpm-church-256);
    ``sr3``: DDPM-CD's SR3 UNet with its own objective.
    """
    import lightning as L

    from baselines.noise2map_models import unet_config
    from noise2map.data import TileDataset
    from noise2map.training.seeding import ResumableEpochs
    from noise2map.training.tasks import DenoisingPretraining, SR3Pretraining

    validate_config(config)
    out_dir = Path(out_dir)
    pre = config["pretrain"]
    seed = config["seeds"][0]
    ckpt_dir = out_dir / f"checkpoints_{unet_kind}"
    last = ckpt_dir / "last.ckpt"
    execution = pin_execution(ckpt_dir, config, threads, resuming=last.exists(), write=_rank() == 0)
    L.seed_everything(seed, workers=True)
    if unet_kind == "sr3":
        module = SR3Pretraining(config["model_size"], pre["lr"], pre["weight_decay"], pre["warmup_steps"])
    else:
        from noise2map.weights import resolve

        unet = unet_config(config["model_size"], config["noise2map"].get("unet"))
        init = [resolve(name, config["weights_dir"]) for name in pretrain_init_names(config)]
        module = DenoisingPretraining(unet, pre["scheduler"], pre["lr"], pre["weight_decay"], pre["warmup_steps"],
                                      str(init[0].parent) if init else None)
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, enable_version_counter=False)
    resumable = ResumableEpochs(seed, None, last, config["training"].get("checkpoint_every_n_steps", 0))
    trainer = _trainer(config, out_dir, pre["epochs"], [checkpoint, resumable], max_steps=pre.get("max_steps", -1),
                       precision=pre.get("precision", "32-true"), log_every_n_steps=1,
                       logger=experiment_loggers(config, out_dir, f"train_log_{unet_kind}"))
    loader = _train_loader(TileDataset(prepared_dir(config, pre["dataset"], "pretrain"), "train", uint8=True),
                           pre["batch_size"], config["training"]["num_workers"], seed, trainer)
    resumable.sampler = loader.batch_sampler
    trainer.fit(module, loader, ckpt_path=last if last.exists() else None)
    if trainer.global_rank != 0:
        return out_dir / f"{unet_kind}_unet.pt"
    target = out_dir / f"{unet_kind}_unet.pt"
    with atomic_path(target) as tmp:
        torch.save(module.unet.state_dict(), tmp)
    unet_cfg = dict(module.unet.config) if hasattr(module.unet, "config") else {"size": config["model_size"]}
    write_json(out_dir / f"{unet_kind}_unet.json", {"unet": unet_cfg, "pretrain": pre, "execution": execution,
                                                   "noise2map_version": __version__})
    return target
