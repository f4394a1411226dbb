"""Inference benchmark: latency (batch 1) and throughput (batch B) of every registered model.

Each model is called as evaluation calls it — ``model(*images)``, the forward that
:mod:`noise2map.bench.efficiency` times: Noise2Map then runs at t = T − 1, as
``DiscriminativeTask.test_step`` (test_timestep 999) and the released evaluate.py do. All
models run in one process on the same device and threads, so their figures compare; a model
that fails to build or run is reported with its error instead of ending the run.
"""

from __future__ import annotations

import gc

import torch

from noise2map.bench.efficiency import _build, latency_ms


def _inputs(task: str, batch: int, tile: int, device: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = 1 if task == "ss" else 2
    return tuple((torch.rand(batch, 3, tile, tile, generator=g) * 2 - 1).to(device) for _ in range(n))


def measure(key: str, size: str, tile: int, batch_size: int, repeats: int, warmup: int, device: str) -> dict:
    """One model's row: median latency of batch 1, images/s of batch ``batch_size``."""
    from baselines import get_model_spec

    spec = get_model_spec(key)
    model = _build(key, size, device)
    one = latency_ms(model, _inputs(spec.task, 1, tile, device), repeats, warmup)
    row = {"model": spec.name, "key": key, "task": spec.task,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "timestep_conditioned": bool(getattr(model, "timestep_conditioned", False)),
           "latency_ms": one, "batch_size": batch_size}
    if batch_size > 1:
        batch_ms = latency_ms(model, _inputs(spec.task, batch_size, tile, device), repeats, warmup)
    else:
        batch_ms = one
    row["batch_ms"] = batch_ms
    row["images_per_s"] = batch_size / (batch_ms / 1000)
    del model
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return row


def run(keys=None, size: str = "paper", tile: int = 256, batch_size: int = 8, repeats: int = 5, warmup: int = 1,
        device: str = "cpu", progress=print) -> dict:
    """Rows for ``keys`` (default: every registered model), in registry order."""
    from baselines import MODELS, get_model_spec

    keys = list(keys or MODELS)
    for key in keys:  # a misspelt name fails here, before minutes of measuring
        get_model_spec(key)
    rows = []
    for key in keys:
        try:
            row = measure(key, size, tile, batch_size, repeats, warmup, device)
            progress(f"{key:16} {row['latency_ms']:10.1f} ms (batch 1)  {row['images_per_s']:8.2f} images/s "
                     f"(batch {batch_size})")
        except Exception as exc:  # one model that cannot run here must not lose the others' figures
            row = {"model": key, "key": key, "error": f"{type(exc).__name__}: {exc}"}
            progress(f"{key:16} failed: {row['error']}")
        rows.append(row)
    return {
        "benchmark": "infer",
        "models": rows,
        "called_as": "model(*images); Noise2Map at t = T - 1 (its default, as test_step / evaluate.py)",
        "settings": {"models": keys, "size": size, "tile": tile, "batch_size": batch_size, "repeats": repeats,
                     "warmup": warmup, "device": device, "mode": "torch.inference_mode, fp32, eval()"},
    }


def markdown(result: dict) -> str:
    from noise2map.bench.common import context_lines, markdown_table

    s = result["settings"]
    rows = [[r["model"], r.get("task", "—"), r.get("params_m"), r.get("latency_ms"), r.get("batch_ms"),
             r.get("images_per_s"), r.get("error", "")] for r in result["models"]]
    lines = [
        f"# Inference: latency and throughput ({s['size']} size)", "",
        f"{s['tile']}² inputs on {s['device']}, fp32, eval + inference_mode; median of {s['repeats']} calls after "
        f"{s['warmup']} warm-up. Latency at batch 1; throughput at batch {s['batch_size']}. "
        f"Called as {result['called_as']}.", "",
        markdown_table(["Model", "Task", "Params (M)", "Latency b=1 (ms)", f"Batch {s['batch_size']} (ms)",
                        "Images/s", "Note"], rows), "",
    ]
    return "\n".join(lines + context_lines(result)) + "\n"
