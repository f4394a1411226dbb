"""Seeded synthetic raw data in each real data set's on-disk layout and file formats.

The demo pipeline runs on these files in place of the real downloads, so the preparers in
:mod:`noise2map.data.preparers` read exactly the same layouts, formats and label encodings as
they would on the real archives (see ``/work/shared/notes/datasets.md``):

========== ==================================================================================
spacenet7  ``spacenet7/train/<aoi>/{images,images_masked}/global_monthly_<YYYY>_<MM>_mosaic_<aoi>.tif``
           (4-band uint8 GeoTIFF, RGB + alpha 255, EPSG:3857, uncompressed, no nodata tag),
           ``labels_match_pix/<stem>_Buildings.geojson`` (building polygons in pixel coordinates,
           x = column, y = row), ``labels_match/`` (the same in EPSG:3857 metres), ``labels/``
           (``<stem>_Buildings.geojson`` in CRS84 lon/lat with ``Id`` only, ``<stem>_UDM.geojson``)
           and ``UDM_masks/<stem>_UDM.tif`` for the one masked month. AOIs are real names from
           the Hafner split; one month of one train AOI has no label files.
whu        ``whu/3. The cropped image tiles and raster labels/{train,val,test}/{image,label}/<n>.tif``
           (image 3-band uint8, label 1-band uint8 0/255; tile numbers n cross a power of ten in
           every split, so plain and natural name order differ).
whu-cd     ``whu-cd/{A,B,label}/<name>.png`` + ``whu-cd/list/{train,val,test}.txt`` (BIT 256² form;
           label 0/255 mode-L PNG; a quarter of the pairs have no change).
xview2     ``xview2/{train,test}/{images,labels,targets}/<disaster>_<8-digit id>_{pre,post}_disaster.*``
           (RGB PNG, xBD JSON with WKT polygons, ``*_target.png``); mostly santa-rosa-wildfire plus
           two socal-fire pairs the preparers must ignore; some santa-rosa pairs have no damage,
           and some of those no building at all.
aid        ``aid/AID/<ClassName>/<classname>_<n>.jpg`` (RGB JPEG), with the stray entries of a
           macOS-made zip: ``.DS_Store`` files and ``aid/__MACOSX/AID/…/._*`` AppleDouble files.
imagenet   ``imagenet/val/ILSVRC2012_val_<8 digits>.JPEG`` (JPEGs of varied sizes, every fifth
           grayscale; one smaller than a tile, to exercise the upscaling rule).
majortom   ``majortom/images/part_00001.parquet``: MAJOR-TOM Core-S2L2A columns (``product_id``,
           ``grid_cell``, ``product_datetime``, ``thumbnail`` PNG bytes, ``B01``…``B12`` single-band
           uint16 GeoTIFF bytes at 10/20/60 m, ``cloud_mask``); needs pyarrow.
========== ==================================================================================

Quirks of the real files that the synthetic ones reproduce (``/work/shared/notes/datasets.md``,
third review; ``tests/test_real_file_quirks.py`` checks each):

- SpaceNet7: mosaics are not all 1024²: fullsize writes the val AOI 1023 rows × 1024 columns and
  the test AOI 1025 × 1024 (demo: 65 × 64). Band 4 is alpha = 255, no nodata tag, no
  compression. ``images_masked/`` is byte-identical to ``images/`` except in the month that has
  a ``UDM_masks/`` file, where the masked pixels are 0 in all four bands. The three label folders
  hold the same buildings: ``labels/`` in CRS84 lon/lat (``crs`` member, property ``Id`` only,
  plus a ``_UDM.geojson`` per labelled month, empty where nothing is masked), ``labels_match/``
  in EPSG:3857 metres, ``labels_match_pix/`` in pixels with no ``crs`` member. Matched labels
  carry ``Id`` and ``area`` (m²) and, from the second month on, ``iou_score`` (properties change
  by month). Every geometry is a single-ring Polygon; in every AOI one building reaches 2.2 px
  past the left edge (x = −2.2) and one 0.9 px past the right edge (x = width + 0.9: 1024.9).
- xView2: image PNGs carry a tRNS chunk marking black (0, 0, 0) transparent, and a third of
  the PRE images have a black (nodata) corner, so ``convert("RGBA")`` makes those pixels
  transparent while an RGB read keeps them black. PRE labels have no ``subtype`` (properties
  ``feature_type``, ``uid``); POST labels ``feature_type``, ``subtype``, ``uid``. One building
  per image reaches the right edge and one the bottom edge: vertices at exactly x = width and
  y = height (1024.0). The first ``empty`` santa-rosa pairs of a split have no building (PRE and
  POST labels with zero polygons); the rest of the ``no_damage`` pairs have buildings, none damaged.
- AID: CamelCase class folders with lower-case file names, a ``.DS_Store`` in ``AID/`` and in
  ``AID/DenseResidential/``, and ``__MACOSX/AID/<Class>/._<file>.jpg`` (and ``._<Class>``)
  AppleDouble files beside ``AID/``, as ``unzip`` leaves a zip made by macOS' Finder.

Scenes are a smooth vegetation/soil texture with buildings (axis-aligned rectangles and
L-shapes, distinct roof colours, a dark shadow edge to the lower right). Building footprints
are rasterised with the same centre-of-pixel rule the preparers use
(:func:`rasterio.features.rasterize`), so image and label agree pixel for pixel.

Each data set directory also gets a ``SYNTHETIC.json`` marker (seed, size); the generator
only ever deletes/overwrites a directory that carries it, never real data.

Everything is a pure function of ``seed`` (``numpy.random.default_rng``); the files written
for a given seed and size are byte-identical across runs.

Sizes: ``"demo"`` (small images, brief counts, the default) and ``"fullsize"`` (the real image
sizes — SpaceNet7 1024² and 1023/1025 × 1024, WHU 512², WHU-CD 256², xView2 1024², AID 600², ImageNet ~500×375,
MAJOR-TOM 1068² — with a handful of scenes, to exercise the paper's 256-px tiling path).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.features import rasterize
from affine import Affine

from ..errors import ConfigError
from ..io import atomic_path, write_json, write_text

# New data sets go at the end: each one's generator is seeded with its index here.
DATASETS = ("spacenet7", "whu", "whu-cd", "xview2", "aid", "imagenet", "majortom")

# Real AOI names (Hafner et al. 2023 split): the first three train AOIs, the first val and
# the first test AOI.
SPACENET7_DEMO_AOIS = {
    "train": [
        "L15-0331E-1257N_1327_3160_13",
        "L15-0358E-1220N_1433_3310_13",
        "L15-0457E-1135N_1831_3648_13",
    ],
    "val": ["L15-0357E-1223N_1429_3296_13"],
    "test": ["L15-0387E-1276N_1549_3087_13"],
}
WHU_DIRNAME = "3. The cropped image tiles and raster labels"
AID_CLASSES = ("Airport", "Forest", "DenseResidential")

SIZES = {
    "demo": {
        # (image size, building cell size, min/max building side)
        # (rows, columns) per split: the val AOI is non-square and one px taller (a 32-px tile
        # grid keeps its 2 x 2 tiles; fullsize has the real 1023 x 1024 and 1025 x 1024)
        "spacenet7": dict(shapes={"train": (64, 64), "val": (65, 64), "test": (64, 64)},
                          months=4, cell=8, bmin=3, bmax=6),
        "whu": dict(size=64, cell=16, bmin=7, bmax=14, counts={"train": 24, "val": 8, "test": 8}),
        "whu-cd": dict(size=32, cell=10, bmin=4, bmax=8, pairs=40,
                       counts={"train": 24, "val": 8, "test": 8}),
        # no_damage: pairs without a damaged building; the first ``empty`` of them have no
        # building at all (a PRE label with zero polygons, 9 of the 300 real santa-rosa pairs)
        "xview2": dict(size=128, cell=16, bmin=8, bmax=14, counts={"train": 16, "test": 8},
                       no_damage={"train": 4, "test": 2}, empty={"train": 1, "test": 1}, other=2),
        "aid": dict(size=80, per_class=4),
        "imagenet": dict(count=10, sizes=[(96, 72), (72, 96), (80, 64), (40, 28), (64, 64)]),
        "majortom": dict(size=72, rows=5, row_group=2),
    },
    "fullsize": {
        "spacenet7": dict(shapes={"train": (1024, 1024), "val": (1023, 1024), "test": (1025, 1024)},
                          months=3, cell=32, bmin=8, bmax=24),
        "whu": dict(size=512, cell=64, bmin=24, bmax=56, counts={"train": 4, "val": 2, "test": 2}),
        "whu-cd": dict(size=256, cell=48, bmin=16, bmax=40, pairs=8,
                       counts={"train": 4, "val": 2, "test": 2}),
        "xview2": dict(size=1024, cell=64, bmin=24, bmax=56, counts={"train": 3, "test": 2},
                       no_damage={"train": 1, "test": 1}, empty={"train": 0, "test": 1}, other=1),
        "aid": dict(size=600, per_class=1),
        "imagenet": dict(count=5, sizes=[(500, 375), (375, 500), (500, 333), (200, 150), (500, 500)]),
        "majortom": dict(size=1068, rows=3, row_group=2),
    },
}

VEGETATION = np.array([72, 104, 52], np.float32)
SOIL = np.array([150, 128, 96], np.float32)
ROOF_COLOURS = np.array(
    [
        [178, 74, 52],   # red tile
        [206, 204, 198],  # light concrete
        [92, 112, 142],  # blue metal
        [232, 230, 222],  # white
        [128, 44, 38],   # dark red
        [204, 146, 84],  # orange
        [150, 150, 160],  # grey metal
    ],
    np.float32,
)
DAMAGE_SUBTYPES = ("minor-damage", "major-damage", "destroyed")
TARGET_VALUE = {"no-damage": 1, "minor-damage": 2, "major-damage": 3, "destroyed": 4,
                "un-classified": 1}


# --------------------------------------------------------------------------------------------
# scene primitives


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1]: a random coarse grid bilinearly upsampled to (h, w)."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _background(rng: np.random.Generator, h: int, w: int, scale: float = 1.0) -> np.ndarray:
    """Float32 [h, w, 3] vegetation/soil texture (0..255)."""
    n = 0.65 * _smooth_noise(rng, h, w, 16 * scale) + 0.35 * _smooth_noise(rng, h, w, 5 * scale)
    t = np.clip((n - 0.35) / 0.3, 0, 1)[..., None]
    img = VEGETATION * (1 - t) + SOIL * t
    img = img * (0.85 + 0.3 * _smooth_noise(rng, h, w, 3 * scale))[..., None]
    return img + rng.normal(0, 5, (h, w, 3)).astype(np.float32)


def _building_polygon(rng, x0: int, y0: int, bw: int, bh: int) -> list[tuple[float, float]]:
    """Closed ring (pixel x, y) of a rectangle or, one time in four, an L-shape."""
    x1, y1 = x0 + bw, y0 + bh
    if bw >= 6 and bh >= 6 and rng.random() < 0.25:
        cx = x0 + int(rng.integers(bw // 3, 2 * bw // 3 + 1))
        cy = y0 + int(rng.integers(bh // 3, 2 * bh // 3 + 1))
        ring = [(x0, y0), (x1, y0), (x1, cy), (cx, cy), (cx, y1), (x0, y1)]
    else:
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    ring = [(float(x), float(y)) for x, y in ring]
    return ring + [ring[0]]


def _layout(rng, h: int, w: int, cell: int, bmin: int, bmax: int, p: float) -> list[dict]:
    """Candidate buildings: at most one per grid cell (so they never overlap)."""
    out = []
    for r in range(h // cell):
        for c in range(w // cell):
            if rng.random() >= p:
                continue
            bw = int(rng.integers(bmin, min(bmax, cell - 2) + 1))
            bh = int(rng.integers(bmin, min(bmax, cell - 2) + 1))
            x0 = c * cell + int(rng.integers(1, cell - bw))
            y0 = r * cell + int(rng.integers(1, cell - bh))
            out.append(
                {
                    "ring": _building_polygon(rng, x0, y0, bw, bh),
                    "colour": ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))]
                    + rng.normal(0, 8, 3).astype(np.float32),
                }
            )
    return out


def _geom(ring) -> dict:
    return {"type": "Polygon", "coordinates": [ring]}


def _index_raster(buildings: list[dict], h: int, w: int, shift: float = 0.0) -> np.ndarray:
    """int32 [h, w]: k+1 inside building k (centre-of-pixel rule), else 0."""
    if not buildings:
        return np.zeros((h, w), np.int32)
    shapes = [
        (_geom([(x + shift, y + shift) for x, y in b["ring"]]), k + 1)
        for k, b in enumerate(buildings)
    ]
    return rasterize(shapes, out_shape=(h, w), fill=0, dtype="int32")


def _paint(img: np.ndarray, buildings: list[dict], rng, shadow: int = 1) -> np.ndarray:
    """Paint shadows then roofs of ``buildings`` onto a float image (in place and returned)."""
    h, w = img.shape[:2]
    if not buildings:
        return img
    idx = _index_raster(buildings, h, w)
    shade = _index_raster(buildings, h, w, shift=shadow) > 0
    img[shade & (idx == 0)] *= 0.35
    colours = np.stack([b["colour"] for b in buildings])
    inside = idx > 0
    img[inside] = colours[idx[inside] - 1] + rng.normal(0, 4, (int(inside.sum()), 3))
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _illumination(rng, img: np.ndarray) -> np.ndarray:
    """A different acquisition: global gain/offset per channel and fresh sensor noise."""
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    offset = rng.uniform(-8, 8, 3).astype(np.float32)
    return img * gain + offset + rng.normal(0, 3, img.shape).astype(np.float32)


def _area(ring) -> float:
    xs, ys = np.array(ring).T
    return float(abs(np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1])) / 2)


def _move_wall(b: dict, axis: int, new: float, side: str) -> None:
    """Move the outermost wall of building ``b`` on ``axis`` (0 = x, 1 = y), its ``side``
    ("min" or "max"), to coordinate ``new``: every vertex on that wall moves with it."""
    old = (min if side == "min" else max)(pt[axis] for pt in b["ring"])
    b["ring"] = [tuple(new if (a == axis and v == old) else v for a, v in enumerate(pt)) for pt in b["ring"]]


def _reach_edges(buildings: list[dict], h: int, w: int, cell: int, left=None, right=None, bottom=None) -> None:
    """Real footprints run up to and past the image border; :func:`_layout`'s never do. Move the
    left wall of the first building in the first cell column to x = ``left``, the right wall of
    the first building in the last cell column to x = ``right`` and the bottom wall of the
    first building in the last cell row to y = ``bottom`` (each only across the border cells,
    so no two buildings overlap). Draws nothing from the generator."""
    last_col, last_row = (w // cell - 1) * cell, (h // cell - 1) * cell
    for value, axis, side, where in ((left, 0, "min", lambda b: min(x for x, _ in b["ring"]) < cell),
                                     (right, 0, "max", lambda b: max(x for x, _ in b["ring"]) > last_col),
                                     (bottom, 1, "max", lambda b: max(y for _, y in b["ring"]) > last_row)):
        if value is None:
            continue
        b = next((b for b in buildings if where(b)), None)
        if b is not None:
            _move_wall(b, axis, float(value), side)


EARTH_RADIUS = 6378137.0  # EPSG:3857's sphere


def _crs84(x: float, y: float) -> tuple[float, float]:
    """EPSG:3857 metres → CRS84 (lon, lat) degrees (the spherical Mercator inverse)."""
    return (float(np.degrees(x / EARTH_RADIUS)),
            float(np.degrees(2 * np.arctan(np.exp(y / EARTH_RADIUS)) - np.pi / 2)))


def _geojson_crs(name: str) -> dict:
    return {"type": "name", "properties": {"name": name}}


# --------------------------------------------------------------------------------------------
# writers


def from_origin(west: float, north: float, xres: float, yres: float) -> Affine:
    """North-up geotransform (rasterio's from_origin without its deprecated ``*``)."""
    return Affine(xres, 0.0, west, 0.0, -yres, north)


def _write_geotiff(path: Path, array_hwc: np.ndarray, crs: str, transform) -> None:
    h, w, c = array_hwc.shape
    with atomic_path(path) as tmp:
        with rasterio.open(
            tmp, "w", driver="GTiff", height=h, width=w, count=c, dtype="uint8",
            crs=crs, transform=transform,
        ) as dst:
            dst.write(np.moveaxis(array_hwc, -1, 0))


def _write_png(path: Path, array: np.ndarray, transparency=None) -> None:
    """A PNG; ``transparency`` (an RGB triple) adds a tRNS chunk marking that colour transparent."""
    extra = {} if transparency is None else {"transparency": transparency}
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", **extra)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_jpeg(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="JPEG", quality=90)


MARKER = "SYNTHETIC.json"


def _fresh_dir(path: Path, info: dict) -> Path:
    """Empty ``path`` for a new synthetic set. A directory that holds files but no
    ``SYNTHETIC.json`` marker (e.g. a real download) is never touched: that is an error."""
    import shutil

    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).is_file():
            raise ConfigError(
                f"{path} already holds data that this generator did not write (no {MARKER}); "
                "refusing to overwrite it with synthetic data. Choose another raw_root."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / MARKER, info)
    return path


# --------------------------------------------------------------------------------------------
# data sets


SN7_RES = 4.77  # m per pixel of the EPSG:3857 mosaics
SN7_CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
SN7_EPSG3857 = "urn:ogc:def:crs:EPSG::3857"


def _feature_collection(name: str, features: list, crs: str | None = None) -> dict:
    out = {"type": "FeatureCollection", "name": name}
    if crs is not None:  # labels/ and labels_match/ name their CRS; labels_match_pix/ has none
        out["crs"] = _geojson_crs(crs)
    out["features"] = features
    return out


def _sn7_labels(adir: Path, stem: str, present: list[dict], month: int, transform, udm_rings) -> None:
    """The three label folders of one labelled month: the same footprints as single-ring
    Polygons in pixels (labels_match_pix: ``Id``, ``area`` in m², from the second month on
    ``iou_score``), in EPSG:3857 metres (labels_match, same properties) and in CRS84 lon/lat
    (labels: ``Id`` only), plus labels/<stem>_UDM.geojson (the masked area in CRS84)."""
    t = transform

    def metres(ring):  # (x = column, y = row) through the mosaic's geotransform
        return [[t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f] for x, y in ring]

    def lonlat(ring):
        return [list(_crs84(*pt)) for pt in metres(ring)]

    pix, match, lab = [], [], []
    for b in present:
        ring_m = metres(b["ring"])
        props = {"Id": b["id"], "area": round(_area(b["ring"]) * SN7_RES ** 2, 6)}  # m²
        if month > 0:  # the matching score exists only once there is an earlier month to match
            props["iou_score"] = round(0.5 + ((7 * b["id"] + 3 * month) % 50) / 100, 4)
        pix.append({"type": "Feature", "properties": dict(props),
                    "geometry": _geom([list(pt) for pt in b["ring"]])})
        match.append({"type": "Feature", "properties": dict(props), "geometry": _geom(ring_m)})
        lab.append({"type": "Feature", "properties": {"Id": b["id"]}, "geometry": _geom(lonlat(b["ring"]))})
    udm = [{"type": "Feature", "properties": {"Id": k}, "geometry": _geom(lonlat(r))}
           for k, r in enumerate(udm_rings)]
    name = f"{stem}_Buildings"
    write_json(adir / "labels_match_pix" / f"{name}.geojson", _feature_collection(name, pix))
    write_json(adir / "labels_match" / f"{name}.geojson", _feature_collection(name, match, SN7_EPSG3857))
    write_json(adir / "labels" / f"{name}.geojson", _feature_collection(name, lab, SN7_CRS84))
    write_json(adir / "labels" / f"{stem}_UDM.geojson", _feature_collection(f"{stem}_UDM", udm, SN7_CRS84))


def _spacenet7(root: Path, rng, p: dict) -> None:
    months = [(2018, m) for m in range(1, p["months"] + 1)]
    unlabelled = (SPACENET7_DEMO_AOIS["train"][1], months[2])
    # one labelled month with an unusable-data mask, as the tarball's UDM_masks/ holds
    udm_month = (SPACENET7_DEMO_AOIS["train"][0], months[1])
    for split, aois in SPACENET7_DEMO_AOIS.items():
        h, w = p["shapes"][split]  # rows, columns: real mosaics are 1023, 1024 or 1025 rows
        for k, aoi in enumerate(aois):
            base = _background(rng, h, w, scale=p["cell"] / 8)
            cands = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=0.6)
            # real labels_match_pix coordinates run from -2.2 to 1024.9 on a 1024-px mosaic
            _reach_edges(cands, h, w, p["cell"], left=-2.2, right=w + 0.9)
            n = len(months)
            for i, b in enumerate(cands):
                b["id"] = i
                u = rng.random()
                if u < 0.55:
                    b["start"], b["end"] = 0, n
                    if rng.random() < 0.12:
                        b["end"] = int(rng.integers(1, n))
                else:
                    b["start"], b["end"] = int(rng.integers(1, n)), n
            transform = from_origin(-8.0e6 + 1e4 * k, 4.0e6 - 1e4 * k, SN7_RES, SN7_RES)
            adir = root / "train" / aoi
            for m, (yy, mm) in enumerate(months):
                present = [b for b in cands if b["start"] <= m < b["end"]]
                img = _paint(_illumination(rng, base.copy()), present, rng)
                rgba = np.concatenate(
                    [_to_uint8(img), np.full((h, w, 1), 255, np.uint8)], axis=-1
                )
                stem = f"global_monthly_{yy}_{mm:02d}_mosaic_{aoi}"
                image = adir / "images" / f"{stem}.tif"
                _write_geotiff(image, rgba, "EPSG:3857", transform)
                udm_rings = []
                if (aoi, (yy, mm)) == udm_month:
                    udm = np.zeros((h, w, 1), np.uint8)
                    udm[: h // 4] = 255  # a cloud band over the top quarter
                    udm_rings = [[(0.0, 0.0), (float(w), 0.0), (float(w), float(h // 4)), (0.0, float(h // 4)),
                                  (0.0, 0.0)]]
                    _write_geotiff(adir / "UDM_masks" / f"{stem}_UDM.tif", udm, "EPSG:3857", transform)
                    masked = rgba.copy()
                    masked[udm[..., 0] > 0] = 0  # the masked pixels zeroed, alpha included
                    _write_geotiff(adir / "images_masked" / f"{stem}.tif", masked, "EPSG:3857", transform)
                else:  # nothing masked: the very same bytes as images/
                    _write_bytes(adir / "images_masked" / f"{stem}.tif", image.read_bytes())
                if (aoi, (yy, mm)) == unlabelled:
                    continue
                _sn7_labels(adir, stem, present, m, transform, udm_rings)


def _whu(root: Path, rng, p: dict) -> None:
    base_dir = root / WHU_DIRNAME
    h = w = p["size"]
    # Tile numbers: each split's run crosses a power of ten (demo: train 0-23, val 96-103,
    # test 996-1003), so plain and natural name order differ (preparation.whu_ss_order).
    first = {"train": 10, "val": 100, "test": 1000}
    for split, count in p["counts"].items():
        counter = max(0, first[split] - count // 2)
        for _ in range(count):
            name = f"{counter}.tif"
            counter += 1
            img = _background(rng, h, w, scale=p["cell"] / 16)
            buildings = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=0.5)
            img = _paint(img, buildings, rng, shadow=max(1, p["cell"] // 12))
            label = np.where(_index_raster(buildings, h, w) > 0, 255, 0).astype(np.uint8)
            transform = from_origin(1.57e6 + 20 * counter, 5.18e6, 0.3, 0.3)
            _write_geotiff(base_dir / split / "image" / name, _to_uint8(img), "EPSG:2193", transform)
            _write_geotiff(base_dir / split / "label" / name, label[..., None], "EPSG:2193", transform)


def _whu_cd(root: Path, rng, p: dict) -> None:
    h = w = p["size"]
    names = [f"whucd_{i + 1:05d}.png" for i in range(p["pairs"])]
    for i, name in enumerate(names):
        no_change = i % 4 == 0
        base = _background(rng, h, w, scale=p["cell"] / 12)
        cands = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=0.7)
        if not cands:  # at least one building so that a change can be made
            cands = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=1.0)[:1]
        state = []  # (in 2012, in 2016)
        for b in cands:
            u = rng.random()
            if no_change:
                both = u < 0.6
                state.append((both, both))
            elif u < 0.45:
                state.append((True, True))
            elif u < 0.8:
                state.append((False, True))  # newly built (post-earthquake reconstruction)
            elif u < 0.9:
                state.append((True, False))  # demolished
            else:
                state.append((False, False))
        if not no_change and all(a == b for a, b in state):
            state[0] = (False, True)
        before = [b for b, s in zip(cands, state) if s[0]]
        after = [b for b, s in zip(cands, state) if s[1]]
        img_a = _paint(_illumination(rng, base.copy()), before, rng)
        img_b = _paint(_illumination(rng, base.copy()), after, rng)
        ma = _index_raster(before, h, w) > 0
        mb = _index_raster(after, h, w) > 0
        label = np.where(ma ^ mb, 255, 0).astype(np.uint8)
        _write_png(root / "A" / name, _to_uint8(img_a))
        _write_png(root / "B" / name, _to_uint8(img_b))
        _write_png(root / "label" / name, label)
    order = rng.permutation(len(names))
    start = 0
    for split, count in p["counts"].items():
        chosen = sorted(names[j] for j in order[start:start + count])
        start += count
        write_text(root / "list" / f"{split}.txt", "".join(f"{n}\n" for n in chosen))


def _uid(rng) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _wkt(ring) -> str:
    return "POLYGON ((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in ring) + "))"


def _xbd_label(stem, disaster, buildings, subtypes, w, h, date, rng, post: bool) -> dict:
    lon0, lat0, d = -122.70, 38.48, 2.5e-6
    xy, ll = [], []
    for b, sub in zip(buildings, subtypes):
        props = {"feature_type": "building", "uid": b["uid"]}
        if post:
            props = {"feature_type": "building", "subtype": sub, "uid": b["uid"]}
        xy.append({"properties": props, "wkt": _wkt(b["ring"])})
        ll.append(
            {"properties": props, "wkt": _wkt([(lon0 + x * d, lat0 - y * d) for x, y in b["ring"]])}
        )
    meta = {
        "sensor": "WORLDVIEW03_VNIR",
        "provider_asset_type": "WORLDVIEW03_VNIR",
        "gsd": 2.4,
        "capture_date": date,
        "off_nadir_angle": round(float(rng.uniform(10, 30)), 3),
        "pan_resolution": 0.6,
        "sun_azimuth": round(float(rng.uniform(140, 200)), 3),
        "sun_elevation": round(float(rng.uniform(30, 60)), 3),
        "target_azimuth": round(float(rng.uniform(0, 360)), 3),
        "disaster": disaster,
        "disaster_type": "fire",
        "catalog_id": rng.bytes(8).hex(),
        "original_width": w,
        "original_height": h,
        "width": w,
        "height": h,
        "id": _uid(rng),
        "img_name": f"{stem}.png",
    }
    return {"features": {"lng_lat": ll, "xy": xy}, "metadata": meta}


def _burn(img: np.ndarray, b_idx: np.ndarray, subtypes, rng) -> np.ndarray:
    """Post-fire appearance: destroyed roofs become ash, major/minor damage darkens roofs."""
    h, w = img.shape[:2]
    spots = rng.random((h, w)) < 0.35
    for k, sub in enumerate(subtypes):
        inside = b_idx == k + 1
        if sub == "destroyed":
            img[inside] = np.array([48, 44, 40], np.float32) + rng.normal(0, 10, (int(inside.sum()), 3))
        elif sub == "major-damage":
            img[inside] = img[inside] * 0.45 + 10
        elif sub == "minor-damage":
            sel = inside & spots
            img[sel] = img[sel] * 0.4
    return img


def _xview2(root: Path, rng, p: dict) -> None:
    h = w = p["size"]
    scale = p["cell"] / 16
    used: set[int] = set()

    def new_id() -> str:
        while True:
            i = int(rng.integers(0, 100000))
            if i not in used:
                used.add(i)
                return f"{i:08d}"

    jobs = []
    for split, count in p["counts"].items():
        n_none, n_empty = p["no_damage"][split], p["empty"][split]
        for j in range(count):
            jobs.append((split, "santa-rosa-wildfire", j < n_none, j < n_empty))
    for j in range(p["other"]):
        jobs.append(("train" if j % 2 == 0 else "test", "socal-fire", False, False))
    for job, (split, disaster, undamaged, empty) in enumerate(jobs):
        stem_id = f"{disaster}_{new_id()}"
        base = _background(rng, h, w, scale=scale)
        if empty:  # a tile without a building: PRE and POST labels with zero polygons
            buildings = []
        else:
            buildings = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=0.4)
            if not buildings:
                buildings = _layout(rng, h, w, p["cell"], p["bmin"], p["bmax"], p=1.0)[:2]
            # real features.xy vertices reach the image border: x = width, y = height exactly
            _reach_edges(buildings, h, w, p["cell"], right=w, bottom=h)
        for b in buildings:
            b["uid"] = _uid(rng)
        subtypes = []
        for _ in buildings:
            u = rng.random()
            if undamaged or u >= 0.45:
                subtypes.append("un-classified" if rng.random() < 0.05 else "no-damage")
            else:
                subtypes.append(str(rng.choice(DAMAGE_SUBTYPES, p=[0.2, 0.2, 0.6])))
        if not undamaged and not any(s in DAMAGE_SUBTYPES for s in subtypes):
            subtypes[int(rng.integers(len(subtypes)))] = "destroyed"
        shadow = max(1, p["cell"] // 12)
        pre = _paint(_illumination(rng, base.copy()), buildings, rng, shadow=shadow)
        post = _paint(_illumination(rng, base.copy()), buildings, rng, shadow=shadow)
        b_idx = _index_raster(buildings, h, w)
        if not undamaged:
            # burn scar on the vegetation around the damaged buildings
            scar = _smooth_noise(rng, h, w, 20 * scale) > 0.55
            post[scar & (b_idx == 0)] = post[scar & (b_idx == 0)] * 0.55 + np.float32(8)
        post = _burn(post, b_idx, subtypes, rng)
        footprint = (b_idx > 0).astype(np.uint8)
        values = np.array([0] + [TARGET_VALUE[s] for s in subtypes], np.uint8)
        pre, post = _to_uint8(pre), _to_uint8(post)
        if job % 3 == 1:  # a black nodata corner (off the buildings), transparent by the tRNS chunk
            yy, xx = np.mgrid[:h, :w]
            pre[(yy + xx < h // 8) & (b_idx == 0)] = 0
        for phase, img, target, date in (
            ("pre", pre, footprint, "2017-02-04T19:02:11.000Z"),
            ("post", post, values[b_idx], "2017-10-11T19:05:44.000Z"),
        ):
            stem = f"{stem_id}_{phase}_disaster"
            d = root / split
            _write_png(d / "images" / f"{stem}.png", img, transparency=(0, 0, 0))
            _write_png(d / "targets" / f"{stem}_target.png", target)
            write_json(
                d / "labels" / f"{stem}.json",
                _xbd_label(stem, disaster, buildings, subtypes, w, h, date, rng, post=phase == "post"),
            )


def _aid(root: Path, rng, p: dict) -> None:
    h = w = p["size"]
    s = h / 80
    for cls in AID_CLASSES:
        for n in range(1, p["per_class"] + 1):
            img = _background(rng, h, w, scale=s)
            if cls == "Forest":
                canopy = _smooth_noise(rng, h, w, 2.5 * s)
                img = np.array([38, 74, 36], np.float32) * (0.6 + 0.8 * canopy)[..., None]
                img += rng.normal(0, 6, img.shape).astype(np.float32)
            elif cls == "Airport":
                img = img * 0.6 + np.array([120, 115, 100], np.float32) * 0.4
                a, b = int(0.4 * h), int(0.52 * h)
                img[a:b] = np.array([105, 105, 108], np.float32) + rng.normal(0, 3, (b - a, w, 3))
                img[(a + b) // 2, :: max(2, int(4 * s))] = 235  # centre-line dashes
                c0, c1 = int(0.6 * w), int(0.65 * w)
                img[b:, c0:c1] = np.array([115, 115, 118], np.float32)  # taxiway
                terminal = _layout(rng, h - int(0.7 * h), w, int(20 * s), int(8 * s), int(16 * s), 0.6)
                for t in terminal:
                    t["ring"] = [(x, y + int(0.7 * h)) for x, y in t["ring"]]
                img = _paint(img, terminal, rng)
            else:  # DenseResidential
                img = _paint(img, _layout(rng, h, w, int(10 * s), int(5 * s), int(8 * s), 0.85), rng)
            _write_jpeg(root / "AID" / cls / f"{cls.lower()}_{n}.jpg", _to_uint8(img))
    _macos_strays(root, "AID")


# Finder's folder-view file (a "Bud1" buddy-allocator file) and an AppleDouble header (magic
# 0x00051607, version 2, "Mac OS X" filler, no entries): the bytes of the stray entries.
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(24)
APPLE_DOUBLE = (0x00051607).to_bytes(4, "big") + (0x00020000).to_bytes(4, "big") + b"Mac OS X        " + bytes(2)


def _macos_strays(root: Path, top: str, ds_store_in: str = "DenseResidential") -> None:
    """What a zip made by macOS leaves beside the data once extracted: ``.DS_Store`` in the
    top folder and in class folder ``ds_store_in``, and ``__MACOSX/<top>/`` holding an
    AppleDouble ``._<name>`` for every folder and file (``._<file>.jpg`` keep the ``.jpg``)."""
    base = root / top
    _write_bytes(base / ".DS_Store", DS_STORE)
    _write_bytes(base / ds_store_in / ".DS_Store", DS_STORE)
    classes = sorted(d for d in base.iterdir() if d.is_dir())
    for d in classes:
        _write_bytes(root / "__MACOSX" / top / f"._{d.name}", APPLE_DOUBLE)
        for f in sorted(d.iterdir()):
            if not f.name.startswith("."):
                _write_bytes(root / "__MACOSX" / top / d.name / f"._{f.name}", APPLE_DOUBLE)


# --------------------------------------------------------------------------------------------
# Table III ablation pretraining sets


def _imagenet(root: Path, rng, p: dict) -> None:
    """``imagenet/val/ILSVRC2012_val_<8 digits>.JPEG``: varied sizes (one smaller than a 32-px
    tile in the demo, one below 256 in fullsize), every fifth image grayscale (mode L) as some
    real ImageNet JPEGs are."""
    sizes = p["sizes"]
    for i in range(p["count"]):
        w, h = sizes[i % len(sizes)]
        s = min(h, w) / 64
        img = _background(rng, h, w, scale=max(s, 0.25))
        tint = rng.uniform(0.6, 1.4, 3).astype(np.float32)
        img = img * tint
        for _ in range(int(rng.integers(2, 6))):  # a few "objects": filled ellipses
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.08, 0.3) * h, rng.uniform(0.08, 0.3) * w
            yy, xx = np.ogrid[:h, :w]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[inside] = rng.uniform(20, 235, 3).astype(np.float32) + rng.normal(0, 6, (int(inside.sum()), 3))
        arr = _to_uint8(img)
        if i % 5 == 4:
            arr = np.asarray(Image.fromarray(arr).convert("L"))
        _write_jpeg(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", arr)


# MAJOR-TOM Core-S2L2A columns, in the dataset card's order (huggingface.co/datasets/Major-TOM/
# Core-S2L2A, README dataset_info): product_id, grid_cell, product_datetime, thumbnail, the 12
# L2A bands as GeoTIFF bytes, cloud_mask. Band resolutions (m) from the card.
MAJORTOM_BANDS = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20,
}


def geotiff_bytes(array: np.ndarray, crs: str = "EPSG:32633", transform=None, nodata=None) -> bytes:
    """A single-band (DEFLATE) GeoTIFF of a 2-D array, as bytes — a MAJOR-TOM band cell."""
    h, w = array.shape
    transform = transform if transform is not None else from_origin(500000.0, 4500000.0, 10.0, 10.0)
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", height=h, width=w, count=1, dtype=array.dtype.name, crs=crs,
                      transform=transform, nodata=nodata, compress="deflate") as dst:
            dst.write(array, 1)
        return bytes(mem.read())


def s2l2a_thumbnail(b04: np.ndarray, b03: np.ndarray, b02: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] the way the MAJOR-TOM authors render their ``thumbnail`` column
    (``floor(255 * clip(1.3 * (DN / 10000) ** 0.6, 0, 1))``; see preparers.majortom.s2l2a_to_uint8)."""
    x = np.stack([b04, b03, b02], -1).astype(np.float64) / 10000.0
    return (np.clip(1.3 * x ** 0.6, 0, 1) * 255).astype(np.uint8)


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int | None = None) -> None:
    """A parquet file of ``{column: values}`` (str → string, bytes → binary), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        k: pa.array(v, type=pa.binary() if v and isinstance(v[0], (bytes, bytearray)) else None)
        for k, v in columns.items()
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _majortom(root: Path, rng, p: dict) -> None:
    """``majortom/images/part_00001.parquet``: one row per grid cell with the real column
    names; bands are uint16 reflectance x 10000 (nodata 0) derived from a vegetation/soil
    scene, with a nodata wedge (swath edge) in the second row."""
    n10 = p["size"]
    cols: dict[str, list] = {k: [] for k in ("product_id", "grid_cell", "product_datetime", "thumbnail",
                                             *MAJORTOM_BANDS, "cloud_mask")}
    for i in range(p["rows"]):
        row_u, col_r = 393 + i // 3, 510 + i % 3
        day = 1 + int(rng.integers(0, 28))
        west, north = 400000.0 + 10680.0 * (i % 3), 3920000.0 - 10680.0 * (i // 3)
        rgb = _background(rng, n10, n10, scale=max(n10 / 80, 0.25))  # 0..255
        # reflectance x 10000: red/green/blue with distinct gains, NIR high over vegetation
        refl10 = {
            "B04": rgb[..., 0] * 14.0 + 150, "B03": rgb[..., 1] * 12.0 + 200,
            "B02": rgb[..., 2] * 10.0 + 250, "B08": 4200 - rgb[..., 0] * 9.0,
        }
        valid = np.ones((n10, n10), bool)
        if i == 1:
            yy, xx = np.mgrid[:n10, :n10]
            valid = xx + yy >= n10 // 2  # a nodata wedge in the top-left corner
        for band, res in MAJORTOM_BANDS.items():
            f = res // 10
            n = n10 // f
            if band in refl10:
                dn = refl10[band]
            else:
                dn = 1500 + 1500 * _smooth_noise(rng, n10, n10, 6 * f)
            dn = dn + rng.normal(0, 20, (n10, n10))
            dn = np.where(valid, np.clip(np.rint(dn), 1, 20000), 0).astype(np.uint16)
            if f > 1:
                dn = dn[f // 2::f, f // 2::f][:n, :n]
            cols[band].append(geotiff_bytes(dn, "EPSG:32640", from_origin(west, north, res, res), nodata=0))
            if band == "B04":
                b04 = dn
            elif band == "B03":
                b03 = dn
            elif band == "B02":
                b02 = dn
        cloud = (_smooth_noise(rng, n10, n10, 12) > 0.8).astype(np.uint8)
        cols["cloud_mask"].append(geotiff_bytes(cloud, "EPSG:32640", from_origin(west, north, 10, 10)))
        cols["thumbnail"].append(_png_bytes(s2l2a_thumbnail(b04, b03, b02)))
        stamp = f"2021{(i % 12) + 1:02d}{day:02d}T065631"
        cols["product_id"].append(f"S2A_MSIL2A_{stamp}_N0500_R063_T40SEE_2023{(i % 12) + 1:02d}{day:02d}T163151")
        cols["grid_cell"].append(f"{row_u}U_{col_r}R")
        cols["product_datetime"].append(f"2021-{(i % 12) + 1:02d}-{day:02d} 06:56:31")
    write_parquet(root / "images" / "part_00001.parquet", cols, row_group_size=p["row_group"])


_GENERATORS = {
    "spacenet7": _spacenet7,
    "whu": _whu,
    "whu-cd": _whu_cd,
    "xview2": _xview2,
    "aid": _aid,
    "imagenet": _imagenet,
    "majortom": _majortom,
}


def generate(dataset: str, raw_root: Path, seed: int = 0, size: str = "demo") -> Path:
    """Write the synthetic raw data of ``dataset`` under ``raw_root/<dataset>``; return that dir.

    ``dataset`` is one of :data:`DATASETS` (``spacenet7``, ``whu``, ``whu-cd``, ``xview2``, ``aid``,
    ``imagenet``, ``majortom``); ``size`` is
    ``"demo"`` or ``"fullsize"`` (see the module docstring). Deterministic for a given
    ``(dataset, seed, size)``: each data set draws from its own generator seeded with
    ``(seed, index of dataset)``, so generating one set never changes another.
    """
    if dataset not in _GENERATORS:
        raise ConfigError(
            f"unknown synthetic data set {dataset!r}; available: {', '.join(DATASETS)}"
        )
    if size not in SIZES:
        raise ConfigError(f"unknown synthetic size {size!r}; available: {', '.join(SIZES)}")
    out = _fresh_dir(
        Path(raw_root) / dataset,
        {"synthetic": True, "dataset": dataset, "seed": int(seed), "size": size},
    )
    rng = np.random.default_rng([int(seed), DATASETS.index(dataset)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        _GENERATORS[dataset](out, rng, SIZES[size][dataset])
    return out


def generate_all(raw_root: Path, seed: int = 0, size: str = "demo") -> dict[str, Path]:
    """Generate every synthetic raw data set; return ``{dataset: raw dir}``."""
    return {name: generate(name, raw_root, seed=seed, size=size) for name in DATASETS}


__all__ = ["DATASETS", "MAJORTOM_BANDS", "SIZES", "SPACENET7_DEMO_AOIS", "generate", "generate_all",
           "geotiff_bytes", "s2l2a_thumbnail", "write_parquet"]


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/raw")
    print(json.dumps({k: str(v) for k, v in generate_all(target).items()}, indent=2))
