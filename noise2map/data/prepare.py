"""Turn each raw data set layout into a tile store of fixed-size samples.

One preparer per prepared data set (:data:`PREPARERS`, one file each under
:mod:`noise2map.data.preparers`); :func:`prepare` dispatches by name and builds the store in
a staging folder beside the old one, swapping it in only when it is complete. The store's
layout and manifest are described in :mod:`noise2map.data.preparers.common`.

Errors: :class:`~noise2map.errors.DataNotFoundError` when a raw directory or file is missing,
:class:`~noise2map.errors.DataFormatError` when a file's content breaks the layout's promise.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from ..errors import UnknownNameError
from .preparers.aid import prepare_aid
from .preparers.imagenet import prepare_imagenet
from .preparers.majortom import prepare_majortom
from .preparers.spacenet7 import prepare_spacenet7_cd, prepare_spacenet7_ss
from .preparers.whu import prepare_whu_ss
from .preparers.whu_cd import prepare_whu_cd
from .preparers.xview2 import prepare_xview2_cd, prepare_xview2_ss

PREPARERS: dict[str, Callable[..., dict]] = {
    "spacenet7-ss": prepare_spacenet7_ss,
    "spacenet7-cd": prepare_spacenet7_cd,
    "whu-ss": prepare_whu_ss,
    "whu-cd": prepare_whu_cd,
    "xview2-ss": prepare_xview2_ss,
    "xview2-cd": prepare_xview2_cd,
    "aid": prepare_aid,
    "imagenet": prepare_imagenet,
    "majortom": prepare_majortom,
}

def prepare(name: str, raw_root, out_dir, tile_size: int, seed: int = 0, num_images=None,
            options: dict | None = None) -> dict:
    """Prepare data set ``name`` from ``raw_root/<raw dir>`` into ``out_dir``; return the manifest.

    ``raw_root`` is the parent of the per-data-set raw dirs (:data:`RAW_DIR_OF`), ``out_dir``
    this data set's prepared dir. ``seed``/``num_images`` matter for the pretraining sets only
    (``aid``, ``imagenet``, ``majortom``); ``options`` are the preparer's switches of the
    released code's behaviour (``noise2map.config.preparation_options``).
    """
    if name not in PREPARERS:
        raise UnknownNameError("prepared data set", name, PREPARERS)
    out_dir = Path(out_dir)
    staging, old = _recover(out_dir)
    try:
        manifest = PREPARERS[name](Path(raw_root), staging, tile_size, seed=seed, num_images=num_images,
                                   **(options or {}))
    except BaseException:  # a bad raw file, a full disk, Ctrl-C: the previous store stays as it was
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def _recover(out_dir: Path) -> tuple[Path, Path]:
    """The staging and retired folders beside ``out_dir``: a store is built in the first and
    swapped in only when complete. Leftovers of a killed run are cleared first, and a store
    retired just before a crash (the swap is two renames) is put back."""
    staging, old = out_dir.parent / f".{out_dir.name}.staging", out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    if old.exists():
        if not out_dir.exists() and (old / "manifest.json").is_file():
            old.rename(out_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)
    return staging, old


__all__ = ["PREPARERS", "prepare"]
