"""WHU building change detection, in the 256² BIT form."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, WHU_CD_FOLDERS, WHU_CD_LISTS, Sources, Split, check_choice, check_same_size,
    check_tile_size, count_modes, finish_store, need_file, open_label_image, raw_dir, read_rgb, resize_pil,
    start_store, whu_cd_layout_problems,
)

log = logging.getLogger(__name__)

WHU_CD_PAIRS = ("drop_uniform", "drop_empty", "keep_all")
# Pair order within a split: ``sorted`` = the released whu_cd.py's ``sorted(os.listdir(A))``
# (plain string order of the file names); ``list`` = the order of list/<split>.txt.
WHU_CD_ORDERS = ("sorted", "list")
# Change pixels of the label's grey value g (PIL ``convert("L")``, as the release reads every
# label): ``truncate`` = the released ``ToTensor`` (g / 255) + ``.long()``: change only where
# g == 255; ``nonzero`` = change where g > 0.
WHU_CD_LABEL_VALUES = ("truncate", "nonzero")


def read_whu_cd_label(path: Path) -> tuple[np.ndarray, str]:
    """``(grey values uint8 [H, W], PIL mode)``: the label as the released whu_cd.py reads it,
    ``Image.open(...).convert("L")`` whatever its mode (``1`` → 0/255, ``P`` → the luma of its
    palette colours, ``RGB`` → luma, ``L`` as it is)."""
    img = open_label_image(path)
    try:
        grey = np.asarray(img.convert("L"))
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: a label of mode {img.mode} cannot be converted to grey ({exc}).") from exc
    return grey, img.mode


def binarise(grey: np.ndarray, label_values: str) -> np.ndarray:
    """0/1 change mask of the grey values (:data:`WHU_CD_LABEL_VALUES`)."""
    return ((grey == 255) if label_values == "truncate" else (grey > 0)).astype(np.uint8)


def prepare_whu_cd(raw_root, out_dir, tile_size, seed=0, num_images=None, pairs: str = "drop_uniform",
                   order: str = "sorted", label_values: str = "truncate") -> dict:
    """WHU building change detection, from the common 256² BIT form.

    Rules:
    - Layout (:func:`~.common.whu_cd_layout_problems`, the definition acquisition checks
      too): ``whu-cd/{A,B,label}/<name>.png`` with ``whu-cd/list/{train,val,test}.txt``
      (one file name per line); the splits of the list files are kept (``val.txt`` optional).
      A = 2012 (pre), B = 2016 (post).
    - Order within a split (it groups the validation batches): ``order: sorted`` (the
      released whu_cd.py's ``sorted(os.listdir(A))``: plain string order of the names) or
      ``list`` (the list file's order).
    - Label: read as the released code reads it, PIL ``convert("L")`` of any mode (``1``,
      ``L``, ``P``, ``RGB``, ...; the modes seen are counted in the manifest's
      ``label_modes``), grey value g. Change where g == 255 (``label_values: truncate``, the
      released ``ToTensor`` + ``.long()``: a 0/1 label is all no-change) or where g > 0
      (``nonzero``). ``labels_not_0_255`` counts the labels where the two differ.
    - Pair filter, in every split, on the raw label before any resize (numbers dropped in
      the manifest's ``dropped``): ``pairs: drop_uniform`` (the released whu_cd.py: keep a
      pair only if its grey label holds more than one value) drops a uniform label (all 0,
      all 255, or all of any one value); ``drop_empty`` drops the pairs without a change pixel
      (the paper text: "pairs with no change removed"); ``keep_all`` none.
    - Tiles that are not ``tile_size``² are resized: images PIL bilinear, label nearest
      neighbour (the released code does not resize: its tiles are 256² already).
    ``seed`` and ``num_images`` are unused.
    """
    t = check_tile_size(tile_size)
    check_choice("whu_cd_pairs", pairs, WHU_CD_PAIRS)
    check_choice("whu_cd_order", order, WHU_CD_ORDERS)
    check_choice("whu_cd_label_values", label_values, WHU_CD_LABEL_VALUES)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "whu-cd")
    problems = whu_cd_layout_problems(raw)
    if problems:
        raise DataNotFoundError(f"{problems[0]}. Expected layout: {LAYOUTS['whu-cd']} ({README_HINT}).")
    dirs = {k: raw / k for k in WHU_CD_FOLDERS}
    plan = {}
    for split, required in WHU_CD_LISTS.items():
        lst = raw / "list" / f"{split}.txt"
        if not required and not lst.is_file():
            continue
        sources.add(lst)
        names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        for n in names:
            for k, d in dirs.items():
                need_file(d / n, "whu-cd", f"WHU-CD {k} file listed in {lst.name}:")
        plan[split] = sorted(names) if order == "sorted" else names
    out_dir = start_store(out_dir)
    splits, dropped, modes, not_binary = {}, {}, [], 0
    for split, names in plan.items():
        acc = splits[split] = Split("cd", t)
        pre, post, labs, rows = [], [], [], []
        dropped[split] = 0
        for n in names:
            pa, pb, pl = dirs["A"] / n, dirs["B"] / n, dirs["label"] / n
            grey, mode = read_whu_cd_label(pl)
            sources.add(pl)
            modes.append(mode)
            lab = binarise(grey, label_values)
            if not np.isin(grey, (0, 255)).all():
                not_binary += 1
            uniform = bool((grey == grey.flat[0]).all())
            if (pairs == "drop_uniform" and uniform) or (pairs == "drop_empty" and not lab.any()):
                dropped[split] += 1
                continue
            a, b = read_rgb(pa), read_rgb(pb)
            check_same_size([(pa, a), (pb, b), (pl, lab)], "whu-cd")
            sources.add(pa)
            sources.add(pb)
            pre.append(resize_pil(a, t, Image.BILINEAR))
            post.append(resize_pil(b, t, Image.BILINEAR))
            labs.append(resize_pil(lab, t, Image.NEAREST))
            rows.append((Path(n).stem, f"{sources.rel(pa)};{sources.rel(pb)}", 0, 0))
        if rows:
            acc.add(rows, pre=np.stack(pre), post=np.stack(post), labels=np.stack(labs))
    label_modes = count_modes(modes)
    if not_binary:
        log.warning("whu-cd: %d label(s) hold grey values other than 0/255; change = %s (recorded in the manifest)",
                    not_binary, "value 255 only (the released ToTensor + .long())" if label_values == "truncate"
                    else "value > 0")
    rules = [
        "Splits from list/{train,val,test}.txt kept as distributed.",
        ("Pairs of a split in plain string order of their file names (the released sorted(os.listdir(A)))."
         if order == "sorted" else "Pairs of a split in the order of its list file."),
        "pre = A (2012), post = B (2016).",
        "Label read as the released whu_cd.py reads it, PIL convert('L') (modes "
        + ", ".join(f"{m} {n}" for m, n in label_modes.items()) + "); change = "
        + ("grey value 255 only (the released ToTensor + .long(): values 1-254 are no change)."
           if label_values == "truncate" else "grey value > 0."),
        {"drop_uniform": "Pairs whose grey label holds a single value (all no-change, all change) are dropped in "
                         "every split (the released whu_cd.py keeps a pair only if torch.unique finds > 1 value).",
         "drop_empty": "Pairs whose label has no changed pixel are dropped in every split.",
         "keep_all": "Every listed pair is kept."}[pairs],
        f"Tiles not {t}x{t} are resized: images PIL bilinear, label nearest neighbour.",
    ]
    return finish_store("whu-cd", out_dir, t, splits, rules, sources, dropped=dropped, label_modes=label_modes,
                        labels_not_0_255=not_binary)
