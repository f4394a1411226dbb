"""Which checkpoints a run resumes from, and the run folders' states.

A run resumes from ``checkpoints/last.ckpt`` exactly when it is the same run: the same task,
data set, model, seed and variant and the same settings fingerprint (``run_fingerprint``:
what determines the result), started from the same pretrained UNet. Everything outside the
fingerprint (more seeds or models in the preset, figures, bootstrap, ablations, mirrors,
warm start, logger, device count) leaves a killed run resumable.

A checkpoint of another run is never deleted: it is moved to
``checkpoints/stale-<its fingerprint>/``, named in the log and in ``noise2map runs``; only
``noise2map runs --remove-stale`` deletes such folders.

    noise2map runs [--config CFG | --results DIR] [--remove-stale]
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

STALE_PREFIX = "stale-"
# run fields compared on resume besides the fingerprint (those an old run folder may lack are
# skipped: a folder written before a field existed is judged on the others)
IDENTITY = ("task", "dataset", "model", "seed", "variant", "lambda_cd", "lambda_ss", "pretrained_unet",
            "pretrained_unet_sha256", "fingerprint")


def recorded_fields(run: Path) -> dict | None:
    """The ``run:`` block of a run folder's config.yaml (None: no readable record)."""
    path = Path(run) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("run") or {}
    except yaml.YAMLError:
        return None


def same_run(old: dict | None, fields: dict) -> bool:
    """Whether a recorded run is the run ``fields`` describe (the fingerprint must be there)."""
    if not old or old.get("fingerprint") is None:
        return False
    return all(old[k] == fields.get(k) for k in IDENTITY if k in old and k in fields)


def set_aside_stale_checkpoints(run: Path, fields: dict) -> Path | None:
    """Move the checkpoints of another run out of the way (never delete them); the folder
    they went to, or None when there was nothing to move or they belong to this run."""
    ckpts = Path(run) / "checkpoints"
    movable = [p for p in ckpts.iterdir() if not p.name.startswith(STALE_PREFIX)] if ckpts.is_dir() else []
    if not movable:
        return None
    old = recorded_fields(run)
    if same_run(old, fields):
        return None
    target = _free_name(ckpts / f"{STALE_PREFIX}{(old or {}).get('fingerprint') or 'unknown'}")
    target.mkdir()
    for path in movable:
        os.replace(path, target / path.name)  # one rename each, within the folder: nothing copied
    why = ("its config.yaml is missing" if old is None else
           f"fingerprint {old.get('fingerprint')} of {_describe(old)}, this run is {fields.get('fingerprint')}")
    log.warning("%s: checkpoints of another run (%s) moved to %s; this run starts afresh. They are kept: "
                "`noise2map runs` lists them, `noise2map runs --remove-stale` deletes them.", run, why, target)
    return target


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}-{n}")


def _describe(fields: dict) -> str:
    return "/".join(str(fields.get(k)) for k in ("task", "dataset", "model") if fields.get(k) is not None) + (
        f" seed {fields['seed']}" if fields.get("seed") is not None else "")


# --------------------------------------------------------------------------------------------
# the listing


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _epoch(checkpoint: Path) -> int | None:
    """The epoch a Lightning checkpoint was saved in (None if it cannot be read)."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - a listing shows what it can; a broken file reads as "?"
        return None
    return state.get("epoch") if isinstance(state, dict) else None


def run_states(root: Path) -> list[dict]:
    """One row per run folder under ``root`` (every folder holding a config.yaml with a
    ``run:`` block) and one per stale checkpoint folder: folder, fingerprint, state (done /
    resumable / started / stale), the epoch reached and the bytes on disk."""
    rows = []
    for config in sorted(Path(root).rglob("config.yaml")):
        run = config.parent
        fields = recorded_fields(run)
        if not fields or "fingerprint" not in fields:
            continue
        ckpts = run / "checkpoints"
        last, best = ckpts / "last.ckpt", ckpts / "best.ckpt"
        state = "done" if (run / "metrics.json").is_file() else "resumable" if last.is_file() else "started"
        latest = last if last.is_file() else best if best.is_file() else None
        rows.append({"run": str(run), "fingerprint": fields["fingerprint"], "state": state,
                     "epoch": _epoch(latest) if latest else None,
                     "bytes": _size(run) - sum(_size(s) for s in _stale_dirs(ckpts))})
        for stale in _stale_dirs(ckpts):
            ckpt = next((p for p in (stale / "last.ckpt", stale / "best.ckpt") if p.is_file()), None)
            rows.append({"run": str(stale), "fingerprint": stale.name[len(STALE_PREFIX):].split("-")[0],
                         "state": "stale", "epoch": _epoch(ckpt) if ckpt else None, "bytes": _size(stale)})
    return rows


def _stale_dirs(ckpts: Path) -> list[Path]:
    return sorted(p for p in ckpts.glob(f"{STALE_PREFIX}*") if p.is_dir()) if ckpts.is_dir() else []


def format_states(rows: list[dict]) -> str:
    if not rows:
        return "no run folders"
    width = max(len(r["run"]) for r in rows)
    lines = [f"{'run':<{width}}  {'fingerprint':<16}  {'state':<9}  {'epoch':>5}  {'size':>9}"]
    for r in rows:
        epoch = "?" if r["epoch"] is None else r["epoch"]
        lines.append(f"{r['run']:<{width}}  {r['fingerprint']:<16}  {r['state']:<9}  {epoch:>5}  "
                     f"{_human(r['bytes']):>9}")
    stale = [r for r in rows if r["state"] == "stale"]
    if stale:
        lines.append(f"{len(stale)} stale checkpoint folder(s), {_human(sum(r['bytes'] for r in stale))}: "
                     "`noise2map runs --remove-stale` deletes them")
    return "\n".join(lines)


def remove_stale(rows: list[dict]) -> list[dict]:
    """Delete the stale checkpoint folders of a listing (the explicit command); what went."""
    gone = [r for r in rows if r["state"] == "stale"]
    for r in gone:
        shutil.rmtree(r["run"])
    return gone


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


__all__ = ["format_states", "recorded_fields", "remove_stale", "run_states", "same_run",
           "set_aside_stale_checkpoints"]
