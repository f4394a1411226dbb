"""One optimiser step and one evaluation of every Table I model, and one pretraining step, at
the preset's size and precision: the check that a GPU machine runs everything before hours of
training are spent (``scripts/gpu_check.sh``).

Each model goes through the suite's own training code, :func:`~noise2map.training.run.train_run`
for one epoch that is one optimiser step (the global batch times the gradient accumulation):
Lightning's Trainer in the preset's precision, validation on one batch, then test scoring
with the best checkpoint — on a small
tile store of random tiles written by the store writer the preparers use
(:mod:`noise2map.data.preparers.common`). The pretraining step is
:func:`~noise2map.training.run.pretrain_run` with ``max_steps: 1``. Pretrained weights are
not loaded (``weights: none``): this checks compute, memory and code paths, not scores. A
model that fails is reported with its error and the others still run.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import torch

from noise2map.config import deep_merge, prepared_dir, task_settings

DATASET = "whu"  # the settings (batch size, class weights) the paper preset gives WHU


def _write_store(store: Path, task: str, tile: int, counts: dict[str, int], seed: int = 0) -> None:
    """Random uint8 tiles and 0/1 masks in the layout of a prepared data set."""
    from noise2map.data.preparers.common import Sources, Split, finish_store, start_store

    rng = np.random.default_rng(seed)
    out = start_store(store)
    splits = {}
    for split, n in counts.items():
        acc = splits[split] = Split(task, tile)
        rows = [(f"random_{split}_{i}", "random", 0, 0) for i in range(n)]
        images = {key: rng.integers(0, 256, (n, tile, tile, 3), dtype=np.uint8)
                  for key in (("images",) if task in ("ss", "pretrain") else ("pre", "post"))}
        labels = {} if task == "pretrain" else {"labels": (rng.random((n, tile, tile)) < 0.2).astype(np.uint8)}
        acc.add(rows, **images, **labels)
    name = {"ss": f"{DATASET}-ss", "cd": f"{DATASET}-cd", "pretrain": "aid"}[task]
    finish_store(name, out, tile, splits, ["Random tiles for the GPU check (noise2map bench step)."],
                 Sources(store))


def check_config(config: dict, work: Path, device: str) -> dict:
    """The preset with one step per run, its data under ``work``, no downloads, this device."""
    return deep_merge(config, {
        "data_dir": str(work / "data"), "results_dir": str(work / "results"), "weights": "none",
        "datasets": [DATASET],
        "training": {"max_steps": -1, "max_epochs": 1, "devices": 1, "num_workers": 0,
                     "accelerator": "gpu" if device.startswith("cuda") else "cpu",
                     "datasets": {DATASET: {task: {"max_epochs": 1, "val_every_n_epochs": 1} for task in ("ss", "cd")}}},
        "pretrain": {"max_steps": 1, "epochs": 1, "init": "none", "source": "pipeline",
                     "released_row": False},
    })


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _measure(device: str, fn) -> dict:
    from noise2map.bench.common import peak_memory, reset_peak_memory

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    peak, where = peak_memory(device)
    return {"seconds": round(time.perf_counter() - start, 2), "peak_memory_mib": round(peak, 1), "memory_of": where, **out}


def run(config: dict, work: Path, keys=None, device: str = "cuda", pretrain: bool = True, progress=print) -> dict:
    """Rows for ``keys`` (default: the preset's Table I models) and the pretraining step."""
    from baselines import get_model_spec
    from noise2map.training.run import pretrain_run, train_run

    config = check_config(config, Path(work), device)
    keys = list(keys or [k for task in ("ss", "cd") for k in config["models"][task]])
    for key in keys:  # a misspelt name fails before minutes of building
        get_model_spec(key)
    tile = config["tile_size"]
    for task in ("ss", "cd"):  # one epoch = one optimiser step: the global batch times the accumulation
        train = task_settings(config, DATASET, task)["batch_size"] * config["training"]["grad_accumulation"]
        _write_store(prepared_dir(config, DATASET, task), task, tile, {"train": train, "val": 2, "test": 2})
    rows = []
    for key in keys:
        spec = get_model_spec(key)
        run_dir = Path(work) / "runs" / spec.task / key

        def one_step(spec=spec, run_dir=run_dir):
            metrics = train_run(config, spec.task, DATASET, spec.key, 0, run_dir, threads=None)
            return {"test_tiles": metrics["num_test_tiles"], "f1": metrics["f1"],
                    "params_m": round(metrics["params_m"], 2)}

        rows.append(_row(key, spec.name, spec.task, device, one_step, progress))
    if pretrain:
        batch = config["pretrain"]["batch_size"]
        _write_store(prepared_dir(config, config["pretrain"]["dataset"], "pretrain"), "pretrain", tile, {"train": batch})
        rows.append(_row("pretrain", "Noise2Map UNet pretraining (DDPM)", "pretrain", device,
                         lambda: {"unet": str(pretrain_run(config, Path(work) / "pretrain"))}, progress))
    return {"benchmark": "step", "models": rows,
            "settings": {"models": keys, "size": config["model_size"], "tile": tile, "device": device,
                         "precision": config["training"]["precision"],
                         "pretrain_precision": config["pretrain"].get("precision", "32-true"),
                         "batch_sizes": {t: task_settings(config, DATASET, t)["batch_size"] for t in ("ss", "cd")},
                         "pretrain_batch_size": config["pretrain"]["batch_size"], "dataset_settings": DATASET}}


def _row(key: str, name: str, task: str, device: str, fn, progress) -> dict:
    try:
        row = {"model": name, "key": key, "task": task, "ok": True, **_measure(device, fn)}
        progress(f"{key:16} ok   {row['seconds']:7.1f} s  peak {row['peak_memory_mib']:.0f} MiB")
    except Exception as exc:  # one model that cannot run must not lose the others' figures
        row = {"model": name, "key": key, "task": task, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        progress(f"{key:16} FAILED {row['error']}")
    return row


def markdown(result: dict) -> str:
    from noise2map.bench.common import context_lines, markdown_table

    s = result["settings"]
    rows = [[r["model"], r["task"], "ok" if r["ok"] else "failed", r.get("params_m"), r.get("seconds"),
             r.get("peak_memory_mib"), r.get("error", "")] for r in result["models"]]
    failed = sum(not r["ok"] for r in result["models"])
    lines = [f"# One step of every model ({s['size']} size, {s['device']})", "",
             f"Each row: train_run for one epoch of one optimiser step (one global batch per accumulated step) "
             f"(SS {s['batch_sizes']['ss']}, CD {s['batch_sizes']['cd']} tiles of {s['tile']}², precision "
             f"{s['precision']}), validation and test scoring on 2 tiles; the pretraining row one DDPM step "
             f"(batch {s['pretrain_batch_size']}, {s['pretrain_precision']}). Seconds include building the model "
             "and the Trainer. Random tiles, no pretrained weights.", "",
             markdown_table(["Model", "Task", "Result", "Params (M)", "Seconds", "Peak memory (MiB)", "Error"], rows),
             "", f"{len(rows) - failed} of {len(rows)} ran.", ""]
    return "\n".join(lines + context_lines(result)) + "\n"
