"""WHU aerial building data set (Ji et al. 2019), semantic segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, WHU_FILE_SUFFIXES, WHU_SPLITS, Sources, Split, check_choice, check_same_size,
    check_tile_size, count_modes, finish_store, natural_key, open_label_image, raw_dir, read_rgb, resize_pil,
    start_store, whu_tree,
)

WHU_SS_MASK_RESIZES = ("bilinear_truncate", "nearest")
# File order within a split: ``sorted`` = the released whu_sem.py's ``sorted(os.listdir(...))``
# (plain string order: 10.tif before 2.tif); ``natural`` = numbers compared as numbers.
WHU_SS_ORDERS = ("sorted", "natural")
# Mask modes the released whu_sem.py can train on: it hands the mask to Resize and ToTensor
# unconverted, so a mask of several bands reaches its loss with several channels.
WHU_SS_MASK_MODES = ("1", "L", "P")


def resize_mask_truncated(mask01: np.ndarray, size: int) -> np.ndarray:
    """The released whu_sem.py's mask: PIL bilinear resize of the 0/255 mask, ``ToTensor``
    (÷ 255), ``.long()`` (truncation): 1 only where the resized value is exactly 255, so every
    pixel whose filter window touches background becomes background (the mask is eroded)."""
    return (resize_pil((mask01 * 255).astype(np.uint8), size, Image.BILINEAR) == 255).astype(np.uint8)


def order_names(names, order: str) -> list:
    """File names in the order of ``order`` (:data:`WHU_SS_ORDERS`)."""
    return sorted(names) if order == "sorted" else sorted(names, key=natural_key)


def read_whu_mask(path: Path) -> tuple[np.ndarray, str]:
    """``(mask 0/1, PIL mode)`` of a WHU mask, read as the released whu_sem.py reads it
    (``Image.open`` without ``convert``; ``ToTensor`` then sees the bits of mode ``1`` × 255,
    the grey values of ``L``, the palette indices of ``P``). Those values must be 0/255 (255 =
    building); another value, or another mode, is an error naming the file."""
    img = open_label_image(path)
    mode = img.mode
    if mode not in WHU_SS_MASK_MODES:
        raise DataFormatError(
            f"{path}: mask mode {mode} ({len(img.getbands())} bands); the released whu_sem.py passes the mask "
            f"unconverted to ToTensor, which gives {len(img.getbands())} channels its loss cannot take. Expected "
            "one of modes 1, L (0/255) or P (palette indices 0/255): convert the masks to single-channel 8-bit.")
    arr = np.asarray(img).astype(np.uint8)
    if mode == "1":
        arr = arr * 255
    bad = (arr != 0) & (arr != 255)
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        what = "palette indices" if mode == "P" else "label values"
        raise DataFormatError(
            f"{path}: {what} {values} other than 0/255 (mode {mode}); the label must be binary 0 = background, "
            "255 = building: the released code's ToTensor + .long() would turn these pixels into background"
            + (" (it reads a palette mask by its indices, not its colours)." if mode == "P" else "."))
    return (arr == 255).astype(np.uint8), mode


def resize_whu_mask(mask01: np.ndarray, mode: str, size: int, mask_resize: str) -> np.ndarray:
    """The mask at ``size``²: modes ``1`` and ``P`` nearest neighbour whatever ``mask_resize``
    says (PIL's ``resize`` forces NEAREST for them, so the released ``Resize`` does too); mode
    ``L`` by ``mask_resize`` (``bilinear_truncate``: :func:`resize_mask_truncated`)."""
    if mode in ("1", "P") or mask_resize == "nearest":
        return resize_pil(mask01, size, Image.NEAREST)
    return resize_mask_truncated(mask01, size)


def _whu_plan(raw: Path, order: str) -> dict[str, list[tuple[Path, Path]]]:
    base, folders, problems = whu_tree(raw)
    if problems:
        raise DataNotFoundError(f"WHU: {problems[0]}. Expected layout: {LAYOUTS['whu']} ({README_HINT}).")
    plan = {}
    for split in WHU_SPLITS:
        idir, ldir = folders[split, "image"], folders[split, "label"]
        names = order_names([p.name for p in idir.iterdir() if p.is_file() and p.suffix.lower() in WHU_FILE_SUFFIXES],
                            order)
        labels = {p.name for p in ldir.iterdir() if p.is_file() and p.suffix.lower() in WHU_FILE_SUFFIXES}
        for n in names:
            if n not in labels:
                raise DataNotFoundError(
                    f"label file {ldir / n} for image {idir / n} does not exist; every image needs "
                    "a label of the same file name. Re-extract the WHU archive."
                )
        orphans = sorted(labels - set(names))
        if orphans:
            raise DataNotFoundError(
                f"image file {idir / orphans[0]} for label {ldir / orphans[0]} does not exist"
                + (f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else "")
                + "; every label needs an image of the same file name. Re-extract the WHU archive."
            )
        plan[split] = [(idir / n, ldir / n) for n in names]
    return plan


def prepare_whu_ss(raw_root, out_dir, tile_size, seed=0, num_images=None,
                   mask_resize: str = "bilinear_truncate", order: str = "sorted") -> dict:
    """WHU aerial building data set, semantic segmentation.

    Rules:
    - Layout (:func:`~.common.whu_tree`, the definition acquisition checks too):
      ``whu/3. The cropped image tiles and raster labels/{train,val,test}/{image,label}/``;
      the folders may be named ``Image``/``Mask`` (any case: the released code's and the
      re-packaged copies' names) and the split folders may sit directly under ``whu/``. The
      three official splits are kept (train 4736 / val 1036 / test 2416 = the paper's 8188).
    - Order within a split (it groups the validation batches): ``order: sorted`` (the
      released whu_sem.py's ``sorted(os.listdir(...))``, plain string order: ``10.tif``
      before ``2.tif``) or ``natural`` (numbers as numbers).
    - Pairing by file name: every image needs a label of the same file name and vice versa;
      a missing partner is a DataNotFoundError naming it (no pairing by position).
    - Image: 3-band uint8, resized to ``tile_size``² with PIL bilinear (as torchvision
      ``Resize`` in the released code). Mask: opened with PIL as the release opens it
      (:func:`read_whu_mask`), its mode recorded (``label_modes`` in the manifest); values
      0/255 only, 255 → 1. Mode ``L`` resized by ``mask_resize``: ``bilinear_truncate`` (the
      released code: :func:`resize_mask_truncated`, which erodes the mask) or ``nearest``
      (keeps it as drawn); modes ``1`` and ``P`` always nearest (PIL forces it for them).
    ``seed`` and ``num_images`` are unused.
    """
    t = check_tile_size(tile_size)
    check_choice("whu_ss_mask_resize", mask_resize, WHU_SS_MASK_RESIZES)
    check_choice("whu_ss_order", order, WHU_SS_ORDERS)
    sources = Sources(raw_root)
    plan = _whu_plan(raw_dir(Path(raw_root), "whu"), order)
    out_dir = start_store(out_dir)
    splits, modes = {}, []
    for split, pairs in plan.items():
        acc = splits[split] = Split("ss", t)
        imgs = np.empty((len(pairs), t, t, 3), np.uint8)
        labs = np.empty((len(pairs), t, t), np.uint8)
        rows = []
        for k, (ip, lp) in enumerate(pairs):
            img, (lab, mode) = read_rgb(ip), read_whu_mask(lp)
            check_same_size([(ip, img), (lp, lab)], "whu")
            sources.add(ip)
            sources.add(lp)
            modes.append(mode)
            imgs[k] = resize_pil(img, t, Image.BILINEAR)
            labs[k] = resize_whu_mask(lab, mode, t, mask_resize)
            rows.append((ip.stem, sources.rel(ip), 0, 0))
        acc.add(rows, images=imgs, labels=labs)
    label_modes = count_modes(modes)
    rules = [
        "Official WHU splits train/val/test kept as distributed.",
        ("Files of a split in plain string order of their names (the released sorted(os.listdir(...)): "
         "10.tif before 2.tif)." if order == "sorted" else
         "Files of a split in natural order of their names (2.tif before 10.tif)."),
        "Image and label paired by identical file name; a missing partner is an error.",
        f"Whole tile resized to {t}x{t}: image PIL bilinear; label (0/255 -> 0/1) "
        + ("nearest neighbour." if mask_resize == "nearest" else
           "PIL bilinear, then 1 only where the resized value is 255 (the released Resize + ToTensor + "
           ".long(): the mask is eroded)."),
        "Masks opened with PIL as the released whu_sem.py opens them (modes "
        + ", ".join(f"{m} {n}" for m, n in label_modes.items())
        + "); a mode 1 or P mask is resized nearest neighbour (PIL forces NEAREST for those modes), "
        "a P mask read by its palette indices (255 = building).",
    ]
    return finish_store("whu-ss", out_dir, t, splits, rules, sources, label_modes=label_modes)
