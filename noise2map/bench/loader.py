"""Loader benchmark: our memory-mapped tile store against the released code's per-sample GeoTIFF read.

The released code opens a SpaceNet7 mosaic (1024×1024) with rasterio in every
``__getitem__``, decodes the whole file and crops a random 256×256 window; our
:class:`~noise2map.data.TileDataset` slices one tile out of a memory-mapped ``.npy`` array.
Both sources are built here in a temporary folder from the same synthetic mosaics, both
return the same item dict (``image`` float [-1, 1], ``mask`` int64, ``index``), and both go
through the same ``torch.utils.data.DataLoader`` — so the ratio measures the storage format
alone. Before timing, tiles of the store are checked equal to the same windows read from the
GeoTIFFs.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from noise2map.data.preparers.common import Sources, Split, finish_store, grid_tiles, start_store
from noise2map.data.store import TileDataset, _image_tensor

SOURCES = ("tile_store", "geotiff", "tile_store_float")
_AOI = "L15-0000E-0000N_0000_0000_13"  # SpaceNet7-style AOI name of the synthetic mosaics


def write_mosaics(root: Path, count: int, size: int = 1024, seed: int = 0,
                  compress: str | None = None) -> list[tuple[Path, Path]]:
    """``count`` SpaceNet7-sized mosaics: a 3-band uint8 GeoTIFF image and a 1-band {0, 1} label.

    Real mosaics are photographs; the pixel values do not matter for an uncompressed file
    (the default), only the size does.
    """
    import rasterio
    from rasterio.transform import Affine

    rng = np.random.default_rng(seed)
    folder = Path(root) / "spacenet7" / "train" / _AOI / "images_masked"
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": size, "height": size, "dtype": "uint8", "crs": "EPSG:3857",
               "transform": Affine(4.77, 0, 0, 0, -4.77, 0)}  # ~4.77 m pixels, as SpaceNet7
    if compress:
        profile["compress"] = compress
    pairs = []
    for k in range(count):
        year, month = 2018 + k // 12, 1 + k % 12
        image = folder / f"global_monthly_{year}_{month:02d}_mosaic_{_AOI}.tif"
        label = image.with_name(image.stem + "_Buildings.tif")
        with rasterio.open(image, "w", count=3, **profile) as dst:
            dst.write(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
        with rasterio.open(label, "w", count=1, **profile) as dst:
            dst.write((rng.random((1, size, size)) < 0.1).astype(np.uint8))
        pairs.append((image, label))
    return pairs


def _read_tif(path: Path) -> np.ndarray:
    """[H, W, C] uint8: the whole file opened and decoded, as the released ``__getitem__`` does."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return np.moveaxis(src.read(), 0, -1)


def build_store(out_dir: Path, pairs: list[tuple[Path, Path]], raw_root: Path, tile: int = 256) -> Path:
    """A SpaceNet7-SS tile store of the mosaics' non-overlapping tiles, written by prepare's own writer.

    Uses the same grid (:func:`~noise2map.data.preparers.common.grid_tiles`), rows (``tile_id,
    source, row, col``) and writer (:func:`~noise2map.data.preparers.common.finish_store`:
    arrays, tiles.csv, manifest.json last) as ``noise2map prepare``, so :class:`TileDataset`
    reads it exactly as it reads a prepared data set.
    """
    out_dir = start_store(out_dir)
    sources = Sources(raw_root)
    acc = Split("ss", tile)
    for image_path, label_path in pairs:
        image, label = _read_tif(image_path), _read_tif(label_path)[..., 0]
        tiles, nh, nw = grid_tiles(image, tile)
        labels, _, _ = grid_tiles(label, tile)
        rel = sources.add(image_path)
        sources.add(label_path)
        stem = image_path.stem.replace("global_monthly_", "").replace(f"_mosaic_{_AOI}", "")
        rows = [(f"{_AOI}_{stem}_r{i}_c{j}", rel, i * tile, j * tile) for i in range(nh) for j in range(nw)]
        acc.add(rows, images=tiles, labels=labels)
    rules = ["Benchmark store: synthetic mosaics cut into non-overlapping tiles (noise2map bench loader)."]
    finish_store("spacenet7-ss", out_dir, tile, {"train": acc}, rules, sources)
    return out_dir


class GeoTiffCropDataset(Dataset):
    """The released code's way: per sample, open image and label GeoTIFFs, decode them whole, crop.

    ``windows[i] = (pair index, row, col)`` is sample i's top-left corner; random windows
    (:func:`random_windows`) are the released code's random crops, drawn up front so the
    dataset pickles into workers and a run is repeatable.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], windows: list[tuple[int, int, int]], tile: int = 256):
        self.pairs, self.windows, self.tile = [tuple(map(Path, p)) for p in pairs], list(windows), tile

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        k, row, col = self.windows[index]
        image_path, label_path = self.pairs[k]
        t = self.tile
        image = _read_tif(image_path)[row: row + t, col: col + t]
        label = _read_tif(label_path)[row: row + t, col: col + t, 0]
        return {"image": _image_tensor(image), "mask": torch.from_numpy(label.astype(np.int64)),
                "index": int(index)}


def random_windows(n_pairs: int, count: int, size: int, tile: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``count`` random tile windows over ``n_pairs`` mosaics of ``size``² (uniform offsets)."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(n_pairs)), int(rng.integers(0, size - tile + 1)), int(rng.integers(0, size - tile + 1)))
            for _ in range(count)]


def store_windows(store: TileDataset, pairs: list[tuple[Path, Path]]) -> list[tuple[int, int, int]]:
    """The GeoTIFF windows of the store's tiles, from its tiles.csv (source, row, col)."""
    index = {p[0].name: k for k, p in enumerate(pairs)}
    return [(index[Path(r["source"]).name], int(r["row"]), int(r["col"])) for r in store.tiles]


def check_equal(store: TileDataset, geotiff: GeoTiffCropDataset, indices) -> int:
    """Assert that store tile i and GeoTIFF window i give identical items; return how many were checked."""
    for i in indices:
        a, b = store[i], geotiff[i]
        if not (torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])):
            raise AssertionError(f"tile {i}: the tile store and the GeoTIFF window differ")
    return len(indices)


def throughput(dataset: Dataset, tiles: int, batch_size: int, workers: int, warmup_batches: int = 1,
               seed: int = 0) -> dict:
    """Tiles/s through a DataLoader drawing random samples; the first batches (worker start) untimed."""
    g = torch.Generator().manual_seed(seed)
    drawn = tiles + warmup_batches * batch_size
    sampler = RandomSampler(dataset, replacement=True, num_samples=drawn, generator=g)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    it = iter(loader)
    for _ in range(warmup_batches):
        next(it)
    count, start = 0, time.perf_counter()
    for batch in it:
        count += int(batch["mask"].shape[0])
    seconds = time.perf_counter() - start
    del it
    rate = count / seconds
    return {"workers": workers, "tiles": count, "seconds": seconds, "tiles_per_s": rate,
            "tiles_per_s_per_worker": rate / max(workers, 1)}


def run(mosaics: int = 8, mosaic_size: int = 1024, tile: int = 256, tiles: int = 512, batch_size: int = 8,
        workers=(0,), warmup_batches: int = 1, seed: int = 0, compress: str | None = None, uint8: bool = True,
        workdir: str | None = None, progress=print) -> dict:
    """Build both sources in a temporary folder and measure them side by side at each worker count.

    ``speedup`` is tile_store over geotiff at the first worker count; ``uint8`` adds the
    informational ``tile_store_float`` rows (items decoded to float per sample, as the store did
    before training scaled uint8 tiles on the device), never part of ``speedup``.
    """
    workers = list(workers)
    with tempfile.TemporaryDirectory(prefix="n2m-bench-loader-", dir=workdir) as tmp:
        tmp = Path(tmp)
        progress(f"writing {mosaics} mosaics of {mosaic_size}² and the tile store in {tmp}")
        pairs = write_mosaics(tmp / "raw", mosaics, mosaic_size, seed, compress)
        store_dir = build_store(tmp / "store", pairs, tmp / "raw", tile)
        store = TileDataset(store_dir, "train", uint8=True)  # what training reads
        float_store = TileDataset(store_dir, "train")
        checked = check_equal(float_store, GeoTiffCropDataset(pairs, store_windows(store, pairs), tile),
                              sorted({0, len(store) // 2, len(store) - 1}))
        sources = {"tile_store": store,
                   "geotiff": GeoTiffCropDataset(pairs, random_windows(len(pairs), max(tiles, 64), mosaic_size,
                                                                       tile, seed), tile)}
        if uint8:  # informational: the same store decoded to float per sample in the loader
            sources["tile_store_float"] = float_store
        tile_bytes = tile * tile * 4  # uint8 image (3 bands) + label
        tif_bytes = sum(p.stat().st_size for p in pairs[0])
        runs = []
        for w in workers:
            for name, ds in sources.items():
                r = {"source": name, **throughput(ds, tiles, batch_size, w, warmup_batches, seed)}
                r["mb_per_s"] = r["tiles_per_s"] * tile_bytes / 1e6
                r["source_mb_per_s"] = r["tiles_per_s"] * (tif_bytes if name == "geotiff" else tile_bytes) / 1e6
                runs.append(r)
                progress(f"{name:16} workers={w}: {r['tiles_per_s']:8.1f} tiles/s")
        n_store = len(store)
    rate = {(r["source"], r["workers"]): r["tiles_per_s"] for r in runs}
    for r in runs:
        r["speedup_vs_geotiff"] = r["tiles_per_s"] / rate["geotiff", r["workers"]]
    ref = workers[0]
    result = {
        "benchmark": "loader",
        "workers": ref,
        "tile_store_tiles_per_s": rate["tile_store", ref],
        "geotiff_tiles_per_s": rate["geotiff", ref],
        "speedup": rate["tile_store", ref] / rate["geotiff", ref],
        "speedup_by_workers": {str(w): rate["tile_store", w] / rate["geotiff", w] for w in workers},
        "best": max(({"source": s, "workers": w, "tiles_per_s": v} for (s, w), v in rate.items()),
                    key=lambda b: b["tiles_per_s"]),
        "target_speedup": 20.0,
        "verified_equal_tiles": checked,
        "bytes_per_tile": tile_bytes,
        "geotiff_bytes_per_sample": tif_bytes,
        "runs": runs,
        "settings": {"mosaics": mosaics, "mosaic_size": mosaic_size, "tile": tile, "store_tiles": n_store,
                     "tiles_timed": tiles, "batch_size": batch_size, "workers": workers,
                     "warmup_batches": warmup_batches, "seed": seed, "compress": compress or "none"},
    }
    result["meets_target"] = result["speedup"] >= result["target_speedup"]
    if uint8:
        result["float_speedup_by_workers"] = {str(w): rate["tile_store_float", w] / rate["geotiff", w] for w in workers}
    return result


def markdown(result: dict) -> str:
    from noise2map.bench.common import context_lines, markdown_table

    s = result["settings"]
    rows = [[r["source"], r["workers"], r["tiles"], r["tiles_per_s"], r["tiles_per_s_per_worker"], r["mb_per_s"],
             r["source_mb_per_s"], r["speedup_vs_geotiff"]] for r in result["runs"]]
    lines = [
        "# Loader throughput: tile store vs per-sample GeoTIFF", "",
        f"{s['tile']}² tiles with labels through a torch DataLoader (batch {s['batch_size']}, random samples), "
        f"{s['tiles_timed']} timed tiles per run after {s['warmup_batches']} untimed batch(es). "
        f"tile_store = TileDataset over memory-mapped .npy ({s['store_tiles']} tiles); geotiff = the released "
        f"code's way, image and label GeoTIFFs of {s['mosaic_size']}² ({s['mosaics']} mosaics, compression "
        f"{s['compress']}) opened and decoded whole per sample, then cropped. MB/s = uint8 tile bytes delivered; "
        "source MB/s = bytes the source decodes. Files are in the page cache for both. tile_store is what "
        "training reads (uint8 items, scaled on the device); tile_store_float (if present) decodes each "
        "item to float32 in the loader instead, for comparison.", "",
        markdown_table(["Source", "Workers", "Tiles", "Tiles/s", "Tiles/s per worker", "MB/s", "Source MB/s",
                        "× GeoTIFF"], rows), "",
        f"**Speedup (workers={result['workers']}): {result['speedup']:.1f}×** "
        f"(target ≥ {result['target_speedup']:.0f}×, "
        f"{'met' if result['meets_target'] else 'NOT met'}); {result['verified_equal_tiles']} store tiles checked "
        "equal to the same GeoTIFF windows.",
        f"Fastest: {result['best']['source']} with {result['best']['workers']} workers "
        f"({result['best']['tiles_per_s']:.0f} tiles/s).", "",
    ]
    return "\n".join(lines + context_lines(result)) + "\n"
