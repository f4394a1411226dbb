"""What every preparer shares: the data-set registries, the raw layouts, the readers, the
resampling rules and the store writer.

A tile store, under ``out_dir``::


    <split>/images.npy        uint8 [N, H, W, 3]  (SS and the pretraining sets aid, imagenet, majortom)
    <split>/pre.npy           uint8 [N, H, W, 3]  (CD)
    <split>/post.npy          uint8 [N, H, W, 3]  (CD)
    <split>/labels.npy        uint8 [N, H, W] in {0, 1}  (SS and CD)
    <split>/tiles.csv         tile_id,source,row,col
    manifest.json             written last, atomically: the completion marker

``tiles.csv``: one row per sample in array order. ``tile_id`` is unique within the split and
names the source scene/file and the position (``<aoi>_<YYYY>_<MM>_r<i>_c<j>`` for SpaceNet7
grid tiles with tile-grid indices i, j; the file stem for whole images that are resized;
``<stem>_y<row>_x<col>`` for AID and ImageNet crops; ``<shard stem>_row<i>_<grid_cell>_y<row>_x<col>``
for MAJOR-TOM crops of parquet row i). ``source`` is the raw file the sample came from,
relative to ``raw_root`` (``pre;post`` for change pairs). ``row``/``col`` are the pixel
offsets of the sample's top-left corner in the source image (0, 0 for resized whole images;
for ImageNet images upscaled to the tile size, offsets in the upscaled image).

``manifest.json`` holds ``name``, ``task`` (``ss``/``cd``/``pretrain``), ``tile_size``,
``splits`` ``{split: {count, positive_fraction}}``, ``rules`` (the preparation rules as
sentences), ``sources`` (path relative to ``raw_root`` → sha256 of every raw file read),
``noise2map_version``, plus data-set specific bookkeeping (``dropped``, ``ignored``, ...).

Errors: :class:`~noise2map.errors.DataNotFoundError` when a raw directory or file is missing,
:class:`~noise2map.errors.DataFormatError` when a file's content breaks the layout's promise.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from ... import __version__
from ...errors import ConfigError, DataFormatError, DataNotFoundError
from ...io import sha256, write_json, write_npy, write_text

PREPARED_DATASETS = (
    "spacenet7-ss",
    "spacenet7-cd",
    "whu-ss",
    "whu-cd",
    "xview2-ss",
    "xview2-cd",
    "aid",
    "imagenet",
    "majortom",
)
RAW_DIR_OF = {
    "spacenet7-ss": "spacenet7",
    "spacenet7-cd": "spacenet7",
    "whu-ss": "whu",
    "whu-cd": "whu-cd",
    "xview2-ss": "xview2",
    "xview2-cd": "xview2",
    "aid": "aid",
    "imagenet": "imagenet",
    "majortom": "majortom",
}
TASK_OF = {
    "spacenet7-ss": "ss",
    "spacenet7-cd": "cd",
    "whu-ss": "ss",
    "whu-cd": "cd",
    "xview2-ss": "ss",
    "xview2-cd": "cd",
    "aid": "pretrain",
    "imagenet": "pretrain",
    "majortom": "pretrain",
}
WHU_DIRNAME = "3. The cropped image tiles and raster labels"

README_HINT = "see docs/data.md"

LAYOUTS = {
    "spacenet7": "spacenet7/train/<aoi>/images_masked/global_monthly_<YYYY>_<MM>_mosaic_<aoi>.tif "
    "and spacenet7/train/<aoi>/labels_match_pix/global_monthly_<YYYY>_<MM>_mosaic_<aoi>_Buildings.geojson "
    "(the SN7_buildings_train.tar.gz archive extracted)",
    "whu": f"whu/{WHU_DIRNAME}/{{train,val,test}}/{{image,label}}/<name>.tif "
    "(the WHU aerial building archive extracted; the folders may also be named Image/Mask, in any case, "
    "and the three split folders may sit directly under whu/)",
    "whu-cd": "whu-cd/{A,B,label}/<name>.png and whu-cd/list/{train,test}.txt, list/val.txt optional "
    "(the 256x256 BIT form of WHU-CD)",
    "xview2": "xview2/{train,test}/{images,labels}/santa-rosa-wildfire_<id>_{pre,post}_disaster.{png,json} "
    "(the xView2 train/test archives extracted)",
    "aid": "aid/AID/<ClassName>/<classname>_<n>.jpg (AID.zip extracted)",
    "imagenet": "imagenet/val/ILSVRC2012_val_<8 digits>.JPEG (ILSVRC2012_img_val.tar extracted; "
    "an ImageFolder copy of train at imagenet/train/<wnid>/*.JPEG is accepted too)",
    "majortom": "majortom/images/part_<5 digits>.parquet (MAJOR-TOM Core-S2L2A parquet shards: one row "
    "per grid cell, columns B04, B03, B02 holding single-band GeoTIFF bytes)",
}


# --------------------------------------------------------------------------------------------
# finding the raw files


def natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def raw_dir(raw_root: Path, dataset: str) -> Path:
    """``raw_root/<dataset>``; DataNotFoundError if it is absent or holds no data."""
    path = Path(raw_root) / dataset
    has_data = path.is_dir() and any(p.name != "SYNTHETIC.json" for p in path.iterdir())
    if not has_data:
        state = "is empty" if path.is_dir() else "does not exist"
        raise DataNotFoundError(
            f"raw data directory {path} {state}. Expected layout: {LAYOUTS[dataset]}. "
            f"Download/extract the data set there, or generate the synthetic demo data "
            f"({README_HINT})."
        )
    return path


def need_dir(path: Path, dataset: str, what: str) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(
            f"{what} directory {path} does not exist. Expected layout: {LAYOUTS[dataset]} "
            f"({README_HINT})."
        )
    return path


def need_file(path: Path, dataset: str, what: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(
            f"{what} {path} does not exist. Expected layout: {LAYOUTS[dataset]} ({README_HINT})."
        )
    return path


# --------------------------------------------------------------------------------------------
# the WHU layouts: ONE definition, read by acquisition (noise2map.data.acquire, SOURCES "whu"
# and "whu-cd": its check after extraction and for a tree found in place) and by the preparers,
# so a tree the one accepts is a tree the other reads, and the same problem gets the same words.

WHU_SPLITS = ("train", "val", "test")
# Folder-name aliases, matched case-insensitively: the official archive's image/label, the
# released code's (and the re-packaged copies') Image/Mask.
WHU_FOLDERS = {"image": ("image", "images"), "label": ("label", "labels", "mask", "masks")}
WHU_FILE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg")


def case_insensitive_glob(name: str) -> str:
    """``name`` as a glob that matches it in any case (``Image`` → ``[iI][mM][aA][gG][eE]``)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("[" + c + "]" if c in "*?[]" else c)
                   for c in name)


# What acquisition looks for in an archive to find the WHU data folder (every image alias
# begins with "image").
WHU_MEMBER_MARKER = f"train/{case_insensitive_glob('image')}*/*"


def _whu_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WHU_FILE_SUFFIXES]


def whu_tree(raw: Path) -> tuple[Path | None, dict[tuple[str, str], Path], list[str]]:
    """Resolve the WHU aerial layout under ``raw`` (= ``<raw_root>/whu``).

    Returns ``(base, folders, problems)``: ``base`` is ``raw/<WHU_DIRNAME>`` if it holds a
    split folder, else ``raw`` if it does; ``folders[(split, "image"|"label")]`` the folder of
    that split whose name is one of :data:`WHU_FOLDERS` (any case); ``problems`` one sentence
    per missing or ambiguous folder, or folder without image files (empty: the layout is in
    place). The splits train, val and test are all required.
    """
    raw = Path(raw)
    base = next((c for c in (raw / WHU_DIRNAME, raw) if any((c / s).is_dir() for s in WHU_SPLITS)), None)
    if base is None:
        return None, {}, [f"no {'/'.join(WHU_SPLITS)} folders under {raw / WHU_DIRNAME} (nor under {raw})"]
    folders, problems = {}, []
    for split in WHU_SPLITS:
        sdir = base / split
        if not sdir.is_dir():
            problems.append(f"the {split} folder {sdir} does not exist (the WHU layout needs "
                            f"{', '.join(WHU_SPLITS)})")
            continue
        for role, aliases in WHU_FOLDERS.items():
            hits = sorted(d for d in sdir.iterdir() if d.is_dir() and d.name.lower() in aliases)
            if not hits:
                problems.append(f"the {split} {role} folder {sdir / aliases[0]} does not exist (named "
                                f"{' or '.join(aliases)}, in any case)")
            elif len(hits) > 1:
                problems.append(f"{split} has {len(hits)} {role} folders ({', '.join(h.name for h in hits)}) "
                                f"in {sdir}; keep one")
            elif not _whu_files(hits[0]):
                problems.append(f"the {split} {role} folder {hits[0]} holds no "
                                f"{'/'.join(WHU_FILE_SUFFIXES)} files")
            else:
                folders[split, role] = hits[0]
    return base, folders, problems


def whu_layout_problems(raw: Path) -> list[str]:
    """The WHU aerial layout's problems under ``raw`` (empty: in place); see :func:`whu_tree`."""
    return whu_tree(raw)[2]


def whu_count_globs() -> tuple[tuple[str, str], ...]:
    """Acquisition's per-split tile counts, as globs over the same folders (any case)."""
    out = []
    for split in WHU_SPLITS:
        alts = [f"{base}{split}/{case_insensitive_glob(alias)}/*"
                for base in (f"{WHU_DIRNAME}/", "") for alias in WHU_FOLDERS["image"]]
        out.append((f"{split} tiles", "|".join(alts)))
    return tuple(out)


# WHU-CD, the 256² BIT form: three folders of one file per pair, and the split lists.
WHU_CD_FOLDERS = ("A", "B", "label")
WHU_CD_LISTS = {"train": True, "val": False, "test": True}  # split → required


def whu_cd_layout_problems(raw: Path) -> list[str]:
    """The WHU-CD layout's problems under ``raw`` (= ``<raw_root>/whu-cd``; empty: in place):
    ``A/``, ``B/``, ``label/`` each holding a file, ``list/train.txt`` and ``list/test.txt``
    (``list/val.txt`` optional). Names are matched exactly, as the BIT form writes them."""
    raw = Path(raw)
    problems = []
    for k in WHU_CD_FOLDERS:
        if not (raw / k).is_dir():
            problems.append(f"the WHU-CD {k} folder {raw / k} does not exist")
        elif not any(p.is_file() for p in (raw / k).iterdir()):
            problems.append(f"the WHU-CD {k} folder {raw / k} holds no files")
    for split, required in WHU_CD_LISTS.items():
        if required and not (raw / "list" / f"{split}.txt").is_file():
            problems.append(f"the WHU-CD {split} list {raw / 'list' / f'{split}.txt'} does not exist")
    return problems


def open_label_image(path: Path) -> Image.Image:
    """A label raster as PIL opens it (as the released loaders do, to keep its mode: ``1``,
    ``L``, ``P``, ``RGB``, ...). A TIFF that PIL cannot decode is read with rasterio and given
    the mode PIL would give it (1 band: ``L``, or ``P`` with its colour map; 3 bands: ``RGB``)."""
    path = Path(path)
    try:
        return read_pil(path)
    except DataFormatError:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as src:
                palette = src.colormap(1) if src.count == 1 and src.colorinterp[0].name == "palette" else None
        except (rasterio.errors.RasterioIOError, ValueError):
            palette = None
    arr = read_tif(path)
    if arr.shape[-1] == 1:
        img = Image.fromarray(arr[..., 0], "P" if palette else "L")
        if palette:
            img.putpalette([v for i in range(256) for v in palette.get(i, (0, 0, 0, 255))[:3]])
        return img
    if arr.shape[-1] in (3, 4):
        return Image.fromarray(arr, "RGB" if arr.shape[-1] == 3 else "RGBA")
    raise DataFormatError(f"{path}: label has {arr.shape[-1]} bands; expected one (0 = background, 255 = positive).")


def count_modes(modes: list[str]) -> dict[str, int]:
    """``{mode: number of files}``, modes in name order (for the manifest's ``label_modes``)."""
    return {m: modes.count(m) for m in sorted(set(modes))}


# --------------------------------------------------------------------------------------------
# recording sources, accumulating splits, writing the store


class Sources:
    """Records the sha256 of every raw file read, keyed by its path relative to raw_root."""

    def __init__(self, raw_root: Path):
        self.root = Path(raw_root)
        self.hashes: dict[str, str] = {}

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def add(self, path: Path) -> str:
        rel = self.rel(path)
        if rel not in self.hashes:
            self.hashes[rel] = sha256(path)
        return rel

    def sorted(self) -> dict[str, str]:
        return dict(sorted(self.hashes.items()))


class Split:
    """Accumulates the samples of one split, in order."""

    def __init__(self, task: str, tile_size: int):
        self.task, self.t = task, tile_size
        self.arrays: dict[str, list[np.ndarray]] = {
            k: [] for k in ARRAY_KEYS[task]
        }
        self.rows: list[tuple[str, str, int, int]] = []

    def add(self, rows, **arrays) -> None:
        n = len(rows)
        for key, value in arrays.items():
            value = np.asarray(value, dtype=np.uint8)
            if value.shape[0] != n:  # pragma: no cover - internal consistency
                raise AssertionError(f"{key}: {value.shape[0]} samples for {n} rows")
            self.arrays[key].append(value)
        self.rows.extend(rows)

    def stacked(self) -> dict[str, np.ndarray]:
        out = {}
        for key, chunks in self.arrays.items():
            tail = (self.t, self.t) if key == "labels" else (self.t, self.t, 3)
            out[key] = (
                np.concatenate(chunks, axis=0) if chunks else np.zeros((0, *tail), np.uint8)
            )
        return out


ARRAY_KEYS = {"ss": ("images", "labels"), "cd": ("pre", "post", "labels"), "pretrain": ("images",)}


def start_store(out_dir: Path) -> Path:
    """Remove a previous completion marker before rewriting a store."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / "manifest.json"
    if marker.exists():
        marker.unlink()
    return out_dir


def finish_store(
    name: str,
    out_dir: Path,
    tile_size: int,
    splits: dict[str, Split],
    rules: list[str],
    sources: Sources,
    **extra,
) -> dict:
    """Write every split's arrays and tiles.csv, then manifest.json last."""
    task = TASK_OF[name]
    summary = {}
    empty = [split for split, acc in splits.items() if not acc.rows]
    if empty:
        raise DataFormatError(
            f"{name}: split{'s' if len(empty) > 1 else ''} {', '.join(map(repr, empty))} would hold no "
            f"samples (raw data in {sources.root}). Check that the raw files are all there, that the split lists match "
            "the raw folders' names, and that the preparation filters (preparation.* in the preset) "
            f"do not drop the whole split; nothing was written.{_why_empty(extra)}")
    for split, acc in splits.items():
        ids = [r[0] for r in acc.rows]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataFormatError(
                f"{name}: duplicate sample ids in split {split!r} ({', '.join(dup)}); two raw "
                "files map to the same sample — remove the duplicate raw files."
            )
        arrays = acc.stacked()
        for key, arr in arrays.items():
            write_npy(out_dir / split / f"{key}.npy", arr)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["tile_id", "source", "row", "col"])
        writer.writerows(acc.rows)
        write_text(out_dir / split / "tiles.csv", buf.getvalue())
        labels = arrays.get("labels")
        summary[split] = {
            "count": len(ids),
            "positive_fraction": (
                round(float(labels.mean()), 6) if labels is not None and labels.size else None
            ),
        }
    manifest = {
        "name": name,
        "task": task,
        "tile_size": int(tile_size),
        "raw_dir": RAW_DIR_OF[name],
        "splits": summary,
        "rules": rules,
        **extra,
        "sources": sources.sorted(),
        "noise2map_version": __version__,
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


# manifest bookkeeping that is not a count of samples set aside
_NOT_SET_ASIDE = ("aois", "label_modes", "label_raster", "count_checks", "count_mismatches", "release_check")


def _why_empty(extra: dict) -> str:
    """What the preparer set aside, for the empty-split message."""
    notes = [f"{key}: {len(value)}" for key, value in extra.items()
             if isinstance(value, (list, dict)) and value and key not in _NOT_SET_ASIDE]
    return f" Set aside: {'; '.join(notes)}." if notes else ""


# --------------------------------------------------------------------------------------------
# tiling and the resampling rules of the released code


def grid_tiles(arr: np.ndarray, t: int) -> tuple[np.ndarray, int, int]:
    """Non-overlapping t×t tiles of [H, W, ...] in row-major order (floor number per axis)."""
    nh, nw = arr.shape[0] // t, arr.shape[1] // t
    rest = arr.shape[2:]
    a = arr[: nh * t, : nw * t].reshape(nh, t, nw, t, *rest).swapaxes(1, 2)
    return np.ascontiguousarray(a.reshape(nh * nw, t, t, *rest)), nh, nw


def _linear_taps(n_in: int, n_out: int):
    """OpenCV INTER_LINEAR sample positions: half-pixel centres, clamped at the border."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, None)
    i0 = np.floor(src).astype(np.int64)
    frac = (src - i0).astype(np.float32)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac


def random_crop_offset(rng: np.random.Generator, h: int, w: int, t: int) -> tuple[int, int]:
    """Top-left corner of a t×t crop, uniform over every whole crop of an h×w image: the row
    drawn first, then the column, from the preparer's seeded generator."""
    return int(rng.integers(0, h - t + 1)), int(rng.integers(0, w - t + 1))


def resize_bilinear_cv2(arr: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W(, C)] → [size, size(, C)] the way ``cv2.resize(..., INTER_LINEAR)`` does:
    bilinear with half-pixel centres, no antialiasing, rounded half up to uint8."""
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr.copy()
    y0, y1, fy = _linear_taps(h, size)
    x0, x1, fx = _linear_taps(w, size)
    a = arr.astype(np.float32)
    if a.ndim == 3:
        fx = fx[:, None]
    fy = fy[:, None] if a.ndim == 2 else fy[:, None, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def resize_nearest_gdal(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[H, W, ...] → [shape, ...] as rasterio's ``read(out_shape=…, resampling=nearest)``:
    output row i takes input row ⌊(i + ½) · H / out_h⌋ (GDAL's nearest), columns alike."""
    h, w = arr.shape[:2]
    if (h, w) == tuple(shape):
        return arr
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return np.ascontiguousarray(arr[rows][:, cols])



def resize_pil(arr: np.ndarray, size: int, resample) -> np.ndarray:
    if arr.shape[:2] == (size, size):
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), resample))


# --------------------------------------------------------------------------------------------
# readers: every file checked before its pixels are used


def read_tif(path: Path) -> np.ndarray:
    """[H, W, C] uint8 from a (Geo)TIFF."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read()
    except rasterio.errors.RasterioIOError as exc:
        raise DataFormatError(f"{path}: cannot be read as a TIFF ({exc}); re-extract the file.") from exc
    if data.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: pixel type {data.dtype}, expected uint8; re-extract the original file."
        )
    return np.moveaxis(data, 0, -1)


def read_pil(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as exc:  # PIL raises several types for broken files
        raise DataFormatError(f"{path}: cannot be read as an image ({exc}); re-extract the file.") from exc
    return img


def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB image (TIFF via rasterio, PNG/JPEG via PIL)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = read_tif(path)
        if arr.shape[-1] != 3:
            raise DataFormatError(
                f"{path}: {arr.shape[-1]} bands, expected 3 (RGB); is this the image folder?"
            )
        return arr
    img = read_pil(path)
    if img.mode != "RGB":
        raise DataFormatError(
            f"{path}: image mode {img.mode} ({len(img.getbands())} bands), expected RGB; "
            "convert it to 3-band RGB or re-extract the original file."
        )
    return np.asarray(img)


def read_label(path: Path) -> np.ndarray:
    """[H, W] uint8 in {0, 1} from a single-band 0/255 raster label."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = read_tif(path)
        if arr.shape[-1] != 1:
            raise DataFormatError(
                f"{path}: label has {arr.shape[-1]} bands, expected 1 (0 = background, 255 = "
                "building/change); is this the label folder?"
            )
        arr = arr[..., 0]
    else:
        img = read_pil(path)
        if img.mode == "1":
            img = img.convert("L")
        if img.mode != "L":
            raise DataFormatError(
                f"{path}: label mode {img.mode}, expected single-channel 8-bit (L) with values "
                "0/255; re-extract the original label."
            )
        arr = np.asarray(img)
    bad = (arr != 0) & (arr != 255)
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        raise DataFormatError(
            f"{path}: label values {values} other than 0/255; the label must be binary "
            "0 = background, 255 = positive."
        )
    return (arr == 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# checks


def check_same_size(paths_arrays, dataset: str) -> None:
    shapes = {str(p): a.shape[:2] for p, a in paths_arrays}
    if len(set(shapes.values())) > 1:
        raise DataFormatError(
            f"{dataset}: sizes differ between files that form one sample: "
            + ", ".join(f"{p} {s[1]}x{s[0]}" for p, s in shapes.items())
        )


def check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"preparation.{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def check_tile_size(tile_size) -> int:
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ConfigError(f"tile_size must be a positive integer, got {tile_size!r}")
    return int(tile_size)
