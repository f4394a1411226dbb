"""Tests for the tile store's mutants that `mutmut` (scoped to noise2map/data/store.py with the
data tests) left alive: indexing at the edges, dtypes, the transform, and the messages of a
damaged store."""

import json

import numpy as np
import pytest
import torch

from noise2map.data import TileDataset
from noise2map.errors import DataFormatError, DataNotFoundError
from noise2map.io import write_npy


def _store(root, n=3, task="ss"):
    rng = np.random.default_rng(0)
    split = root / "test"
    split.mkdir(parents=True)
    write_npy(split / "images.npy", rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8))
    write_npy(split / "labels.npy", rng.integers(0, 2, (n, 4, 4), dtype=np.uint8))
    (split / "tiles.csv").write_text("tile_id\n" + "".join(f"t{i}\n" for i in range(n)))
    (root / "manifest.json").write_text(json.dumps({"task": task, "name": "whu-ss", "tile_size": 4,
                                                    "splits": {"test": {"count": n}, "val": {"count": 0}}}))
    return root


def test_indexing_at_the_edges(tmp_path):
    ds = TileDataset(_store(tmp_path), "test")
    assert len(ds) == 3 and ds.name == "whu-ss" and ds.tile_size == 4
    assert ds[-1]["index"] == 2 and torch.equal(ds[-1]["image"], ds[2]["image"])
    assert ds[0]["index"] == 0
    for bad in (3, -4):
        with pytest.raises(IndexError, match=r"out of range for 3 samples"):
            ds[bad]


def test_items_keep_their_dtypes_and_the_transform_sees_them(tmp_path):
    root = _store(tmp_path)
    stored = np.load(root / "test" / "images.npy")
    floats, raw = TileDataset(root, "test"), TileDataset(root, "test", uint8=True)
    assert floats[1]["mask"].dtype == torch.int64 and raw[1]["mask"].dtype == torch.uint8
    assert floats[1]["image"].dtype == torch.float32 and raw[1]["image"].dtype == torch.uint8
    assert torch.equal(raw[1]["image"], torch.from_numpy(stored[1]).permute(2, 0, 1))
    assert torch.allclose(floats[1]["image"], torch.from_numpy(stored[1]).permute(2, 0, 1).float() / 127.5 - 1)
    seen = []
    shifted = TileDataset(root, "test", transform=lambda item: seen.append(item["index"]) or {**item, "index": -1})
    assert shifted[2]["index"] == -1 and seen == [2]


def test_a_damaged_store_says_what_is_wrong_and_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"manifest.json does not exist: the tile store is not prepared \(or "
                                                r"its preparation did not finish\). Run the prepare step"):
        TileDataset(tmp_path, "test")
    root = _store(tmp_path / "s")
    with pytest.raises(DataNotFoundError, match=r"split 'train' is not in .*manifest.json \(available: test, val\)"):
        TileDataset(root, "train")
    (root / "test" / "tiles.csv").write_text("tile_id\nt0\n")
    with pytest.raises(DataFormatError, match=r"tiles.csv has 1 rows but the manifest says 3 samples; prepare"):
        TileDataset(root, "test")
    (root / "test" / "tiles.csv").unlink()
    with pytest.raises(DataNotFoundError, match=r"tiles.csv does not exist; prepare the data set again"):
        TileDataset(root, "test")
    root = _store(tmp_path / "t")
    write_npy(root / "test" / "labels.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataFormatError, match=r"test/labels.npy holds 2 samples, the manifest says 3; prepare"):
        TileDataset(root, "test")[0]
    (root / "test" / "images.npy").unlink()
    with pytest.raises(DataNotFoundError, match=r"images.npy does not exist although .*manifest.json lists split "
                                                r"'test'; the store is damaged"):
        TileDataset(root, "test")
