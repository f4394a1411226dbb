"""The release's data rules on real files of the original data sets (opt-in).

Point ``NOISE2MAP_REAL_DATA`` at a raw root holding any of ``spacenet7/train/<aoi>/...`` and
``xview2/<split>/{images,labels}/`` in their real layouts (a part of the data will do: one
mosaic with its ``labels_match_pix`` file, one xBD split)::

    NOISE2MAP_REAL_DATA=data/raw python -m pytest tests/test_real_data.py

Without it the tests are skipped: the original files are not shipped (their terms and sizes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from noise2map.data.preparers import rasters
from noise2map.data.preparers import xview2 as xv2
from noise2map.data.preparers.common import Sources

from test_release_data_rules import hafner_reference, iou, mask_polygons_reference, pixel_centre_reference

ROOT = Path(os.environ["NOISE2MAP_REAL_DATA"]) if os.environ.get("NOISE2MAP_REAL_DATA") else None
pytestmark = pytest.mark.skipif(ROOT is None, reason="NOISE2MAP_REAL_DATA (a raw root of real files) is not set")


def _sn7_pairs(limit: int = 6):
    """(mosaic, labels_match_pix file) pairs of the real tree, a few per run."""
    if ROOT is None:
        return []
    pairs = []
    for label in sorted((ROOT / "spacenet7" / "train").glob("*/labels_match_pix/*_Buildings.geojson")):
        stem = label.name[: -len("_Buildings.geojson")]
        for folder in ("images_masked", "images"):
            mosaic = label.parent.parent / folder / f"{stem}.tif"
            if mosaic.is_file():
                pairs.append((mosaic, label))
                break
    return pairs[:limit]


@pytest.mark.parametrize("mosaic,label", _sn7_pairs(), ids=lambda p: Path(p).stem[:40])
def test_spacenet7_rasters_equal_hafners_rule_and_differ_from_pixel_centres(mosaic, label):
    with rasterio.open(mosaic) as src:
        shape = (src.height, src.width)
    features = json.loads(label.read_text())["features"]
    polys = rasters._sn7_polygons(label, shape, Sources(ROOT))
    ours = rasters.hafner_raster(polys, shape)
    assert iou(ours, hafner_reference(features, shape)) >= 0.95
    assert np.array_equal(ours.astype(bool), hafner_reference(features, shape))
    centres = rasters.pixel_centre_raster(polys, shape)
    assert np.array_equal(centres.astype(bool), pixel_centre_reference(features, shape))
    assert iou(ours, centres) < 0.95  # the rule matters on real, few-pixel-wide buildings
    raster = rasters.labels_raster_path(label)
    if raster.is_file():  # Hafner et al.'s own file, where the data holds it
        with rasterio.open(raster) as src:
            assert iou(src.read(1) > 0, ours) >= 0.95


def _xbd_splits():
    return [] if ROOT is None else [s for s in ("train", "test") if (ROOT / "xview2" / s / "labels").is_dir()]


@pytest.mark.parametrize("split", _xbd_splits())
def test_xbd_pairs_without_a_pre_label_building_are_the_releases_missing_masks(split):
    labels = ROOT / "xview2" / split / "labels"
    pres = sorted(labels.glob(f"{xv2.XVIEW2_DISASTER}_*_pre_disaster.json"))
    assert pres
    empty = sorted(p.name.split("_")[1] for p in pres if not json.loads(p.read_text())["features"]["xy"])
    assert empty == sorted(xv2.XVIEW2_RELEASE_MISSING[split])  # the footprint reading, confirmed on this split
    for path in pres[:8]:
        label = json.loads(path.read_text())
        assert not any("subtype" in f["properties"] for f in label["features"]["xy"])  # pre labels: footprints
        for border in (0, 2):
            ref = mask_polygons_reference(label, (1024, 1024), border)
            ours = xv2.footprint_mask(path, (1024, 1024), border)
            assert (ours is None and ref is None) or np.array_equal(ours, ref)
