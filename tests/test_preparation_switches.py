"""The preparation switches (``preparation:`` in a preset): the released loaders' behaviour by
default, the corrected behaviour on request, each in its own store folder."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import Resampling

from noise2map.config import load_config, preparation_options, prepared_dir, store_base, store_name
from noise2map.data import generate, prepare
from noise2map.data.preparers.common import resize_nearest_gdal
from noise2map.data.preparers.spacenet7 import SPACENET7_SPLIT, nominal_size
from noise2map.data.preparers.whu import resize_mask_truncated
from noise2map.errors import ConfigError

PAPER, CORRECTED = "workflow/config/paper.yaml", "workflow/config/corrected.yaml"


def _write_tif(path, array_hwc):
    h, w, c = array_hwc.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype="uint8") as dst:
        dst.write(np.moveaxis(array_hwc, -1, 0))


@pytest.mark.parametrize("shape,out", [((63, 65), (64, 64)), ((1023, 1025), (1024, 1024))])
def test_nearest_resampling_equals_rasterio_read_with_out_shape(tmp_path, shape, out):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (*shape, 2), dtype=np.uint8)
    _write_tif(tmp_path / "m.tif", array)
    with rasterio.open(tmp_path / "m.tif") as src:
        theirs = np.moveaxis(src.read(out_shape=(2, *out), resampling=Resampling.nearest), 0, -1)
    assert np.array_equal(resize_nearest_gdal(array, out), theirs)
    assert nominal_size(1023, 256) == nominal_size(1025, 256) == 1024 and nominal_size(63, 16) == 64


def test_whu_ss_released_masks_are_eroded_by_bilinear_and_truncation():
    mask = np.zeros((8, 8), np.uint8)
    mask[:6, :6] = 1  # a 6x6 building in the corner
    nearest = np.asarray(Image.fromarray(mask * 255).resize((4, 4), Image.NEAREST)) // 255
    truncated = resize_mask_truncated(mask, 4)
    # nearest samples input pixels 1, 3, 5, 7: a 3x3 building; the bilinear value of output
    # pixel 2 mixes input rows 3-6 with weights 1/8, 3/8, 3/8, 1/8: 7/8 of 255, truncated to 0
    assert nearest.sum() == 9 and nearest[:3, :3].all()
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 1
    assert np.array_equal(truncated, expected)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("switch_raw")
    for name in ("spacenet7", "whu-cd", "whu"):
        generate(name, root, seed=0)
    return root


def test_whu_ss_store_follows_the_mask_switch(raw, tmp_path):
    released = prepare("whu-ss", raw, tmp_path / "r", 32)
    nearest = prepare("whu-ss", raw, tmp_path / "n", 32, options={"mask_resize": "nearest"})
    a, b = (np.load(tmp_path / d / "train" / "labels.npy") for d in ("r", "n"))
    assert a.shape == b.shape and (a <= b).all() and a.sum() < b.sum()  # eroded, never grown
    assert any("released Resize + ToTensor + .long()" in r for r in released["rules"])
    assert any("nearest neighbour" in r for r in nearest["rules"])


def test_whu_cd_pair_filters(raw, tmp_path):
    shutil.copytree(raw / "whu-cd", tmp_path / "whu-cd")
    names = (tmp_path / "whu-cd" / "list" / "train.txt").read_text().split()
    labels = {n: np.asarray(Image.open(tmp_path / "whu-cd" / "label" / n)) for n in names}
    full = next(n for n in names if labels[n].any())
    Image.fromarray(np.full_like(labels[full], 255)).save(tmp_path / "whu-cd" / "label" / full)
    empty = sum(not labels[n].any() for n in names)
    counts = {mode: prepare("whu-cd", tmp_path, tmp_path / mode, 32, options={"pairs": mode})["splits"]["train"]["count"]
              for mode in ("drop_uniform", "drop_empty", "keep_all")}
    assert counts == {"keep_all": len(names), "drop_empty": len(names) - empty,
                      "drop_uniform": len(names) - empty - 1}


def _crop_aoi(root, aoi, size):
    """Crop every mosaic of one AOI to size x size (real mosaics are 1023-1025 px)."""
    for tif in (root / "spacenet7" / "train" / aoi / "images_masked").glob("*.tif"):
        with rasterio.open(tif) as src:
            array = np.moveaxis(src.read(), 0, -1)[:size, :size]
        _write_tif(tif, np.ascontiguousarray(array))


def test_spacenet7_ss_released_read_gives_16_tiles_per_mosaic(raw, tmp_path):
    shutil.copytree(raw / "spacenet7", tmp_path / "spacenet7")
    val = SPACENET7_SPLIT["val"][0]
    _crop_aoi(tmp_path, val, 63)  # like a 1023-px mosaic at 256² tiles
    common = {"months": "labelled"}
    nominal = prepare("spacenet7-ss", tmp_path, tmp_path / "n", 16, options={**common, "read_size": "nominal"})
    native = prepare("spacenet7-ss", tmp_path, tmp_path / "f", 16, options={**common, "read_size": "native"})
    months = len(list((tmp_path / "spacenet7" / "train" / val / "images_masked").glob("*.tif")))
    assert nominal["splits"]["val"]["count"] == 16 * months  # read at 64², 4 x 4 tiles
    assert native["splits"]["val"]["count"] == 9 * months   # floor(63 / 16) = 3 per side
    assert nominal["splits"]["train"]["count"] == native["splits"]["train"]["count"]  # 64-px mosaics


def test_spacenet7_ss_months_follow_metadata_train_json(raw, tmp_path):
    shutil.copytree(raw / "spacenet7", tmp_path / "spacenet7")
    train = tmp_path / "spacenet7" / "train"
    aoi = SPACENET7_SPLIT["train"][0]
    stems = sorted(p.stem for p in (train / aoi / "images_masked").glob("*.tif"))
    ym = [(int(s.split("_")[2]), int(s.split("_")[3])) for s in stems]
    # Hafner et al.'s file: month 0 masked, month 1 unlabelled, month 2 absent, the rest usable
    entries = [{"aoi_id": aoi, "year": y, "month": m, "label": i != 1, "mask": i == 0}
               for i, (y, m) in enumerate(ym) if i != 2]
    others = {a: [{"aoi_id": a, "year": 2018, "month": m, "label": True, "mask": False} for m in range(1, 13)]
              for lst in SPACENET7_SPLIT.values() for a in lst if a != aoi}
    (tmp_path / "spacenet7" / "metadata_train.json").write_text(json.dumps({aoi: entries, **others}))
    manifest = prepare("spacenet7-ss", tmp_path, tmp_path / "out", 32)
    skipped = {k.split("/")[-1]: v for k, v in manifest["masked_months"].items() if aoi in k}
    assert skipped == {f"{stems[0]}.tif": "mask: true in metadata_train.json",
                       f"{stems[1]}.tif": "label: false in metadata_train.json",
                       f"{stems[2]}.tif": "not in metadata_train.json"}
    # the UDM_masks rule is not used once the file is there
    assert any("read from Hafner et al.'s metadata_train.json" in r for r in manifest["rules"])
    assert "spacenet7/metadata_train.json" in manifest["sources"]


def test_presets_prepare_into_their_own_stores():
    paper, corrected = load_config(PAPER), load_config(CORRECTED)
    assert [store_name(paper, n) for n in ("whu-ss", "whu-cd", "xview2-cd", "spacenet7-ss")] == [
        "whu-ss", "whu-cd", "xview2-cd", "spacenet7-ss"]
    assert store_name(corrected, "whu-ss") == "whu-ss+nearest+natural"
    assert store_name(corrected, "whu-cd") == "whu-cd+drop_empty+list+nonzero"
    assert store_name(corrected, "spacenet7-cd") == "spacenet7-cd+pixel_centre"  # one switch, both tasks
    assert store_name(corrected, "xview2-ss") == "xview2-ss+post_damaged+all_labelled"
    assert store_name(corrected, "aid") == "aid"  # unchanged sets are shared
    assert prepared_dir(corrected, "whu", "ss").name == "whu-ss+nearest+natural"
    assert store_base("whu-ss+nearest+natural") == "whu-ss"
    assert preparation_options(paper, "spacenet7-ss") == {"label_raster": "hafner", "months": "usable",
                                                          "read_size": "nominal"}
    assert preparation_options(paper, "aid") == {}


def test_a_bad_switch_value_is_named(raw, tmp_path):
    with pytest.raises(ConfigError, match="preparation.whu_cd_pairs must be one of drop_uniform, drop_empty, keep_all"):
        prepare("whu-cd", raw, tmp_path / "x", 32, options={"pairs": "some"})
    from noise2map.config import deep_merge, validate_config

    with pytest.raises(ConfigError, match="preparation.whu_ss_mask_resize"):
        validate_config(deep_merge(load_config(PAPER), {"preparation": {"whu_ss_mask_resize": "bicubic"}}))
