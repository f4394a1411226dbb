"""Quirks of the REAL raw files (``/work/shared/notes/datasets.md``, third review), as the
synthetic writer (:mod:`noise2map.data.synthetic`) reproduces them, and the readers,
preparers and acquisition counts on them. Every check is on numbers or bytes of the files.

SpaceNet7: 1023/1024/1025 rows × 1024 columns, alpha = 255, no nodata tag, uncompressed;
``images_masked`` = ``images`` byte for byte unless a UDM mask zeroes pixels; three label
folders in three coordinate systems; properties that change by month; coordinates past the
mosaic edge. xBD: a tRNS chunk that makes black transparent; PRE labels without ``subtype``;
vertices at exactly the image size; pairs with no building. AID: ``.DS_Store`` and
``__MACOSX/._*`` strays.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image

from noise2map.data import acquire as acq
from noise2map.data import generate, prepare
from noise2map.data.preparers.common import read_rgb
from noise2map.data.synthetic import APPLE_DOUBLE, DS_STORE, SIZES, SN7_RES, SPACENET7_DEMO_AOIS
from noise2map.errors import DataFormatError

T = 32
SN7_SPLIT_OF = {aoi: split for split, aois in SPACENET7_DEMO_AOIS.items() for aoi in aois}
CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"
EPSG3857 = "urn:ogc:def:crs:EPSG::3857"
R = 6378137.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quirks_demo")
    for name in ("spacenet7", "xview2", "aid"):
        generate(name, root, seed=0)
    return root


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Fullsize SpaceNet7 (1023-1025 x 1024 mosaics, ~130 MB) and xView2 (1024² PNGs)."""
    root = tmp_path_factory.mktemp("quirks_full")
    generate("spacenet7", root, seed=0, size="fullsize")
    generate("xview2", root, seed=0, size="fullsize")
    yield root
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# SpaceNet7


def sn7_months(raw: Path, aoi: str) -> list[str]:
    return sorted(p.stem for p in (raw / "spacenet7" / "train" / aoi / "images").glob("*.tif"))


def shoelace(ring) -> float:
    xs, ys = np.asarray(ring, float).T
    return float(abs(np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1])) / 2)


@pytest.mark.parametrize("size,shapes", [
    ("fullsize", {"train": (1024, 1024), "val": (1023, 1024), "test": (1025, 1024)}),
    ("demo", {"train": (64, 64), "val": (65, 64), "test": (64, 64)}),
])
def test_spacenet7_mosaics_1023_to_1025_rows_alpha_255_no_nodata_uncompressed(demo, full, size, shapes):
    raw = full if size == "fullsize" else demo
    assert SIZES[size]["spacenet7"]["shapes"] == shapes
    seen = 0
    for aoi, split in SN7_SPLIT_OF.items():
        for folder in ("images", "images_masked"):
            for tif in sorted((raw / "spacenet7" / "train" / aoi / folder).glob("*.tif")):
                udm = tif.parent.parent / "UDM_masks" / f"{tif.stem}_UDM.tif"
                with rasterio.open(tif) as src:
                    assert (src.height, src.width) == shapes[split], tif.name  # rows, columns
                    assert src.count == 4 and src.dtypes == ("uint8",) * 4
                    assert src.nodata is None and src.nodatavals == (None,) * 4
                    assert src.compression is None and src.crs.to_epsg() == 3857
                    assert src.transform.a == SN7_RES and src.transform.e == -SN7_RES
                    if folder == "images" or not udm.is_file():
                        assert (src.read(4) == 255).all()
                seen += 1
    assert seen == 2 * 5 * SIZES[size]["spacenet7"]["months"]
    with rasterio.open(next((raw / "spacenet7/train" / SPACENET7_DEMO_AOIS["val"][0] / "images").glob("*.tif"))) as src:
        assert (src.height, src.width) == ((1023, 1024) if size == "fullsize" else (65, 64))


def test_images_masked_equals_images_byte_for_byte_except_the_udm_month(demo):
    masked_months = []
    for aoi, split in SN7_SPLIT_OF.items():
        adir = demo / "spacenet7" / "train" / aoi
        names = {folder: sorted(p.name for p in (adir / folder).iterdir()) for folder in ("images", "images_masked")}
        assert names["images"] == names["images_masked"]
        for stem in sn7_months(demo, aoi):
            a = (adir / "images" / f"{stem}.tif").read_bytes()
            b = (adir / "images_masked" / f"{stem}.tif").read_bytes()
            udm = adir / "UDM_masks" / f"{stem}_UDM.tif"
            if not udm.is_file():
                assert a == b, stem
                continue
            masked_months.append(stem)
            assert a != b
            with rasterio.open(adir / "images" / f"{stem}.tif") as s1, \
                    rasterio.open(adir / "images_masked" / f"{stem}.tif") as s2, rasterio.open(udm) as s3:
                img, msk, cloud = s1.read(), s2.read(), s3.read(1)
                assert s2.profile == s1.profile
            h, w = img.shape[1:]
            assert set(np.unique(cloud)) == {0, 255} and int((cloud == 255).sum()) == (h // 4) * w == 16 * 64
            assert (msk[:, cloud == 255] == 0).all()           # masked pixels zeroed, all 4 bands
            assert (img[:, cloud == 255] > 0).any()            # ... where images/ has data
            assert np.array_equal(msk[:, cloud == 0], img[:, cloud == 0])
    assert masked_months == [f"global_monthly_2018_02_mosaic_{SPACENET7_DEMO_AOIS['train'][0]}"]


def test_spacenet7_three_label_folders_crs_properties_and_coordinates(demo):
    key_sets, xs_all = {}, {}
    for aoi, split in SN7_SPLIT_OF.items():
        adir = demo / "spacenet7" / "train" / aoi
        with rasterio.open(next((adir / "images").glob("*.tif"))) as src:
            transform, w = src.transform, src.width
        xs = []
        for k, stem in enumerate(sn7_months(demo, aoi)):
            paths = {"pix": adir / "labels_match_pix" / f"{stem}_Buildings.geojson",
                     "match": adir / "labels_match" / f"{stem}_Buildings.geojson",
                     "lab": adir / "labels" / f"{stem}_Buildings.geojson",
                     "udm": adir / "labels" / f"{stem}_UDM.geojson"}
            if (aoi, k) == (SPACENET7_DEMO_AOIS["train"][1], 2):  # the unlabelled month: no label file at all
                assert not any(p.exists() for p in paths.values())
                continue
            fc = {n: json.loads(p.read_text()) for n, p in paths.items()}
            assert "crs" not in fc["pix"]
            assert fc["match"]["crs"] == {"type": "name", "properties": {"name": EPSG3857}}
            assert fc["lab"]["crs"] == fc["udm"]["crs"] == {"type": "name", "properties": {"name": CRS84}}
            feats = {n: fc[n]["features"] for n in ("pix", "match", "lab")}
            assert len(feats["pix"]) == len(feats["match"]) == len(feats["lab"]) > 0
            for fp, fm, fl in zip(feats["pix"], feats["match"], feats["lab"]):
                for f in (fp, fm, fl):
                    assert f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"]) == 1
                assert set(fl["properties"]) == {"Id"} and fl["properties"]["Id"] == fp["properties"]["Id"]
                assert fm["properties"] == fp["properties"]
                pix = np.array(fp["geometry"]["coordinates"][0])
                met = np.array(fm["geometry"]["coordinates"][0])
                ll = np.array(fl["geometry"]["coordinates"][0])
                # labels_match = the mosaic's geotransform of (x = column, y = row)
                t = transform
                expected = np.stack([t.a * pix[:, 0] + t.b * pix[:, 1] + t.c,
                                     t.d * pix[:, 0] + t.e * pix[:, 1] + t.f], -1)
                assert np.allclose(met, expected, rtol=0, atol=1e-6)
                # labels = CRS84 lon/lat of those metres (spherical Mercator inverse)
                lon = np.degrees(met[:, 0] / R)
                lat = np.degrees(2 * np.arctan(np.exp(met[:, 1] / R)) - np.pi / 2)
                assert np.allclose(ll, np.stack([lon, lat], -1), rtol=0, atol=1e-9)
                assert (-180 <= ll[:, 0]).all() and (ll[:, 0] <= 180).all() and (np.abs(ll[:, 1]) <= 90).all()
                # area in m²: the pixel area times 4.77² (= the shoelace of the EPSG:3857 ring)
                area = fp["properties"]["area"]
                assert area == pytest.approx(shoelace(pix) * SN7_RES ** 2, rel=1e-9)
                assert area == pytest.approx(shoelace(met - met[0]), rel=1e-9)
                key_sets.setdefault(k, set()).add(tuple(sorted(fp["properties"])))
                xs.extend(pix[:, 0])
            n_udm = len(fc["udm"]["features"])
            assert n_udm == (1 if (adir / "UDM_masks" / f"{stem}_UDM.tif").is_file() else 0)
        xs_all[aoi] = (min(xs), max(xs), w)
    # properties change by month: iou_score from the second month on
    assert key_sets[0] == {("Id", "area")}
    assert all(key_sets[k] == {("Id", "area", "iou_score")} for k in key_sets if k > 0)
    # coordinates slightly outside the mosaic: -2.2 ... width + 0.9 in every AOI
    for aoi, (lo, hi, w) in xs_all.items():
        assert lo == -2.2 and hi == pytest.approx(w + 0.9, abs=1e-9), aoi


def test_spacenet7_fullsize_coordinates_run_from_minus_2_2_to_1024_9(full):
    val = SPACENET7_DEMO_AOIS["val"][0]
    xs = [pt[0] for p in (full / "spacenet7/train" / val / "labels_match_pix").glob("*.geojson")
          for f in json.loads(p.read_text())["features"] for pt in f["geometry"]["coordinates"][0]]
    assert min(xs) == -2.2 and max(xs) == 1024.9


def test_spacenet7_preparers_run_and_read_images_masked_and_the_edge_buildings(demo, full, tmp_path):
    ss = prepare("spacenet7-ss", demo, tmp_path / "ss", T)
    cd = prepare("spacenet7-cd", demo, tmp_path / "cd", T)
    assert {s: v["count"] for s, v in ss["splits"].items()} == {"train": 40, "val": 16, "test": 16}
    assert {s: v["count"] for s, v in cd["splits"].items()} == {"train": 28, "val": 12, "test": 12}
    assert list(ss["masked_months"]) == [
        f"spacenet7/train/{SPACENET7_DEMO_AOIS['train'][0]}/images_masked/"
        f"global_monthly_2018_02_mosaic_{SPACENET7_DEMO_AOIS['train'][0]}.tif"]
    # read: images_masked mosaics and labels_match_pix polygons, never images/, labels/ or labels_match/
    assert all(re.fullmatch(r"spacenet7/train/[^/]+/(images_masked/[^/]+\.tif|labels_match_pix/[^/]+\.geojson)", s)
               for s in ss["sources"]), sorted(ss["sources"])[:3]

    # every labelled month at native size: the masked month's tiles come from images_masked
    every = prepare("spacenet7-ss", demo, tmp_path / "every", T, options={"months": "labelled", "read_size": "native"})
    aoi = SPACENET7_DEMO_AOIS["train"][0]
    rows = (tmp_path / "every/train/tiles.csv").read_text().splitlines()[1:]
    ids = [r.split(",")[0] for r in rows]
    imgs, labs = np.load(tmp_path / "every/train/images.npy"), np.load(tmp_path / "every/train/labels.npy")
    assert every["splits"]["train"]["count"] == 44
    k = ids.index(f"{aoi}_2018_02_r0_c0")
    assert (imgs[k][:16] == 0).all() and (imgs[k][16:] > 0).any()  # top quarter of 64 rows masked
    # the building reaching x = -2.2 is a building in column 0; the one to x = w + 0.9 in the last column
    checked = set()
    for month in ("01", "02", "03", "04"):
        pix = json.loads((demo / "spacenet7/train" / aoi / "labels_match_pix" /
                          f"global_monthly_2018_{month}_mosaic_{aoi}_Buildings.geojson").read_text())
        for f in pix["features"]:
            ring = np.array(f["geometry"]["coordinates"][0])
            for edge, col, tile_col in ((-2.2, 0, 0), (64 + 0.9, T - 1, 1)):
                if edge in ring[:, 0]:
                    mid = int(ring[:, 1].min() + ring[:, 1].max()) // 2
                    t = ids.index(f"{aoi}_2018_{month}_r{mid // T}_c{tile_col}")
                    assert labs[t][mid % T, col] == 1, (month, edge, mid)
                    checked.add(edge)
    assert sorted(checked) == [-2.2, 64.9]

    # fullsize at 256² tiles: nominal read (16 tiles a month) and native CD (1023 rows: 3 x 4)
    ss = prepare("spacenet7-ss", full, tmp_path / "ss256", 256)
    cd = prepare("spacenet7-cd", full, tmp_path / "cd256", 256)
    assert {s: v["count"] for s, v in ss["splits"].items()} == {"train": 7 * 16, "val": 3 * 16, "test": 3 * 16}
    assert {s: v["count"] for s, v in cd["splits"].items()} == {"train": 5 * 16, "val": 2 * 12, "test": 2 * 16}


# ------------------------------------------------------------------------------------------
# xView2 / xBD


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def santa_rosa_pairs(raw: Path, split: str) -> list[str]:
    return sorted(p.name[: -len("_pre_disaster.png")]
                  for p in (raw / "xview2" / split / "images").glob("santa-rosa-wildfire_*_pre_disaster.png"))


def xbd(raw: Path, split: str, stem_id: str, phase: str) -> dict:
    return json.loads((raw / "xview2" / split / "labels" / f"{stem_id}_{phase}_disaster.json").read_text())


def test_xbd_pngs_carry_a_trns_chunk_for_black_and_read_rgb_keeps_black(demo, tmp_path):
    pngs = sorted((demo / "xview2").glob("*/images/*.png"))
    assert len(pngs) == 2 * (16 + 8 + 2)
    black_pre = []
    for p in pngs:
        chunks = png_chunks(p.read_bytes())
        types = [c for c, _ in chunks]
        assert types[0] == b"IHDR" and types.index(b"tRNS") < types.index(b"IDAT")
        ihdr = dict(chunks)[b"IHDR"]
        assert ihdr[8:10] == bytes([8, 2])              # 8-bit truecolour RGB, no alpha channel
        assert dict(chunks)[b"tRNS"] == bytes(6)        # the RGB triple (0, 0, 0) is transparent
        rgb = read_rgb(p)
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.info["transparency"] == (0, 0, 0)
            rgba = np.asarray(im.convert("RGBA"))
        assert rgb.dtype == np.uint8 and rgb.shape == (128, 128, 3)
        assert np.array_equal(rgb, rgba[..., :3])
        black = (rgb == 0).all(-1)
        assert np.array_equal(rgba[..., 3] == 0, black)  # convert("RGBA"): exactly the black pixels vanish
        if black.any():
            assert p.name.endswith("_pre_disaster.png") and rgb[0, 0].tolist() == [0, 0, 0]
            black_pre.append(p)
    assert len(black_pre) == (16 + 8 + 2 + 1) // 3  # every third pair
    yy, xx = np.nonzero((read_rgb(black_pre[0]) == 0).all(-1))
    assert len(yy) > 16 and (yy + xx < 128 // 8).all()  # a nodata corner, nothing else black
    for p in (demo / "xview2").glob("*/targets/*.png"):
        assert b"tRNS" not in [c for c, _ in png_chunks(p.read_bytes())]
    # the preparer reads RGB: at tile size 128 (no resize) a black corner is stored black
    split = black_pre[0].parent.parent.name
    stem_id = black_pre[0].name[: -len("_pre_disaster.png")]
    assert stem_id.startswith("santa-rosa-wildfire_")
    prepare("xview2-ss", demo, tmp_path / "ss128", 128)
    ids = [r.split(",")[0] for r in (tmp_path / "ss128" / split / "tiles.csv").read_text().splitlines()[1:]]
    stored = np.load(tmp_path / "ss128" / split / "images.npy")[ids.index(stem_id)]
    assert np.array_equal(stored, read_rgb(black_pre[0])) and stored[0, 0].tolist() == [0, 0, 0]


def test_xbd_pre_labels_have_no_subtype_and_post_labels_feature_type_subtype_uid(demo):
    n_pre = 0
    for split in ("train", "test"):
        for stem_id in santa_rosa_pairs(demo, split):
            pre, post = xbd(demo, split, stem_id, "pre"), xbd(demo, split, stem_id, "post")
            assert len(pre["features"]["xy"]) == len(post["features"]["xy"])
            for a, b in zip(pre["features"]["xy"], post["features"]["xy"]):
                assert set(a["properties"]) == {"feature_type", "uid"}
                assert list(b["properties"]) == ["feature_type", "subtype", "uid"]
                assert a["properties"]["uid"] == b["properties"]["uid"] and a["wkt"] == b["wkt"]
                n_pre += 1
            assert not any("subtype" in f["properties"] for f in pre["features"]["lng_lat"])
    assert n_pre > 100


@pytest.mark.parametrize("size,edge", [("demo", 128.0), ("fullsize", 1024.0)])
def test_xbd_wkt_vertices_reach_exactly_the_image_size(demo, full, size, edge):
    raw = demo if size == "demo" else full
    xs, ys = [], []
    for p in sorted((raw / "xview2").glob("*/labels/*.json")):
        obj = json.loads(p.read_text())
        assert obj["metadata"]["width"] == obj["metadata"]["height"] == edge
        for f in obj["features"]["xy"]:
            coords = shapely.get_coordinates(shapely.from_wkt(f["wkt"]))
            xs.extend(coords[:, 0])
            ys.extend(coords[:, 1])
    assert max(xs) == edge and max(ys) == edge and min(xs) > 0 and min(ys) > 0
    assert sum(x == edge for x in xs) >= 4 and sum(y == edge for y in ys) >= 4
    assert any("1024.000000" in f["wkt"] for p in (raw / "xview2").glob("*/labels/*.json")
               for f in json.loads(p.read_text())["features"]["xy"]) == (size == "fullsize")


def test_xbd_pairs_without_buildings_and_with_buildings_but_no_damage(demo):
    damaged = ("minor-damage", "major-damage", "destroyed")
    counts = {}
    for split in ("train", "test"):
        empty = undamaged = 0
        for stem_id in santa_rosa_pairs(demo, split):
            pre, post = xbd(demo, split, stem_id, "pre"), xbd(demo, split, stem_id, "post")
            if not pre["features"]["xy"]:
                assert post["features"] == {"lng_lat": [], "xy": []} and pre["features"]["lng_lat"] == []
                target = np.asarray(Image.open(demo / "xview2" / split / "targets" /
                                               f"{stem_id}_post_disaster_target.png"))
                assert not target.any()
                empty += 1
            elif not any(f["properties"]["subtype"] in damaged for f in post["features"]["xy"]):
                undamaged += 1
        counts[split] = (len(santa_rosa_pairs(demo, split)), empty, undamaged)
    assert counts == {"train": (16, 1, 3), "test": (8, 1, 1)}


def test_xview2_preparers_run_on_the_quirky_pairs(demo, tmp_path):
    empty = {split: [s for s in santa_rosa_pairs(demo, split) if not xbd(demo, split, s, "pre")["features"]["xy"]]
             for split in ("train", "test")}
    assert {s: len(v) for s, v in empty.items()} == {"train": 1, "test": 1}
    # the release's masks (pre-label footprints): a pair whose PRE label has no polygon has no mask
    ss = prepare("xview2-ss", demo, tmp_path / "ss", T)
    assert ss["mask"] == "pre_footprints"
    assert {s: v["count"] for s, v in ss["splits"].items()} == {"train": 15, "test": 7}
    assert ss["pairs_without_mask"] == {s: [i.rsplit("_", 1)[1] for i in v] for s, v in empty.items()}
    assert ss["release_check"]["no_pre_label_building"] == ss["pairs_without_mask"]
    # every labelled pair, damaged post-label buildings: the empty pairs are kept with an empty mask
    damaged = {"mask": "post_damaged", "pairs_kept": "all_labelled"}
    ss = prepare("xview2-ss", demo, tmp_path / "ss_damaged", T, options=damaged)
    cd = prepare("xview2-cd", demo, tmp_path / "cd_damaged", T, options={**damaged, "pairs": "drop_empty"})
    assert {s: v["count"] for s, v in ss["splits"].items()} == {"train": 16, "test": 8}
    assert {s: v["count"] for s, v in cd["splits"].items()} == {"train": 12, "test": 6}
    assert cd["dropped"] == {"train": 4, "test": 2}  # the 3 + 1 undamaged pairs and the empty one
    for split in ("train", "test"):
        ids = [r.split(",")[0] for r in (tmp_path / "ss_damaged" / split / "tiles.csv").read_text().splitlines()[1:]]
        labels = np.load(tmp_path / "ss_damaged" / split / "labels.npy")
        assert not labels[ids.index(empty[split][0])].any()


# ------------------------------------------------------------------------------------------
# AID


def test_aid_tree_has_camelcase_classes_lowercase_files_and_macos_strays(demo):
    aid = demo / "aid"
    files = sorted(p.relative_to(aid).as_posix() for p in aid.rglob("*") if p.is_file())
    jpgs = [f for f in files if re.fullmatch(r"AID/[A-Z][A-Za-z]+/[a-z]+_\d+\.jpg", f)]
    assert len(jpgs) == 12 and "AID/DenseResidential/denseresidential_4.jpg" in jpgs
    assert all(Path(f).name.startswith(Path(f).parent.name.lower() + "_") for f in jpgs)
    strays = sorted(set(files) - set(jpgs) - {"SYNTHETIC.json"})
    assert strays == sorted(["AID/.DS_Store", "AID/DenseResidential/.DS_Store"]
                            + [f"__MACOSX/AID/._{c}" for c in ("Airport", "DenseResidential", "Forest")]
                            + [f"__MACOSX/{Path(f).parent}/._{Path(f).name}" for f in jpgs])
    assert (aid / "AID/.DS_Store").read_bytes() == DS_STORE and DS_STORE[4:8] == b"Bud1"
    apple = (aid / "__MACOSX/AID/Forest/._forest_1.jpg").read_bytes()
    assert apple == APPLE_DOUBLE and apple[:8] == bytes.fromhex("0005160700020000")


def test_aid_preparer_skips_ds_store_macosx_and_appledouble_files(demo, tmp_path):
    clean = prepare("aid", demo, tmp_path / "clean", T)
    assert clean["splits"]["train"]["count"] == 12
    assert not [s for s in clean["sources"] if "__MACOSX" in s or "/." in s]
    # strays where a careless copy puts them: ._ files beside every image (a macOS copy to a
    # FAT/exFAT disk), __MACOSX/ and a hidden folder inside AID/
    raw = tmp_path / "raw"
    shutil.copytree(demo / "aid", raw / "aid")
    for jpg in list((raw / "aid/AID").glob("*/*.jpg")):
        (jpg.parent / f"._{jpg.name}").write_bytes(APPLE_DOUBLE)
    shutil.copytree(raw / "aid/__MACOSX", raw / "aid/AID/__MACOSX")
    (raw / "aid/AID/.Trashes").mkdir()
    (raw / "aid/AID/.Trashes/airport_9.jpg").write_bytes(APPLE_DOUBLE)
    messy = prepare("aid", raw, tmp_path / "messy", T)
    assert messy["splits"] == clean["splits"] and messy["sources"] == clean["sources"]
    assert (tmp_path / "messy/train/tiles.csv").read_bytes() == (tmp_path / "clean/train/tiles.csv").read_bytes()
    assert (tmp_path / "messy/train/images.npy").read_bytes() == (tmp_path / "clean/train/images.npy").read_bytes()
    assert any("__MACOSX" in r for r in messy["rules"])


def _zip(src: Path, rename=lambda rel: rel) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name != "SYNTHETIC.json":
                zf.write(p, rename(p.relative_to(src).as_posix()))
    return buf.getvalue()


def _acquire_counts(body: bytes, tmp_path: Path) -> str:
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "AID.zip").write_bytes(body)
    with pytest.raises(DataFormatError) as err:  # 12 images, not the published 10,000
        acq.acquire("aid", tmp_path / "raw", tmp_path / "dl", quiet=True)
    return str(err.value)


def test_acquisition_counts_do_not_count_macos_strays(demo, tmp_path):
    counts = acq.layout_counts(acq.SOURCES["aid"], demo / "aid")
    assert counts["scene classes"] == 3 and counts["images"] == 12
    assert counts["class DenseResidential"] == 4 and counts["class Airport"] == 4
    # the zip as macOS' Finder makes it: AID/ beside __MACOSX/AID/
    message = _acquire_counts(_zip(demo / "aid"), tmp_path)
    assert "scene classes: 3, expected 30" in message and "images: 12, expected 10000" in message


@pytest.mark.parametrize("layout", ["classes_at_the_zip_top", "appledouble_beside_images"])
def test_acquisition_counts_with_strays_inside_the_data_folder(demo, tmp_path, layout):
    if layout == "classes_at_the_zip_top":  # Airport/…, __MACOSX/Airport/…: __MACOSX lands in AID/
        body = _zip(demo / "aid", lambda rel: rel.replace("AID/", "", 1))
    else:
        body = _zip(demo / "aid", lambda rel: rel.replace("__MACOSX/AID/", "AID/", 1))
    message = _acquire_counts(body, tmp_path)
    assert "scene classes: 3, expected 30" in message and "images: 12, expected 10000" in message
