"""Pixel geometry of every preparer against its raw source.

Each test writes a tiny raw data set in the real on-disk layout, holding ASYMMETRIC objects
(L-shapes, off-centre rectangles: a transpose, flip or shift moves them) at known pixels and
position-coded images (red = row ramp, green = column ramp, blue = a per-file / per-date tag),
runs the preparer with the paper preset's switches (``workflow/config/paper.yaml``,
``preparation:``) and, where cheap, the corrected ones, and asserts exactly which pixels land
in which stored tile. Expected masks are numpy slices of the drawn shapes, mapped through the
documented resize rule worked out by hand here (or by the library the released loader used,
e.g. rasterio's nearest ``read(out_shape=...)``), never through the preparer's own helpers.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image
from rasterio.enums import Resampling

from noise2map.config import load_config, preparation_options
from noise2map.data import TileDataset, prepare
from noise2map.data.preparers.common import WHU_DIRNAME
from noise2map.data.preparers.spacenet7 import SPACENET7_SPLIT

ROOT = Path(__file__).resolve().parent.parent
PAPER = load_config(ROOT / "workflow/config/paper.yaml")
CORRECTED = load_config(ROOT / "workflow/config/corrected.yaml")


# ------------------------------------------------------------------------------------------
# helpers: position-coded images, hand-drawn masks, raw writers


def ramp(h: int, w: int, blue: int, step: int | None = None) -> np.ndarray:
    """uint8 [h, w, 3]: red = step·row, green = step·col, blue = ``blue``. Every pixel of a
    row/column is distinct and R ≠ G off the diagonal, so any transpose, flip, shift or
    swap of files shows up in the values."""
    step = step or max(1, 255 // max(h, w))
    y, x = np.mgrid[:h, :w]
    return np.stack([step * y, step * x, np.full_like(y, blue)], -1).astype(np.uint8)


def rect_ring(x0, y0, x1, y1):
    """Closed ring (pixel x, y) of the rectangle covering pixels [y0:y1, x0:x1]."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]


def l_ring(x0, y0, x1, y1, xm, ym):
    """Closed ring of an L: the bar [y0:y1, x0:xm] plus the top arm [y0:ym, xm:x1]."""
    return [(x0, y0), (x1, y0), (x1, ym), (xm, ym), (xm, y1), (x0, y1), (x0, y0)]


def l_mask(shape, x0, y0, x1, y1, xm, ym) -> np.ndarray:
    """The pixels whose centre lies inside ``l_ring`` (the rasterize rule): plain slices."""
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:xm] = 1
    m[y0:ym, xm:x1] = 1
    return m


def rect_mask(shape, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def write_tif(path: Path, array_hwc: np.ndarray, crs: str = "EPSG:3857") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, c = array_hwc.shape
    transform = Affine(4.77, 0.0, -8.0e6, 0.0, -4.77, 4.0e6)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype="uint8",
                       crs=crs, transform=transform) as dst:
        dst.write(np.moveaxis(array_hwc, -1, 0))


def read_tif_nearest(path: Path, out_shape) -> np.ndarray:
    """The released SpaceNet7 SS read: rasterio ``read(out_shape=…, resampling=nearest)``."""
    with rasterio.open(path) as src:
        return np.moveaxis(src.read(out_shape=(src.count, *out_shape), resampling=Resampling.nearest), 0, -1)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def assert_pixels(actual, expected) -> None:
    """np.array_equal, but a failure says where: a shifted or mirrored tile differs in a
    pattern, and the first differing pixel with both values names the geometry error."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected {expected.shape}")
    if not np.array_equal(actual, expected):
        diff = np.argwhere(actual != expected)
        at = tuple(int(v) for v in diff[0])
        pixel = at[:2]
        raise AssertionError(
            f"{len(diff)} of {actual.size} values differ; first at {at}: got {actual[pixel].tolist()}, "
            f"expected {expected[pixel].tolist()}"
        )


def rows_of(store: Path, split: str) -> list[dict]:
    with open(store / split / "tiles.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def arrays(store: Path, split: str, *keys: str) -> dict[str, np.ndarray]:
    return {k: np.load(store / split / f"{k}.npy") for k in keys}


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))


def assert_tile_dataset_item(store: Path, split: str, index: int, expected: dict[str, np.ndarray]) -> None:
    """TileDataset must hand out the stored pixels as [3, H, W] without transposing H and W."""
    ds8 = TileDataset(store, split, uint8=True)
    dsf = TileDataset(store, split)
    item8, itemf = ds8[index], dsf[index]
    for key, value in expected.items():
        why = f"TileDataset({store.name}, {split!r})[{index}][{key!r}] is not the stored tile"
        if key == "mask":
            assert torch.equal(item8["mask"], torch.from_numpy(value)), why
            assert torch.equal(itemf["mask"], torch.from_numpy(value.astype(np.int64))), why
        else:
            assert torch.equal(item8[key], chw(value)), why + " as uint8 [3, H, W]"
            assert torch.equal(itemf[key], chw(value).float() / 127.5 - 1.0), why + " as float [3, H, W] in [-1, 1]"


# ------------------------------------------------------------------------------------------
# SpaceNet7: monthly mosaics + labels_match_pix polygons, tiled on a grid

SN7_T = 16
SN7_TRAIN = SPACENET7_SPLIT["train"][0]
SN7_VAL = SPACENET7_SPLIT["val"][0]
SN7_VAL_1023 = SPACENET7_SPLIT["val"][1]
SN7_TEST = SPACENET7_SPLIT["test"][0]  # every split needs samples (an empty split is refused)
# 2 x 3 whole tiles: a non-square mosaic, so a transposed grid cannot line up by chance
SN7_SHAPE = (32, 48)
# like a 1025 x 1023 mosaic at 256² tiles: nominal read 32 x 48, native floor 2 x 2 tiles
SN7_ODD_SHAPE = (33, 47)
# like the real 1023 rows x 1024 columns: nominal read 32 x 48 (a row repeated), native 1 x 3 tiles
SN7_1023_SHAPE = (31, 48)
# an L crossing the tile boundaries y = 16 and x = 32: it spans tiles (0,1) (0,2) (1,1)
SN7_L = dict(x0=21, y0=9, x1=36, y1=20, xm=26, ym=13)
# an off-centre rectangle inside tile (1, 0)
SN7_R = dict(x0=2, y0=25, x1=7, y1=30)
# real labels_match_pix coordinates run from -2.2 to 1024.9 on a 1024-px mosaic: footprints cut
# by the left and the right edge (x -2.2 .. 4 and 44 .. 48.9 on a 48-px mosaic, rows 2..5)
SN7_EDGE_RINGS = [rect_ring(-2.2, 2, 4, 6), rect_ring(44, 2, 48.9, 6)]
SN7_RES, EARTH_R = 4.77, 6378137.0


def sn7_stem(aoi: str, y: int, m: int) -> str:
    return f"global_monthly_{y}_{m:02d}_mosaic_{aoi}"


def write_sn7_month(raw: Path, aoi: str, y: int, m: int, rgb: np.ndarray, rings, udm: bool = False) -> np.ndarray:
    """One month of one AOI as in SN7_buildings_train.tar.gz, with the real files' quirks:
    ``images/`` and ``images_masked/`` RGBA GeoTIFFs (alpha 255, no nodata tag), byte-identical
    unless ``udm`` (then ``UDM_masks/`` marks the top half unusable and images_masked has those
    pixels zeroed); ``labels_match_pix/`` GeoJSON in pixels (x = column, y = row), no ``crs``
    member, properties ``Id``, ``area`` (m²) and in even months ``iou_score``; and ``labels/``
    (CRS84 lon/lat, ``Id`` only, plus a ``_UDM.geojson``) and ``labels_match/`` (EPSG:3857
    metres) holding the same footprints, which a preparer must not read. ``rings=None``: no
    label file. Returns the RGB of images_masked (what the preparer must store)."""
    adir = raw / "spacenet7" / "train" / aoi
    h, w = rgb.shape[:2]
    stem = sn7_stem(aoi, y, m)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], -1)
    write_tif(adir / "images" / f"{stem}.tif", rgba)
    masked = rgba.copy()
    if udm:
        cloud = np.zeros((h, w, 1), np.uint8)
        cloud[: h // 2] = 255
        write_tif(adir / "UDM_masks" / f"{stem}_UDM.tif", cloud)
        masked[: h // 2] = 0
        write_tif(adir / "images_masked" / f"{stem}.tif", masked)
    else:
        (adir / "images_masked").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(adir / "images" / f"{stem}.tif", adir / "images_masked" / f"{stem}.tif")
    if rings is not None:
        def metres(ring):  # write_tif's geotransform
            return [[-8.0e6 + SN7_RES * float(a), 4.0e6 - SN7_RES * float(b)] for a, b in ring]

        def lonlat(ring):
            return [[float(np.degrees(x / EARTH_R)), float(np.degrees(2 * np.arctan(np.exp(y / EARTH_R)) - np.pi / 2))]
                    for x, y in metres(ring)]

        def fc(name, feats, crs=None):
            out = {"type": "FeatureCollection", "name": name}
            if crs:
                out["crs"] = {"type": "name", "properties": {"name": crs}}
            return {**out, "features": feats}

        def props(k, ring):
            xs, ys = np.array(ring, float).T
            area = abs(np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1])) / 2 * SN7_RES ** 2
            return {"Id": k, "area": round(float(area), 6), **({"iou_score": 0.8} if m % 2 == 0 else {})}

        def feature(p, coords):
            return {"type": "Feature", "properties": p, "geometry": {"type": "Polygon", "coordinates": [coords]}}

        name = f"{stem}_Buildings"
        write_json(adir / "labels_match_pix" / f"{name}.geojson", fc(name, [
            feature(props(k, r), [[float(a), float(b)] for a, b in r]) for k, r in enumerate(rings)]))
        write_json(adir / "labels_match" / f"{name}.geojson", fc(name, [
            feature(props(k, r), metres(r)) for k, r in enumerate(rings)], "urn:ogc:def:crs:EPSG::3857"))
        crs84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
        write_json(adir / "labels" / f"{name}.geojson", fc(name, [
            feature({"Id": k}, lonlat(r)) for k, r in enumerate(rings)], crs84))
        udm_rings = [rect_ring(0, 0, w, h // 2)] if udm else []
        write_json(adir / "labels" / f"{stem}_UDM.geojson", fc(f"{stem}_UDM", [
            feature({"Id": k}, lonlat(r)) for k, r in enumerate(udm_rings)], crs84))
    return np.ascontiguousarray(masked[..., :3])


def grid_tiles(a: np.ndarray, t: int):
    """{(i, j): a[i*t:(i+1)*t, j*t:(j+1)*t]} over the whole tiles of ``a``."""
    return {(i, j): a[i * t:(i + 1) * t, j * t:(j + 1) * t]
            for i in range(a.shape[0] // t) for j in range(a.shape[1] // t)}


def sn7_options(name: str, **override) -> dict:
    """The paper preset's SpaceNet7 switches, labels by the pixel-centre rule: these tests check
    the grid, whose expected masks are then plain slices of the drawn shapes. (The paper's
    label_raster, Hafner et al.'s OpenCV fill, is run against its source in
    test_release_data_rules.py.)"""
    opts = preparation_options(PAPER, name)
    assert opts["label_raster"] == "hafner"  # the paper preset
    assert preparation_options(CORRECTED, name)["label_raster"] == "pixel_centre"
    return {**opts, "label_raster": "pixel_centre", **override}


@pytest.mark.parametrize("read_size", ["nominal", "native"])
def test_spacenet7_ss_tiles_hold_the_polygons_and_pixels_at_their_grid_offset(tmp_path, read_size):
    """Every SS tile (i, j) must be source pixels [i·T:(i+1)·T, j·T:(j+1)·T] of its month and
    the L / rectangle polygons rasterised there (centre-of-pixel rule), in row-major order;
    polygons past the mosaic edge (x = -2.2, x = width + 0.9) are cut at the edge; only
    images_masked and labels_match_pix are read (images/, labels/ and labels_match/ lie beside
    them). Val mosaics of 33 x 47 and 31 x 48 (the real 1023 rows x 1024 columns) check the
    released 'nominal' read (rasterio nearest to whole tiles, 32 x 48) against the 'native'
    floor rule (2 x 2 and 1 x 3 tiles)."""
    assert preparation_options(PAPER, "spacenet7-ss") == {"label_raster": "hafner", "months": "usable",
                                                           "read_size": "nominal"}  # the paper preset
    opts = sn7_options("spacenet7-ss", read_size=read_size)
    raw = tmp_path / "raw"
    rings_by_month = {1: [l_ring(**SN7_L)], 2: [l_ring(**SN7_L), rect_ring(**SN7_R), *SN7_EDGE_RINGS]}
    src = {}
    for m, rings in rings_by_month.items():
        src[m] = write_sn7_month(raw, SN7_TRAIN, 2018, m, ramp(*SN7_SHAPE, blue=40 * m), rings)
    # a masked month (UDM file): skipped under 'usable', so no tile may come from it
    write_sn7_month(raw, SN7_TRAIN, 2018, 3, ramp(*SN7_SHAPE, blue=250), [rect_ring(**SN7_R)], udm=True)
    odd = ramp(*SN7_ODD_SHAPE, blue=77)
    odd_rings = [l_ring(**SN7_L), rect_ring(x0=40, y0=27, x1=46, y1=33)]  # touches the odd last row
    write_sn7_month(raw, SN7_VAL, 2019, 5, odd, odd_rings)
    short = ramp(*SN7_1023_SHAPE, blue=99)
    short_rings = [rect_ring(x0=40, y0=20, x1=46, y1=31)]  # touches the last of the 31 rows
    write_sn7_month(raw, SN7_VAL_1023, 2019, 7, short, short_rings)
    write_sn7_month(raw, SN7_TEST, 2020, 1, ramp(*SN7_SHAPE, blue=5), [])
    # Hafner et al.'s month list, which real data needs under 'usable': the UDM month is masked
    months = {SN7_TRAIN: [(2018, 1), (2018, 2), (2018, 3)], SN7_VAL: [(2019, 5)], SN7_VAL_1023: [(2019, 7)],
              SN7_TEST: [(2020, 1)]}
    write_json(raw / "spacenet7" / "metadata_train.json", {
        aoi: [{"aoi_id": aoi, "index": i, "year": y, "month": m, "mask": (aoi, m) == (SN7_TRAIN, 3), "label": True}
              for i, (y, m) in enumerate(ms)] for aoi, ms in months.items()})

    store = tmp_path / "sn7ss"
    manifest = prepare("spacenet7-ss", raw, store, SN7_T, options=opts)
    masked = f"spacenet7/train/{SN7_TRAIN}/images_masked/{sn7_stem(SN7_TRAIN, 2018, 3)}.tif"
    assert manifest["masked_months"] == {masked: "mask: true in metadata_train.json"}
    # only images_masked/ and labels_match_pix/ are read, never images/, labels/ or labels_match/
    assert {s.split("/")[-2] if "/train/" in s else s for s in manifest["sources"]} == {
        "images_masked", "labels_match_pix", "spacenet7/metadata_train.json"}

    masks = {1: l_mask(SN7_SHAPE, **SN7_L), 2: l_mask(SN7_SHAPE, **SN7_L) | rect_mask(SN7_SHAPE, **SN7_R)}
    assert masks[2][25:30, 2:7].all() and masks[2].sum() == 15 * 4 + 5 * 7 + 25
    # the edge footprints by hand: pixel centres x 0.5..3.5 and 44.5..47.5 of rows 2..5
    masks[2] = masks[2] | rect_mask(SN7_SHAPE, 0, 2, 4, 6) | rect_mask(SN7_SHAPE, 44, 2, 48, 6)
    rows, a = rows_of(store, "train"), arrays(store, "train", "images", "labels")
    expected_ids = [f"{SN7_TRAIN}_2018_{m:02d}_r{i}_c{j}" for m in (1, 2) for i in range(2) for j in range(3)]
    assert [r["tile_id"] for r in rows] == expected_ids
    for k, r in enumerate(rows):
        m, i, j = int(r["tile_id"].split("_")[-3]), int(r["tile_id"][-4]), int(r["tile_id"][-1])
        assert (int(r["row"]), int(r["col"])) == (i * SN7_T, j * SN7_T)
        assert_pixels(a["images"][k], grid_tiles(src[m], SN7_T)[i, j])
        assert_pixels(a["labels"][k], grid_tiles(masks[m], SN7_T)[i, j])
    # the L's arm reaches into tile (0, 2) only in rows 9..12, columns 0..3 of that tile
    k02 = expected_ids.index(f"{SN7_TRAIN}_2018_01_r0_c2")
    corner = np.zeros((SN7_T, SN7_T), np.uint8)
    corner[9:13, 0:4] = 1
    assert_pixels(a["labels"][k02], corner)
    # month 2, tile (0, 2): the L's arm plus the right-edge footprint in its last 4 columns
    k02 = expected_ids.index(f"{SN7_TRAIN}_2018_02_r0_c2")
    corner[2:6, 12:16] = 1
    assert_pixels(a["labels"][k02], corner)

    # val: the odd-sized mosaics
    odd_mask = l_mask(SN7_ODD_SHAPE, **SN7_L) | rect_mask(SN7_ODD_SHAPE, x0=40, y0=27, x1=46, y1=33)
    short_mask = rect_mask(SN7_1023_SHAPE, x0=40, y0=20, x1=46, y1=31)
    expected = []  # (tile id, image tile, label tile)
    for aoi, (yy, mm), img, mask in ((SN7_VAL, (2019, 5), odd, odd_mask), (SN7_VAL_1023, (2019, 7), short, short_mask)):
        if read_size == "nominal":
            # the released loader's read, done by rasterio on the raw mosaic and a hand-drawn label
            img_ref = read_tif_nearest(raw / "spacenet7/train" / aoi / "images_masked" /
                                       f"{sn7_stem(aoi, yy, mm)}.tif", (32, 48))[..., :3]
            write_tif(tmp_path / f"{aoi}_label.tif", mask[..., None])
            lab_ref = read_tif_nearest(tmp_path / f"{aoi}_label.tif", (32, 48))[..., 0]
        else:
            img_ref, lab_ref = img, mask
        expected += [(f"{aoi}_{yy}_{mm:02d}_r{i}_c{j}", tile, grid_tiles(lab_ref, SN7_T)[i, j])
                     for (i, j), tile in grid_tiles(img_ref, SN7_T).items()]
        if read_size == "nominal" and aoi == SN7_VAL:
            # 33 -> 32 rows: output row i reads row floor((i + 0.5) * 33 / 32), so row 16 reads 17
            assert_pixels(img_ref[16, 0], [5 * 17, 0, 77])
        elif read_size == "nominal":
            # 31 -> 32 rows: floor((i + 0.5) * 31 / 32) reads row 15 for both i = 15 and 16, row 30 for 31
            assert_pixels(img_ref[[15, 16, 31], 0], [[5 * 15, 0, 99], [5 * 15, 0, 99], [5 * 30, 0, 99]])
            # the footprint's rows 20..30: output rows 21..31 (row 20 reads row 19, background)
            assert lab_ref[21:32, 40:46].all() and lab_ref[21:32].sum() == 11 * 6 and not lab_ref[:21].any()
    vrows, v = rows_of(store, "val"), arrays(store, "val", "images", "labels")
    assert [r["tile_id"] for r in vrows] == [tid for tid, _, _ in expected]
    assert len(expected) == (12 if read_size == "nominal" else 4 + 3)
    for k, (_, tile, lab) in enumerate(expected):
        assert_pixels(v["images"][k], tile)
        assert_pixels(v["labels"][k], lab)
    assert_tile_dataset_item(store, "train", 4, {"image": grid_tiles(src[1], SN7_T)[1, 1],
                                                  "mask": grid_tiles(masks[1], SN7_T)[1, 1]})


def test_spacenet7_cd_pairs_earlier_month_as_pre_and_xor_at_each_grid_offset(tmp_path):
    """CD tile (i, j) of the pair (month k, month k+1) must hold month k's pixels as pre, month
    k+1's as post (the blue tag names the month) and the XOR of their building masks, for
    consecutive FILES (a missing month is skipped, the year boundary sorted by date), at the
    mosaic's native size (33 x 47: floor, 2 x 2 tiles). The March mosaic has a UDM mask: its
    images_masked top half is zero (images/ is not), and the stored post tiles must be zero there."""
    raw = tmp_path / "raw"
    months = [(2017, 12), (2018, 1), (2018, 3)]  # no February file
    tags = {(2017, 12): 30, (2018, 1): 130, (2018, 3): 230}
    # Dec: rectangle only; Jan: + the L (built); Mar: the rectangle is gone (demolished)
    rings = {(2017, 12): [rect_ring(**SN7_R)], (2018, 1): [rect_ring(**SN7_R), l_ring(**SN7_L)],
             (2018, 3): [l_ring(**SN7_L)]}
    src = {}
    for ym in months:
        src[ym] = write_sn7_month(raw, SN7_TRAIN, *ym, ramp(*SN7_SHAPE, blue=tags[ym]), rings[ym],
                                  udm=ym == (2018, 3))
    assert not src[2018, 3][:16].any() and (src[2018, 3][16:, ..., 2] == 230).all()
    odd = {(2019, 5): ramp(*SN7_ODD_SHAPE, blue=60), (2019, 6): ramp(*SN7_ODD_SHAPE, blue=160)}
    odd_rings = {(2019, 5): [], (2019, 6): [rect_ring(x0=20, y0=17, x1=31, y1=22)]}
    for ym, img in odd.items():
        write_sn7_month(raw, SN7_VAL, *ym, img, odd_rings[ym])
    for ym in ((2020, 1), (2020, 2)):
        write_sn7_month(raw, SN7_TEST, *ym, ramp(*SN7_SHAPE, blue=5), [])

    store = tmp_path / "sn7cd"
    prepare("spacenet7-cd", raw, store, SN7_T, options=sn7_options("spacenet7-cd"))

    built = l_mask(SN7_SHAPE, **SN7_L)
    gone = rect_mask(SN7_SHAPE, **SN7_R)
    pairs = [((2017, 12), (2018, 1), built), ((2018, 1), (2018, 3), gone)]
    rows, a = rows_of(store, "train"), arrays(store, "train", "pre", "post", "labels")
    expected_ids = [f"{SN7_TRAIN}_{p[0]}_{p[1]:02d}_{q[0]}_{q[1]:02d}_r{i}_c{j}"
                    for p, q, _ in pairs for i in range(2) for j in range(3)]
    assert [r["tile_id"] for r in rows] == expected_ids
    k = 0
    for p, q, change in pairs:
        for (i, j), pre in grid_tiles(src[p], SN7_T).items():
            r = rows[k]
            assert (int(r["row"]), int(r["col"])) == (i * SN7_T, j * SN7_T)
            assert r["source"] == (f"spacenet7/train/{SN7_TRAIN}/images_masked/{sn7_stem(SN7_TRAIN, *p)}.tif;"
                                   f"spacenet7/train/{SN7_TRAIN}/images_masked/{sn7_stem(SN7_TRAIN, *q)}.tif")
            assert_pixels(a["pre"][k], pre)
            assert_pixels(a["post"][k], grid_tiles(src[q], SN7_T)[i, j])
            assert_pixels(a["labels"][k], grid_tiles(change, SN7_T)[i, j])
            k += 1
    # the masked top row of March tiles: zero in images_masked, so zero in the store
    assert not a["post"][expected_ids.index(f"{SN7_TRAIN}_2018_01_2018_03_r0_c1")].any()
    # tile (1, 0) of the second pair: exactly the demolished rectangle, at rows 9..13, cols 2..6
    k10 = expected_ids.index(f"{SN7_TRAIN}_2018_01_2018_03_r1_c0")
    hand = np.zeros((SN7_T, SN7_T), np.uint8)
    hand[9:14, 2:7] = 1
    assert_pixels(a["labels"][k10], hand)
    assert (a["pre"][k10][..., 2] == 130).all() and (a["post"][k10][..., 2] == 230).all()

    vrows, v = rows_of(store, "val"), arrays(store, "val", "pre", "post", "labels")
    assert [r["tile_id"] for r in vrows] == [f"{SN7_VAL}_2019_05_2019_06_r{i}_c{j}" for i in range(2) for j in range(2)]
    vchange = rect_mask(SN7_ODD_SHAPE, x0=20, y0=17, x1=31, y1=22)
    for k, (ij, pre) in enumerate(grid_tiles(odd[2019, 5], SN7_T).items()):
        assert_pixels(v["pre"][k], pre)
        assert_pixels(v["post"][k], grid_tiles(odd[2019, 6], SN7_T)[ij])
        assert_pixels(v["labels"][k], grid_tiles(vchange, SN7_T)[ij])
    assert_tile_dataset_item(store, "train", k10, {"pre": grid_tiles(src[2018, 1], SN7_T)[1, 0],
                                                    "post": grid_tiles(src[2018, 3], SN7_T)[1, 0],
                                                    "mask": hand})


# ------------------------------------------------------------------------------------------
# WHU aerial (SS): whole 512² tiles resized to 256² (here 64² -> 32²)

WHU_SRC, WHU_T = 64, 32
WHU_L = dict(x0=10, y0=6, x1=41, y1=45, xm=19, ym=13)  # bar down the left, arm to the right
WHU_R = dict(x0=47, y0=37, x1=60, y1=58)


def pil_bilinear_half_taps(i: int, n: int) -> list[int]:
    """Source pixels PIL's BILINEAR (triangle, support scaled ×2) reads for output pixel i of
    an n -> n/2 resize: 2i-1 .. 2i+2 (weights 1, 3, 3, 1), clipped at the border."""
    return list(range(max(0, 2 * i - 1), min(n - 1, 2 * i + 2) + 1))


def whu_truncated(mask: np.ndarray) -> np.ndarray:
    """Released whu_sem.py mask (Resize bilinear + ToTensor + .long()): 1 only where the
    bilinear value is exactly 255, i.e. every tap of the 2x-down filter lies on the building."""
    n = mask.shape[0]
    return np.array([[mask[np.ix_(pil_bilinear_half_taps(i, n), pil_bilinear_half_taps(j, n))].all()
                      for j in range(n // 2)] for i in range(n // 2)], np.uint8)


@pytest.mark.parametrize("preset", ["paper", "corrected"])
def test_whu_ss_mask_and_image_follow_the_documented_resize_rule(tmp_path, preset):
    """The 64² label with an L and an off-centre rectangle resized to 32² must be the hand-
    computed eroded mask (paper: bilinear + truncation, every PIL tap on the building) or the
    nearest pick of pixels 2i+1 (corrected); the image must be the PIL-bilinear image, whose
    red/green ramps give 8i+2 in the interior (row i -> red, column j -> green)."""
    opts = preparation_options(PAPER if preset == "paper" else CORRECTED, "whu-ss")
    assert opts == {"mask_resize": "bilinear_truncate" if preset == "paper" else "nearest",
                    "order": "sorted" if preset == "paper" else "natural"}
    base = tmp_path / "raw" / "whu" / WHU_DIRNAME
    shape = (WHU_SRC, WHU_SRC)
    content = {  # (split, name): (image, mask); the two train files differ, so a swap shows
        ("train", "2.tif"): (ramp(*shape, blue=20, step=4), l_mask(shape, **WHU_L)),
        ("train", "10.tif"): (ramp(*shape, blue=120, step=4), rect_mask(shape, **WHU_R)),
        ("val", "5.tif"): (ramp(*shape, blue=200, step=4), l_mask(shape, **WHU_L) | rect_mask(shape, **WHU_R)),
        ("test", "7.tif"): (ramp(*shape, blue=250, step=4), rect_mask(shape, **WHU_R)),
    }
    for (split, name), (img, mask) in content.items():
        write_tif(base / split / "image" / name, img, crs="EPSG:2193")
        write_tif(base / split / "label" / name, (mask * 255)[..., None], crs="EPSG:2193")
    store = tmp_path / "whuss"
    prepare("whu-ss", tmp_path / "raw", store, WHU_T, options=opts)

    for split in ("train", "val", "test"):
        names = [n for s, n in content if s == split]  # natural order: 2 before 10
        if opts["order"] == "sorted":
            names = sorted(names)  # the released plain string order: 10 before 2
        rows, a = rows_of(store, split), arrays(store, split, "images", "labels")
        assert [r["tile_id"] for r in rows] == [Path(n).stem for n in names]
        for k, name in enumerate(names):
            img, mask = content[split, name]
            exp_mask = whu_truncated(mask) if preset == "paper" else mask[1::2, 1::2]
            assert_pixels(a["labels"][k], exp_mask)
            # the library the released Resize used, on the raw pixels
            assert_pixels(a["images"][k], np.asarray(Image.fromarray(img).resize((WHU_T, WHU_T), Image.BILINEAR)))
            interior = 8 * np.arange(1, WHU_T - 1) + 2  # 4·(2i + ½): the ramp's value at the tap centre
            assert_pixels(a["images"][k][1:-1, :, 0], np.repeat(interior[:, None], WHU_T, 1))
            assert_pixels(a["images"][k][:, 1:-1, 1], np.repeat(interior[None, :], WHU_T, 0))
            assert (a["images"][k][..., 2] == img[0, 0, 2]).all()
    # spot checks written out by hand: the L bar (x 10..18) after erosion keeps columns 6..8
    # (taps 11..18) and after nearest columns 5..8 (pixels 11, 13, 15, 17)
    k_l = 1 if opts["order"] == "sorted" else 0  # where 2.tif (the L) is in train
    lab = arrays(store, "train", "labels")["labels"][k_l]
    cols = np.flatnonzero(lab[20])
    assert cols.tolist() == ([6, 7, 8] if preset == "paper" else [5, 6, 7, 8])
    expected_first = whu_truncated(l_mask(shape, **WHU_L)) if preset == "paper" else l_mask(shape, **WHU_L)[1::2, 1::2]
    assert_tile_dataset_item(store, "train", k_l, {"mask": expected_first,
                                                  "image": np.asarray(Image.fromarray(content["train", "2.tif"][0]).resize((WHU_T, WHU_T), Image.BILINEAR))})


# ------------------------------------------------------------------------------------------
# WHU-CD (BIT 256² form): A = 2012 (pre), B = 2016 (post)

WHUCD_SRC = 32


def write_whu_cd(raw: Path, pairs: dict[str, dict[str, np.ndarray]], lists: dict[str, list[str]]) -> None:
    for name, files in pairs.items():
        for folder, array in files.items():
            write_png(raw / "whu-cd" / folder / name, array)
    for split, names in lists.items():
        (raw / "whu-cd" / "list").mkdir(parents=True, exist_ok=True)
        (raw / "whu-cd" / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


@pytest.mark.parametrize("preset,tile", [("paper", 32), ("corrected", 32), ("paper", 16)])
def test_whu_cd_pre_is_folder_a_post_is_folder_b_and_the_label_stays_in_place(tmp_path, preset, tile):
    """pre must be the A (2012) image, post the B (2016) image, pixel for pixel (at 256² =
    the tile size no resize; at half size: PIL bilinear images, label pixels 2i+1), and the
    L-shaped change must stay where it was drawn; the pair filter of the preset is applied."""
    opts = preparation_options(PAPER if preset == "paper" else CORRECTED, "whu-cd")
    assert opts == {"pairs": "drop_uniform" if preset == "paper" else "drop_empty",
                    "order": "sorted" if preset == "paper" else "list",
                    "label_values": "truncate" if preset == "paper" else "nonzero"}
    shape = (WHUCD_SRC, WHUCD_SRC)
    change = l_mask(shape, x0=3, y0=5, x1=27, y1=20, xm=9, ym=10)
    spot = rect_mask(shape, x0=20, y0=22, x1=29, y1=30)
    pairs = {
        "whucd_00001.png": {"A": ramp(*shape, blue=20), "B": ramp(*shape, blue=220), "label": change * 255},
        "whucd_00002.png": {"A": ramp(*shape, blue=21), "B": ramp(*shape, blue=221), "label": np.zeros(shape, np.uint8)},
        "whucd_00003.png": {"A": ramp(*shape, blue=22), "B": ramp(*shape, blue=222), "label": np.full(shape, 255, np.uint8)},
        "whucd_00004.png": {"A": ramp(*shape, blue=23), "B": ramp(*shape, blue=223), "label": spot * 255},
    }
    # the A image is flipped against B in one pair, so pre/post differ in geometry too
    pairs["whucd_00004.png"]["A"] = np.ascontiguousarray(pairs["whucd_00004.png"]["A"][::-1])
    lists = {"train": ["whucd_00001.png", "whucd_00002.png", "whucd_00003.png"], "val": ["whucd_00004.png"],
             "test": ["whucd_00004.png", "whucd_00001.png"]}
    write_whu_cd(tmp_path / "raw", pairs, lists)
    store = tmp_path / "whucd"
    manifest = prepare("whu-cd", tmp_path / "raw", store, tile, options=opts)

    kept_train = ["whucd_00001.png"] + (["whucd_00003.png"] if preset == "corrected" else [])
    assert manifest["dropped"]["train"] == 3 - len(kept_train)
    test_names = ["whucd_00004.png", "whucd_00001.png"]  # the list file's order (corrected)
    if opts["order"] == "sorted":
        test_names = sorted(test_names)  # the released sorted(os.listdir(A))
    for split, names in {"train": kept_train, "val": ["whucd_00004.png"], "test": test_names}.items():
        rows, a = rows_of(store, split), arrays(store, split, "pre", "post", "labels")
        assert [r["tile_id"] for r in rows] == [Path(n).stem for n in names]
        for k, n in enumerate(names):
            pa, pb, lab = pairs[n]["A"], pairs[n]["B"], pairs[n]["label"] // 255
            if tile == WHUCD_SRC:
                exp_pre, exp_post, exp_lab = pa, pb, lab
            else:
                exp_pre, exp_post = (np.asarray(Image.fromarray(x).resize((tile, tile), Image.BILINEAR)) for x in (pa, pb))
                exp_lab = lab[1::2, 1::2]
            assert_pixels(a["pre"][k], exp_pre)
            assert_pixels(a["post"][k], exp_post)
            assert_pixels(a["labels"][k], exp_lab)
            assert rows[k]["source"] == f"whu-cd/A/{n};whu-cd/B/{n}"
    pre0 = arrays(store, "train", "pre")["pre"][0]
    assert (pre0[..., 2] == 20).all() and (arrays(store, "train", "post")["post"][0][..., 2] == 220).all()
    if tile == WHUCD_SRC:
        assert_tile_dataset_item(store, "test", test_names.index("whucd_00004.png"),
                                 {"pre": pairs["whucd_00004.png"]["A"], "post": pairs["whucd_00004.png"]["B"],
                                  "mask": spot})


# ------------------------------------------------------------------------------------------
# xView2 santa-rosa-wildfire: 1024² images resized to 256² (here 128² -> 32²), WKT polygons

XV_SRC, XV_T = 128, 32
XV_L = dict(x0=41, y0=18, x1=91, y1=71, xm=54, ym=30)     # destroyed
XV_MAJOR = dict(x0=98, y0=94, x1=111, y1=123)             # major-damage, edges off the 4-grid
XV_NONE = dict(x0=6, y0=100, x1=30, y1=120)               # no-damage: background
# destroyed, its right wall at exactly x = 128.0, the image width (real WKT vertices reach 1024.0)
XV_EDGE = dict(x0=117, y0=76, x1=128, y1=88)
XV_EMPTY = "santa-rosa-wildfire_00000500"                 # no building: PRE and POST labels without polygons


def wkt(ring) -> str:
    return "POLYGON ((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in ring) + "))"


def xbd_label(stem: str, buildings, post: bool) -> dict:
    """An xBD label: features.xy WKT in pixels (lng_lat alongside); PRE properties
    {feature_type, uid} (no subtype), POST {feature_type, subtype, uid}, as in the real files."""
    feats, ll = [], []
    for k, (ring, subtype) in enumerate(buildings):
        uid = f"00000000-0000-4000-a000-{k:012d}"
        props = ({"feature_type": "building", "subtype": subtype, "uid": uid} if post
                 else {"feature_type": "building", "uid": uid})
        feats.append({"properties": props, "wkt": wkt(ring)})
        ll.append({"properties": props, "wkt": wkt([(-122.7 + x * 2.5e-6, 38.48 - y * 2.5e-6) for x, y in ring])})
    meta = {"disaster": "santa-rosa-wildfire", "disaster_type": "fire", "width": XV_SRC, "height": XV_SRC,
            "original_width": XV_SRC, "original_height": XV_SRC, "img_name": f"{stem}.png",
            "capture_date": "2017-10-11T19:05:44.000Z" if post else "2017-02-04T19:02:11.000Z"}
    return {"features": {"lng_lat": ll, "xy": feats}, "metadata": meta}


def write_xview2_pair(raw: Path, split: str, stem_id: str, pre: np.ndarray, post: np.ndarray, buildings) -> None:
    """Images as the real xBD PNGs: RGB with a tRNS chunk marking black (0, 0, 0) transparent."""
    d = raw / "xview2" / split
    for phase, img in (("pre", pre), ("post", post)):
        stem = f"{stem_id}_{phase}_disaster"
        (d / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / "images" / f"{stem}.png", format="PNG", transparency=(0, 0, 0))
        write_json(d / "labels" / f"{stem}.json", xbd_label(stem, buildings, post=phase == "post"))
        write_png(d / "targets" / f"{stem}_target.png", np.zeros((XV_SRC, XV_SRC), np.uint8))


def cv2_quarter_taps(a: np.ndarray) -> np.ndarray:
    """cv2 INTER_LINEAR at 4x down samples source position 4i + 1.5: the four pixels
    (4i+1 | 4i+2) x (4j+1 | 4j+2), each with weight ¼. Returned as their integer sum."""
    a = a.astype(np.int64)
    return a[1::4, 1::4] + a[1::4, 2::4] + a[2::4, 1::4] + a[2::4, 2::4]


def xview2_expected(mask01: np.ndarray) -> np.ndarray:
    # 0/255 bilinear, rounded half up, > 127: two of the four taps (127.5 -> 128) suffice
    return (cv2_quarter_taps(mask01) >= 2).astype(np.uint8)


def xview2_image(img: np.ndarray) -> np.ndarray:
    return ((cv2_quarter_taps(img) + 2) // 4).astype(np.uint8)  # mean of 4, rounded half up


@pytest.fixture
def xview2_raw(tmp_path):
    raw = tmp_path / "raw"
    shape = (XV_SRC, XV_SRC)
    buildings = [(l_ring(**XV_L), "destroyed"), (rect_ring(**XV_MAJOR), "major-damage"),
                 (rect_ring(**XV_NONE), "no-damage"), (rect_ring(**XV_EDGE), "destroyed")]
    pre12 = ramp(*shape, blue=10)
    pre12[:6, :6] = 0  # a black (nodata) corner: transparent by the tRNS chunk, black in RGB
    pairs = {  # (split, id): (pre, post, buildings, damaged mask)
        ("train", "santa-rosa-wildfire_00000012"): (
            pre12, np.ascontiguousarray(ramp(*shape, blue=240)[:, ::-1]), buildings,
            l_mask(shape, **XV_L) | rect_mask(shape, **XV_MAJOR) | rect_mask(shape, **XV_EDGE)),
        ("train", "santa-rosa-wildfire_00000345"): (
            ramp(*shape, blue=11), ramp(*shape, blue=241), [(rect_ring(**XV_NONE), "no-damage")],
            np.zeros(shape, np.uint8)),
        ("train", XV_EMPTY): (ramp(*shape, blue=13), ramp(*shape, blue=243), [], np.zeros(shape, np.uint8)),
        ("test", "santa-rosa-wildfire_00000087"): (
            ramp(*shape, blue=12), ramp(*shape, blue=242), [(rect_ring(**XV_MAJOR), "minor-damage")],
            rect_mask(shape, **XV_MAJOR)),
    }
    for (split, stem_id), (pre, post, b, _) in pairs.items():
        write_xview2_pair(raw, split, stem_id, pre, post, b)
    with Image.open(raw / "xview2/train/images/santa-rosa-wildfire_00000012_pre_disaster.png") as im:
        assert im.mode == "RGB" and im.info["transparency"] == (0, 0, 0)
        assert np.asarray(im.convert("RGBA"))[:6, :6, 3].max() == 0  # what an RGBA read would make of it
    return raw, pairs


def test_xview2_resize_rule_hand_check():
    """The hand rule used below on a case worked out on paper: a 4x4 block at the 4-grid
    becomes one pixel; an edge through the tap pair (one of two taps) counts at 2 of 4."""
    m = np.zeros((8, 8), np.uint8)
    m[0:4, 0:4] = 1   # all taps of output (0, 0)
    m[5:6, 4:8] = 1   # row 5 = one tap row of output row 1: 2 of 4 taps -> positive
    assert xview2_expected(m).tolist() == [[1, 0], [0, 1]]
    m[5:6, 6:8] = 0   # now only tap (5, 5): 1 of 4 -> negative
    assert xview2_expected(m).tolist() == [[1, 0], [0, 0]]


@pytest.mark.parametrize("name", ["xview2-ss", "xview2-cd"])
def test_xview2_damaged_polygons_land_where_drawn_and_pre_post_in_order(xview2_raw, tmp_path, name):
    """Under the corrected preset's masks (post_damaged, every labelled pair) the mask must be
    the POST label's damaged WKT polygons (L + off-grid rectangle + the one whose vertices sit
    at x = 128.0, not the no-damage one) rasterised in place then resized by the released cv2
    rule (2 of the 4 taps), the SS image the PRE image read as RGB (its black corner stays
    black), and for CD pre = *_pre_disaster (blue 10..13, not flipped) and post =
    *_post_disaster (blue 240.., mirrored), each cv2-bilinear resized. The pair without a
    building is kept with an empty mask."""
    raw, pairs = xview2_raw
    opts = preparation_options(CORRECTED, name)
    assert opts == {"mask": "post_damaged", "border": 2, "pairs_kept": "all_labelled",
                    **({"pairs": "keep_all"} if name == "xview2-cd" else {})}
    store = tmp_path / name
    prepare(name, raw, store, XV_T, options=opts)
    # the fixture's masks exercise the tie-break (exactly 2 of 4 taps) and a 1-of-4 miss
    counts = cv2_quarter_taps(pairs["train", "santa-rosa-wildfire_00000012"][3])
    assert (counts == 2).any() and (counts == 1).any()
    for split in ("train", "test"):
        ids = sorted(i for s, i in pairs if s == split)
        keys = ("pre", "post", "labels") if name == "xview2-cd" else ("images", "labels")
        rows, a = rows_of(store, split), arrays(store, split, *keys)
        assert [r["tile_id"] for r in rows] == ids
        for k, stem_id in enumerate(ids):
            pre, post, _, mask = pairs[split, stem_id]
            assert_pixels(a["labels"][k], xview2_expected(mask))
            if name == "xview2-cd":
                assert rows[k]["source"] == (f"xview2/{split}/images/{stem_id}_pre_disaster.png;"
                                             f"xview2/{split}/images/{stem_id}_post_disaster.png")
                assert_pixels(a["pre"][k], xview2_image(pre))
                assert_pixels(a["post"][k], xview2_image(post))
            else:
                assert_pixels(a["images"][k], xview2_image(pre))
    lab = arrays(store, "train", "labels")["labels"][0]
    first = arrays(store, "train", "pre" if name == "xview2-cd" else "images")
    # the black corner (rows/columns 0..5): output (0, 0) has taps 1/2 only: black, not a blend
    assert first["pre" if name == "xview2-cd" else "images"][0][0, 0].tolist() == [0, 0, 0]
    # by hand: the L's bar (x 41..53, y 18..70) covers output columns 10..13 (taps 41/42 .. 53/54:
    # 53 in, 54 out = 2 of 4) on output row 10 (taps 41/42), nothing at column 9 (taps 37/38)
    assert np.flatnonzero(lab[10]).tolist() == [10, 11, 12, 13]
    # the arm (y 18..29, x 54..90) on output column 20 (taps 81/82): rows 4 (taps 17/18: one
    # in = 2 of 4) to 7 (taps 29/30)
    assert np.flatnonzero(lab[:, 20]).tolist() == [4, 5, 6, 7]
    # the edge footprint (x 117..127, y 76..87) on output row 20 (taps 81/82): columns 29
    # (taps 117/118) to 31, the last (taps 125/126): filled up to the border at x = 128.0
    assert np.flatnonzero(lab[20]).tolist() == [29, 30, 31]
    assert not lab[25:30, 1:8].any()  # the no-damage building (x 6..29, y 100..119) is background
    if name == "xview2-cd":
        pre, post, _, mask = pairs["train", "santa-rosa-wildfire_00000012"]
        assert_tile_dataset_item(store, "train", 0, {"pre": xview2_image(pre), "post": xview2_image(post),
                                                      "mask": xview2_expected(mask)})


def shrunk_rect_mask(shape, x0, y0, x1, y1, border: int = 2) -> np.ndarray:
    """A rectangle as mask_polygons.py --border writes it, by hand: each corner moved
    ``border`` px towards the centre on each axis, then cv2.fillPoly, which fills the pixels
    whose centres lie inside or ON the outline: rows y0+b .. y1-b and columns x0+b .. x1-b,
    both ends included."""
    return rect_mask(shape, x0 + border, y0 + border, x1 - border + 1, y1 - border + 1)


@pytest.mark.parametrize("name", ["xview2-ss", "xview2-cd"])
def test_xview2_release_masks_are_pre_label_footprints_and_the_empty_pair_is_dropped(xview2_raw, tmp_path, name):
    """Under the paper preset (the release's masks/: PRE-label footprints, border 2, pairs with a
    mask) the PRE label, which has no subtype, gives every building, no-damage included; the
    pair whose PRE label has no polygon has no mask and is dropped and named. Checked by hand
    on the rectangles (the L's shrink is left to test_release_data_rules.py)."""
    raw, pairs = xview2_raw
    opts = preparation_options(PAPER, name)
    assert opts == {"mask": "pre_footprints", "border": 2, "pairs_kept": "with_mask",
                    **({"pairs": "keep_all"} if name == "xview2-cd" else {})}
    store = tmp_path / name
    manifest = prepare(name, raw, store, XV_T, options=opts)
    assert manifest["pairs_without_mask"] == {"train": ["00000500"], "test": []}
    shape = (XV_SRC, XV_SRC)
    ids = {s: sorted(i for t, i in pairs if t == s and i != XV_EMPTY) for s in ("train", "test")}
    rects = {"santa-rosa-wildfire_00000345": [XV_NONE], "santa-rosa-wildfire_00000087": [XV_MAJOR],
             "santa-rosa-wildfire_00000012": [XV_MAJOR, XV_NONE, XV_EDGE]}
    for split in ("train", "test"):
        rows = rows_of(store, split)
        labels = arrays(store, split, "labels")["labels"]
        images = arrays(store, split, "pre" if name == "xview2-cd" else "images")
        assert [r["tile_id"] for r in rows] == ids[split]
        for k, stem_id in enumerate(ids[split]):
            src = np.zeros(shape, np.uint8)
            for r in rects[stem_id]:
                src |= shrunk_rect_mask(shape, **r)
            expected = xview2_expected(src)
            keep = np.ones_like(expected, bool)
            if stem_id.endswith("00000012"):
                keep[4:18, 10:23] = False  # output pixels with a tap inside the L's box (y 18..70, x 41..90)
            assert_pixels(labels[k][keep], expected[keep])
            assert_pixels(images["pre" if name == "xview2-cd" else "images"][k], xview2_image(pairs[split, stem_id][0]))
    # by hand: the no-damage building x 6..29, y 100..119 shrunk to pixels x 8..27, y 102..117:
    # output columns 2 (taps 9/10) .. 6 (taps 25/26), rows 25 (taps 101/102: one in = 2 of 4) .. 29
    lab345 = arrays(store, "train", "labels")["labels"][ids["train"].index("santa-rosa-wildfire_00000345")]
    assert np.flatnonzero(lab345[27]).tolist() == [2, 3, 4, 5, 6]
    assert np.flatnonzero(lab345[:, 4]).tolist() == [25, 26, 27, 28, 29]


# ------------------------------------------------------------------------------------------
# pretraining crops: AID, ImageNet, MAJOR-TOM (random crops at offsets from the seeded RNG)

PT_T = 16


def expected_draws(seed: int, sizes: list[tuple[int, int]], num_images):
    """The documented sampler: default_rng(seed); pick num_images files without replacement
    (sorted) when given; then per chosen file y ~ U[0, h-T], x ~ U[0, w-T]."""
    rng = np.random.default_rng(seed)
    chosen = (list(range(len(sizes))) if num_images is None
              else sorted(rng.choice(len(sizes), size=num_images, replace=False).tolist()))
    out = []
    for k in chosen:
        h, w = sizes[k]
        y = int(rng.integers(0, h - PT_T + 1))
        x = int(rng.integers(0, w - PT_T + 1))
        out.append((k, y, x))
    return out


def jpeg_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("seed,num_images", [(0, None), (5, 2)])
def test_aid_crops_are_the_source_pixels_at_the_recorded_offset(tmp_path, seed, num_images):
    """Each AID crop must be source pixels [y:y+T, x:x+T] of the file the seeded draw picked,
    with (y, x) = the documented draws (rows ~ height, columns ~ width; non-square images),
    recorded in tiles.csv; files in class-folder then natural order; .DS_Store, __MACOSX/ and
    ._* AppleDouble files are no images and must not shift the draws."""
    files = [("Airport", "airport_2.jpg", (24, 40)), ("Airport", "airport_10.jpg", (40, 24)),
             ("Forest", "forest_1.jpg", (30, 37))]
    raw = tmp_path / "raw"
    for k, (cls, name, (h, w)) in enumerate(files):
        p = raw / "aid" / "AID" / cls / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ramp(h, w, blue=60 + 80 * k)).save(p, format="JPEG", quality=95)
    # what a zip made on a Mac leaves, none of it an image: .DS_Store files, __MACOSX/ with an
    # AppleDouble ._<file>.jpg per file, and (copied to a FAT disk) ._<file>.jpg beside the file
    apple_double = bytes.fromhex("0005160700020000") + b"Mac OS X        " + bytes(2)
    (raw / "aid" / "AID" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(24))
    (raw / "aid" / "AID" / "Airport" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(24))
    for cls, name, _ in files:
        for where in (raw / "aid" / "__MACOSX" / "AID" / cls, raw / "aid" / "AID" / "__MACOSX" / cls,
                      raw / "aid" / "AID" / cls):
            where.mkdir(parents=True, exist_ok=True)
            (where / f"._{name}").write_bytes(apple_double)
    store = tmp_path / "aid"
    prepare("aid", raw, store, PT_T, seed=seed, num_images=num_images)
    draws = expected_draws(seed, [s for _, _, s in files], num_images)
    assert any(y > 0 for _, y, _ in draws) and any(x > 0 for _, _, x in draws)  # offsets that bite
    rows, imgs = rows_of(store, "train"), arrays(store, "train", "images")["images"]
    for r, img, (k, y, x) in zip(rows, imgs, draws, strict=True):
        cls, name, _ = files[k]
        assert (r["tile_id"], r["source"], int(r["row"]), int(r["col"])) == (
            f"{Path(name).stem}_y{y}_x{x}", f"aid/AID/{cls}/{name}", y, x)
        assert_pixels(img, jpeg_rgb(raw / "aid" / "AID" / cls / name)[y:y + PT_T, x:x + PT_T])
    k, y, x = draws[-1]
    assert_tile_dataset_item(store, "train", len(draws) - 1,
                             {"image": jpeg_rgb(raw / "aid" / "AID" / files[k][0] / files[k][1])[y:y + PT_T, x:x + PT_T]})


def test_imagenet_crops_come_from_the_right_offset_after_the_upscale_rule(tmp_path):
    """ImageNet crops: source pixels at the documented seeded offset; a grayscale JPEG is
    converted to RGB (three equal channels); a 12 x 10 image is first upscaled to short side T
    (19 x 16, PIL bilinear) and the offset is drawn in the upscaled image."""
    files = [((24, 40), "RGB"), ((30, 20), "L"), ((10, 12), "RGB")]  # (h, w), mode
    raw = tmp_path / "raw"
    paths = []
    for k, ((h, w), mode) in enumerate(files):
        arr = ramp(h, w, blue=90 + 70 * k)
        arr = arr[..., 0] if mode == "L" else arr
        p = raw / "imagenet" / "val" / f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p, format="JPEG", quality=95)
        paths.append(p)
    store = tmp_path / "imagenet"
    manifest = prepare("imagenet", raw, store, PT_T, seed=3)
    assert manifest["upscaled"] == {"imagenet/val/ILSVRC2012_val_00000003.JPEG": [12, 10]}
    assert manifest["converted_to_rgb"] == {"L": 1}
    # the small image after the upscale rule: short side 16, long side int(16 * 12 / 10) = 19
    with Image.open(paths[2]) as im:
        small = np.asarray(im.convert("RGB").resize((19, 16), Image.BILINEAR))
    sources = [jpeg_rgb(paths[0]), jpeg_rgb(paths[1]), small]
    draws = expected_draws(3, [s.shape[:2] for s in sources], None)
    rows, imgs = rows_of(store, "train"), arrays(store, "train", "images")["images"]
    for r, img, (k, y, x) in zip(rows, imgs, draws, strict=True):
        assert (r["tile_id"], int(r["row"]), int(r["col"])) == (f"{paths[k].stem}_y{y}_x{x}", y, x)
        assert_pixels(img, sources[k][y:y + PT_T, x:x + PT_T])
    assert np.array_equal(imgs[1][..., 0], imgs[1][..., 2])  # gray -> R = G = B
    assert any(y > 0 for _, y, _ in draws) and draws[2][1] == 0  # the upscaled image is only 16 high


def s2l2a_by_hand(dn: np.ndarray) -> np.ndarray:
    """MAJOR-TOM's thumbnail rendering: floor(255 · clip(1.3 · (DN / 10000) ** 0.6, 0, 1))."""
    return np.floor(255 * np.clip(1.3 * (dn.astype(np.float64) / 10000.0) ** 0.6, 0, 1)).astype(np.uint8)


@pytest.mark.parametrize("num_images", [None, 5])
def test_majortom_crops_stack_b04_b03_b02_at_the_recorded_offset(tmp_path, num_images):
    """MAJOR-TOM crops: R = B04 (a column ramp), G = B03 (a row ramp), B = B02 (a per-row
    constant) through the thumbnail rule, taken at the documented seeded offsets of the
    right parquet row (spread over rows, repeats redrawn)."""
    pytest.importorskip("pyarrow")
    from noise2map.data.synthetic import MAJORTOM_BANDS, geotiff_bytes, s2l2a_thumbnail, write_parquet

    n = 24
    yy, xx = np.mgrid[:n, :n]
    cols: dict[str, list] = {k: [] for k in ("product_id", "grid_cell", "product_datetime", "thumbnail",
                                             *MAJORTOM_BANDS)}
    dns = []
    for row, blue_dn in enumerate((800, 2500)):
        dn = {"B04": 100 + 150 * xx, "B03": 100 + 150 * yy, "B02": np.full((n, n), blue_dn)}
        dns.append(dn)
        for band, res in MAJORTOM_BANDS.items():
            f = res // 10
            arr = dn.get(band, np.full((n, n), 1500))[::f, ::f]
            cols[band].append(geotiff_bytes(arr.astype(np.uint16), "EPSG:32640", nodata=0))
        buf = io.BytesIO()
        Image.fromarray(s2l2a_thumbnail(dn["B04"], dn["B03"], dn["B02"])).save(buf, format="PNG")
        cols["thumbnail"].append(buf.getvalue())
        cols["product_id"].append(f"S2A_MSIL2A_2021010{row + 1}T065631_N0500_R063_T40SEE_20230101T163151")
        cols["grid_cell"].append(f"393U_51{row}R")
        cols["product_datetime"].append(f"2021-01-0{row + 1} 06:56:31")
    write_parquet(tmp_path / "raw" / "majortom" / "images" / "part_00001.parquet", cols, row_group_size=1)
    store = tmp_path / "majortom"
    manifest = prepare("majortom", tmp_path / "raw", store, PT_T, seed=7, num_images=num_images)

    # the documented sampler: extra crops to rows drawn first, then offsets row by row
    rng = np.random.default_rng(7)
    k_total = 2 if num_images is None else num_images
    counts = np.full(2, k_total // 2)
    if k_total % 2:
        counts[rng.choice(2, size=k_total % 2, replace=False)] += 1
    draws = []
    for row in range(2):
        taken = set()
        for _ in range(counts[row]):
            while (yx := (int(rng.integers(0, n - PT_T + 1)), int(rng.integers(0, n - PT_T + 1)))) in taken:
                pass
            taken.add(yx)
            draws.append((row, *yx))
    rows, imgs = rows_of(store, "train"), arrays(store, "train", "images")["images"]
    for r, img, (row, y, x) in zip(rows, imgs, draws, strict=True):
        assert (r["tile_id"], int(r["row"]), int(r["col"])) == (f"part_00001_row{row}_393U_51{row}R_y{y}_x{x}", y, x)
        rgb = np.stack([s2l2a_by_hand(dns[row][b]) for b in ("B04", "B03", "B02")], -1)
        assert_pixels(img, rgb[y:y + PT_T, x:x + PT_T])
    assert any(y > 0 for _, y, _ in draws) and any(x > 0 for _, _, x in draws)
    # the shard's own thumbnail, rendered from the same bands, agrees at every crop
    assert manifest["thumbnail_check"] == {"compared": len(draws), "equal": len(draws), "max_abs_diff": 0}
