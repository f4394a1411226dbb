"""xView2 / xBD santa-rosa-wildfire (Gupta et al. 2019): damaged buildings, SS and CD."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
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
XVIEW2_MASKS = ("pre_footprints", "post_damaged")
XVIEW2_PAIRS_KEPT = ("with_mask", "all_labelled")
# The ids of the released loaders' _MISSING set ("Image IDs with missing mask files"): the
# santa-rosa pairs that have no file in the release's masks/ (226 + 74 - 9 = 291, the paper).
XVIEW2_RELEASE_MISSING = {
    "train": ("00000334", "00000192", "00000125", "00000247", "00000327", "00000258", "00000320"),
    "test": ("00000087", "00000289"),
}
XVIEW2_EXPECTED = {"train pairs": 226, "test pairs": 74, "pairs kept": 291}


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


def _xbd_features(label_path: Path) -> list[dict]:
    try:
        return json.loads(Path(label_path).read_text())["features"]["xy"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DataFormatError(
            f"{label_path}: not an xBD label (expected features.xy with WKT polygons): {exc!r}"
        ) from exc


def _footprint_outlines(label_path: Path) -> dict:
    """uid → the exterior ring of each building of a label, as int32 pixel vertices
    (mask_polygons.py's get_feature_info: ``np.array(coords, np.int32)`` truncates; a repeated
    uid keeps its last polygon; holes are not filled)."""
    outlines = {}
    for n, f in enumerate(_xbd_features(label_path)):
        for k, g in enumerate(_wkt_polygons(f.get("wkt"), label_path)):
            uid = (f.get("properties") or {}).get("uid", f"#{n}")
            outlines[uid if k == 0 else f"{uid}#{k}"] = np.array(g["coordinates"][0], np.int32)[:, :2]
    return outlines


def _shrunk(outline: np.ndarray, border: int) -> np.ndarray:
    """mask_polygons.py --border: each vertex moved ``border`` px towards the centroid, per axis."""
    cx, cy = shapely.geometry.Polygon(outline).centroid.coords[0]
    out = []
    for x, y in shapely.geometry.Polygon(outline).exterior.coords:
        x = x + border if x < cx else x - border if x > cx else x
        y = y + border if y < cy else y - border if y > cy else y
        out.append([x, y])
    return np.array(out, np.int32)


def footprint_mask(label_path: Path, shape: tuple[int, int], border: int = 0) -> np.ndarray | None:
    """0/255 mask of every building footprint of a PRE label, as the xView2 baseline's
    ``mask_polygons.py --single-file [--border B]`` writes the ``masks/`` the release reads:
    each polygon filled with 1 by ``cv2.fillPoly``, summed, pixels covered twice set to 0, the
    ones to 255. None where the label has no polygon: that script writes no mask file then."""
    outlines = _footprint_outlines(label_path)
    if not outlines:
        return None
    mask = np.zeros(shape, np.uint8)
    for outline in outlines.values():
        blank = np.zeros(shape, np.uint8)
        cv2.fillPoly(blank, [_shrunk(outline, border) if border > 0 else outline], 1)
        mask += blank
    mask[mask > 1] = 0
    mask[mask == 1] = 255
    return mask


def _release_check(no_pre: dict, no_damaged: dict) -> dict:
    """Which pairs lack a pre-label building and which a damaged post-label building, against
    the 9 ids the release has no mask for: the footprint reading is confirmed on this data
    when the first set equals them."""
    release = {s: sorted(v) for s, v in XVIEW2_RELEASE_MISSING.items()}
    pre = {s: sorted(v) for s, v in no_pre.items()}
    post = {s: sorted(v) for s, v in no_damaged.items()}
    return {"release_missing_masks": release, "no_pre_label_building": pre, "no_damaged_post_building": post,
            "pre_footprints_match_release": pre == release, "post_damaged_match_release": post == release}


XVIEW2_CD_PAIRS = ("keep_all", "drop_empty")


def _prepare_xview2(name: str, raw_root, out_dir, tile_size: int, pairs: str = "keep_all",
                    mask: str = "pre_footprints", pairs_kept: str = "with_mask", border: int = 2) -> dict:
    task = TASK_OF[name]
    check_choice("xview2_cd_pairs", pairs, XVIEW2_CD_PAIRS)
    check_choice("xview2_mask", mask, XVIEW2_MASKS)
    check_choice("xview2_pairs", pairs_kept, XVIEW2_PAIRS_KEPT)
    t = tile_size
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "xview2")
    plan, ignored = _xview2_plan(raw)
    out_dir = start_store(out_dir)
    splits, dropped, no_mask = {}, {}, {}
    no_pre, no_damaged = {}, {}
    for split, items in plan.items():
        acc = splits[split] = Split(task, t)
        dropped[split], no_mask[split], no_pre[split], no_damaged[split] = 0, [], [], []
        pre_l, post_l, lab_l, rows = [], [], [], []
        for pre_p, post_p, pre_lab, post_lab in items:
            stem = pre_p.name[: -len("_pre_disaster.png")]
            xid = stem.rsplit("_", 1)[-1]
            pre = read_rgb(pre_p)
            # the self-check needs only whether the pre label has a polygon; the mask is filled
            # only where it is the one used
            footprints = footprint_mask(pre_lab, pre.shape[:2], border) if mask == "pre_footprints" else None
            has_pre = footprints is not None if mask == "pre_footprints" else bool(_footprint_outlines(pre_lab))
            damaged255, n_damaged = _xview2_mask(post_lab, pre.shape[:2])
            sources.add(pre_lab)
            sources.add(post_lab)
            if not has_pre:
                no_pre[split].append(xid)
            if n_damaged == 0:
                no_damaged[split].append(xid)
            mask255 = footprints if mask == "pre_footprints" else (damaged255 if n_damaged else None)
            if mask255 is None and pairs_kept == "with_mask":
                no_mask[split].append(xid)  # the release's masks/ has no file for it
                continue
            mask255 = np.zeros(pre.shape[:2], np.uint8) if mask255 is None else mask255
            # released code: cv2.resize (bilinear) of the 0/255 mask, then /255 > 0.5
            label = (resize_bilinear_cv2(mask255, t) > 127).astype(np.uint8)
            if task == "cd":
                post = read_rgb(post_p)
                check_same_size([(pre_p, pre), (post_p, post)], "xview2")
                if pairs == "drop_empty" and not label.any():
                    dropped[split] += 1
                    continue
                sources.add(post_p)
                post_l.append(resize_bilinear_cv2(post, t))
            sources.add(pre_p)
            pre_l.append(resize_bilinear_cv2(pre, t))
            lab_l.append(label)
            src = sources.rel(pre_p) + (f";{sources.rel(post_p)}" if task == "cd" else "")
            rows.append((stem, src, 0, 0))
        if rows:
            if task == "cd":
                acc.add(rows, pre=np.stack(pre_l), post=np.stack(post_l), labels=np.stack(lab_l))
            else:
                acc.add(rows, images=np.stack(pre_l), labels=np.stack(lab_l))
    extra = {"ignored_other_disasters": ignored, "mask": mask, "pairs_without_mask": no_mask,
             "release_check": _release_check(no_pre, no_damaged), **_xview2_counts(plan, splits, pairs)}
    if task == "cd":
        extra["dropped"] = dropped
    return finish_store(name, out_dir, t, splits, _xview2_rules(task, t, mask, pairs_kept, border, pairs),
                        sources, **extra)


def _xview2_plan(raw: Path) -> tuple[dict, dict]:
    """{split: [(pre image, post image, pre label, post label)]} of the santa-rosa pairs, and the
    number of other disasters' pairs ignored per split."""
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
            need_file(post, "xview2", f"post-disaster image for {pre.name}:")
            pre_label = need_file(ldir / (pre.stem + ".json"), "xview2", f"pre-disaster label for {pre.name}:")
            post_label = need_file(ldir / (post.stem + ".json"), "xview2", f"post-disaster label for {pre.name}:")
            items.append((pre, post, pre_label, post_label))
        plan[split] = items
    return plan, ignored


def _xview2_counts(plan: dict, splits: dict, pairs: str) -> dict:
    """Found vs the real santa-rosa counts (226 + 74 pairs, 291 kept by the release)."""
    found = {"train pairs": len(plan["train"]), "test pairs": len(plan["test"]),
             "pairs kept": sum(len(a.rows) for a in splits.values())}
    checks = {k: {"found": found[k], "expected": n} for k, n in XVIEW2_EXPECTED.items()}
    if pairs != "keep_all":
        checks.pop("pairs kept")
    return {"count_checks": checks, "count_mismatches": [f"{k}: {c['found']}, expected {c['expected']}"
                                                         for k, c in checks.items() if c["found"] != c["expected"]]}


def _xview2_rules(task: str, t: int, mask: str, pairs_kept: str, border: int, pairs: str) -> list[str]:
    rules = [f"Only {XVIEW2_DISASTER} files are used; other disasters are ignored (counted in 'ignored')."]
    if mask == "pre_footprints":
        rules.append(
            "Mask = building footprints of the PRE-disaster label, as the xView2 baseline's utils/mask_polygons.py "
            f"--single-file{f' --border {border}' if border else ''} writes the masks/ the released loaders read "
            "[inferred from the release's layout and its 9 missing masks]: each polygon's exterior ring truncated "
            "to int32 pixels" + (f", every vertex moved {border} px towards the centroid" if border else "")
            + ", filled with cv2.fillPoly; pixels inside two polygons are background.")
    else:
        rules.append("Mask = damaged buildings: the POST-disaster label's building polygons (features.xy WKT) "
                     "whose subtype is minor-damage, major-damage or destroyed, filled at the image size; "
                     "no-damage and un-classified buildings are background.")
    rules.append(
        "Pairs: only those the release has a mask for (mask_polygons.py writes none for a label without a "
        "polygon; manifest: pairs_without_mask)" if pairs_kept == "with_mask" else
        "Pairs: every santa-rosa pair with its labels (an empty mask is kept).")
    rules += [
        f"Resized {t}x{t} as the released code (cv2 INTER_LINEAR semantics): images bilinear; "
        "mask 0/255 bilinear, rounded to uint8, then /255 > 0.5.",
        "Splits: xView2 train and test (no val split in xView2; validation uses test).",
        "Self-check (manifest: release_check): the ids without a pre-label building and without a damaged "
        "post-label building, each compared with the 9 ids the release has no mask for.",
    ]
    if task == "cd" and pairs == "drop_empty":
        rules.append(
            "CD sample = (pre image, post image, mask); pairs whose resized mask is empty are "
            "dropped (xview2_cd_pairs: drop_empty) [unverified: one reading of 150 CD pairs vs 291 "
            "SS masks in the paper]."
        )
    elif task == "cd":
        rules.append("CD sample = (pre image, post image, mask); every kept pair, empty masks included "
                     "(the released xview2_cd.py reads the SS file list).")
    else:
        rules.append("SS sample = (pre-disaster image, mask).")
    return rules


def prepare_xview2_ss(raw_root, out_dir, tile_size, seed=0, num_images=None, mask: str = "pre_footprints",
                      pairs_kept: str = "with_mask", border: int = 2) -> dict:
    """xView2 (xBD) santa-rosa-wildfire, building segmentation.

    Rules:
    - Only ``santa-rosa-wildfire_*`` files of ``xview2/{train,test}/{images,labels}``; other
      disasters are ignored. Splits train and test (xView2 has no val).
    - ``mask``: ``pre_footprints`` (the release's ``masks/``, most likely the xView2
      baseline's ``mask_polygons.py --single-file [--border]`` of the PRE labels:
      :func:`footprint_mask`) or ``post_damaged`` (the POST label's minor/major-damage and
      destroyed building polygons, the paper text's "buildings damaged by wildfire"; no-damage
      and un-classified → background; the label's metadata width/height must match the image).
    - ``pairs_kept``: ``with_mask`` (a pair is kept only when the release has a mask for it:
      a pre label with at least one polygon, or, under ``post_damaged``, a damaged building;
      the dropped ids are in ``pairs_without_mask``) or ``all_labelled``.
    - Resize to ``tile_size``² as the released code (``cv2.resize`` INTER_LINEAR semantics,
      reimplemented in numpy): image bilinear; mask 0/255 bilinear, rounded, then /255 > 0.5.
    - SS sample = (PRE-disaster image, mask).
    - Self-check: ``release_check`` lists the ids without a pre-label building and without a
      damaged post-label building, and whether each set equals the release's 9 missing masks.
    ``seed`` and ``num_images`` are unused.
    """
    return _prepare_xview2("xview2-ss", raw_root, out_dir, check_tile_size(tile_size), mask=mask,
                           pairs_kept=pairs_kept, border=border)


def prepare_xview2_cd(raw_root, out_dir, tile_size, seed=0, num_images=None, pairs: str = "keep_all",
                      mask: str = "pre_footprints", pairs_kept: str = "with_mask", border: int = 2) -> dict:
    """xView2 (xBD) santa-rosa-wildfire, change (damage) detection.

    Rules as :func:`prepare_xview2_ss` for files, masks, pairs and resizing, and:
    - CD sample = (pre image, post image, mask).
    - ``pairs``: ``keep_all`` (the released xview2_cd.py, which reads the SS file list: empty
      masks kept) or ``drop_empty`` (pairs whose resized mask is empty dropped, one reading of
      why the paper has 150 CD pairs but 291 SS masks [unverified]; the numbers dropped are in
      the manifest's ``dropped``).
    ``seed`` and ``num_images`` are unused.
    """
    return _prepare_xview2("xview2-cd", raw_root, out_dir, check_tile_size(tile_size), pairs, mask=mask,
                           pairs_kept=pairs_kept, border=border)


# --------------------------------------------------------------------------------------------
