"""ImageNet-1k (ILSVRC2012) images: a Table III pretraining sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, Sources, Split, check_tile_size, finish_store, natural_key, need_dir, random_crop_offset,
    raw_dir, read_pil, start_store,
)

# Table III ablation pretraining sets: ImageNet and MAJOR-TOM


def _check_num_images(num_images, available: int, where: Path, what: str, full: str) -> int:
    """``num_images`` as an int in [1, available] (``available`` when None)."""
    if num_images is None:
        return available
    n = int(num_images)
    if n < 1 or n > available:
        raise DataNotFoundError(
            f"num_images={num_images} requested but {where} holds {available} {what} ({full}). "
            f"Supply the complete data ({README_HINT})."
        )
    return n


def _imagenet_files(raw: Path) -> tuple[Path, list[Path]]:
    """The JPEGs of ``imagenet/val`` (natural order), else of ``imagenet/train/<wnid>/``."""
    val, train = raw / "val", raw / "train"
    exts = (".jpeg", ".jpg")
    if val.is_dir() or not train.is_dir():
        base = need_dir(val, "imagenet", "ImageNet validation")
        files = sorted((p for p in base.iterdir() if p.is_file() and p.suffix.lower() in exts),
                       key=lambda p: natural_key(p.name))
    else:
        base = train
        files = sorted(
            (p for d in train.iterdir() if d.is_dir() for p in d.iterdir()
             if p.is_file() and p.suffix.lower() in exts),
            key=lambda p: (p.parent.name, natural_key(p.name)),
        )
    if not files:
        raise DataNotFoundError(
            f"no JPEG images in {base}. Expected layout: {LAYOUTS['imagenet']} ({README_HINT})."
        )
    return base, files


def prepare_imagenet(raw_root, out_dir, tile_size, seed=0, num_images=None) -> dict:
    """ImageNet-1k (ILSVRC2012) images, one random crop each, for pretraining (Table III).

    Rules (as :func:`prepare_aid`, plus the resize and colour rules ImageNet needs):
    - Layout ``imagenet/val/ILSVRC2012_val_<8 digits>.JPEG`` (the 50,000 validation images,
      natural file order); if there is no ``val/`` folder, ``imagenet/train/<wnid>/*.JPEG``
      (ordered by wnid, then file name).
    - ``num_images`` images (all if None) drawn without replacement with
      ``numpy.random.default_rng(seed)``, kept in file order.
    - Images that are not RGB (ImageNet holds grayscale and a few CMYK JPEGs) are converted
      with PIL ``convert("RGB")``; counted per mode in the manifest's ``converted_to_rgb``.
    - An image whose short side is below ``tile_size`` is first upscaled (PIL bilinear) so that
      its short side equals ``tile_size`` (long side ``int(tile_size * long / short)``, as
      torchvision's ``Resize(int)``); listed in the manifest's ``upscaled``. Larger images are
      not resized.
    - Then one ``tile_size``² crop per image at an offset drawn from the same generator
      (uniform over all whole crops) — a random crop, as for AID. ``row``/``col`` in
      ``tiles.csv`` are offsets in the (upscaled, if so) image. Single split ``train``.
    """
    t = check_tile_size(tile_size)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "imagenet")
    base, files = _imagenet_files(raw)
    rng = np.random.default_rng(seed)
    n = _check_num_images(num_images, len(files), base, "ImageNet images",
                          "the ILSVRC2012 validation set has 50000")
    chosen = (list(range(len(files))) if num_images is None
              else sorted(rng.choice(len(files), size=n, replace=False).tolist()))
    out_dir = start_store(out_dir)
    acc = Split("pretrain", t)
    imgs = np.empty((len(chosen), t, t, 3), np.uint8)
    rows, upscaled, converted = [], {}, {}
    for k, idx in enumerate(chosen):
        p = files[idx]
        img = read_pil(p)
        if img.mode != "RGB":
            converted[img.mode] = converted.get(img.mode, 0) + 1
            img = img.convert("RGB")
        w, h = img.size
        if min(w, h) < t:
            short, long = min(w, h), max(w, h)
            new_long = int(t * long / short)
            size = (t, new_long) if w <= h else (new_long, t)
            img = img.resize(size, Image.BILINEAR)
            upscaled[sources.rel(p)] = [w, h]
        arr = np.asarray(img)
        h, w = arr.shape[:2]
        sources.add(p)
        y, x = random_crop_offset(rng, h, w, t)
        imgs[k] = arr[y: y + t, x: x + t]
        rows.append((f"{p.stem}_y{y}_x{x}", sources.rel(p), y, x))
    acc.add(rows, images=imgs)
    rules = [
        f"Images from {sources.rel(base)}/ in file order; {len(chosen)} of {len(files)} drawn without "
        f"replacement with seed {seed} (all when num_images is None), kept in file order.",
        "Non-RGB JPEGs (grayscale, CMYK) converted with PIL convert('RGB') (counted in converted_to_rgb).",
        f"Images with a side below {t} upscaled (PIL bilinear) to short side {t}, long side "
        f"int({t} * long / short) (listed in upscaled, original width/height); no other resizing.",
        f"One random {t}x{t} crop per image (offset uniform over all whole crops, same seeded generator); "
        "row/col are offsets in the (upscaled) image.",
        "Single split 'train'; no labels.",
    ]
    return finish_store(
        "imagenet", out_dir, t, {"train": acc}, rules, sources,
        seed=int(seed), num_images=None if num_images is None else int(num_images),
        images_available=len(files), converted_to_rgb=dict(sorted(converted.items())),
        upscaled=upscaled,
    )

