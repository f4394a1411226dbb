"""AID (Xia et al. 2017) scene images: the pretraining sample of Noise2Map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, Sources, Split, check_tile_size, finish_store, natural_key, random_crop_offset, raw_dir,
    read_rgb, start_store,
)


AID_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif")


def is_stray(path: Path) -> bool:
    """A file or folder that is no part of the data set: a hidden entry (name starting with
    ".": macOS' ``.DS_Store`` and the ``._<name>`` AppleDouble files beside each file) or
    ``__MACOSX/``, where a zip made by macOS keeps those AppleDouble files."""
    return path.name.startswith(".") or path.name == "__MACOSX"


def aid_images(base: Path) -> list[Path]:
    """The images of the class folders under ``base``: class folder then natural order,
    stray entries (:func:`is_stray`) skipped."""
    return sorted(
        (p for d in base.iterdir() if d.is_dir() and not is_stray(d) for p in d.iterdir()
         if p.is_file() and not is_stray(p) and p.suffix.lower() in AID_IMAGE_SUFFIXES),
        key=lambda p: (p.parent.name.lower(), natural_key(p.name)),
    )


def prepare_aid(raw_root, out_dir, tile_size, seed=0, num_images=None) -> dict:
    """AID scene images, one random crop each, for pretraining.

    Rules:
    - Layout ``aid/AID/<ClassName>/<classname>_<n>.jpg`` (``aid/<ClassName>/`` accepted too);
      files ordered by class folder, then by n. Stray entries are skipped: hidden names
      (``.DS_Store``, ``._<file>.jpg`` AppleDouble files) and ``__MACOSX/`` (see :func:`is_stray`).
    - ``num_images`` images (all if None) drawn without replacement with
      ``numpy.random.default_rng(seed)``, kept in file order; then one ``tile_size``² crop per
      image at an offset drawn from the same generator (uniform over all whole crops).
    - Images must be RGB and at least ``tile_size`` on each side. Single split ``train``;
      no labels.
    """
    t = check_tile_size(tile_size)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "aid")
    base = raw / "AID" if (raw / "AID").is_dir() else raw
    files = aid_images(base)
    if not files:
        raise DataNotFoundError(
            f"no images in class folders under {base}. Expected layout: {LAYOUTS['aid']} ({README_HINT})."
        )
    rng = np.random.default_rng(seed)
    if num_images is None:
        chosen = list(range(len(files)))
    else:
        if int(num_images) > len(files) or int(num_images) < 1:
            raise DataNotFoundError(
                f"num_images={num_images} requested but {base} holds {len(files)} AID images "
                f"(the full AID has 10000). Supply the complete archive ({README_HINT})."
            )
        chosen = sorted(rng.choice(len(files), size=int(num_images), replace=False).tolist())
    out_dir = start_store(out_dir)
    acc = Split("pretrain", t)
    imgs = np.empty((len(chosen), t, t, 3), np.uint8)
    rows = []
    for k, idx in enumerate(chosen):
        p = files[idx]
        img = read_rgb(p)
        h, w = img.shape[:2]
        if h < t or w < t:
            raise DataFormatError(f"{p}: {w}x{h} is smaller than the {t}x{t} crop.")
        sources.add(p)
        y, x = random_crop_offset(rng, h, w, t)
        imgs[k] = img[y: y + t, x: x + t]
        rows.append((f"{p.stem}_y{y}_x{x}", sources.rel(p), y, x))
    acc.add(rows, images=imgs)
    rules = [
        f"{len(chosen)} of {len(files)} images drawn without replacement with seed {seed} "
        "(all when num_images is None), kept in file order.",
        f"One random {t}x{t} crop per image (offset uniform, same seeded generator).",
        "Single split 'train'; no labels.",
        "Files: <ClassName>/<classname>_<n>.jpg in class folder then natural order; hidden entries "
        "(.DS_Store, ._* AppleDouble files) and __MACOSX/ are not images and are skipped.",
    ]
    return finish_store(
        "aid", out_dir, t, {"train": acc}, rules, sources,
        seed=int(seed), num_images=None if num_images is None else int(num_images),
    )


