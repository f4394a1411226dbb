"""MAJOR-TOM Core-S2L2A (Francis & Czerkawski 2024) Sentinel-2 crops: a Table III pretraining sample."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from ...errors import ConfigError, DataFormatError, DataNotFoundError
from .common import (
    LAYOUTS, README_HINT, Sources, Split, check_tile_size, finish_store, natural_key, need_dir, random_crop_offset,
    raw_dir, start_store,
)

# MAJOR-TOM Core-S2L2A: reflectance (DN = surface reflectance x 10000, uint16) -> uint8 RGB with
# the rendering the data set's authors use for its own ``thumbnail`` column
# (ESA-PhiLab/Major-TOM, MajorTOM/extras/thumbnail_s2.py, ``s2l2a_thumbnail``):
#     uint8( clip(1.3 * (DN / 10000) ** 0.6, 0, 1) * 255 )   (truncated, not rounded)
MAJORTOM_RGB_BANDS = ("B04", "B03", "B02")  # red, green, blue (Sentinel-2 B4, B3, B2)
MAJORTOM_GAIN = 1.3
MAJORTOM_GAMMA = 0.6
MAJORTOM_SCALE = 10000.0
MAJORTOM_SCALING = (
    f"uint8 = floor(255 * clip({MAJORTOM_GAIN} * (DN / {MAJORTOM_SCALE:g}) ** {MAJORTOM_GAMMA}, 0, 1)) per band "
    "(DN < 0 taken as 0): the rendering of the data set's own thumbnail column "
    "(ESA-PhiLab/Major-TOM MajorTOM/extras/thumbnail_s2.py, s2l2a_thumbnail)"
)


def s2l2a_to_uint8(dn) -> np.ndarray:
    """Sentinel-2 L2A digital numbers (reflectance x 10000) → uint8, MAJOR-TOM's thumbnail rule.

    ``floor(255 * clip(1.3 * (DN / 10000) ** 0.6, 0, 1))``: 0 → 0, 500 → 54, 1000 → 83,
    3000 → 160, ≥ 6458 → 255. Works on any shape; computed in float64.
    """
    x = np.clip(np.asarray(dn, dtype=np.float64), 0, None) / MAJORTOM_SCALE
    return (np.clip(MAJORTOM_GAIN * x ** MAJORTOM_GAMMA, 0, 1) * 255).astype(np.uint8)


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataFormatError(
            "reading MAJOR-TOM parquet shards needs the pyarrow package (pip install pyarrow)."
        ) from exc
    return pq


def _decode_band(blob, where: str) -> tuple[np.ndarray, float | None]:
    """[H, W] array and nodata value of a single-band GeoTIFF held as bytes."""
    if blob is None:
        raise DataFormatError(f"{where}: empty cell (null); expected GeoTIFF bytes.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.MemoryFile(bytes(blob)) as mem, mem.open() as src:
                count, nodata = src.count, src.nodata
                data = src.read(1) if count == 1 else None
    except rasterio.errors.RasterioIOError as exc:
        raise DataFormatError(f"{where}: cannot be read as a GeoTIFF ({exc}); re-download the shard.") from exc
    if count != 1:
        raise DataFormatError(f"{where}: GeoTIFF with {count} bands, expected 1.")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise DataFormatError(f"{where}: pixel type {data.dtype}, expected uint16 reflectance x 10000.")
    return data, nodata


def _thumbnail_rgb(cell) -> np.ndarray | None:
    """The ``thumbnail`` cell (PNG bytes, or a {bytes, path} image struct) as [H, W, 3] uint8."""
    blob = cell.get("bytes") if isinstance(cell, dict) else cell
    if blob is None:
        return None
    try:
        with Image.open(io.BytesIO(bytes(blob))) as img:
            return np.asarray(img.convert("RGB"))
    except Exception:  # noqa: BLE001 - a bookkeeping comparison only
        return None


def prepare_majortom(raw_root, out_dir, tile_size, seed=0, num_images=None) -> dict:
    """MAJOR-TOM Core-S2L2A (Sentinel-2 L2A) RGB crops for pretraining (Table III).

    Rules:
    - Layout ``majortom/images/*.parquet`` (the suite acquires one shard, ``part_00001``);
      rows of every shard in (shard name, row) order. Each row is one grid cell; its columns
      ``B04``, ``B03``, ``B02`` hold single-band GeoTIFF bytes (10 m, 1068² in the real data)
      and are stacked as R, G, B. A shard lacking one of them is an error naming it.
    - Reflectance → uint8 with a fixed rule, MAJOR-TOM's own thumbnail rendering
      (:func:`s2l2a_to_uint8`): ``floor(255 · clip(1.3 · (DN/10000)^0.6, 0, 1))``.
    - ``num_images`` crops (one per row if None) spread over the rows: every row gets
      ``num_images // rows`` crops and ``num_images % rows`` rows, drawn without replacement
      with ``numpy.random.default_rng(seed)``, one more. Then, in row order, each crop's
      ``tile_size``² offset is drawn uniformly from the same generator (redrawn if the row
      already has a crop there, so crops of a row may overlap but never repeat).
    - Crops are not filtered: those holding nodata pixels (a band equal to its GeoTIFF nodata
      value, 0 when unset) are kept and counted in ``nodata_crops``. Where a ``thumbnail``
      column decodes to the band size, every crop is compared with the thumbnail at the same
      place (``thumbnail_check``, bookkeeping only). Single split ``train``.
    """
    t = check_tile_size(tile_size)
    sources = Sources(raw_root)
    raw = raw_dir(Path(raw_root), "majortom")
    images = need_dir(raw / "images", "majortom", "MAJOR-TOM images")
    shards = sorted((p for p in images.glob("*.parquet") if p.is_file()), key=lambda p: natural_key(p.name))
    if not shards:
        raise DataNotFoundError(
            f"no *.parquet shard in {images}. Expected layout: {LAYOUTS['majortom']} ({README_HINT})."
        )
    pq = _parquet()
    plan = []  # (shard, ParquetFile, number of rows)
    for shard in shards:
        try:
            pf = pq.ParquetFile(shard)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for broken files
            raise DataFormatError(f"{shard}: cannot be read as a parquet file ({exc}); re-download it.") from exc
        names = set(pf.schema_arrow.names)
        missing = [b for b in MAJORTOM_RGB_BANDS if b not in names]
        if missing:
            raise DataFormatError(
                f"{shard}: no column {', '.join(missing)} (columns: {', '.join(sorted(names))}); a MAJOR-TOM "
                f"Core-S2L2A shard holds B04, B03, B02 as GeoTIFF bytes. Expected layout: {LAYOUTS['majortom']}."
            )
        plan.append((shard, pf, pf.metadata.num_rows))
    total = sum(n for _, _, n in plan)
    if total == 0:
        raise DataNotFoundError(f"the parquet shards in {images} hold no rows ({README_HINT}).")
    rng = np.random.default_rng(seed)
    k_total = total if num_images is None else int(num_images)
    if k_total < 1:
        raise ConfigError(f"num_images must be a positive integer or None, got {num_images!r}")
    per_row, extra = divmod(k_total, total)
    counts = np.full(total, per_row, np.int64)
    if extra:
        counts[rng.choice(total, size=extra, replace=False)] += 1
    out_dir = start_store(out_dir)
    acc = Split("pretrain", t)
    imgs = np.empty((k_total, t, t, 3), np.uint8)
    rows: list[tuple[str, str, int, int]] = []
    nodata_crops, thumb = 0, {"compared": 0, "equal": 0, "max_abs_diff": 0}
    offset = 0  # global index of the first row of the current shard
    for shard, pf, n_rows in plan:
        if not counts[offset: offset + n_rows].any():
            offset += n_rows
            continue
        rel = sources.add(shard)
        names = pf.schema_arrow.names
        cols = list(MAJORTOM_RGB_BANDS) + [c for c in ("grid_cell", "thumbnail") if c in names]
        i = offset  # global index of the next row
        for g in range(pf.num_row_groups):
            g_rows = pf.metadata.row_group(g).num_rows
            if not counts[i: i + g_rows].any():  # read only the row groups that hold chosen rows
                i += g_rows
                continue
            for batch in pf.iter_batches(batch_size=8, columns=cols, row_groups=[g]):
                data = batch.to_pydict()
                for j in range(batch.num_rows):
                    c = int(counts[i])
                    r = i - offset
                    i += 1
                    if not c:
                        continue
                    bands, nodata = [], []
                    for b in MAJORTOM_RGB_BANDS:
                        arr, nd = _decode_band(data[b][j], f"{shard} row {r} column {b}")
                        bands.append(arr)
                        nodata.append(0 if nd is None else nd)
                    shapes = {b: a.shape for b, a in zip(MAJORTOM_RGB_BANDS, bands)}
                    if len(set(shapes.values())) != 1:
                        raise DataFormatError(f"{shard} row {r}: band sizes differ {shapes}; expected equal sizes.")
                    h, w = bands[0].shape
                    if h < t or w < t:
                        raise DataFormatError(f"{shard} row {r}: {w}x{h} bands are smaller than the {t}x{t} crop.")
                    if (h - t + 1) * (w - t + 1) < c:
                        raise DataNotFoundError(
                            f"{shard} row {r}: {c} distinct {t}x{t} crops requested from a {w}x{h} cell; "
                            f"num_images={num_images} is too large for {total} rows ({README_HINT})."
                        )
                    rgb = np.stack([s2l2a_to_uint8(a) for a in bands], axis=-1)
                    nd_mask = np.zeros((h, w), bool)
                    for a, nd in zip(bands, nodata):
                        nd_mask |= a == nd
                    thumbnail = _thumbnail_rgb(data["thumbnail"][j]) if "thumbnail" in data else None
                    if thumbnail is not None and thumbnail.shape != rgb.shape:
                        thumbnail = None
                    cell = data["grid_cell"][j] if "grid_cell" in data else None
                    cell = re.sub(r"[^0-9A-Za-z_]+", "-", str(cell)) if cell else "cell"
                    taken: set[tuple[int, int]] = set()
                    for _ in range(c):
                        while True:
                            y, x = random_crop_offset(rng, h, w, t)
                            if (y, x) not in taken:
                                break
                        taken.add((y, x))
                        crop = rgb[y: y + t, x: x + t]
                        imgs[len(rows)] = crop
                        nodata_crops += bool(nd_mask[y: y + t, x: x + t].any())
                        if thumbnail is not None:
                            d = int(np.abs(thumbnail[y: y + t, x: x + t].astype(np.int16) - crop).max())
                            thumb["compared"] += 1
                            thumb["equal"] += d == 0
                            thumb["max_abs_diff"] = max(thumb["max_abs_diff"], d)
                        rows.append((f"{shard.stem}_row{r}_{cell}_y{y}_x{x}", rel, y, x))
        if i != offset + n_rows:  # pragma: no cover - metadata and data disagree
            raise DataFormatError(f"{shard}: metadata says {n_rows} rows, {i - offset} read; re-download it.")
        offset += n_rows
    acc.add(rows, images=imgs)
    rules = [
        "Rows of images/*.parquet in (shard, row) order; bands B04, B03, B02 (GeoTIFF bytes) stacked as R, G, B.",
        f"Reflectance to uint8: {MAJORTOM_SCALING}.",
        f"{k_total} crops over {total} rows: {per_row} per row, plus one more in {extra} rows drawn without "
        f"replacement with seed {seed} (num_images None: one crop per row).",
        f"Each crop {t}x{t} at an offset drawn uniformly (same seeded generator, in row order); a repeated "
        "offset within a row is redrawn (crops of a row may overlap).",
        "No filtering: crops with nodata pixels (band == GeoTIFF nodata, 0 if unset) are kept and counted "
        "in nodata_crops; no cloud filtering.",
        "Single split 'train'; no labels.",
    ]
    return finish_store(
        "majortom", out_dir, t, {"train": acc}, rules, sources,
        seed=int(seed), num_images=None if num_images is None else int(num_images),
        bands_rgb=list(MAJORTOM_RGB_BANDS), scaling=MAJORTOM_SCALING,
        rows_total=int(total), rows_used=int((counts > 0).sum()),
        crops_per_row=[int(counts.min()), int(counts.max())],
        nodata_crops=int(nodata_crops), thumbnail_check=thumb,
    )
