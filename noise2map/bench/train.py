"""Training-throughput benchmark: Noise2Map training steps under each speed setting, side by side.

A plain PyTorch loop (no Lightning, no data loading: fixed synthetic batches on the device)
does what ``DiscriminativeTask.training_step`` does — t ~ U[0, T), task noising, one UNet
pass, weighted cross-entropy on float32 logits — then backward and an optimiser step. Each
variant starts from the same seeded weights and batches, so besides images/s it reports its
first-step loss next to fp32's: a variant that changes that loss by more than rounding would
change results, not only speed.

Variants: ``fp32`` (the released loop's effective precision; always run, the reference),
``bf16`` (autocast), ``channels_last``, ``fused`` (fused Adam/AdamW kernel, CUDA only),
``compile`` (``torch.compile``) and ``fastest`` (all of them together).
On CUDA, MFU = FLOPs per step (FlopCounterMode over forward + backward) / step time / the
device's dense peak for the variant's precision.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time

import torch
from torch.nn import functional as F

from noise2map.bench.common import TRAIN_VARIANTS as VARIANTS
_OPTIONS = {
    "fp32": {},
    "bf16": {"bf16": True},
    "channels_last": {"channels_last": True},
    "fused": {"fused": True},
    "compile": {"compile": True},
    "fastest": {"bf16": True, "channels_last": True, "fused": True, "compile": True},
}

# Dense (no sparsity) peak TFLOP/s by precision, from the vendors' data sheets. "tf32" is the
# tensor-core rate fp32 convolutions run at by default (torch.backends.cudnn.allow_tf32).
# First matching substring of torch.cuda.get_device_name() wins, so specific names come first.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200 NVL": {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.0, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def peak_tflops(device_name: str | None, precision: str) -> tuple[float | None, str | None]:
    """(peak dense TFLOP/s, which table row and precision) for a device name; (None, None) if unknown.

    ``precision`` is ``bf16`` or ``fp32``; fp32 counts at the TF32 tensor-core rate while
    cuDNN may use TF32 for convolutions (PyTorch's default), the plain FP32 rate otherwise.
    """
    if not device_name:
        return None, None
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        precision = "tf32"
    for key, row in PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return row[precision], f"{key} {precision}"
    return None, None


def mfu(flops_per_step: float | None, step_seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (TFLOP/s); None without both."""
    if not flops_per_step or not peak or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / (peak * 1e12)


def _build(key: str, size: str, device: str, seed: int):
    from baselines import build_model, get_model_spec

    torch.manual_seed(seed)
    with torch.device(device):
        model = build_model(key, size)
    return model.train(), get_model_spec(key).task


def make_batches(task: str, batch_size: int, tile: int, device: str, num_train_timesteps: int | None,
                 count: int = 2, seed: int = 0) -> list[tuple]:
    """``count`` fixed (images, mask, timesteps) batches on the device, the same for every variant."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        images = tuple((torch.rand(batch_size, 3, tile, tile, generator=g) * 2 - 1).to(device)
                       for _ in range(1 if task == "ss" else 2))
        mask = torch.randint(0, 2, (batch_size, tile, tile), generator=g).to(device)
        t = (torch.randint(0, num_train_timesteps, (batch_size,), generator=g).to(device)
             if num_train_timesteps else None)
        batches.append((images, mask, t))
    return batches


def loss_of(model, batch, weights, bf16: bool, device: str) -> torch.Tensor:
    """Forward and the task's loss: weighted cross-entropy on float32 logits (as DiscriminativeTask)."""
    images, mask, t = batch
    autocast = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    with autocast:
        logits = model(*images, timesteps=t) if t is not None else model(*images)
    return F.cross_entropy(logits.float(), mask, weight=weights)


def train_flops(key: str, size: str, batch_size: int, tile: int) -> int | None:
    """FLOPs of one training step (forward + backward, 2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        model, task = _build(key, size, "meta", 0)
        batch = make_batches(task, batch_size, tile, "cpu", getattr(model, "num_train_timesteps", None), 1)[0]
        images, mask, t = batch
        batch = (tuple(x.to("meta") for x in images), mask.to("meta"), None if t is None else t.to("meta"))
        with FlopCounterMode(display=False) as counter:
            loss_of(model, batch, None, False, "meta").backward()
        return counter.get_total_flops()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_variant(name: str, key: str, size: str, batch_size: int, tile: int, steps: int, warmup: int,
                device: str, optimizer: str = "adam", lr: float = 1e-4, compile_backend: str = "inductor",
                seed: int = 0, progress=print) -> dict:
    """Warm-up steps (compilation included) then timed steps of one variant; its row."""
    from noise2map.bench.common import peak_memory, reset_peak_memory

    opts = dict(_OPTIONS[name])
    cuda = torch.device(device).type == "cuda"
    if opts.get("fused") and not cuda:
        if name == "fused":
            return {"variant": name, "skipped": "fused optimisers are benchmarked on CUDA only"}
        opts["fused"] = False
    gc.collect()
    reset_peak_memory(device)
    model, task = _build(key, size, device, seed)
    batches = make_batches(task, batch_size, tile, device, getattr(model, "num_train_timesteps", None), seed=seed)
    if opts.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        batches = [(tuple(x.contiguous(memory_format=torch.channels_last) for x in im), m, t) for im, m, t in batches]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    opt = cls(model.parameters(), lr=lr, **({"fused": True} if opts.get("fused") else {}))
    step_model = model
    if opts.get("compile"):
        torch._dynamo.reset()
        step_model = torch.compile(model, backend=compile_backend)
    weights = torch.tensor([1.0, 1.0], device=device)

    def step(k: int) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(step_model, batches[k % len(batches)], weights, opts.get("bf16", False), device)
        loss.backward()
        opt.step()
        return loss

    start = time.perf_counter()
    first_loss = None
    for k in range(warmup):
        loss = step(k)
        first_loss = first_loss if first_loss is not None else float(loss.detach())
    _sync(device)
    warmup_s = time.perf_counter() - start
    times = []
    for k in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        loss = step(k)
        _sync(device)
        times.append(time.perf_counter() - t0)
        first_loss = first_loss if first_loss is not None else float(loss.detach())
    peak_mib, peak_kind = peak_memory(device)
    del model, step_model, opt, batches
    if opts.get("compile"):
        torch._dynamo.reset()
    if cuda:
        torch.cuda.empty_cache()
    median = statistics.median(times)
    row = {"variant": name, "options": {k: bool(opts.get(k)) for k in ("bf16", "channels_last", "fused", "compile")},
           "steps": steps, "warmup": warmup, "warmup_s": warmup_s, "step_s_median": median,
           "step_s_mean": statistics.fmean(times), "images_per_s": batch_size / median,
           "peak_memory_mib": peak_mib, "peak_memory_kind": peak_kind, "first_loss": first_loss,
           "last_loss": float(loss.detach())}
    progress(f"{name:14} {row['images_per_s']:8.2f} images/s  step {median * 1000:8.1f} ms  "
             f"peak {peak_mib:8.0f} MiB  warm-up {warmup_s:.1f} s")
    return row


def run(key: str = "noise2map-ss", size: str = "paper", batch_size: int = 8, tile: int = 256, steps: int = 10,
        warmup: int = 3, variants=VARIANTS, device: str = "cpu", optimizer: str = "adam", lr: float = 1e-4,
        compile_backend: str = "inductor", seed: int = 0, progress=print) -> dict:
    """Every requested variant in this process (fp32 first, as the reference), with ratios and MFU."""
    variants = ["fp32"] + [v for v in dict.fromkeys(variants) if v != "fp32"]
    flops = train_flops(key, size, batch_size, tile)
    name = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else None
    rows = []
    for v in variants:
        try:
            rows.append(run_variant(v, key, size, batch_size, tile, steps, max(warmup, 1), device, optimizer, lr,
                                    compile_backend, seed, progress))
        except Exception as exc:  # one broken variant (e.g. a compiler missing) must not lose the others
            progress(f"{v}: failed: {exc!r}")
            rows.append({"variant": v, "error": f"{type(exc).__name__}: {exc}"})
    ref = rows[0]
    for r in rows:
        if "images_per_s" not in r:
            continue
        r["speedup_vs_fp32"] = r["images_per_s"] / ref["images_per_s"] if "images_per_s" in ref else None
        r["loss_rel_diff_vs_fp32"] = (abs(r["first_loss"] - ref["first_loss"]) / abs(ref["first_loss"])
                                      if "first_loss" in ref else None)
        r["achieved_tflops"] = flops / r["step_s_median"] / 1e12 if flops else None
        peak, peak_kind = peak_tflops(name, "bf16" if r["options"]["bf16"] else "fp32")
        r["peak_tflops"], r["peak_kind"] = peak, peak_kind
        r["mfu"] = mfu(flops, r["step_s_median"], peak)
    timed = [r for r in rows if "images_per_s" in r]
    return {
        "benchmark": "train",
        "model": key,
        "flops_per_step": flops,
        "fastest": max(timed, key=lambda r: r["images_per_s"])["variant"] if timed else None,
        "variants": rows,
        "settings": {"model": key, "size": size, "batch_size": batch_size, "tile": tile, "steps": steps,
                     "warmup": max(warmup, 1), "variants": variants, "device": device, "optimizer": optimizer,
                     "lr": lr, "compile_backend": compile_backend, "seed": seed,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
    }


def markdown(result: dict) -> str:
    from noise2map.bench.common import context_lines, markdown_table

    s = result["settings"]
    rows = []
    for r in result["variants"]:
        if "images_per_s" not in r:
            rows.append([r["variant"]] + ["—"] * 9 + [r.get("skipped") or r.get("error")])
            continue
        rows.append([r["variant"], r["images_per_s"], r["speedup_vs_fp32"], r["step_s_median"] * 1000,
                     r["peak_memory_mib"], r["achieved_tflops"], None if r["mfu"] is None else 100 * r["mfu"],
                     r["first_loss"], r["loss_rel_diff_vs_fp32"], r["warmup_s"], ""])
    flops = result["flops_per_step"]
    kind = next((r["peak_memory_kind"] for r in result["variants"] if "peak_memory_kind" in r), "—")
    lines = [
        f"# Training throughput: {result['model']} ({s['size']} size)", "",
        f"Batch {s['batch_size']} of {s['tile']}² on {s['device']}, {s['optimizer']} (lr {s['lr']}), "
        f"{s['warmup']} warm-up then {s['steps']} timed steps; images/s from the median step. "
        f"FLOPs per step (forward + backward, FlopCounterMode): "
        f"{'—' if flops is None else f'{flops / 1e9:.1f} G'}. MFU against the device's dense peak for the "
        "variant's precision (fp32 at the TF32 rate when cuDNN allows TF32). Loss Δ = relative difference of "
        "the first step's loss from fp32's (same weights, same batch).", "",
        markdown_table(["Variant", "Images/s", "× fp32", "Step (ms)", "Peak mem (MiB)", "TFLOP/s", "MFU (%)",
                        "First loss", "Loss Δ", "Warm-up (s)", "Note"], rows), "",
        f"Fastest: **{result['fastest']}**. Peak memory: {kind}.",
        "",
    ]
    return "\n".join(lines + context_lines(result)) + "\n"
