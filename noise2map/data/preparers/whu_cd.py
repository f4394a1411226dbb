"""WHU building change detection, in the 256² BIT form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .common import (
    Sources, Split, check_choice, check_same_size, check_tile_size, finish_store, need_dir, need_file, raw_dir,
    read_label, read_rgb, resize_pil, start_store,
)

WHU_CD_PAIRS = ("drop_uniform", "drop_empty", "keep_all")


def prepare_whu_cd(raw_root, out_dir, tile_size, seed=0, num_images=None, pairs: str = "drop_uniform") -> dict:
    """WHU building change detection, from the common 256² BIT form.

    Rules:
    - Layout: ``whu-cd/{A,B,label}/<name>.png`` with ``whu-cd/list/{train,val,test}.txt``
      (one file name per line); the splits of the list files are kept (``val.txt`` optional).
      A = 2012 (pre), B = 2016 (post), label 0/255 single-channel PNG (255 = change).
    - Pair filter, in every split, on the raw label before any resize (numbers dropped in
      the manifest's ``dropped``): ``pairs: drop_uniform`` (the released whu_cd.py) drops a
      pair whose label is all 0 (no change) or all 255 (all change); ``drop_empty`` drops the
      all-0 pairs only (the paper text: "pairs with no change removed"); ``keep_all`` none.
    - Tiles that are not ``tile_size``² are resized: images PIL bilinear, label nearest
      neighbour (the released code does not resize: its tiles are 256² already).
    ``seed`` and ``num_images`` are unused.
    """
    t = check_tile_size(tile_size)
    check_choice("whu_cd_pairs", pairs, WHU_CD_PAIRS)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "whu-cd")
    dirs = {k: need_dir(raw / k, "whu-cd", f"WHU-CD {k}") for k in ("A", "B", "label")}
    list_dir = need_dir(raw / "list", "whu-cd", "WHU-CD list")
    plan = {}
    for split in ("train", "val", "test"):
        lst = list_dir / f"{split}.txt"
        if split == "val" and not lst.is_file():
            continue
        need_file(lst, "whu-cd", f"WHU-CD {split} list")
        sources.add(lst)
        names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        for n in names:
            for k, d in dirs.items():
                need_file(d / n, "whu-cd", f"WHU-CD {k} file listed in {lst.name}:")
        plan[split] = names
    out_dir = start_store(out_dir)
    splits, dropped = {}, {}
    for split, names in plan.items():
        acc = splits[split] = Split("cd", t)
        pre, post, labs, rows = [], [], [], []
        dropped[split] = 0
        for n in names:
            pa, pb, pl = dirs["A"] / n, dirs["B"] / n, dirs["label"] / n
            lab = read_label(pl)
            sources.add(pl)
            if (pairs != "keep_all" and not lab.any()) or (pairs == "drop_uniform" and lab.all()):
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
    rules = [
        "Splits from list/{train,val,test}.txt kept as distributed.",
        "pre = A (2012), post = B (2016), label 0/255 -> 0/1.",
        {"drop_uniform": "Pairs whose label is all no-change or all change are dropped in every split "
                         "(the released whu_cd.py's filter).",
         "drop_empty": "Pairs whose label has no changed pixel are dropped in every split.",
         "keep_all": "Every listed pair is kept."}[pairs],
        f"Tiles not {t}x{t} are resized: images PIL bilinear, label nearest neighbour.",
    ]
    return finish_store("whu-cd", out_dir, t, splits, rules, sources, dropped=dropped)

