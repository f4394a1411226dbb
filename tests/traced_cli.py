"""``python tests/traced_cli.py ARGS`` runs ``noise2map ARGS`` and records what each process trained on.

With ``N2M_TRACE=DIR`` set, every training step of a fine-tuning or pretraining module appends
one JSON line to ``DIR/rank<r>.jsonl`` before it runs: the process id, the rank and world size
(the Trainer's and torch.distributed's), the optimiser steps done before it, the epoch, the
batch index, the epoch the keyed draws use and the sample indices of the batch. Lightning
starts the DDP ranks > 0 by re-running this script with the same arguments, so they record
too; a killed and a resumed process append to the same file, told apart by ``pid``. With
``N2M_TRACE_KILL_AT=EPOCH,BATCH`` the process kills itself (SIGKILL) when that batch arrives.

The tests read it with :func:`read_trace` (and :func:`assert_resumed`): the runs' own files
cannot show that a second process took part, nor which samples a rank or a resumed process
trained on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()
ENV, KILL_ENV = "N2M_TRACE", "N2M_TRACE_KILL_AT"


def command(*args: str) -> list[str]:
    """The traced ``noise2map`` command line."""
    return [sys.executable, str(SCRIPT), *args]


def environment(trace: Path, kill_at: tuple[int, int] | None = None) -> dict:
    """The traced command's environment; ``kill_at`` (epoch, batch index): the process sends
    itself SIGKILL when that batch arrives (recorded, never trained)."""
    Path(trace).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, ENV: str(trace)}
    env.pop(KILL_ENV, None)
    if kill_at is not None:
        env[KILL_ENV] = ",".join(map(str, kill_at))
    return env


def read_trace(trace: Path) -> list[dict]:
    """Every process's records, in the order each rank wrote them (rank 0's first)."""
    records = []
    for path in sorted(Path(trace).glob("rank*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


STEP_FIELDS = ("epoch", "batch_idx", "step", "sample_epoch", "index")


def steps(records: list[dict]) -> list[tuple]:
    """What each training step was: its place in the run and the samples it trained on."""
    return [tuple(r[k] for k in STEP_FIELDS) for r in records]


def by_process(records: list[dict]) -> list[list[dict]]:
    """The trace split by process, in the order the processes ran."""
    pids = list(dict.fromkeys(r["pid"] for r in records))
    return [[r for r in records if r["pid"] == pid] for pid in pids]


def assert_resumed(trace: list[dict], whole: list[dict], checkpoint: dict, log: str, batches: int) -> None:
    """The rerun restored ``checkpoint`` and carried on from it, not from the start: its first
    step is the checkpoint's optimiser step at the loader's saved position (``batches`` an
    epoch: a checkpoint after the last one resumes at the next epoch's first), and it trained
    on exactly the batches the uninterrupted run trained on from there (its draws keyed by the
    resumed epoch), no more, no fewer. ``log``: the rerun's stderr."""
    *_, resumed = by_process(trace)
    step = checkpoint["global_step"]
    loader = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    epoch, batch = (loader["epoch"] + 1, 0) if loader["done"] >= batches else (loader["epoch"], loader["done"])
    first = resumed[0]
    assert step > 0 and (first["step"], first["epoch"], first["batch_idx"]) == (step, epoch, batch), \
        f"the rerun started at {first}, not at step {step}, epoch {epoch}, batch {batch}"
    assert first["sample_epoch"] == epoch
    rest = [r for r in whole if r["step"] >= step]
    assert steps(resumed) == steps(rest), "the rerun did not carry on where the checkpoint left off"
    total = whole[-1]["step"] + 1
    said = [line for line in log.splitlines() if "optimiser step" in line]
    assert any(f"at optimiser step {step}: epoch {epoch} from batch {batch} of" in line for line in said), said
    assert any(f"this process took optimiser steps {step} to {total}" in line for line in said), said


def _install(trace: Path, kill_at: tuple[int, int] | None) -> None:
    import torch

    from noise2map.training import tasks

    def traced(step):
        def training_step(self, batch, batch_idx):
            trainer = self.trainer
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            record = {"pid": os.getpid(), "rank": trainer.global_rank, "world_size": trainer.world_size,
                      "dist_world_size": torch.distributed.get_world_size() if dist else 1,
                      "step": trainer.global_step, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                      "sample_epoch": self.sample_epoch, "index": batch["index"].tolist()}
            with open(trace / f"rank{trainer.global_rank}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if kill_at == (trainer.current_epoch, batch_idx):  # a hard kill at a known place
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, batch, batch_idx)

        return training_step

    for cls in (tasks.DiscriminativeTask, tasks._Pretraining):
        cls.training_step = traced(cls.training_step)


if __name__ == "__main__":
    if os.environ.get(ENV):
        kill = os.environ.get(KILL_ENV)
        _install(Path(os.environ[ENV]), tuple(int(k) for k in kill.split(",")) if kill else None)
    from noise2map.cli import main

    sys.exit(main())
