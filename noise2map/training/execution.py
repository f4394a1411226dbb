"""What a run executes on: its CPU thread count and device, recorded at the start, applied on resume.

On the CPU, a convolution's float sums are split over torch's intra-op threads, and another
split is another order of additions: the same run on 1 and on 2 threads ends a few ulps apart
after the first step and, after a few epochs of Adam, a few pixels apart in the counts. A
Snakemake job runs with ``OMP_NUM_THREADS`` = its threads, a bare command with every core.
So a run fixes its thread count when it starts (``training.num_threads``, ``--threads``) and
writes it, with the device it runs on, to ``checkpoints/execution.json``; a resumed run and a
re-evaluation set the recorded count, whatever the process that resumes it was given.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import torch

from noise2map.errors import ConfigError
from noise2map.io import write_json

log = logging.getLogger(__name__)

RECORD = "execution.json"


def requested_threads(config: dict, override: int | None = None) -> int:
    """Threads a new run asks for: ``--threads``, else ``training.num_threads``; ``auto`` is
    what this process was given (``OMP_NUM_THREADS`` as Snakemake sets it, or every core)."""
    value = override if override is not None else config["training"].get("num_threads", "auto")
    if value == "auto":
        return torch.get_num_threads()
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"training.num_threads must be a positive integer or 'auto', got {value!r}")
    return value


def device_description(accelerator: str) -> str:
    """The device the sums run on: the GPU's name, or the CPU's architecture and model."""
    if accelerator in ("gpu", "auto") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({platform.machine()}, {_cpu_model()})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pin_execution(ckpt_dir: Path, config: dict, threads: int | None = None, resuming: bool = False,
                  write: bool = True) -> dict:
    """Set this process's thread count for a run and return the run's execution record.

    A new run (``resuming`` false, or no record yet) takes :func:`requested_threads` and
    writes the record; a resumed run takes the recorded count and warns when the device
    differs from the recorded one (that cannot be set, and changes the last digits).
    """
    path = Path(ckpt_dir) / RECORD
    device = device_description(config["training"]["accelerator"])
    if resuming and path.is_file():
        record = read_execution(path)
        asked = requested_threads(config, threads)
        if asked != record["num_threads"]:
            log.info("resuming with the run's %d CPU threads (this process was given %d)", record["num_threads"], asked)
        if record["device"] != device:
            log.warning("this run started on %s and resumes on %s: its result can differ from an uninterrupted "
                        "run in the last digits", record["device"], device)
    else:
        record = {"num_threads": requested_threads(config, threads), "device": device, "torch": torch.__version__}
        if write:
            write_json(path, record)
    torch.set_num_threads(record["num_threads"])
    return record


def read_execution(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
        if not isinstance(record.get("num_threads"), int) or record["num_threads"] < 1:
            raise ValueError("num_threads is not a positive integer")
        return record
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path}: not a valid execution record ({err}); delete it to start the run afresh") from err


def apply_recorded_threads(ckpt_dir: Path) -> int | None:
    """Re-evaluation: the thread count the run was trained and scored with (None: no record)."""
    path = Path(ckpt_dir) / RECORD
    if not path.is_file():
        return None
    threads = read_execution(path)["num_threads"]
    torch.set_num_threads(threads)
    return threads
