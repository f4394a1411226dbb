"""Shared pieces of the benchmark commands: machine description, peak memory, report files.

Every benchmark writes one JSON (the figures, the machine and the settings, so a number is
never read without knowing where it was measured) and a Markdown table beside it.
"""

from __future__ import annotations

import os
import platform
import resource
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path("results/bench")
# The training benchmark's variants, here so that the command line lists them without importing torch.
TRAIN_VARIANTS = ("fp32", "bf16", "channels_last", "fused", "compile", "fastest")
_PACKAGES = ("torch", "numpy", "diffusers", "rasterio", "timm", "segmentation-models-pytorch")


def resolve_device(device: str | None) -> str:
    """``cuda`` when asked or when available and nothing was asked; else ``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} was asked for but torch sees no CUDA device")
    return device


def default_output(name: str, device: str) -> Path:
    """``results/bench/<name>_<cpu|gpu>.json`` — one file per benchmark and machine kind."""
    return RESULTS_DIR / f"{name}_{'gpu' if str(device).startswith('cuda') else 'cpu'}.json"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    """Versions of the packages the figures depend on (None where one is not installed)."""
    import torch

    from noise2map import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "noise2map": __version__}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__  # with its build tag (+cu130, +cpu)
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def machine_info(device: str = "cpu") -> dict:
    """Where the figures were measured: platform, CPU, GPU, threads."""
    import torch

    info = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": None,
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_capability"] = f"{props.major}.{props.minor}"
    return info


# ---------------------------------------------------------------------------------------------
# peak memory


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory(device: str) -> None:
    """Start a fresh peak: CUDA's allocator statistics, or Linux's resident-set high-water mark.

    Writing 5 to /proc/self/clear_refs resets VmHWM (Linux ≥ 4.0), so each CPU variant gets
    its own peak instead of the process-lifetime maximum of ``ru_maxrss``.
    """
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_memory(device: str) -> tuple[float, str]:
    """(peak MiB, what was measured) since the last :func:`reset_peak_memory`."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024, "process RSS high-water mark (VmHWM, reset per measurement)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss (process lifetime)"


# ---------------------------------------------------------------------------------------------
# reports


def fmt(value, digits: int = 2) -> str:
    """A table cell: numbers rounded, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:
            return "—"
        if 0 < abs(value) < 0.1:  # small figures (CPU TFLOP/s, loss differences) keep 3 significant digits
            return f"{value:.3g}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def context_lines(result: dict) -> list[str]:
    """The machine, versions and settings under a report's table."""
    m, v = result["machine"], result["versions"]
    where = m["gpu"] or m["cpu"]
    lines = [
        f"Machine: {where} ({m['device']}), {m['platform']}, CPU {m['cpu']} "
        f"({m['cpus_usable']} usable of {m['cpu_count']} cores), torch threads {m['torch_threads']}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None) + ".",
        "Settings: " + ", ".join(f"{k}={val}" for k, val in result["settings"].items()) + ".",
    ]
    return lines


def write_report(path, result: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``result`` as JSON at ``path`` and ``markdown`` beside it (``.md``), atomically."""
    from noise2map.io import write_json, write_text

    path = Path(path)
    md = path.with_suffix(".md")
    write_json(path, result)
    write_text(md, markdown)
    return path, md
