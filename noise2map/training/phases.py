"""Where a job's seconds go: wall time from the process start to each phase's end.

``noise2map train`` marks ``imports`` (interpreter start and every import up to the training
code, Lightning included), then ``train_run`` marks ``config``, ``data`` (the tile stores
opened), ``model`` (built, weights loaded), ``trainer`` (Trainer and loaders set up), ``fit``
and ``test``; the run folder's ``timing.json`` holds the seconds of each. ``scripts/time_demo.sh``
sums them over the demo's runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_start() -> float:
    """The epoch time this process started (Linux /proc), else the first call's time."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])  # btime is whole seconds
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


class Phases:
    def __init__(self, start: float | None = None):
        self.start = process_start() if start is None else start
        self.marks: list[tuple[str, float]] = []

    def new_run(self) -> None:
        """A further run in the same process (noise2map bench step) counts from now."""
        if any(name != "imports" for name, _ in self.marks):
            self.start, self.marks = time.time(), []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.time()))

    def seconds(self) -> dict[str, float]:
        """Each phase's seconds (from the previous mark, the first from the process start) and the total."""
        out, before = {}, self.start
        for name, at in self.marks:
            out[name] = round(max(0.0, at - before), 3)
            before = at
        out["total"] = round(max(0.0, before - self.start), 3)
        return out


JOB = Phases()  # this process's job
