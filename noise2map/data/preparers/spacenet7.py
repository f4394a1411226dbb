"""SpaceNet7 (Van Etten et al. 2021): building segmentation and monthly building change."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path

import numpy as np

from ...errors import DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, TASK_OF, Sources, Split, check_choice, check_tile_size, finish_store, grid_tiles, need_dir,
    raw_dir, read_tif, resize_nearest_gdal, start_store,
)
# hafner_raster and pixel_centre_raster are this data set's label rules: importable from here too
from .rasters import LabelRasters, hafner_raster, labels_raster_path, pixel_centre_raster  # noqa: F401

log = logging.getLogger(__name__)

# Hafner et al. 2023 AOI split of the SpaceNet7 train tarball, as in the released code.
SPACENET7_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "L15-0331E-1257N_1327_3160_13", "L15-0358E-1220N_1433_3310_13",
        "L15-0457E-1135N_1831_3648_13", "L15-0487E-1246N_1950_3207_13",
        "L15-0577E-1243N_2309_3217_13", "L15-0586E-1127N_2345_3680_13",
        "L15-0595E-1278N_2383_3079_13", "L15-0632E-0892N_2528_4620_13",
        "L15-0683E-1006N_2732_4164_13", "L15-0924E-1108N_3699_3757_13",
        "L15-1015E-1062N_4061_3941_13", "L15-1138E-1216N_4553_3325_13",
        "L15-1203E-1203N_4815_3378_13", "L15-1204E-1202N_4816_3380_13",
        "L15-1209E-1113N_4838_3737_13", "L15-1210E-1025N_4840_4088_13",
        "L15-1276E-1107N_5105_3761_13", "L15-1298E-1322N_5193_2903_13",
        "L15-1389E-1284N_5557_3054_13", "L15-1438E-1134N_5753_3655_13",
        "L15-1439E-1134N_5759_3655_13", "L15-1481E-1119N_5927_3715_13",
        "L15-1538E-1163N_6154_3539_13", "L15-1615E-1206N_6460_3366_13",
        "L15-1669E-1153N_6678_3579_13", "L15-1669E-1160N_6679_3549_13",
        "L15-1672E-1207N_6691_3363_13", "L15-1703E-1219N_6813_3313_13",
        "L15-1709E-1112N_6838_3742_13", "L15-1716E-1211N_6864_3345_13",
    ),
    "val": (
        "L15-0357E-1223N_1429_3296_13", "L15-0361E-1300N_1446_2989_13",
        "L15-0368E-1245N_1474_3210_13", "L15-0566E-1185N_2265_3451_13",
        "L15-0614E-0946N_2459_4406_13", "L15-0760E-0887N_3041_4643_13",
        "L15-1014E-1375N_4056_2688_13", "L15-1049E-1370N_4196_2710_13",
        "L15-1185E-0935N_4742_4450_13", "L15-1289E-1169N_5156_3514_13",
        "L15-1296E-1198N_5184_3399_13", "L15-1615E-1205N_6460_3370_13",
        "L15-1617E-1207N_6468_3360_13", "L15-1669E-1160N_6678_3548_13",
        "L15-1748E-1247N_6993_3202_13",
    ),
    "test": (
        "L15-0387E-1276N_1549_3087_13", "L15-0434E-1218N_1736_3318_13",
        "L15-0506E-1204N_2027_3374_13", "L15-0544E-1228N_2176_3279_13",
        "L15-0977E-1187N_3911_3441_13", "L15-1025E-1366N_4102_2726_13",
        "L15-1172E-1306N_4688_2967_13", "L15-1200E-0847N_4802_4803_13",
        "L15-1204E-1204N_4819_3372_13", "L15-1335E-1166N_5342_3524_13",
        "L15-1479E-1101N_5916_3785_13", "L15-1690E-1211N_6763_3346_13",
        "L15-1691E-1211N_6764_3347_13", "L15-1848E-0793N_7394_5018_13",
    ),
}
# The train tarball's 60th AOI: in none of Hafner et al.'s lists and none of their
# metadata_train.json's usable months (20 months), so the release never read it.
SPACENET7_EXCLUDED_AOIS: frozenset[str] = frozenset({"L15-0571E-1075N_2287_3888_13"})
# What the release's inputs count on the full train tarball with metadata_train.json
# (59 split AOIs: 599 / 319 / 301 usable months x 16 tiles = the paper's 19,504).
SPACENET7_EXPECTED = {"AOI folders": 60, "monthly mosaics": 1423, "usable months": 1219, "SS tiles": 19504}
# Hafner et al.'s month list: SebastianHafner/SemiSupervisedMultiModalCD, dataset/metadata_train.json at
# the commit that holds it (that repository has no licence file: acquisition fetches it, nothing ships it).
METADATA_FILE = "metadata_train.json"
HAFNER_COMMIT = "704d4fdb25f9efb03dbda7cc339761dc15c18d9a"
METADATA_URL = (f"https://raw.githubusercontent.com/SebastianHafner/SemiSupervisedMultiModalCD/{HAFNER_COMMIT}/"
                "dataset/metadata_train.json")
METADATA_PAGE = f"https://github.com/SebastianHafner/SemiSupervisedMultiModalCD/blob/{HAFNER_COMMIT}/dataset/metadata_train.json"
METADATA_SHA256 = "c5973861cdeabc49eee9265dc5b616f37318ecd0dec893d1033b81a3c7690a68"
# SpaceNet7

_SN7_IMAGE = re.compile(r"^global_monthly_(\d{4})_(\d{2})_mosaic_(.+)\.tif$")


def _sn7_scan(raw_root: Path, sources: Sources):
    """{split: [(aoi, [(date, image path, label path or None), ...]), ...]}, the AOIs outside the
    split, the AOIs excluded by name and the number of monthly mosaics of every AOI folder."""
    raw = raw_dir(raw_root, "spacenet7")
    train = need_dir(raw / "train", "spacenet7", "SpaceNet7 train")
    aois = sorted(d.name for d in train.iterdir() if d.is_dir())
    if not aois:
        raise DataNotFoundError(
            f"no AOI folders in {train}. Expected layout: {LAYOUTS['spacenet7']} ({README_HINT})."
        )
    split_of = {a: s for s, lst in SPACENET7_SPLIT.items() for a in lst}
    # The train tarball has 60 AOIs, the split lists 59: an AOI in no list is not used, and
    # the manifest names it (outside_split) so the difference is visible, not silent.
    outside = [a for a in aois if a not in split_of and a not in SPACENET7_EXCLUDED_AOIS]
    if outside:
        log.warning("SpaceNet7 AOIs in none of the Hafner lists, not used: %s", ", ".join(outside))
    excluded = [a for a in aois if a in SPACENET7_EXCLUDED_AOIS]
    mosaics = sum(1 for a in aois for p in (train / a / "images_masked").glob("*.tif") if _SN7_IMAGE.match(p.name))
    by_split: dict[str, list] = {s: [] for s in SPACENET7_SPLIT}
    for aoi in aois:
        if aoi in SPACENET7_EXCLUDED_AOIS or aoi not in split_of:
            continue
        img_dir = need_dir(train / aoi / "images_masked", "spacenet7", f"AOI {aoi} images_masked")
        months = []
        for path in sorted(img_dir.glob("*.tif")):
            m = _SN7_IMAGE.match(path.name)
            if not m:
                continue
            if m.group(3) != aoi:
                raise DataFormatError(
                    f"{path}: the file name names AOI {m.group(3)} but lies in the folder of {aoi}; "
                    "re-extract the archive."
                )
            label = train / aoi / "labels_match_pix" / f"{path.stem}_Buildings.geojson"
            labelled = label.is_file() or labels_raster_path(label).is_file()
            months.append((date(int(m.group(1)), int(m.group(2)), 1), path, label if labelled else None))
        if not months:
            raise DataNotFoundError(
                f"no global_monthly_<YYYY>_<MM>_mosaic_{aoi}.tif in {img_dir}. Expected layout: "
                f"{LAYOUTS['spacenet7']} ({README_HINT})."
            )
        months.sort(key=lambda x: x[0])
        by_split[split_of[aoi]].append((aoi, months))
    return by_split, outside, excluded, mosaics


def _sn7_mosaic(path: Path, sources: Sources) -> np.ndarray:
    arr = read_tif(path)
    if arr.shape[-1] not in (3, 4):
        raise DataFormatError(
            f"{path}: {arr.shape[-1]} bands, expected 4 (RGB + alpha) as in images_masked; "
            "re-extract the archive."
        )
    sources.add(path)
    return np.ascontiguousarray(arr[..., :3])  # alpha dropped


SPACENET7_SS_MONTHS = ("usable", "labelled")



def _sn7_usable(raw: Path, aoi: str, d: date, img_path: Path, metadata: dict | None) -> tuple[bool, str]:
    """(usable, why not) of one month for SpaceNet7-SS: labelled and not masked.

    The released spacenet7_sem.py keeps a month when Hafner et al.'s ``metadata_train.json``
    says ``label`` true and ``mask`` false. Hafner et al. set ``mask`` when the month has an
    unusable-data mask (``train/<aoi>/UDM_masks/``); synthetic data, which has no such list,
    is read by that rule (``metadata`` None)."""
    if metadata is not None:
        entry = next((e for e in metadata.get(aoi, []) if (int(e["year"]), int(e["month"])) == (d.year, d.month)),
                     None)
        if entry is None:
            return False, "not in metadata_train.json"
        if entry.get("mask"):
            return False, "mask: true in metadata_train.json"
        if not entry.get("label"):
            return False, "label: false in metadata_train.json"
        return True, ""
    udm = raw / "train" / aoi / "UDM_masks"
    if udm.is_dir() and any(p.name.startswith(img_path.stem) for p in udm.iterdir()):
        return False, "has a UDM_masks file"
    return True, ""


def _sn7_metadata(raw: Path, sources: Sources) -> dict | None:
    """Hafner et al.'s month list; required for real data (the release's month filter)."""
    path = raw / METADATA_FILE
    if not path.is_file():
        if (raw / "SYNTHETIC.json").is_file():
            return None
        raise DataNotFoundError(
            f"{path} does not exist: the released SpaceNet7-SS loader keeps a month only when Hafner et al.'s "
            f"{METADATA_FILE} says label true and mask false. Run `noise2map acquire spacenet7` (it fetches the "
            f"file), or download {METADATA_URL} (sha256 {METADATA_SHA256}) and put it at {path}. "
            "(preparation.spacenet7_ss_months: labelled keeps every labelled month without it.)")
    try:
        metadata = json.loads(path.read_text())
        if not isinstance(metadata, dict):
            raise ValueError("expected an object keyed by AOI")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not Hafner et al.'s metadata_train.json ({exc})") from exc
    sources.add(path)
    return metadata


def _is_pinned_metadata(sources: Sources) -> bool:
    """Whether the month list read is Hafner et al.'s file (its sha256 as pinned for acquisition)."""
    return sources.hashes.get(f"spacenet7/{METADATA_FILE}") == METADATA_SHA256


def _count_checks(found: dict, synthetic: bool) -> tuple[dict, list[str]]:
    """Found vs expected counts of the full train tarball; each difference named."""
    checks = {k: {"found": found[k], "expected": n} for k, n in SPACENET7_EXPECTED.items() if k in found}
    mismatches = [f"{k}: {c['found']}, expected {c['expected']}" for k, c in checks.items()
                  if c["found"] != c["expected"]]
    if mismatches and not synthetic:
        log.warning("SpaceNet7 counts differ from the full train tarball's: %s", "; ".join(mismatches))
    return checks, mismatches


SPACENET7_SS_READ_SIZES = ("nominal", "native")


def nominal_size(n: int, tile: int) -> int:
    """A mosaic side rounded to whole tiles: 1023, 1024 and 1025 px → 1024 at 256² tiles (the
    released SS loader's fixed out_shape)."""
    return max(1, round(n / tile)) * tile


def _prepare_spacenet7(name: str, raw_root, out_dir, tile_size: int, months: str = "usable",
                       read_size: str = "native", label_raster: str = "hafner") -> dict:
    task = TASK_OF[name]
    t = tile_size
    check_choice("spacenet7_ss_months", months, SPACENET7_SS_MONTHS)
    check_choice("spacenet7_ss_read_size", read_size, SPACENET7_SS_READ_SIZES)
    sources = Sources(raw_root)
    labels = LabelRasters(label_raster, sources)
    raw = raw_dir(Path(raw_root), "spacenet7")
    synthetic = (raw / "SYNTHETIC.json").is_file()
    by_split, outside, excluded, n_mosaics = _sn7_scan(Path(raw_root), sources)
    metadata = _sn7_metadata(raw, sources) if task == "ss" and months == "usable" else None
    out_dir = start_store(out_dir)
    splits = {s: Split(task, t) for s in SPACENET7_SPLIT}
    unlabelled, aois_found, masked, used_months = [], {}, {}, 0
    for split, entries in by_split.items():
        aois_found[split] = [aoi for aoi, _ in entries]
        for aoi, dates in entries:
            cache: dict[int, tuple] = {}

            def tiles_of(k: int):
                if k not in cache:
                    d, img_path, lab_path = dates[k]
                    img = _sn7_mosaic(img_path, sources)
                    lab = labels(aoi, lab_path, img.shape[:2])
                    if read_size == "nominal":  # the released SS read: out_shape=(1024, 1024), nearest
                        h, w = img.shape[:2]
                        shape = (nominal_size(h, t), nominal_size(w, t))
                        img, lab = resize_nearest_gdal(img, shape), resize_nearest_gdal(lab, shape)
                    it, nh, nw = grid_tiles(img, t)
                    lt, _, _ = grid_tiles(lab, t)
                    cache[k] = (it, lt, nh, nw, img.shape[:2], img_path)
                return cache[k]

            unlabelled += [sources.rel(p) for _, p, lab in dates if lab is None]
            if task == "ss":
                for k, (d, img_path, lab_path) in enumerate(dates):
                    if lab_path is None:
                        continue
                    if months == "usable":
                        usable, why = _sn7_usable(raw, aoi, d, img_path, metadata)
                        if not usable:
                            masked[sources.rel(img_path)] = why
                            continue
                    it, lt, nh, nw, _, _ = tiles_of(k)
                    rel = sources.rel(img_path)
                    rows = [
                        (f"{aoi}_{d.year}_{d.month:02d}_r{i}_c{j}", rel, i * t, j * t)
                        for i in range(nh) for j in range(nw)
                    ]
                    splits[split].add(rows, images=it, labels=lt)
                    used_months += 1
                    del cache[k]
            else:
                for k in range(len(dates) - 1):
                    d1, p1, l1 = dates[k]
                    d2, p2, l2 = dates[k + 1]
                    if l1 is None or l2 is None:
                        continue
                    it1, lt1, nh, nw, s1, _ = tiles_of(k)
                    it2, lt2, _, _, s2, _ = tiles_of(k + 1)
                    if s1 != s2:
                        raise DataFormatError(
                            f"SpaceNet7 mosaics of one AOI differ in size: {p1} is {s1[1]}x{s1[0]}, "
                            f"{p2} is {s2[1]}x{s2[0]}; re-extract the archive."
                        )
                    src = f"{sources.rel(p1)};{sources.rel(p2)}"
                    tag = f"{aoi}_{d1.year}_{d1.month:02d}_{d2.year}_{d2.month:02d}"
                    rows = [
                        (f"{tag}_r{i}_c{j}", src, i * t, j * t)
                        for i in range(nh) for j in range(nw)
                    ]
                    splits[split].add(rows, pre=it1, post=it2, labels=lt1 ^ lt2)
                    cache.pop(k, None)
    label_rule = (
        "Labels: Hafner et al.'s labels_raster rule (the files the released loaders read): per building of "
        "labels_match_pix/<image>_Buildings.geojson, the outline rounded to whole pixels and filled with 255 by "
        "cv2.fillPoly(..., cv2.LINE_AA), holes filled with 0 the same way, then every pixel < 255 set to 0; an "
        "existing labels_raster/<image>_Buildings.tif is read instead (> 0 = building) and the first of each AOI "
        "compared with the rule (manifest: label_raster)."
        if label_raster == "hafner" else
        "Labels: labels_match_pix/<image>_Buildings.geojson polygons (pixel coordinates) rasterised at the "
        "mosaic size (pixel centre inside polygon = building).")
    rules = [
        "AOI split of Hafner et al. 2023 (SPACENET7_SPLIT: 30 train / 15 val / 14 test AOIs); "
        f"{', '.join(sorted(SPACENET7_EXCLUDED_AOIS))} (in no list, the tarball's 60th AOI) is excluded by name; "
        "other AOI folders in no list are not used (manifest: outside_split).",
        "Images: train/<aoi>/images_masked/*.tif, alpha band dropped (RGB kept).",
        label_rule,
        f"Non-overlapping {t}x{t} tiles in row-major order; mosaics not a multiple of {t} "
        "(e.g. 1023/1025 px) keep the floor number of whole tiles (right/bottom remainder dropped).",
    ]
    if task == "ss":
        rules.append("SS: every month that has a label file; unlabelled months are skipped."
                     if months == "labelled" else
                     "SS: a month is used when it has a label file and is not masked (the released "
                     "spacenet7_sem.py's metadata_train.json filter: label true, mask false; "
                     + ("read from Hafner et al.'s metadata_train.json" if metadata is not None else
                        "synthetic data has no metadata_train.json: 'masked' = the month has a UDM_masks file, "
                        "Hafner et al.'s meaning of the flag")
                     + "); skipped months are listed in the manifest's masked_months.")
        if read_size == "nominal":
            rules.append("SS: mosaic and label resampled (nearest, as rasterio's read with out_shape) to their "
                         f"side rounded to whole {t}-px tiles before tiling: 1023-1025 px -> 1024, 16 tiles of 256².")
    else:
        rules.append(
            "CD: consecutive monthly images (sorted by the year and month in the file name) whose "
            "label files both exist; pre = earlier month, post = later month; label = XOR of the "
            "two building rasters. (The released spacenet7_cd.py also requires the two dates to be "
            ">= 5 days apart, but its dates are day 1 of the month, so that test never drops a pair.)"
        )
    found = {"AOI folders": sum(map(len, aois_found.values())) + len(outside) + len(excluded),
             "monthly mosaics": n_mosaics}
    if task == "ss" and months == "usable":
        found |= {"usable months": used_months, "SS tiles": sum(len(a.rows) for a in splits.values())}
    checks, mismatches = _count_checks(found, synthetic)
    return finish_store(
        name, out_dir, t, splits, rules, sources,
        aois=aois_found, outside_split=outside, excluded_aois=excluded, unlabelled_months=sorted(unlabelled),
        label_raster=labels.record(), count_checks=checks, count_mismatches=mismatches,
        **({} if task == "cd" else {"masked_months": masked,
                                    "month_list": "metadata_train.json" if metadata is not None else "UDM_masks",
                                    "month_list_pinned": _is_pinned_metadata(sources)}),
    )



def prepare_spacenet7_ss(raw_root, out_dir, tile_size, seed=0, num_images=None, months: str = "usable",
                         read_size: str = "nominal", label_raster: str = "hafner") -> dict:
    """SpaceNet7 semantic segmentation (buildings).

    Rules:
    - Split: the Hafner et al. 2023 AOI lists in :data:`SPACENET7_SPLIT`; an AOI folder under
      ``spacenet7/train`` that is in no list is not used and is named in the manifest's
      ``outside_split`` (the tarball has 60 AOIs, the split 59). Listed AOIs that are absent are simply not used.
    - Image: ``images_masked/global_monthly_<YYYY>_<MM>_mosaic_<aoi>.tif``, 4-band uint8,
      alpha band dropped.
    - Label (``label_raster``): ``hafner``, the rule of Hafner et al.'s ``labels_raster/``
      files that the released loaders read (:func:`hafner_raster`; an existing
      ``labels_raster/<image>_Buildings.tif`` is read and compared, :class:`LabelRasters`), or
      ``pixel_centre``, the ``labels_match_pix/<image stem>_Buildings.geojson`` polygons
      rasterised at the mosaic size (:func:`pixel_centre_raster`).
    - Months: without a label file a month is skipped (``unlabelled_months``). ``months:
      usable`` (the released filter) also skips masked months by Hafner et al.'s
      ``spacenet7/metadata_train.json``, required for real data (:func:`_sn7_usable`; listed in
      ``masked_months`` with the reason); ``labelled`` keeps every labelled month.
    - Counts: the manifest's ``count_checks`` compare AOIs, mosaics, usable months and tiles
      with the full train tarball's (:data:`SPACENET7_EXPECTED`); ``count_mismatches`` names
      each difference.
    - Size: ``read_size`` ``nominal`` (the released read at out_shape 1024²: every mosaic and
      label resampled nearest, :func:`resize_nearest_gdal`, to its side rounded to whole tiles,
      :func:`nominal_size`, so 16 tiles of 256² each) or ``native`` (floor-tiled at the
      mosaic's own size: a 1023-px mosaic gives 3 × 3).
    - Tiles: non-overlapping ``tile_size``² tiles, row-major; at native size 1023/1025-px
      mosaics give the floor number of whole tiles per axis.
    ``seed`` and ``num_images`` are unused (the preparation is deterministic).
    """
    return _prepare_spacenet7("spacenet7-ss", raw_root, out_dir, check_tile_size(tile_size), months, read_size,
                              label_raster)


def prepare_spacenet7_cd(raw_root, out_dir, tile_size, seed=0, num_images=None, label_raster: str = "hafner") -> dict:
    """SpaceNet7 building change detection.

    Rules (split, images, labels and tiling as :func:`prepare_spacenet7_ss`):
    - Pairs: consecutive monthly images of an AOI (sorted by the date in the file name, day 1
      of the month) whose two label files both exist. The released code also asks for the two
      dates to be ≥ 5 days apart; on day-1 dates of distinct months that never fails, so it is
      not repeated here. A month without a label breaks the chain: with months 01, 02,
      (03 unlabelled), 04 only the pair 01→02 is formed.
    - pre = earlier month, post = later month; label = XOR of the two building rasters (a
      building that appears or disappears), each by the ``label_raster`` rule.
    ``seed`` and ``num_images`` are unused.
    """
    return _prepare_spacenet7("spacenet7-cd", raw_root, out_dir, check_tile_size(tile_size),
                              label_raster=label_raster)


