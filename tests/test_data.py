"""Synthetic raw layouts → preparers → tile store → TileDataset."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from noise2map.data import (
    PREPARED_DATASETS,
    PREPARERS,
    RAW_DIR_OF,
    TileDataset,
    generate,
    generate_all,
    prepare,
)
from noise2map.data.preparers.common import resize_bilinear_cv2
from noise2map.data.preparers.spacenet7 import SPACENET7_SPLIT
from noise2map.errors import ConfigError, DataFormatError, DataNotFoundError, UnknownNameError

T = 32
ARRAYS = {"ss": ("images", "labels"), "cd": ("pre", "post", "labels"), "pretrain": ("images",)}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate_all(root, seed=0)
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    cache: dict[str, tuple[Path, dict]] = {}

    def get(name: str, **options):
        key = "+".join([name, *(f"{k}={v}" for k, v in sorted(options.items()))])
        if key not in cache:
            manifest = prepare(name, raw, out / key, T, options=options)
            cache[key] = (out / key, manifest)
        return cache[key]

    return get


def load_split(d: Path, split: str, task: str) -> dict[str, np.ndarray]:
    return {k: np.load(d / split / f"{k}.npy") for k in ARRAYS[task]}


def read_ids(d: Path, split: str) -> list[dict]:
    with open(d / split / "tiles.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------------------------
# raw layouts


def test_raw_layouts(raw):
    sn = raw / "spacenet7" / "train"
    aois = sorted(d.name for d in sn.iterdir())
    assert len(aois) == 5 and all(a in sum(SPACENET7_SPLIT.values(), ()) for a in aois)
    tifs = sorted(sn.glob("*/images_masked/global_monthly_*_mosaic_*.tif"))
    labels = sorted(sn.glob("*/labels_match_pix/global_monthly_*_mosaic_*_Buildings.geojson"))
    assert len(tifs) == 20 and len(labels) == 19  # one unlabelled month
    with rasterio.open(tifs[0]) as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 3857
        assert (src.read(4) == 255).all() and not src.transform.is_identity
    fc = json.loads(labels[0].read_text())
    assert fc["type"] == "FeatureCollection" and "Id" in fc["features"][0]["properties"]

    whu = raw / "whu" / "3. The cropped image tiles and raster labels"
    for split, n in {"train": 24, "val": 8, "test": 8}.items():
        imgs = sorted(p.name for p in (whu / split / "image").glob("*.tif"))
        assert len(imgs) == n and imgs == sorted(p.name for p in (whu / split / "label").glob("*.tif"))
    with rasterio.open(next((whu / "train" / "label").glob("*.tif"))) as src:
        lab = src.read()
    assert lab.shape == (1, 64, 64) and set(np.unique(lab)) <= {0, 255}

    cd = raw / "whu-cd"
    names = sum((cd.joinpath("list", f"{s}.txt").read_text().split() for s in ("train", "val", "test")), [])
    assert len(names) == 40 == len(set(names))
    with Image.open(cd / "label" / names[0]) as lab_img, Image.open(cd / "A" / names[0]) as a_img:
        assert lab_img.mode == "L" and a_img.mode == "RGB" and a_img.size == (32, 32)

    xv = raw / "xview2"
    post = json.loads(next((xv / "train" / "labels").glob("santa-rosa-wildfire_*_post_disaster.json")).read_text())
    assert post["metadata"]["disaster"] == "santa-rosa-wildfire" and post["metadata"]["width"] == 128
    assert all(f["wkt"].startswith("POLYGON ((") for f in post["features"]["xy"])
    assert all("subtype" in f["properties"] for f in post["features"]["xy"])
    assert list((xv / "train" / "images").glob("socal-fire_*_pre_disaster.png"))
    assert list((xv / "train" / "targets").glob("*_post_disaster_target.png"))
    assert re.fullmatch(
        r"santa-rosa-wildfire_\d{8}_pre_disaster\.png",
        next((xv / "test" / "images").glob("santa-rosa-wildfire_*_pre_disaster.png")).name,
    )
    aid = sorted((raw / "aid" / "AID").glob("*/*.jpg"))
    assert len(aid) == 12 and (raw / "aid" / "AID" / "Airport" / "airport_1.jpg") in aid


def test_generate_refuses_foreign_dir(tmp_path):
    (tmp_path / "aid").mkdir()
    (tmp_path / "aid" / "real.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="refusing"):
        generate("aid", tmp_path)
    with pytest.raises(ConfigError):
        generate("nope", tmp_path)


def test_generation_and_preparation_are_reproducible(raw, tmp_path):
    generate_all(tmp_path / "a", seed=0)
    assert file_hashes(tmp_path / "a") == file_hashes(raw)
    generate("whu-cd", tmp_path / "b", seed=1)
    assert file_hashes(tmp_path / "b" / "whu-cd") != file_hashes(raw / "whu-cd")
    m1 = prepare("xview2-cd", tmp_path / "a", tmp_path / "p1", T)
    m2 = prepare("xview2-cd", raw, tmp_path / "p2", T)
    assert m1 == m2
    for k in ARRAYS["cd"]:
        assert np.array_equal(np.load(tmp_path / "p1" / "train" / f"{k}.npy"),
                              np.load(tmp_path / "p2" / "train" / f"{k}.npy"))


# ------------------------------------------------------------------------------------------
# every preparer: store invariants


@pytest.mark.parametrize("name", PREPARED_DATASETS)
def test_store_invariants(name, prepared, raw):
    d, m = prepared(name)
    task = m["task"]
    assert m["name"] == name and m["tile_size"] == T and m["noise2map_version"]
    assert m["rules"] and all(isinstance(r, str) for r in m["rules"])
    assert json.loads((d / "manifest.json").read_text()) == m
    for rel, digest in m["sources"].items():
        assert rel.startswith(RAW_DIR_OF[name] + "/")
        assert hashlib.sha256((raw / rel).read_bytes()).hexdigest() == digest
    for split, info in m["splits"].items():
        arrays = load_split(d, split, task)
        rows = read_ids(d, split)
        n = info["count"]
        assert n > 0 and len(rows) == n
        ids = [r["tile_id"] for r in rows]
        assert len(set(ids)) == n
        assert list(rows[0]) == ["tile_id", "source", "row", "col"]
        for k, a in arrays.items():
            assert a.dtype == np.uint8
            assert a.shape == ((n, T, T) if k == "labels" else (n, T, T, 3))
        if "labels" in arrays:
            assert set(np.unique(arrays["labels"])) <= {0, 1}
            assert info["positive_fraction"] == pytest.approx(arrays["labels"].mean(), abs=1e-6)
        else:
            assert info["positive_fraction"] is None
        for r in rows:
            for src in r["source"].split(";"):
                assert (raw / src).is_file()


# ------------------------------------------------------------------------------------------
# per data set rules and counts


def _sn7_months(raw):
    """{aoi: [(YYYY_MM, labelled, (h, w), has a UDM mask), ...]} from the raw files."""
    out = {}
    for adir in sorted((raw / "spacenet7" / "train").iterdir()):
        months = []
        for tif in sorted((adir / "images_masked").glob("*.tif")):
            ym = re.search(r"global_monthly_(\d{4}_\d{2})_mosaic", tif.name).group(1)
            lab = adir / "labels_match_pix" / f"{tif.stem}_Buildings.geojson"
            udm = (adir / "UDM_masks" / f"{tif.stem}_UDM.tif").is_file()
            with rasterio.open(tif) as src:
                months.append((ym, lab.is_file(), (src.height, src.width), udm))
        out[adir.name] = months
    return out


def _split_of(aoi):
    return next(s for s, lst in SPACENET7_SPLIT.items() if aoi in lst)


def test_spacenet7_counts(prepared, raw):
    months = _sn7_months(raw)
    assert any(h % T for ms in months.values() for _, _, (h, _), _ in ms)  # a 65-px mosaic (floor rule)
    exp_ss, exp_usable, exp_cd = ({"train": 0, "val": 0, "test": 0} for _ in range(3))
    for aoi, ms in months.items():
        per = (ms[0][2][0] // T) * (ms[0][2][1] // T)
        exp_ss[_split_of(aoi)] += per * sum(lab for _, lab, _, _ in ms)
        exp_usable[_split_of(aoi)] += per * sum(lab and not udm for _, lab, _, udm in ms)
        exp_cd[_split_of(aoi)] += per * sum(a[1] and b[1] for a, b in zip(ms, ms[1:]))
    _, every = prepared("spacenet7-ss", months="labelled", read_size="native")
    _, usable = prepared("spacenet7-ss")  # the released filter: labelled and not masked
    _, cd = prepared("spacenet7-cd")
    assert {s: v["count"] for s, v in every["splits"].items()} == exp_ss == {"train": 44, "val": 16, "test": 16}
    assert {s: v["count"] for s, v in usable["splits"].items()} == exp_usable == {"train": 40, "val": 16, "test": 16}
    assert {s: v["count"] for s, v in cd["splits"].items()} == exp_cd == {"train": 28, "val": 12, "test": 12}
    assert len(every["unlabelled_months"]) == 1 and every["masked_months"] == {}
    assert list(usable["masked_months"].values()) == ["has a UDM_masks file"]


def test_spacenet7_cd_is_xor_of_ss(prepared):
    dss, _ = prepared("spacenet7-ss", months="labelled", read_size="native")
    dcd, _ = prepared("spacenet7-cd")
    for split in ("train", "val", "test"):
        ss = load_split(dss, split, "ss")
        cd = load_split(dcd, split, "cd")
        pos = {r["tile_id"]: i for i, r in enumerate(read_ids(dss, split))}
        changed = 0
        for i, r in enumerate(read_ids(dcd, split)):
            m = re.fullmatch(r"(.+)_(\d{4}_\d{2})_(\d{4}_\d{2})_(r\d+_c\d+)", r["tile_id"])
            aoi, d1, d2, rc = m.groups()
            a, b = pos[f"{aoi}_{d1}_{rc}"], pos[f"{aoi}_{d2}_{rc}"]
            assert np.array_equal(cd["labels"][i], ss["labels"][a] ^ ss["labels"][b])
            assert np.array_equal(cd["pre"][i], ss["images"][a])
            assert np.array_equal(cd["post"][i], ss["images"][b])
            changed += int(cd["labels"][i].any())
        assert changed > 0


def test_spacenet7_unknown_aoi(raw, tmp_path):
    shutil.copytree(raw / "spacenet7", tmp_path / "spacenet7")
    shutil.copytree(
        tmp_path / "spacenet7" / "train" / SPACENET7_SPLIT["test"][0],
        tmp_path / "spacenet7" / "train" / "L15-9999E-9999N_0000_0000_13",
    )
    # The train tarball has an AOI more than the split lists: it is left out and named.
    manifest = prepare("spacenet7-ss", tmp_path, tmp_path / "out", T)
    assert manifest["outside_split"] == ["L15-9999E-9999N_0000_0000_13"]
    ids = (tmp_path / "out" / "test" / "tiles.csv").read_text()
    assert "L15-9999E" not in ids


def test_whu_ss(prepared, raw, tmp_path):
    d, m = prepared("whu-ss", mask_resize="nearest")
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 24, "val": 8, "test": 8}
    # labels follow the raw masks (PIL nearest neighbour 64 -> 32 picks pixel 2i+1)
    rows = read_ids(d, "val")
    lab = np.load(d / "val" / "labels.npy")
    with rasterio.open(raw / rows[0]["source"].replace("/image/", "/label/")) as src:
        full = src.read(1)
    assert np.array_equal(lab[0], (full[1::2, 1::2] == 255).astype(np.uint8))  # PIL nearest
    # a missing label is an error naming it
    shutil.copytree(raw / "whu", tmp_path / "whu")
    victim = next((tmp_path / "whu").rglob("train/label/3.tif"))
    victim.unlink()
    with pytest.raises(DataNotFoundError, match=re.escape(str(victim))):
        prepare("whu-ss", tmp_path, tmp_path / "out", T)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_whu_bad_label_values(raw, tmp_path):
    shutil.copytree(raw / "whu", tmp_path / "whu")
    victim = next((tmp_path / "whu").rglob("test/label/*.tif"))
    with rasterio.open(victim, "r+") as dst:
        a = dst.read()
        a[0, 0, 0] = 7
        dst.write(a)
    with pytest.raises(DataFormatError, match=re.escape(victim.name)):
        prepare("whu-ss", tmp_path, tmp_path / "out", T)


def test_whu_cd_no_change_filter(prepared, raw):
    d, m = prepared("whu-cd")
    total_dropped = 0
    for split in ("train", "val", "test"):
        names = (raw / "whu-cd" / "list" / f"{split}.txt").read_text().split()
        changed = [n for n in names if (np.asarray(Image.open(raw / "whu-cd" / "label" / n)) > 0).any()]
        assert m["splits"][split]["count"] == len(changed)
        assert m["dropped"][split] == len(names) - len(changed)
        assert [r["tile_id"] for r in read_ids(d, split)] == [Path(n).stem for n in changed]
        labels = np.load(d / split / "labels.npy")
        assert all(lab.any() for lab in labels)
        total_dropped += m["dropped"][split]
    assert total_dropped == 10  # a quarter of the 40 pairs have no change


def _xview2_expected(raw):
    exp_ss, exp_cd = {}, {}
    for split in ("train", "test"):
        pres = sorted((raw / "xview2" / split / "images").glob("santa-rosa-wildfire_*_pre_disaster.png"))
        exp_ss[split] = len(pres)
        n = 0
        for p in pres:
            post = json.loads((raw / "xview2" / split / "labels" / p.name.replace("_pre_", "_post_").replace(".png", ".json")).read_text())
            n += any(f["properties"]["subtype"] in ("minor-damage", "major-damage", "destroyed")
                     for f in post["features"]["xy"])
        exp_cd[split] = n
    return exp_ss, exp_cd


DAMAGED = {"mask": "post_damaged", "pairs_kept": "all_labelled"}  # the corrected preset's xView2 masks


def _with_pre_buildings(raw) -> dict:
    return {split: sum(bool(json.loads(p.read_text())["features"]["xy"])
                       for p in (raw / "xview2" / split / "labels").glob("santa-rosa-wildfire_*_pre_disaster.json"))
            for split in ("train", "test")}


def test_xview2_release_masks_are_pre_footprints_of_the_pairs_with_a_building(prepared, raw):
    d, m = prepared("xview2-ss")
    dcd, cd = prepared("xview2-cd")
    counts = _with_pre_buildings(raw)
    assert {s: v["count"] for s, v in m["splits"].items()} == counts == {
        s: v["count"] for s, v in cd["splits"].items()}
    assert sum(map(len, m["pairs_without_mask"].values())) == sum(_xview2_expected(raw)[0].values()) - sum(
        counts.values())
    assert m["mask"] == "pre_footprints" and any("PRE-disaster label" in r for r in m["rules"])
    assert m["splits"]["train"]["positive_fraction"] > 0


def test_xview2(prepared, raw):
    exp_ss, exp_cd = _xview2_expected(raw)
    dss, ss = prepared("xview2-ss", **DAMAGED)
    dcd, cd = prepared("xview2-cd", pairs="drop_empty", **DAMAGED)
    _, released = prepared("xview2-cd", **DAMAGED)  # the released loader: the SS file list, empty masks kept
    assert {s: v["count"] for s, v in released["splits"].items()} == exp_ss and released["dropped"] == {
        "train": 0, "test": 0}
    assert {s: v["count"] for s, v in ss["splits"].items()} == exp_ss == {"train": 16, "test": 8}
    assert {s: v["count"] for s, v in cd["splits"].items()} == exp_cd == {"train": 12, "test": 6}
    assert sum(ss["ignored_other_disasters"].values()) == 2
    assert cd["dropped"] == {"train": 4, "test": 2}
    assert any("minor-damage, major-damage or destroyed" in r for r in ss["rules"])
    for d, m in ((dss, ss), (dcd, cd)):
        for split in m["splits"]:
            assert all(r["tile_id"].startswith("santa-rosa-wildfire_") for r in read_ids(d, split))
            assert not any("socal" in s for s in m["sources"])
    for split in ("train", "test"):
        cd_labels = np.load(dcd / split / "labels.npy")
        assert all(lab.any() for lab in cd_labels)
        ss_labels = np.load(dss / split / "labels.npy")
        assert sum(not lab.any() for lab in ss_labels) == exp_ss[split] - exp_cd[split]
        # SS uses the pre image; CD the same pre image and mask
        ss_ids = [r["tile_id"] for r in read_ids(dss, split)]
        ss_img = np.load(dss / split / "images.npy")
        cd_pre = np.load(dcd / split / "pre.npy")
        for i, r in enumerate(read_ids(dcd, split)):
            j = ss_ids.index(r["tile_id"])
            assert np.array_equal(cd_pre[i], ss_img[j]) and np.array_equal(cd_labels[i], ss_labels[j])


def test_xbd_wkt_polygons_read_by_shapely(tmp_path):
    """Polygons with holes, multipolygons, Z coordinates and EMPTY as xBD writes them; anything
    else is a named error. The rasterised mask keeps the hole and both parts."""
    from rasterio.features import rasterize

    from noise2map.data.preparers.xview2 import _wkt_polygons

    where = tmp_path / "label.json"
    ring = "(1 1, 9 1, 9 9, 1 9, 1 1)"
    hole = "(4 4, 6 4, 6 6, 4 6, 4 4)"
    (poly,) = _wkt_polygons(f"POLYGON ({ring}, {hole})", where)
    assert poly["type"] == "Polygon" and len(poly["coordinates"]) == 2
    assert poly["coordinates"][0][1] == (9.0, 1.0)
    parts = _wkt_polygons("MULTIPOLYGON Z (((1 1 5, 9 1 5, 9 9 5, 1 1 5)), ((12 12 0, 14 12 0, 14 14 0, 12 12 0)))", where)
    assert [len(p["coordinates"][0][0]) for p in parts] == [2, 2]  # Z dropped
    assert _wkt_polygons("POLYGON EMPTY", where) == []
    mask = rasterize([(g, 1) for g in _wkt_polygons(f"POLYGON ({ring}, {hole})", where)], out_shape=(16, 16))
    assert mask.sum() == 8 * 8 - 2 * 2 and mask[5, 5] == 0 and mask[2, 2] == 1
    for bad, what in [("POLYGON ((1 1, 2 x, 1 1))", "cannot be read"), ("LINESTRING (0 0, 1 1)", "is not a POLYGON"),
                      (None, "is not a POLYGON"), ("POLYGON ((1 1, 2 2))", "cannot be read")]:
        with pytest.raises(DataFormatError, match=what) as err:
            _wkt_polygons(bad, where)
        assert str(where) in str(err.value)


def test_aid(prepared, raw, tmp_path):
    d, m = prepared("aid")
    assert m["task"] == "pretrain" and m["splits"] == {"train": {"count": 12, "positive_fraction": None}}
    assert not (d / "train" / "labels.npy").exists()
    rows = read_ids(d, "train")
    imgs = np.load(d / "train" / "images.npy")
    src = np.asarray(Image.open(raw / rows[0]["source"]))
    y, x = int(rows[0]["row"]), int(rows[0]["col"])
    assert np.array_equal(imgs[0], src[y:y + T, x:x + T])
    a = prepare("aid", raw, tmp_path / "a", T, seed=3, num_images=5)
    b = prepare("aid", raw, tmp_path / "b", T, seed=3, num_images=5)
    c = prepare("aid", raw, tmp_path / "c", T, seed=4, num_images=5)
    assert a["splits"]["train"]["count"] == 5 and a == b
    assert np.array_equal(np.load(tmp_path / "a" / "train" / "images.npy"),
                          np.load(tmp_path / "b" / "train" / "images.npy"))
    assert read_ids(tmp_path / "a", "train") != read_ids(tmp_path / "c", "train")
    with pytest.raises(DataNotFoundError, match="num_images=99"):
        prepare("aid", raw, tmp_path / "d", T, num_images=99)


# ------------------------------------------------------------------------------------------
# errors and helpers


@pytest.mark.parametrize("name", PREPARED_DATASETS)
def test_missing_raw_dir(name, tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        prepare(name, tmp_path, tmp_path / "out", T)
    assert str(tmp_path / RAW_DIR_OF[name]) in str(info.value)
    assert "docs/data.md" in str(info.value)
    (tmp_path / RAW_DIR_OF[name]).mkdir()
    with pytest.raises(DataNotFoundError, match="is empty"):
        prepare(name, tmp_path, tmp_path / "out", T)


def test_bad_arguments(raw, tmp_path):
    with pytest.raises(UnknownNameError):
        prepare("nope", raw, tmp_path, T)
    with pytest.raises(ConfigError):
        prepare("aid", raw, tmp_path, 0)
    assert set(PREPARERS) == set(PREPARED_DATASETS) == set(RAW_DIR_OF)


def test_resize_bilinear_cv2():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(resize_bilinear_cv2(a, 16), a)
    # 4x down: each output pixel is the mean of source pixels 4d+1 and 4d+2 on each axis
    out = resize_bilinear_cv2(a, 4)
    ref = a.astype(np.float64)[1::4][:, 1::4] + a[2::4][:, 1::4] + a[1::4][:, 2::4] + a[2::4][:, 2::4]
    assert np.array_equal(out, np.floor(ref / 4 + 0.5).astype(np.uint8))
    m = np.zeros((8, 8), np.uint8)
    m[1:3, 1:3] = 255  # fully covered sample -> positive
    m[5:7, 5] = 255  # half the taps -> 127.5 -> 128 -> positive (cv2 rounds half up)
    m[1, 5] = 255  # a quarter of the taps -> 64 -> negative
    assert (resize_bilinear_cv2(m, 2) > 127).tolist() == [[True, False], [False, True]]


# ------------------------------------------------------------------------------------------
# TileDataset


@pytest.mark.parametrize("name", ["whu-ss", "spacenet7-cd", "aid"])
def test_tile_dataset(name, prepared):
    d, m = prepared(name)
    ds = TileDataset(d, "train")
    assert len(ds) == m["splits"]["train"]["count"] == len(ds.tile_ids)
    assert ds.task == m["task"]
    ds = pickle.loads(pickle.dumps(ds))
    item = ds[len(ds) - 1]
    assert item["index"] == len(ds) - 1
    keys = {"ss": ["image", "mask"], "cd": ["pre", "post", "mask"], "pretrain": ["image"]}[ds.task]
    assert sorted(item) == sorted(keys + ["index"])
    raw_arrays = load_split(d, "train", ds.task)
    for k in keys:
        x = item[k]
        if k == "mask":
            assert x.dtype == torch.int64 and x.shape == (T, T)
            assert set(x.unique().tolist()) <= {0, 1}
        else:
            assert x.dtype == torch.float32 and x.shape == (3, T, T)
            assert -1.0 <= x.min() and x.max() <= 1.0
            src = raw_arrays["images" if k == "image" else k][len(ds) - 1]
            assert torch.allclose(x, torch.from_numpy(src).permute(2, 0, 1).float() / 127.5 - 1)
    assert pickle.loads(pickle.dumps(ds))._arrays is None
    with pytest.raises(IndexError):
        ds[len(ds)]
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch[keys[0]].shape == (min(4, len(ds)), 3, T, T)


def test_tile_dataset_missing(tmp_path, prepared):
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "manifest.json"))):
        TileDataset(tmp_path, "train")
    d, _ = prepared("xview2-ss")
    with pytest.raises(DataNotFoundError, match="val"):
        TileDataset(d, "val")
