"""WHU aerial building data set (Ji et al. 2019), semantic segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, WHU_DIRNAME, Sources, Split, check_choice, check_same_size, check_tile_size, finish_store,
    natural_key, need_dir, raw_dir, read_label, read_rgb, resize_pil, start_store,
)

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg")


def _whu_base(raw: Path) -> Path:
    for cand in (raw / WHU_DIRNAME, raw):
        if any((cand / s).is_dir() for s in ("train", "val", "test")):
            return cand
    raise DataNotFoundError(
        f"no train/val/test folders under {raw / WHU_DIRNAME} (nor under {raw}). Expected layout: "
        f"{LAYOUTS['whu']} ({README_HINT})."
    )


def _first_dir(parent: Path, names, dataset: str, what: str) -> Path:
    for n in names:
        if (parent / n).is_dir():
            return parent / n
    raise DataNotFoundError(
        f"{what} directory {parent / names[0]} does not exist. Expected layout: "
        f"{LAYOUTS[dataset]} ({README_HINT})."
    )


WHU_SS_MASK_RESIZES = ("bilinear_truncate", "nearest")


def resize_mask_truncated(mask01: np.ndarray, size: int) -> np.ndarray:
    """The released whu_sem.py's mask: PIL bilinear resize of the 0/255 mask, ``ToTensor``
    (÷ 255), ``.long()`` (truncation): 1 only where the resized value is exactly 255, so every
    pixel whose filter window touches background becomes background (the mask is eroded)."""
    return (resize_pil((mask01 * 255).astype(np.uint8), size, Image.BILINEAR) == 255).astype(np.uint8)


def prepare_whu_ss(raw_root, out_dir, tile_size, seed=0, num_images=None,
                   mask_resize: str = "bilinear_truncate") -> dict:
    """WHU aerial building data set, semantic segmentation.

    Rules:
    - Layout: ``whu/3. The cropped image tiles and raster labels/{train,val,test}/{image,label}/``
      (a re-packaged ``whu/{train,val,test}/{Image,Mask}/`` copy is accepted too). The three
      official splits are kept (train 4736 / val 1036 / test 2416 = the paper's 8188).
    - Pairing by file name: every image needs a label of the same file name and vice versa;
      a missing partner is a DataNotFoundError naming it (no pairing by position).
    - Image: 3-band uint8, resized to ``tile_size``² with PIL bilinear (as torchvision
      ``Resize`` in the released code); label: 1-band uint8 with values 0/255 only, mapped
      255 → 1 and resized by ``mask_resize``: ``bilinear_truncate`` (the released code:
      :func:`resize_mask_truncated`, which erodes the mask) or ``nearest`` (keeps it as drawn).
    ``seed`` and ``num_images`` are unused.
    """
    t = check_tile_size(tile_size)
    check_choice("whu_ss_mask_resize", mask_resize, WHU_SS_MASK_RESIZES)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "whu")
    base = _whu_base(raw)
    plan = {}
    for split in ("train", "val", "test"):
        sdir = need_dir(base / split, "whu", f"WHU {split}")
        idir = _first_dir(sdir, ("image", "Image", "images"), "whu", f"WHU {split} image")
        ldir = _first_dir(sdir, ("label", "Mask", "mask", "labels"), "whu", f"WHU {split} label")
        images = sorted(
            (p for p in idir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
            key=lambda p: natural_key(p.name),
        )
        labels = {p.name for p in ldir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
        if not images:
            raise DataNotFoundError(
                f"no image files in {idir}. Expected layout: {LAYOUTS['whu']} ({README_HINT})."
            )
        for p in images:
            if p.name not in labels:
                raise DataNotFoundError(
                    f"label file {ldir / p.name} for image {p} does not exist; every image needs "
                    "a label of the same file name. Re-extract the WHU archive."
                )
        orphans = sorted(labels - {p.name for p in images})
        if orphans:
            raise DataNotFoundError(
                f"image file {idir / orphans[0]} for label {ldir / orphans[0]} does not exist"
                + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else "")
                + "; every label needs an image of the same file name. Re-extract the WHU archive."
            )
        plan[split] = [(p, ldir / p.name) for p in images]
    out_dir = start_store(out_dir)
    splits = {}
    for split, pairs in plan.items():
        acc = splits[split] = Split("ss", t)
        imgs = np.empty((len(pairs), t, t, 3), np.uint8)
        labs = np.empty((len(pairs), t, t), np.uint8)
        rows = []
        for k, (ip, lp) in enumerate(pairs):
            img, lab = read_rgb(ip), read_label(lp)
            check_same_size([(ip, img), (lp, lab)], "whu")
            sources.add(ip)
            sources.add(lp)
            imgs[k] = resize_pil(img, t, Image.BILINEAR)
            labs[k] = (resize_pil(lab, t, Image.NEAREST) if mask_resize == "nearest"
                       else resize_mask_truncated(lab, t))
            rows.append((ip.stem, sources.rel(ip), 0, 0))
        acc.add(rows, images=imgs, labels=labs)
    rules = [
        "Official WHU splits train/val/test kept as distributed.",
        "Image and label paired by identical file name; a missing partner is an error.",
        f"Whole tile resized to {t}x{t}: image PIL bilinear; label (0/255 -> 0/1) "
        + ("nearest neighbour." if mask_resize == "nearest" else
           "PIL bilinear, then 1 only where the resized value is 255 (the released Resize + ToTensor + "
           ".long(): the mask is eroded)."),
    ]
    return finish_store("whu-ss", out_dir, t, splits, rules, sources)


