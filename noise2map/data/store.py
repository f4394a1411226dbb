"""torch Datasets over a prepared tile store (see :mod:`noise2map.data.preparers.common`).

Arrays are memory-mapped (``np.load(..., mmap_mode="r")``) and opened lazily on first access,
so a dataset object pickles cheaply into DataLoader worker processes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataFormatError, DataNotFoundError
from ..io import read_json

_KEYS = {"ss": ("images", "labels"), "cd": ("pre", "post", "labels"), "pretrain": ("images",)}


def to_model_input(x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 images (any shape) → ``dtype`` in [-1, 1] (x / 127.5 − 1); float input unchanged."""
    return x.to(dtype) / 127.5 - 1.0 if x.dtype == torch.uint8 else x


def _image_tensor(tile: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float32 [3, H, W] in [-1, 1] (x / 127.5 − 1)."""
    x = torch.from_numpy(np.array(tile, dtype=np.float32)).permute(2, 0, 1)
    return (x / 127.5 - 1.0).contiguous()


def _uint8_tensor(tile: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → uint8 [3, H, W] (scaled on the device by :func:`to_model_input`)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(tile).transpose(2, 0, 1)))


class TileDataset(Dataset):
    """Samples of one split of a prepared data set.

    Items are dicts — SS: ``{"image": float32 [3,H,W] in [-1,1], "mask": int64 [H,W],
    "index": int}``; CD: ``{"pre", "post", "mask", "index"}``; pretraining (AID):
    ``{"image", "index"}``. ``transform``, if given, is applied to each item dict.
    """

    def __init__(self, prepared_dir, split: str, transform=None, uint8: bool = False):
        self.root = Path(prepared_dir)
        self.split = split
        self.transform = transform
        # uint8: items keep the stored bytes (images uint8 [3,H,W], mask uint8) and the
        # device scales them (to_model_input): 4× less to copy, no per-sample float work.
        self.uint8 = uint8
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise DataNotFoundError(
                f"prepared data set manifest {manifest_path} does not exist: the tile store is "
                "not prepared (or its preparation did not finish). Run the prepare step for this "
                "data set (noise2map.data.prepare), see docs/data.md."
            )
        self.manifest = read_json(manifest_path, "delete the store's folder and prepare it again")
        self.task = self.manifest["task"]
        self.name = self.manifest.get("name")
        self.tile_size = int(self.manifest["tile_size"])
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise DataNotFoundError(
                f"split {split!r} is not in {manifest_path} (available: {', '.join(splits)})."
            )
        self._count = int(splits[split]["count"])
        self._keys = _KEYS[self.task]
        for key in self._keys:
            path = self.root / split / f"{key}.npy"
            if not path.is_file():
                raise DataNotFoundError(
                    f"{path} does not exist although {manifest_path} lists split {split!r}; "
                    "the store is damaged — prepare the data set again."
                )
        tiles_csv = self.root / split / "tiles.csv"
        if not tiles_csv.is_file():
            raise DataNotFoundError(f"{tiles_csv} does not exist; prepare the data set again.")
        with open(tiles_csv, newline="") as fh:
            self.tiles = list(csv.DictReader(fh))
        self.tile_ids = [r["tile_id"] for r in self.tiles]
        if len(self.tile_ids) != self._count:
            raise DataFormatError(
                f"{tiles_csv} has {len(self.tile_ids)} rows but the manifest says {self._count} "
                "samples; prepare the data set again."
            )
        self._arrays: dict[str, np.ndarray] | None = None

    # lazy memory maps -------------------------------------------------------------------------
    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for key in self._keys:
                arr = np.load(self.root / self.split / f"{key}.npy", mmap_mode="r")
                if arr.shape[0] != self._count:
                    raise DataFormatError(
                        f"{self.root / self.split / f'{key}.npy'} holds {arr.shape[0]} samples, "
                        f"the manifest says {self._count}; prepare the data set again."
                    )
                arrays[key] = arr
            self._arrays = arrays
        return self._arrays

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = None  # workers reopen their own memory maps
        return state

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} samples")
        a = self._open()
        image = _uint8_tensor if self.uint8 else _image_tensor
        if self.task == "cd":
            item = {"pre": image(a["pre"][index]), "post": image(a["post"][index])}
        else:
            item = {"image": image(a["images"][index])}
        if "labels" in a:
            item["mask"] = torch.from_numpy(np.array(a["labels"][index], dtype=np.uint8 if self.uint8 else np.int64))
        item["index"] = int(index)
        return self.transform(item) if self.transform is not None else item

    def __repr__(self) -> str:
        return f"TileDataset({str(self.root)!r}, split={self.split!r}, task={self.task!r}, n={self._count})"


__all__ = ["TileDataset", "to_model_input"]
