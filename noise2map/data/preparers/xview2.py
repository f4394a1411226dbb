"""xView2 / xBD santa-rosa-wildfire (Gupta et al. 2019): damaged buildings, SS and CD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry
from rasterio.features import rasterize

from ...errors import DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, TASK_OF, Sources, Split, check_choice, check_same_size, check_tile_size, finish_store,
    need_dir, need_file, raw_dir, read_rgb, resize_bilinear_cv2, start_store,
)

XVIEW2_DISASTER = "santa-rosa-wildfire"
XVIEW2_DAMAGED = ("minor-damage", "major-damage", "destroyed")

def _wkt_polygons(text: str, path: Path) -> list[dict]:
    """GeoJSON polygon dicts (2-D, holes kept) of one xBD WKT POLYGON or MULTIPOLYGON, parsed
    by shapely; EMPTY gives none."""
    try:
        geom = shapely.from_wkt(text) if isinstance(text, str) else None
    except shapely.errors.ShapelyError as exc:
        raise DataFormatError(f"{path}: WKT {text[:40]!r} cannot be read ({exc}); re-extract the label.") from exc
    if geom is None or geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise DataFormatError(f"{path}: WKT {str(text)[:40]!r} is not a POLYGON or MULTIPOLYGON.")
    parts = [] if geom.is_empty else getattr(geom, "geoms", [geom])
    return [shapely.geometry.mapping(shapely.force_2d(part)) for part in parts]


def _xview2_mask(label_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """0/255 mask of the damaged buildings of a post-disaster xBD label, at ``shape``."""
    try:
        obj = json.loads(Path(label_path).read_text())
        feats = obj["features"]["xy"]
        meta = obj.get("metadata", {})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DataFormatError(
            f"{label_path}: not an xBD label (expected features.xy with WKT polygons): {exc!r}"
        ) from exc
    h, w = shape
    mh, mw = meta.get("height"), meta.get("width")
    if (mh is not None and int(mh) != h) or (mw is not None and int(mw) != w):
        raise DataFormatError(
            f"{label_path}: metadata size {mw}x{mh} does not match the image size {w}x{h}."
        )
    shapes = []
    n_damaged = 0
    for f in feats:
        props = f.get("properties", {})
        if props.get("feature_type", "building") != "building":
            continue
        if props.get("subtype") not in XVIEW2_DAMAGED:
            continue
        n_damaged += 1
        shapes += [(g, 255) for g in _wkt_polygons(f.get("wkt"), label_path)]
    if not shapes:
        return np.zeros(shape, np.uint8), n_damaged
    return rasterize(shapes, out_shape=shape, fill=0, dtype="uint8"), n_damaged


XVIEW2_CD_PAIRS = ("keep_all", "drop_empty")


def _prepare_xview2(name: str, raw_root, out_dir, tile_size: int, pairs: str = "keep_all") -> dict:
    task = TASK_OF[name]
    check_choice("xview2_cd_pairs", pairs, XVIEW2_CD_PAIRS)
    t = tile_size
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "xview2")
    plan, ignored = {}, {}
    for split in ("train", "test"):
        sdir = need_dir(raw / split, "xview2", f"xView2 {split}")
        idir = need_dir(sdir / "images", "xview2", f"xView2 {split} images")
        ldir = need_dir(sdir / "labels", "xview2", f"xView2 {split} labels")
        all_pre = sorted(idir.glob("*_pre_disaster.png"))
        pres = [p for p in all_pre if p.name.startswith(XVIEW2_DISASTER + "_")]
        ignored[split] = len(all_pre) - len(pres)
        if not pres:
            raise DataNotFoundError(
                f"no {XVIEW2_DISASTER}_*_pre_disaster.png in {idir}. Expected layout: "
                f"{LAYOUTS['xview2']} ({README_HINT})."
            )
        items = []
        for pre in pres:
            post = pre.with_name(pre.name.replace("_pre_disaster", "_post_disaster"))
            label = ldir / (post.stem + ".json")
            need_file(post, "xview2", f"post-disaster image for {pre.name}:")
            need_file(label, "xview2", f"post-disaster label for {pre.name}:")
            items.append((pre, post, label))
        plan[split] = items
    out_dir = start_store(out_dir)
    splits, dropped = {}, {}
    for split, items in plan.items():
        acc = splits[split] = Split(task, t)
        dropped[split] = 0
        pre_l, post_l, lab_l, rows = [], [], [], []
        for pre_p, post_p, lab_p in items:
            pre = read_rgb(pre_p)
            post = read_rgb(post_p) if task == "cd" else None
            mask255, _ = _xview2_mask(lab_p, pre.shape[:2])
            sources.add(lab_p)
            # released code: cv2.resize (bilinear) of the 0/255 mask, then /255 > 0.5
            mask = (resize_bilinear_cv2(mask255, t) > 127).astype(np.uint8)
            if task == "cd":
                check_same_size([(pre_p, pre), (post_p, post)], "xview2")
                if pairs == "drop_empty" and not mask.any():
                    dropped[split] += 1
                    continue
                sources.add(post_p)
                post_l.append(resize_bilinear_cv2(post, t))
            sources.add(pre_p)
            pre_l.append(resize_bilinear_cv2(pre, t))
            lab_l.append(mask)
            stem = pre_p.name[: -len("_pre_disaster.png")]
            src = sources.rel(pre_p) + (f";{sources.rel(post_p)}" if task == "cd" else "")
            rows.append((stem, src, 0, 0))
        if rows:
            if task == "cd":
                acc.add(rows, pre=np.stack(pre_l), post=np.stack(post_l), labels=np.stack(lab_l))
            else:
                acc.add(rows, images=np.stack(pre_l), labels=np.stack(lab_l))
    rules = [
        f"Only {XVIEW2_DISASTER} files are used; other disasters are ignored (counted in 'ignored').",
        "Mask = damaged buildings: the POST-disaster label's building polygons (features.xy WKT) "
        "whose subtype is minor-damage, major-damage or destroyed, filled at the image size; "
        "no-damage and un-classified buildings are background.",
        f"Resized {t}x{t} as the released code (cv2 INTER_LINEAR semantics): images bilinear; "
        "mask 0/255 bilinear, rounded to uint8, then /255 > 0.5.",
        "Splits: xView2 train and test (no val split in xView2; validation uses test).",
    ]
    if task == "cd" and pairs == "drop_empty":
        rules.append(
            "CD sample = (pre image, post image, mask); pairs whose resized mask is empty are "
            "dropped (xview2_cd_pairs: drop_empty) [unverified: one reading of 150 CD pairs vs 291 "
            "SS masks in the paper]."
        )
    elif task == "cd":
        rules.append("CD sample = (pre image, post image, mask); every pair kept, empty masks included "
                     "(the released xview2_cd.py reads the SS file list).")
    else:
        rules.append("SS sample = (pre-disaster image, mask); all pairs kept, empty masks included.")
    extra = {"ignored_other_disasters": ignored}
    if task == "cd":
        extra["dropped"] = dropped
    return finish_store(name, out_dir, t, splits, rules, sources, **extra)


def prepare_xview2_ss(raw_root, out_dir, tile_size, seed=0, num_images=None) -> dict:
    """xView2 (xBD) santa-rosa-wildfire, semantic segmentation of damaged buildings.

    Rules:
    - Only ``santa-rosa-wildfire_*`` files of ``xview2/{train,test}/{images,labels}``; other
      disasters are ignored. Splits train and test (xView2 has no val).
    - Mask = damaged buildings: the POST label's building polygons (``features.xy`` WKT) whose
      ``subtype`` is minor-damage, major-damage or destroyed, filled at the image size
      (no-damage and un-classified → background). The label's metadata width/height must match
      the image.
    - Resize to ``tile_size``² as the released code (``cv2.resize`` INTER_LINEAR semantics,
      reimplemented in numpy): image bilinear; mask 0/255 bilinear, rounded, then /255 > 0.5.
    - SS sample = (PRE-disaster image, mask); every pair is kept, empty masks included.
    ``seed`` and ``num_images`` are unused.
    """
    return _prepare_xview2("xview2-ss", raw_root, out_dir, check_tile_size(tile_size))


def prepare_xview2_cd(raw_root, out_dir, tile_size, seed=0, num_images=None, pairs: str = "keep_all") -> dict:
    """xView2 (xBD) santa-rosa-wildfire, change (damage) detection.

    Rules as :func:`prepare_xview2_ss` for files, mask and resizing, and:
    - CD sample = (pre image, post image, mask).
    - ``pairs``: ``keep_all`` (the released xview2_cd.py, which reads the SS file list: empty
      masks kept) or ``drop_empty`` (pairs whose resized mask is empty dropped, one reading of
      why the paper has 150 CD pairs but 291 SS masks [unverified]; the numbers dropped are in
      the manifest's ``dropped``).
    ``seed`` and ``num_images`` are unused.
    """
    return _prepare_xview2("xview2-cd", raw_root, out_dir, check_tile_size(tile_size), pairs)


# --------------------------------------------------------------------------------------------
