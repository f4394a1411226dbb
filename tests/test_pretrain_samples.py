"""Table III ablation pretraining sets: ImageNet and MAJOR-TOM samplers on synthetic raw data."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from noise2map.data import PREPARED_DATASETS, PREPARERS, RAW_DIR_OF, TASK_OF, TileDataset, generate, prepare
from noise2map.data.preparers.majortom import s2l2a_to_uint8
from noise2map.data.synthetic import DATASETS, SIZES, geotiff_bytes, s2l2a_thumbnail, write_parquet
from noise2map.errors import ConfigError, DataFormatError, DataNotFoundError

T = 32
SHARD = Path("majortom") / "images" / "part_00001.parquet"


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate("imagenet", root, seed=0)
    pytest.importorskip("pyarrow")
    generate("majortom", root, seed=0)
    return root


def read_rows(d: Path) -> list[dict]:
    with open(d / "train" / "tiles.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def images(d: Path) -> np.ndarray:
    return np.load(d / "train" / "images.npy")


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def decode(blob: bytes) -> np.ndarray:
    with rasterio.MemoryFile(blob) as mem, mem.open() as src:
        assert src.count == 1
        return src.read(1)


def thumbnail_rule(dn: np.ndarray) -> np.ndarray:
    """MAJOR-TOM's thumbnail rendering, written out independently of the preparer."""
    v = 1.3 * (dn.astype(np.float64) / 10000.0) ** 0.6
    return np.floor(255 * np.minimum(v, 1.0)).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# registries and synthetic layouts


def test_registered():
    for name in ("imagenet", "majortom"):
        assert name in PREPARED_DATASETS and name in PREPARERS and name in DATASETS and name in SIZES["demo"]
        assert RAW_DIR_OF[name] == name and TASK_OF[name] == "pretrain"
    # appended: the existing data sets keep their seeds (generator seeded with the index)
    assert DATASETS[:5] == ("spacenet7", "whu", "whu-cd", "xview2", "aid")


def test_imagenet_raw_layout(raw):
    files = sorted((raw / "imagenet" / "val").iterdir())
    assert len(files) == 10
    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", p.name) for p in files)
    assert files[0].name == "ILSVRC2012_val_00000001.JPEG"
    modes, sizes = set(), set()
    for p in files:
        with Image.open(p) as img:
            assert img.format == "JPEG"
            modes.add(img.mode)
            sizes.add(img.size)
    assert modes == {"RGB", "L"}  # some real ImageNet JPEGs are grayscale
    assert min(min(s) for s in sizes) < T and len(sizes) > 1


def test_majortom_raw_layout(raw):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(raw / SHARD)
    names = pf.schema_arrow.names
    assert names[:4] == ["product_id", "grid_cell", "product_datetime", "thumbnail"]
    assert {"B01", "B02", "B03", "B04", "B08", "B8A", "B12", "cloud_mask"} <= set(names)
    assert pf.metadata.num_rows == 5 and pf.num_row_groups == 3
    row = parquet_rows(raw / SHARD)[0]
    assert re.fullmatch(r"\d+U_\d+R", row["grid_cell"]) and row["product_id"].startswith("S2A_MSIL2A_")
    with rasterio.MemoryFile(row["B04"]) as mem, mem.open() as src:
        assert src.driver == "GTiff" and src.count == 1 and src.dtypes[0] == "uint16"
        assert (src.height, src.width) == (72, 72) and src.res == (10.0, 10.0) and src.nodata == 0
        assert src.crs.to_epsg() == 32640
    assert decode(row["B01"]).shape == (12, 12)  # 60 m
    assert decode(row["B05"]).shape == (36, 36)  # 20 m
    thumb = np.asarray(Image.open(io.BytesIO(row["thumbnail"])))
    bands = [decode(row[b]) for b in ("B04", "B03", "B02")]
    assert np.array_equal(thumb, np.stack([thumbnail_rule(b) for b in bands], -1))


def test_synthetic_is_deterministic(raw, tmp_path):
    pytest.importorskip("pyarrow")
    for name in ("imagenet", "majortom"):
        generate(name, tmp_path, seed=0)
        assert file_hashes(tmp_path / name) == file_hashes(raw / name)
    generate("majortom", tmp_path / "b", seed=1)
    assert file_hashes(tmp_path / "b" / "majortom") != file_hashes(raw / "majortom")


# ------------------------------------------------------------------------------------------
# ImageNet


def test_imagenet_store(raw, tmp_path):
    out = tmp_path / "imagenet"
    m = prepare("imagenet", raw, out, T)
    assert m["name"] == "imagenet" and m["task"] == "pretrain" and m["tile_size"] == T
    assert m["splits"] == {"train": {"count": 10, "positive_fraction": None}}
    assert m["converted_to_rgb"] == {"L": 2}
    assert set(m["upscaled"]) == {"imagenet/val/ILSVRC2012_val_00000004.JPEG",
                                  "imagenet/val/ILSVRC2012_val_00000009.JPEG"}
    assert m["upscaled"]["imagenet/val/ILSVRC2012_val_00000004.JPEG"] == [40, 28]
    assert json.loads((out / "manifest.json").read_text()) == m
    arr = images(out)
    assert arr.dtype == np.uint8 and arr.shape == (10, T, T, 3)
    assert not (out / "train" / "labels.npy").exists()
    rows = read_rows(out)
    assert [r["source"] for r in rows] == sorted(m["sources"])  # every image, file order
    for i, r in enumerate(rows):
        y, x = int(r["row"]), int(r["col"])
        assert r["tile_id"] == f"{Path(r['source']).stem}_y{y}_x{x}"
        with Image.open(raw / r["source"]) as img:
            img = img.convert("RGB")
            if r["source"] in m["upscaled"]:
                w, h = img.size  # 40 x 28 -> short side T, long side int(T * 40 / 28) = 45
                img = img.resize((int(T * w / h), T), Image.BILINEAR)
                assert img.size == (45, T)
            src = np.asarray(img)
        assert np.array_equal(arr[i], src[y:y + T, x:x + T])
    ds = TileDataset(out, "train")
    assert len(ds) == 10 and ds[0]["image"].shape == (3, T, T)


def test_imagenet_seeded_sample(raw, tmp_path):
    a = prepare("imagenet", raw, tmp_path / "a", T, seed=3, num_images=4)
    b = prepare("imagenet", raw, tmp_path / "b", T, seed=3, num_images=4)
    c = prepare("imagenet", raw, tmp_path / "c", T, seed=4, num_images=4)
    assert a == b and a["splits"]["train"]["count"] == 4 and a["images_available"] == 10
    assert np.array_equal(images(tmp_path / "a"), images(tmp_path / "b"))
    assert read_rows(tmp_path / "a") != read_rows(tmp_path / "c")
    sources = [r["source"] for r in read_rows(tmp_path / "a")]
    assert sources == sorted(sources) and len(set(sources)) == 4  # without replacement, file order
    with pytest.raises(DataNotFoundError, match="num_images=11"):
        prepare("imagenet", raw, tmp_path / "d", T, num_images=11)


def test_imagenet_train_layout(raw, tmp_path):
    for k, p in enumerate(sorted((raw / "imagenet" / "val").glob("*.JPEG"))[:3]):
        dst = tmp_path / "imagenet" / "train" / f"n0144076{k % 2}" / f"n0144076{k % 2}_{k}.JPEG"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    m = prepare("imagenet", tmp_path, tmp_path / "out", T)
    assert m["splits"]["train"]["count"] == 3
    assert all(r["source"].startswith("imagenet/train/n0144076") for r in read_rows(tmp_path / "out"))


def test_imagenet_empty_folder(tmp_path):
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "imagenet")) + ".*is empty"):
        prepare("imagenet", tmp_path, tmp_path / "out", T)
    val = tmp_path / "imagenet" / "val"
    val.mkdir(parents=True)
    (val / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    with pytest.raises(DataNotFoundError, match=f"no JPEG images in {re.escape(str(val))}"):
        prepare("imagenet", tmp_path, tmp_path / "out", T)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------
# MAJOR-TOM


def test_s2l2a_to_uint8_known_values():
    dn = np.array([0, 1, 100, 500, 1000, 2000, 3000, 6457, 6458, 10000, 65535], np.uint16)
    expected = [0, 1, 20, 54, 83, 126, 160, 254, 255, 255, 255]
    assert s2l2a_to_uint8(dn).tolist() == expected
    assert s2l2a_to_uint8(dn).dtype == np.uint8
    assert s2l2a_to_uint8(np.array([-5, 0], np.int16)).tolist() == [0, 0]  # negatives clip to 0
    ramp = np.arange(0, 20001, dtype=np.uint16)
    assert np.array_equal(s2l2a_to_uint8(ramp), thumbnail_rule(ramp))
    assert (np.diff(s2l2a_to_uint8(ramp).astype(int)) >= 0).all()
    # the synthetic thumbnail column is rendered with the same rule
    b = ramp[:10000].reshape(100, 100)
    assert np.array_equal(s2l2a_thumbnail(b, b, b)[..., 0], s2l2a_to_uint8(b))


def test_majortom_store(raw, tmp_path):
    out = tmp_path / "majortom"
    m = prepare("majortom", raw, out, T, seed=1, num_images=13)
    assert m["name"] == "majortom" and m["task"] == "pretrain" and m["tile_size"] == T
    assert m["splits"] == {"train": {"count": 13, "positive_fraction": None}}
    assert m["rows_total"] == 5 and m["rows_used"] == 5 and m["crops_per_row"] == [2, 3]
    assert m["bands_rgb"] == ["B04", "B03", "B02"] and "1.3" in m["scaling"] and "0.6" in m["scaling"]
    assert list(m["sources"]) == [SHARD.as_posix()]
    assert m["sources"][SHARD.as_posix()] == hashlib.sha256((raw / SHARD).read_bytes()).hexdigest()
    assert m["thumbnail_check"] == {"compared": 13, "equal": 13, "max_abs_diff": 0}
    arr = images(out)
    assert arr.dtype == np.uint8 and arr.shape == (13, T, T, 3)
    rows = read_rows(out)
    table = parquet_rows(raw / SHARD)
    per_row, nodata = {}, 0
    for i, r in enumerate(rows):
        assert r["source"] == SHARD.as_posix()
        k, cell, y, x = re.fullmatch(r"part_00001_row(\d+)_(\d+U_\d+R)_y(\d+)_x(\d+)", r["tile_id"]).groups()
        k, y, x = int(k), int(y), int(x)
        assert (y, x) == (int(r["row"]), int(r["col"])) and table[k]["grid_cell"] == cell
        bands = [decode(table[k][b])[y:y + T, x:x + T] for b in ("B04", "B03", "B02")]
        assert np.array_equal(arr[i], np.stack([thumbnail_rule(b) for b in bands], -1))
        nodata += any((b == 0).any() for b in bands)
        per_row.setdefault(k, set()).add((y, x))
    assert sorted(len(v) for v in per_row.values()) == [2, 2, 3, 3, 3]  # 13 spread over 5 rows, no repeats
    assert [int(re.search(r"_row(\d+)_", r["tile_id"]).group(1)) for r in rows] == sorted(
        int(re.search(r"_row(\d+)_", r["tile_id"]).group(1)) for r in rows)  # row order
    assert m["nodata_crops"] == nodata
    # num_images None: one crop per row
    m1 = prepare("majortom", raw, tmp_path / "one", T)
    assert m1["splits"]["train"]["count"] == 5 and m1["crops_per_row"] == [1, 1]


def test_majortom_seeded(raw, tmp_path):
    a = prepare("majortom", raw, tmp_path / "a", T, seed=5, num_images=3)
    b = prepare("majortom", raw, tmp_path / "b", T, seed=5, num_images=3)
    c = prepare("majortom", raw, tmp_path / "c", T, seed=6, num_images=3)
    assert a == b and a["rows_used"] == 3 and a["crops_per_row"] == [0, 1]
    assert read_rows(tmp_path / "a") == read_rows(tmp_path / "b")
    assert np.array_equal(images(tmp_path / "a"), images(tmp_path / "b"))
    assert read_rows(tmp_path / "a") != read_rows(tmp_path / "c")
    with pytest.raises(ConfigError):
        prepare("majortom", raw, tmp_path / "d", T, num_images=0)


def _shard(root: Path, columns: dict) -> Path:
    path = root / SHARD
    write_parquet(path, columns)
    return path


def test_majortom_band_order(tmp_path):
    pytest.importorskip("pyarrow")
    n = 40
    const = {"B02": 500, "B03": 3000, "B04": 1000, "B08": 9000}  # blue, green, red, NIR

    def band(v):
        return geotiff_bytes(np.full((n, n), v, np.uint16), nodata=0)

    # columns deliberately not in R, G, B order: bands are picked by name
    _shard(tmp_path, {"grid_cell": ["1U_1R", "1U_2R"], **{b: [band(v), band(v)] for b, v in const.items()}})
    m = prepare("majortom", tmp_path, tmp_path / "out", T, num_images=4)
    arr = images(tmp_path / "out")
    assert arr.shape == (4, T, T, 3)
    assert (arr[..., 0] == 83).all()  # R = B04 = 1000
    assert (arr[..., 1] == 160).all()  # G = B03 = 3000
    assert (arr[..., 2] == 54).all()  # B = B02 = 500
    assert m["nodata_crops"] == 0 and m["thumbnail_check"]["compared"] == 0  # no thumbnail column


def test_majortom_missing_band(tmp_path):
    pytest.importorskip("pyarrow")
    cell = geotiff_bytes(np.ones((40, 40), np.uint16))
    path = _shard(tmp_path, {"grid_cell": ["1U_1R"], "B04": [cell], "B02": [cell]})
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + r": no column B03"):
        prepare("majortom", tmp_path, tmp_path / "out", T)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_majortom_bad_cell(tmp_path):
    pytest.importorskip("pyarrow")
    cell = geotiff_bytes(np.ones((40, 40), np.uint16))
    path = _shard(tmp_path, {"B04": [cell], "B03": [b"not a tiff"], "B02": [cell]})
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + r" row 0 column B03"):
        prepare("majortom", tmp_path, tmp_path / "out", T)
    small = geotiff_bytes(np.ones((20, 40), np.uint16))
    _shard(tmp_path, {"B04": [small], "B03": [small], "B02": [small]})
    with pytest.raises(DataFormatError, match="40x20 bands are smaller than the 32x32 crop"):
        prepare("majortom", tmp_path, tmp_path / "out", T)


def test_majortom_empty_folder(tmp_path):
    pytest.importorskip("pyarrow")
    (tmp_path / "majortom").mkdir()
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "majortom")) + ".*is empty"):
        prepare("majortom", tmp_path, tmp_path / "out", T)
    (tmp_path / "majortom" / "README.md").write_text("x")
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "majortom" / "images"))):
        prepare("majortom", tmp_path, tmp_path / "out", T)
    (tmp_path / "majortom" / "images").mkdir()
    images_dir = re.escape(str(tmp_path / "majortom" / "images"))
    with pytest.raises(DataNotFoundError, match=r"no \*\.parquet shard in " + images_dir):
        prepare("majortom", tmp_path, tmp_path / "out", T)
