"""The efficiency table: parameters, FLOPs and latency of every model, side by side.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add) for
one sample at the preset's tile size, on the meta device where the model allows it (no
compute, any size). Latency is the median of repeated forward passes of one sample, all
models in one process, on the same device with the same threads, so the ratios compare like
with like. The paper claims Noise2Map has 3.85x fewer parameters, 3x fewer FLOPs and is
13.49x faster than DDPM-CD (results/paper/paper_efficiency.csv).
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

REFERENCE = "noise2map-cd"


def _inputs(task: str, size: int, device) -> tuple[torch.Tensor, ...]:
    n = 1 if task == "ss" else 2
    return tuple(torch.rand(1, 3, size, size, device=device) * 2 - 1 for _ in range(n))


def _build(key: str, size: str, device):
    from baselines import build_model

    with torch.device(device):
        model = build_model(key, size)
    return model.eval()


def active_parameters(model: torch.nn.Module, inputs) -> int:
    """Parameters of the modules a forward pass actually calls (official trees keep unused ones)."""
    called = set()
    hooks = [m.register_forward_pre_hook(lambda mod, _: called.add(mod)) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    params = {id(p): p for m in called for p in m.parameters(recurse=False)}
    return sum(p.numel() for p in params.values())


def flops(model: torch.nn.Module, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()


def latency_ms(model: torch.nn.Module, inputs, repeats: int, warmup: int = 1) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            if inputs[0].is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(key: str, size: str, tile: int, repeats: int, device: str = "cpu") -> dict:
    """One model's row: counts on the meta device where possible, latency on ``device``."""
    from baselines import get_model_spec

    spec = get_model_spec(key)
    try:
        meta = _build(key, size, "meta")
        row_flops = flops(meta, _inputs(spec.task, tile, "meta"))
    except (RuntimeError, NotImplementedError, TypeError):
        meta, row_flops = None, None
    model = _build(key, size, device)
    inputs = _inputs(spec.task, tile, device)
    if row_flops is None:
        row_flops = flops(model, inputs)
    return {
        "model": spec.name, "key": key, "task": spec.task, "size": size,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "params_active_m": active_parameters(model, inputs) / 1e6,
        "paper_params_m": spec.paper_params_m,
        "gflops": row_flops / 1e9,
        "latency_ms": latency_ms(model, inputs, repeats) if repeats else float("nan"),
    }


def efficiency_table(keys, size: str = "paper", tile: int = 256, repeats: int = 3, device: str = "cpu") -> pd.DataFrame:
    """Rows for ``keys`` with each figure's ratio to Noise2Map-CD (measured in this process)."""
    rows = [measure(k, size, tile, repeats, device) for k in keys]
    table = pd.DataFrame(rows)
    if REFERENCE in set(table["key"]):
        ref = table.set_index("key").loc[REFERENCE]
        table["params_ratio"] = table["params_m"] / ref["params_m"]
        table["flops_ratio"] = table["gflops"] / ref["gflops"]
        table["latency_ratio"] = table["latency_ms"] / ref["latency_ms"]
    table.attrs["machine"] = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "platform": platform.platform(), "processor": platform.processor(),
                              "tile": tile, "repeats": repeats}
    return table


def efficiency_markdown(table: pd.DataFrame, paper_csv: Path | None = None) -> str:
    m = table.attrs.get("machine", {})
    lines = ["# Efficiency", "",
             f"One {m.get('tile', 256)}² sample; FLOPs by torch FlopCounterMode (2 per MAC); latency = median of "
             f"{m.get('repeats')} forward passes on {m.get('device')} with {m.get('threads')} threads "
             f"(torch {m.get('torch')}), all models in one process. Ratios are to Noise2Map-CD.", "",
             "| Model | Task | Params (M) | Active params (M) | Paper params (M) | GFLOPs | Latency (ms) "
             "| Params × | FLOPs × | Latency × |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ratios = [getattr(r, c, float("nan")) for c in ("params_ratio", "flops_ratio", "latency_ratio")]
        lines.append(f"| {r.model} | {r.task} | {r.params_m:.2f} | {r.params_active_m:.2f} | {r.paper_params_m:.1f} "
                     f"| {r.gflops:.1f} | {r.latency_ms:.1f} | " + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    if paper_csv and Path(paper_csv).is_file():
        paper = pd.read_csv(paper_csv)
        lines += ["", "The paper's claims (ratios of DDPM-CD to Noise2Map):", ""]
        for r in paper.itertuples():
            lines.append(f"- {r.model}: params {r.params_m}M, FLOPs ×{r.flops_ratio_vs_noise2map}, "
                         f"latency ×{r.speed_ratio_vs_noise2map} ({r.note})")
    return "\n".join(lines) + "\n"
