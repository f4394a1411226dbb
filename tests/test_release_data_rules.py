"""The data the release trained and scored on, by behaviour: each rule of its inputs is written
here again from the public source that made them (Hafner et al.'s SpaceNet7 labels_raster and
metadata_train.json; the xView2 baseline's utils/mask_polygons.py) and run beside the
preparer on the same files, under the paper preset's options and the corrected ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry
import shapely.wkt
from PIL import Image

from noise2map.config import PREPARATION, load_config, preparation_options, store_name
from noise2map.data import acquire as acq
from noise2map.data import prepare
from noise2map.data.preparers import spacenet7 as sn7
from noise2map.data.preparers import xview2 as xv2
from noise2map.errors import ChecksumError, DataNotFoundError

ROOT = Path(__file__).resolve().parent.parent
PAPER = load_config(ROOT / "workflow/config/paper.yaml")
CORRECTED = load_config(ROOT / "workflow/config/paper.yaml", ROOT / "workflow/config/corrected.yaml")


# --------------------------------------------------------------------------------------------
# references, written from the public sources


def hafner_reference(features: list[dict], shape) -> np.ndarray:
    """Hafner et al.'s labels_raster of one labels_match_pix file: per building
    ``cv2.fillPoly(mask, [np.rint(outline).astype(int)], 255, cv2.LINE_AA)``, holes with 0 the
    same way, then ``mask[mask < 255] = 0``."""
    mask = np.zeros(shape, np.uint8)
    for feat in features:
        rings = feat["geometry"]["coordinates"]
        cv2.fillPoly(mask, [np.rint(np.array(rings[0])[:, :2]).astype(int).astype(np.int32)], 255, cv2.LINE_AA)
        for hole in rings[1:]:
            cv2.fillPoly(mask, [np.rint(np.array(hole)[:, :2]).astype(int).astype(np.int32)], 0, cv2.LINE_AA)
    mask[mask < 255] = 0
    return mask > 0


def pixel_centre_reference(features: list[dict], shape) -> np.ndarray:
    """A pixel is a building when its centre (col + 0.5, row + 0.5) lies inside a polygon."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    out = np.zeros(shape, bool)
    for feat in features:
        rings = feat["geometry"]["coordinates"]
        poly = shapely.Polygon(rings[0], rings[1:])
        out |= shapely.contains_xy(poly, cols + 0.5, rows + 0.5)
    return out


def mask_polygons_reference(label: dict, shape, border: int = 0) -> np.ndarray | None:
    """xView2_baseline utils/mask_polygons.py, --single-file [--border]: get_feature_info, then
    mask_polygons_together(_with_border); None where it writes no file (no polygon)."""
    polys = {}
    for feat in label["features"]["xy"]:
        coords = list(shapely.geometry.mapping(shapely.wkt.loads(feat["wkt"]))["coordinates"][0])
        polys[feat["properties"]["uid"]] = np.array(coords, np.int32)
    if not polys:
        return None
    mask = np.zeros(shape, np.uint8)
    for poly in polys.values():
        blank = np.zeros(shape, np.uint8)
        if border > 0:
            polygon = shapely.geometry.Polygon(poly)
            cx, cy = polygon.centroid.coords[0]
            shrunk = []
            for x, y in polygon.exterior.coords:
                if x < cx:
                    x += border
                elif x > cx:
                    x -= border
                if y < cy:
                    y += border
                elif y > cy:
                    y -= border
                shrunk.append([x, y])
            poly = np.array(shrunk, np.int32)
        cv2.fillPoly(blank, [poly], (1, 1, 1))
        mask += blank
    mask[mask > 1] = 0
    mask[mask == 1] = 255
    return mask


def resize_release(mask255: np.ndarray, t: int) -> np.ndarray:
    """The released loaders: cv2.resize (INTER_LINEAR) of the 0/255 mask, then /255 > 0.5."""
    return (cv2.resize(mask255, (t, t)) / 255 > 0.5).astype(np.uint8)


def iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# --------------------------------------------------------------------------------------------
# a small real-layout SpaceNet7 tree (thin buildings a few pixels wide, a hole, edge vertices)

AOI_TRAIN, AOI_VAL, AOI_TEST = (sn7.SPACENET7_SPLIT[s][0] for s in ("train", "val", "test"))
MONTHS = ((2018, 1), (2018, 2), (2018, 3))


def _building(rng, h, w):
    x0, y0 = rng.uniform(-2.2, w - 6), rng.uniform(-2.2, h - 6)
    bw, bh = rng.uniform(2.2, 9.0), rng.uniform(2.2, 9.0)
    return [[x0, y0], [x0 + bw, y0 + rng.uniform(-1, 1)], [x0 + bw, y0 + bh], [x0, y0 + bh], [x0, y0]]


def _sn7_tree(root: Path, shape=(63, 64), metadata: dict | None = None, seed: int = 0) -> dict:
    """train/<aoi>/{images,images_masked,labels_match_pix}/ for one AOI per split and the
    excluded 60th AOI; returns {(aoi, year, month): features}."""
    rng = np.random.default_rng(seed)
    h, w = shape
    features = {}
    for aoi in (AOI_TRAIN, AOI_VAL, AOI_TEST, *sn7.SPACENET7_EXCLUDED_AOIS):
        base = root / "spacenet7" / "train" / aoi
        for sub in ("images", "images_masked", "labels_match_pix", "UDM_masks"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for year, month in MONTHS:
            stem = f"global_monthly_{year}_{month:02d}_mosaic_{aoi}"
            img = np.concatenate([rng.integers(0, 255, (h, w, 3), np.uint8), np.full((h, w, 1), 255, np.uint8)], -1)
            for sub in ("images", "images_masked"):
                with rasterio.open(base / sub / f"{stem}.tif", "w", driver="GTiff", height=h, width=w, count=4,
                                   dtype="uint8") as dst:
                    dst.write(np.moveaxis(img, -1, 0))
            feats = [{"type": "Feature", "properties": {"Id": i, "area": 30.0},
                      "geometry": {"type": "Polygon", "coordinates": [_building(rng, h, w)]}} for i in range(12)]
            outer = [[20.3, 20.6], [40.2, 20.1], [40.7, 41.4], [20.1, 40.9], [20.3, 20.6]]
            hole = [[27.4, 27.2], [33.6, 27.5], [33.1, 33.8], [27.2, 33.3], [27.4, 27.2]]
            feats.append({"type": "Feature", "properties": {"Id": 99, "iou_score": 0.9},
                          "geometry": {"type": "Polygon", "coordinates": [outer, hole]}})
            (base / "labels_match_pix" / f"{stem}_Buildings.geojson").write_text(
                json.dumps({"type": "FeatureCollection", "features": feats}))
            features[(aoi, year, month)] = feats
    if metadata is not None:
        (root / "spacenet7" / "metadata_train.json").write_text(json.dumps(metadata))
    return features


def _metadata(masked: set) -> dict:
    return {aoi: [{"aoi_id": aoi, "index": i, "year": y, "month": m, "mask": (aoi, y, m) in masked, "label": True}
                  for i, (y, m) in enumerate(MONTHS)]
            for aoi in (AOI_TRAIN, AOI_VAL, AOI_TEST, *sn7.SPACENET7_EXCLUDED_AOIS)}


def _tiles(mask: np.ndarray, t: int) -> np.ndarray:
    nh, nw = mask.shape[0] // t, mask.shape[1] // t
    return np.stack([mask[i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(nh) for j in range(nw)])


def _store(out: Path, split: str, name: str = "labels") -> np.ndarray:
    return np.load(out / split / f"{name}.npy")


def test_both_presets_name_each_data_rule_the_release_way_and_the_text_way():
    paper, corrected = PAPER["preparation"], CORRECTED["preparation"]
    assert (paper["spacenet7_label_raster"], corrected["spacenet7_label_raster"]) == ("hafner", "pixel_centre")
    assert (paper["xview2_mask"], corrected["xview2_mask"]) == ("pre_footprints", "post_damaged")
    assert (paper["xview2_pairs"], corrected["xview2_pairs"]) == ("with_mask", "all_labelled")
    assert paper["spacenet7_ss_months"] == "usable"
    # each paper value is the switch's released value; a rule of one source serves both its tasks
    assert all(paper[k] == released for k, (_, _, released) in PREPARATION.items() if k in paper)
    assert preparation_options(PAPER, "spacenet7-cd")["label_raster"] == "hafner"
    assert preparation_options(CORRECTED, "xview2-ss") == {"mask": "post_damaged", "border": 2,
                                                          "pairs_kept": "all_labelled"}
    assert store_name(PAPER, "xview2-cd") == "xview2-cd"
    assert store_name(CORRECTED, "spacenet7-cd") == "spacenet7-cd+pixel_centre"


def test_spacenet7_ss_and_cd_tiles_follow_hafner_under_paper_and_pixel_centres_under_corrected(tmp_path):
    feats = _sn7_tree(tmp_path / "raw", metadata=_metadata(set()))
    shape, t = (63, 64), 16
    for preset, reference, read_size in ((PAPER, hafner_reference, "native"),
                                         (CORRECTED, pixel_centre_reference, "native")):
        opts = preparation_options(preset, "spacenet7-ss") | {"read_size": read_size}
        ss = prepare("spacenet7-ss", tmp_path / "raw", tmp_path / preset["preset"] / "ss", t, options=opts)
        cd = prepare("spacenet7-cd", tmp_path / "raw", tmp_path / preset["preset"] / "cd", t,
                     options=preparation_options(preset, "spacenet7-cd"))
        assert ss["label_raster"]["rule"] == cd["label_raster"]["rule"] == opts["label_raster"]
        ref = {k: reference(f, shape) for k, f in feats.items() if k[0] == AOI_TRAIN}
        want_ss = np.concatenate([_tiles(ref[(AOI_TRAIN, y, m)], t) for y, m in MONTHS])
        got_ss = _store(tmp_path / preset["preset"] / "ss", "train")
        assert got_ss.shape == (3 * 3 * 4, t, t)  # 63 rows: 3 whole tile rows, 4 columns
        assert iou(got_ss, want_ss) >= 0.95 and np.array_equal(got_ss, want_ss)
        pairs = [(MONTHS[k], MONTHS[k + 1]) for k in range(2)]
        want_cd = np.concatenate([_tiles(ref[(AOI_TRAIN, *a)] ^ ref[(AOI_TRAIN, *b)], t) for a, b in pairs])
        assert np.array_equal(_store(tmp_path / preset["preset"] / "cd", "train"), want_cd)
    # the two rules differ on these thin buildings (the reason the release's rule matters)
    a, b = (r(feats[(AOI_TRAIN, 2018, 1)], shape) for r in (hafner_reference, pixel_centre_reference))
    assert 0.5 < iou(a, b) < 0.95


def test_the_hafner_rule_fills_integer_vertices_drops_anti_aliased_edges_and_keeps_holes():
    square = [[[2, 2], [9, 2], [9, 9], [2, 9], [2, 2]]]
    mask = sn7.hafner_raster([square], (12, 12))
    assert np.array_equal(mask, hafner_reference([{"geometry": {"coordinates": square}}], (12, 12)))
    # vertices on whole pixels are pixel centres: rows 2..8 and columns 2..9 are full (OpenCV's
    # anti-aliased bottom edge falls below 255), one pixel more per side than pixel centres give
    assert mask.sum() == 7 * 8 and mask[2:9, 2:10].all()
    ring = [[[1, 1], [20, 1], [20, 20], [1, 20], [1, 1]], [[8, 8], [13, 8], [13, 13], [8, 13], [8, 8]]]
    holed = sn7.hafner_raster([ring], (22, 22))
    assert holed[10, 10] == 0 and holed[4, 4] == 1
    assert np.array_equal(holed, hafner_reference([{"geometry": {"coordinates": ring}}], (22, 22)))
    assert sn7.pixel_centre_raster([square], (12, 12)).sum() == 7 * 7


def test_an_existing_labels_raster_folder_is_read_and_compared_with_the_rule(tmp_path, caplog):
    feats = _sn7_tree(tmp_path / "raw", metadata=_metadata(set()))
    shape = (63, 64)
    for (aoi, y, m), f in feats.items():
        folder = tmp_path / "raw" / "spacenet7" / "train" / aoi / "labels_raster"
        folder.mkdir(exist_ok=True)
        raster = hafner_reference(f, shape).astype(np.uint8) * 255
        if aoi == AOI_TEST:  # not Hafner's: a pixel-centre raster
            raster = pixel_centre_reference(f, shape).astype(np.uint8) * 255
        with rasterio.open(folder / f"global_monthly_{y}_{m:02d}_mosaic_{aoi}_Buildings.tif", "w", driver="GTiff",
                           height=shape[0], width=shape[1], count=1, dtype="uint8") as dst:
            dst.write(raster[None])
    m = prepare("spacenet7-ss", tmp_path / "raw", tmp_path / "ss", 16,
                options=preparation_options(PAPER, "spacenet7-ss") | {"read_size": "native"})
    record = m["label_raster"]
    assert record["labels_raster_files_read"] == 9  # 3 split AOIs x 3 months
    by_file = {c["file"].split("/")[2]: c["iou"] for c in record["labels_raster_vs_rule"]}
    assert by_file[AOI_TRAIN] == by_file[AOI_VAL] == 1.0 and by_file[AOI_TEST] < 0.95
    assert record["labels_raster_vs_rule_min_iou"] == by_file[AOI_TEST]
    assert "not the files the release read" in caplog.text
    # the test AOI's tiles are the files' own (the release read them), not the rule's
    want = np.concatenate([_tiles(pixel_centre_reference(feats[(AOI_TEST, y, mo)], shape), 16) for y, mo in MONTHS])
    assert np.array_equal(_store(tmp_path / "ss", "test"), want)


def test_masked_months_of_metadata_train_json_are_dropped_and_the_counts_named(tmp_path):
    masked = {(AOI_TRAIN, 2018, 2), (AOI_VAL, 2018, 1)}
    _sn7_tree(tmp_path / "raw", metadata=_metadata(masked))
    m = prepare("spacenet7-ss", tmp_path / "raw", tmp_path / "ss", 16,
                options=preparation_options(PAPER, "spacenet7-ss"))
    assert m["month_list"] == "metadata_train.json"
    assert sorted(m["masked_months"].values()) == ["mask: true in metadata_train.json"] * 2
    assert any("2018_02" in k and AOI_TRAIN in k for k in m["masked_months"])
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 2 * 16, "val": 2 * 16, "test": 3 * 16}
    assert m["excluded_aois"] == sorted(sn7.SPACENET7_EXCLUDED_AOIS) and m["outside_split"] == []
    assert m["count_checks"]["usable months"] == {"found": 7, "expected": 1219}
    assert m["count_checks"]["SS tiles"] == {"found": 112, "expected": 19504}
    assert m["count_checks"]["AOI folders"] == {"found": 4, "expected": 60}
    assert "monthly mosaics: 12, expected 1423" in m["count_mismatches"]
    assert "spacenet7/metadata_train.json" in m["sources"]
    assert m["month_list_pinned"] is False  # this test's own file, not Hafner et al.'s
    # without the file, a real tree stops and says where to get it
    (tmp_path / "raw" / "spacenet7" / "metadata_train.json").unlink()
    with pytest.raises(DataNotFoundError) as err:
        prepare("spacenet7-ss", tmp_path / "raw", tmp_path / "ss2", 16)
    text = str(err.value)
    assert acq.HAFNER_COMMIT in text and "c5973861cdeabc49" in text and "noise2map acquire spacenet7" in text
    assert str(tmp_path / "raw" / "spacenet7" / "metadata_train.json") in text
    # every labelled month, without it, is an explicit choice
    m2 = prepare("spacenet7-ss", tmp_path / "raw", tmp_path / "ss3", 16, options={"months": "labelled"})
    assert m2["splits"]["train"]["count"] == 3 * 16


def test_the_real_metadata_counts_are_the_papers():
    """The expected counts, from the published file's own numbers (notes: 599 / 319 / 301)."""
    assert sn7.SPACENET7_EXPECTED == {"AOI folders": 60, "monthly mosaics": 1423, "usable months": 1219,
                                      "SS tiles": 19504}
    assert (599 + 319 + 301) * 16 == 19504 and sum(map(len, sn7.SPACENET7_SPLIT.values())) == 59
    assert sn7.SPACENET7_EXCLUDED_AOIS == {"L15-0571E-1075N_2287_3888_13"}
    assert not sn7.SPACENET7_EXCLUDED_AOIS & {a for v in sn7.SPACENET7_SPLIT.values() for a in v}


# --------------------------------------------------------------------------------------------
# metadata_train.json acquired like every other file


def _pin_metadata(monkeypatch, data: bytes):
    src = acq.SOURCES["spacenet7"]
    archives = tuple(a if not a.plain else __import__("dataclasses").replace(a, sha256=hashlib.sha256(data).hexdigest())
                     for a in src.archives)
    monkeypatch.setitem(acq.SOURCES, "spacenet7", __import__("dataclasses").replace(src, archives=archives))


def test_metadata_train_json_is_pinned_to_the_commit_and_its_sha256():
    (a,) = [a for a in acq.SOURCES["spacenet7"].archives if a.plain]
    assert a.file == a.into == "metadata_train.json"
    assert a.urls == ("https://raw.githubusercontent.com/SebastianHafner/SemiSupervisedMultiModalCD/"
                      "704d4fdb25f9efb03dbda7cc339761dc15c18d9a/dataset/metadata_train.json",)
    assert a.sha256 == "c5973861cdeabc49eee9265dc5b616f37318ecd0dec893d1033b81a3c7690a68"


def test_a_tree_put_in_place_by_hand_gets_metadata_train_json_fetched_and_verified(tmp_path, monkeypatch,
                                                                                   file_server):
    _sn7_tree(tmp_path / "raw")
    data = json.dumps(_metadata(set())).encode()
    _pin_metadata(monkeypatch, data)
    file_server.files["metadata_train.json"] = data
    manifest = acq.acquire("spacenet7", tmp_path / "raw", tmp_path / "dl", base_url=file_server.url, quiet=True)
    assert (tmp_path / "raw" / "spacenet7" / "metadata_train.json").read_bytes() == data
    (rec,) = manifest["archives"]
    assert rec["file"] == "metadata_train.json" and rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert list((tmp_path / "raw" / "spacenet7").glob(".*.part")) == []
    # a corrupt copy in the downloads folder is refused (moved aside), nothing is put in place
    (tmp_path / "raw" / "spacenet7" / "metadata_train.json").unlink()
    (tmp_path / "dl" / "metadata_train.json").write_bytes(data[:-1])
    with pytest.raises(ChecksumError):
        acq.acquire("spacenet7", tmp_path / "raw", tmp_path / "dl", base_url=file_server.url, quiet=True)
    assert not (tmp_path / "raw" / "spacenet7" / "metadata_train.json").exists()
    assert (tmp_path / "dl" / "metadata_train.json.corrupt").is_file()


def test_without_a_url_the_manual_fallback_names_the_file_page_and_path(tmp_path, monkeypatch):
    _sn7_tree(tmp_path / "raw")
    src = acq.SOURCES["spacenet7"]
    archives = tuple(__import__("dataclasses").replace(a, urls=()) if a.plain else a for a in src.archives)
    monkeypatch.setitem(acq.SOURCES, "spacenet7", __import__("dataclasses").replace(src, archives=archives))
    with pytest.raises(DataNotFoundError) as err:
        acq.acquire("spacenet7", tmp_path / "raw", tmp_path / "dl", quiet=True)
    text = str(err.value)
    assert "metadata_train.json" in text and str(tmp_path / "dl" / "metadata_train.json") in text
    assert "SebastianHafner/SemiSupervisedMultiModalCD/blob/704d4fdb" in text


# --------------------------------------------------------------------------------------------
# xView2: the release's masks/ and its 291 pairs


def _xbd_tree(root: Path, ids: dict, empty_pre: set, undamaged: set, size: int = 64, seed: int = 0) -> dict:
    """{split}/{images,labels}/ of santa-rosa pairs; pre labels carry no subtype."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, split_ids in ids.items():
        for sub in ("images", "labels"):
            (root / "xview2" / split / sub).mkdir(parents=True, exist_ok=True)
        for xid in split_ids:
            stem = f"santa-rosa-wildfire_{xid}"
            buildings = [] if xid in empty_pre else [_xbd_building(rng, size) for _ in range(6)]
            subtypes = ["no-damage" if xid in undamaged or k % 2 else "destroyed" for k in range(len(buildings))]
            for kind in ("pre", "post"):
                img = rng.integers(0, 255, (size, size, 3), np.uint8)
                Image.fromarray(img).save(root / "xview2" / split / "images" / f"{stem}_{kind}_disaster.png")
                feats = [{"properties": {"feature_type": "building", "uid": f"{xid}-{k}",
                                         **({"subtype": subtypes[k]} if kind == "post" else {})},
                          "wkt": "POLYGON ((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"}
                         for k, ring in enumerate(buildings)]
                label = {"features": {"xy": feats, "lng_lat": []}, "metadata": {"width": size, "height": size}}
                (root / "xview2" / split / "labels" / f"{stem}_{kind}_disaster.json").write_text(json.dumps(label))
                labels[(split, xid, kind)] = label
    return labels


def _xbd_building(rng, size):
    x0, y0 = rng.uniform(0, size - 14), rng.uniform(0, size - 14)
    w, h = rng.uniform(5, 14), rng.uniform(5, 14)
    ring = [(x0, y0), (min(x0 + w, size), y0), (min(x0 + w, size), min(y0 + h, size)), (x0, min(y0 + h, size))]
    return [*ring, ring[0]]  # overlapping buildings and vertices at exactly `size` occur


RELEASE_IDS = {s: set(v) for s, v in xv2.XVIEW2_RELEASE_MISSING.items()}


def _ids():
    return {"train": sorted(RELEASE_IDS["train"] | {"00000001", "00000002", "00000003"}),
            "test": sorted(RELEASE_IDS["test"] | {"00000004", "00000005"})}


def test_mask_polygons_rule_equals_the_baselines_script_with_and_without_border(tmp_path):
    rng = np.random.default_rng(3)
    feats = [{"properties": {"uid": str(k)}, "wkt": "POLYGON ((" + ", ".join(
        f"{x} {y}" for x, y in _xbd_building(rng, 48)) + "))"} for k in range(10)]
    label = {"features": {"xy": feats}}
    for border in (0, 1, 2):
        ref = mask_polygons_reference(label, (48, 48), border)
        path = tmp_path / "label.json"
        path.write_text(json.dumps(label))
        ours = xv2.footprint_mask(path, (48, 48), border)
        assert np.array_equal(ours, ref) and ours.max() == 255
    path.write_text(json.dumps({"features": {"xy": []}}))
    assert xv2.footprint_mask(path, (48, 48)) is None and mask_polygons_reference({"features": {"xy": []}}, (4, 4)) is None


def test_xview2_paper_keeps_pairs_with_a_mask_and_masks_pre_footprints_corrected_keeps_all(tmp_path):
    empty_pre = RELEASE_IDS["train"] | RELEASE_IDS["test"]
    labels = _xbd_tree(tmp_path / "raw", _ids(), empty_pre=empty_pre, undamaged={"00000002"})
    t = 32
    paper = prepare("xview2-ss", tmp_path / "raw", tmp_path / "paper", t,
                    options=preparation_options(PAPER, "xview2-ss"))
    assert {s: v["count"] for s, v in paper["splits"].items()} == {"train": 3, "test": 2}
    assert {s: sorted(v) for s, v in paper["pairs_without_mask"].items()} == {
        s: sorted(v) for s, v in RELEASE_IDS.items()}
    check = paper["release_check"]
    assert check["pre_footprints_match_release"] is True and check["post_damaged_match_release"] is False
    assert "00000002" in check["no_damaged_post_building"]["train"]
    border = PAPER["preparation"]["xview2_mask_border"]
    want = np.stack([resize_release(mask_polygons_reference(labels[("train", x, "pre")], (64, 64), border), t)
                     for x in ("00000001", "00000002", "00000003")])
    assert np.array_equal(_store(tmp_path / "paper", "train"), want)
    cd = prepare("xview2-cd", tmp_path / "raw", tmp_path / "paper-cd", t,
                 options=preparation_options(PAPER, "xview2-cd"))
    assert np.array_equal(_store(tmp_path / "paper-cd", "train"), want)  # SS and CD read the same masks
    corrected = prepare("xview2-ss", tmp_path / "raw", tmp_path / "corr", t,
                        options=preparation_options(CORRECTED, "xview2-ss"))
    assert {s: v["count"] for s, v in corrected["splits"].items()} == {"train": 10, "test": 4}
    ids = sorted(_ids()["train"])
    damaged = []
    for x in ids:
        feats = [f for f in labels[("train", x, "post")]["features"]["xy"]
                 if f["properties"]["subtype"] in xv2.XVIEW2_DAMAGED]
        ref = pixel_centre_reference([{"geometry": shapely.geometry.mapping(shapely.wkt.loads(f["wkt"]))}
                                      for f in feats], (64, 64))
        damaged.append(resize_release(ref.astype(np.uint8) * 255, t))
    assert np.array_equal(_store(tmp_path / "corr", "train"), np.stack(damaged))
    assert cd["count_checks"]["pairs kept"] == {"found": 5, "expected": 291}


def test_the_self_check_says_when_the_footprint_reading_is_not_confirmed(tmp_path):
    _xbd_tree(tmp_path / "raw", _ids(), empty_pre={"00000001"}, undamaged=set())
    m = prepare("xview2-ss", tmp_path / "raw", tmp_path / "p", 32, options=preparation_options(PAPER, "xview2-ss"))
    assert m["release_check"]["no_pre_label_building"] == {"train": ["00000001"], "test": []}
    assert m["release_check"]["pre_footprints_match_release"] is False
    assert m["pairs_without_mask"] == {"train": ["00000001"], "test": []}
