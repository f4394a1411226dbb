"""Raw data sets: where each comes from, and getting it into place (download, verify, extract).

:data:`SOURCES` records, per raw data set, the archive file(s), the URL(s) where a script may
fetch them, the checksum, and what to extract where (facts and their tags: the notes
``shared/notes/datasets.md``). :func:`acquire` puts one raw data set in place:

1. the raw layout is already in ``<raw_root>/<name>`` → done (a manifest is written if none);
2. else every archive is taken from ``<downloads_dir>/<file>`` (put there by hand, or left by
   an earlier download) or downloaded there — resumable, retried, verified
   (:mod:`noise2map.download`); a source that no script may download (registration, cloud
   drives) and whose archive is absent stops with a :class:`DataNotFoundError` naming the
   file, where to get it and the path to put it at;
3. the archives are extracted into a hidden staging folder beside the target and the checked
   tree is renamed into place in one step (:mod:`noise2map.data.extract`): a killed
   extraction never leaves a half tree that looks complete;
4. ``<raw_root>/<name>.acquired.json`` records each archive's size, SHA-256 (and MD5), the
   checksum it was checked against, its source URL, the file counts found and the time.

Checksums: the source's MD5 where one is published (SpaceNet7, xView2, ImageNet); otherwise
trust on first use — the SHA-256 of the first archive that extracts to a correct layout is
recorded in ``<downloads_dir>/archives.lock.json`` and every later copy must match it (WHU,
WHU-CD, AID, MAJOR-TOM). AID has no checksum anywhere, so its extracted tree must also
match the published per-class counts (30 classes, 10,000 images).

A mirror (``base_url``, the config's ``data_mirror``) serves every archive as
``<base_url>/<file name>``; with a mirror, manual sources are fetched from it too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .. import __version__
from ..download import CHUNK, DownloadError, download
from ..errors import ChecksumError, DataFormatError, DataNotFoundError, UnknownNameError
from ..io import read_json, write_json
from . import extract as ex
from .preparers.common import (
    WHU_CD_FOLDERS, WHU_CD_LISTS, WHU_DIRNAME, WHU_FOLDERS, WHU_MEMBER_MARKER, WHU_SPLITS, whu_cd_layout_problems,
    whu_count_globs, whu_layout_problems,
)
# HAFNER_COMMIT: importable from here too (the sources' pins)
from .preparers.spacenet7 import HAFNER_COMMIT, METADATA_FILE, METADATA_PAGE, METADATA_SHA256, METADATA_URL  # noqa: F401

log = logging.getLogger(__name__)

LOCK = "archives.lock.json"
MANIFEST = "{name}.acquired.json"
SYNTHETIC_MARKER = "SYNTHETIC.json"
DEFAULT_DOWNLOADS = "data/downloads"

# Sample counts the paper reports (§IV-A, §IV-B) per prepared data set.
PAPER_COUNTS = {
    "spacenet7-ss": 19504, "spacenet7-cd": 9752,
    "whu-ss": 8188, "whu-cd": 959,
    "xview2-ss": 291, "xview2-cd": 150,
    "aid": 10000,
}

# AID per-class image counts (sum 10,000): plstcharles/ssl4rs AID repackager [code], in the notes.
AID_CLASS_COUNTS = {
    "Airport": 360, "BareLand": 310, "BaseballField": 220, "Beach": 400, "Bridge": 360, "Center": 260,
    "Church": 240, "Commercial": 350, "DenseResidential": 410, "Desert": 300, "Farmland": 370,
    "Forest": 250, "Industrial": 390, "Meadow": 280, "MediumResidential": 290, "Mountain": 340,
    "Park": 350, "Parking": 390, "Playground": 370, "Pond": 420, "Port": 380, "RailwayStation": 260,
    "Resort": 290, "River": 410, "School": 300, "SparseResidential": 300, "Square": 330, "Stadium": 290,
    "StorageTanks": 360, "Viaduct": 420,
}


@dataclass(frozen=True)
class Archive:
    """One file to fetch.

    Attributes:
        file: its name in the downloads folder (the name the source gives it).
        urls: direct URLs a script may fetch it from, tried in order; empty = manual only.
        page: where a person gets it (registration page, cloud-drive link).
        md5 / sha256: published checksum; both None = trust on first use (lock file).
        checksum_source: where the published checksum comes from.
        member_marker: a glob that matches inside the archive's data folder; the shallowest
            folder of the extracted archive where it matches is what is kept (wrapper
            folders of different packagings are dropped).
        into: where that folder goes under ``<raw_root>/<name>`` ("" = the root itself); for a
            ``plain`` file, its path there.
        size: approximate size, for messages only.
        plain: a file used as it is (not an archive), copied to ``into``; it is also fetched
            into a tree that was put in place by hand.
    """

    file: str
    urls: tuple[str, ...] = ()
    page: str | None = None
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str | None = None
    member_marker: str = "*"
    into: str = ""
    size: str | None = None
    plain: bool = False

    @property
    def pinned(self) -> bool:
        return bool(self.md5 or self.sha256)

    def fetch_urls(self, base_url: str | None = None) -> tuple[str, ...]:
        if base_url:
            return (f"{base_url.rstrip('/')}/{urllib.parse.quote(self.file)}",)
        return self.urls

    def describe(self) -> str:
        bits = [b for b in (self.size, f"md5 {self.md5}" if self.md5 else None,
                            f"sha256 {self.sha256}" if self.sha256 else None) if b]
        return f"{self.file}" + (f" ({', '.join(bits)})" if bits else "")


@dataclass(frozen=True)
class RawSource:
    """A raw data set: its archives and the layout that proves it is in place.

    ``required``: globs under ``<raw_root>/<name>`` that must all match (``a|b``: either).
    ``check``: where set, the layout's own check, ``root → [problem, ...]`` (empty: in place),
    used instead of ``required`` (which then only describes the layout): the one definition
    the data set's preparer reads too (WHU, WHU-CD).
    ``counts``: ``(label, glob)`` pairs counted into the manifest (a glob ending in ``/``
    counts folders); ``expected``: label → the number the source publishes; with ``strict``
    a different number is an error, otherwise a warning recorded in the manifest.
    """

    name: str
    title: str
    archives: tuple[Archive, ...]
    required: tuple[str, ...]
    manual: str | None = None  # why no script may download it (None = scriptable)
    licence: str | None = None
    counts: tuple[tuple[str, str], ...] = ()
    expected: dict = field(default_factory=dict)
    strict: bool = False
    in_workflow: bool = True  # a raw_dir of a prepared data set of the paper's DAG
    note: str = ""
    check: Callable[[Path], list[str]] | None = None

    @property
    def marker(self) -> str:  # the first required glob (first alternative)
        return self.required[0].split("|")[0]


def _aid_counts():
    counts = [("scene classes", "AID/*/|*/"), ("images", "AID/*/*.jpg|*/*.jpg")]
    counts += [(f"class {c}", f"AID/{c}/*.jpg|{c}/*.jpg") for c in AID_CLASS_COUNTS]
    expected = {"scene classes": len(AID_CLASS_COUNTS), "images": sum(AID_CLASS_COUNTS.values()),
                **{f"class {c}": n for c, n in AID_CLASS_COUNTS.items()}}
    return tuple(counts), expected


_AID_COUNTS, _AID_EXPECTED = _aid_counts()

SOURCES: dict[str, RawSource] = {s.name: s for s in [
    RawSource(
        "spacenet7", "SpaceNet7 (Multi-Temporal Urban Development), train tarball",
        (Archive("SN7_buildings_train.tar.gz",
                 urls=("https://spacenet-dataset.s3.amazonaws.com/spacenet/SN7_buildings/tarballs/"
                       "SN7_buildings_train.tar.gz",),
                 page="s3://spacenet-dataset/spacenet/SN7_buildings/tarballs/ (public, no account; "
                      "`aws s3 cp --no-sign-request`)",
                 md5="6eda13b9c28f6f5cdf00a7e8e218c1b1", checksum_source="torchgeo datasets/spacenet (notes)",
                 member_marker="*/images_masked/global_monthly_*_mosaic_*.tif", into="train"),
         # The release's month list: Hafner et al.'s file, at the commit that holds it (no licence
         # file in that repository: fetched, never shipped).
         Archive(METADATA_FILE, urls=(METADATA_URL,), page=METADATA_PAGE, sha256=METADATA_SHA256,
                 checksum_source="the file at that commit (291,049 bytes)", into="metadata_train.json",
                 size="291 kB", plain=True)),
        required=("train/*/images_masked/global_monthly_*_mosaic_*.tif",
                  "train/*/labels_match_pix/*_Buildings.geojson"),
        licence="CC BY-SA 4.0, public on the SpaceNet AWS open-data bucket; metadata_train.json: Hafner et al.'s "
                "repository, no licence file (fetched for your use, not redistributed)",
        counts=(("AOI folders", "train/*/"), ("monthly mosaics (images_masked)", "train/*/images_masked/*.tif"),
                ("label files (labels_match_pix)", "train/*/labels_match_pix/*.geojson")),
        expected={"AOI folders": 60, "monthly mosaics (images_masked)": 1423},
        note="The Hafner split uses 59 of the 60 train AOIs (L15-0571E-1075N_2287_3888_13 is in no list); "
             "the test tarball is not needed. metadata_train.json (Hafner et al.) lists the usable months: "
             "1,219 of the split's, 19,504 SS tiles."),
    RawSource(
        "whu", "WHU Building Dataset, aerial imagery (cropped 512² tiles)",
        (Archive("3. The cropped aerial image tiles and raster labels.zip",
                 urls=tuple(f"{host}/3.%20The%20cropped%20aerial%20image%20tiles%20and%20raster%20labels.zip"
                            for host in ("https://study.rsgis.whu.edu.cn/pages/download",
                                         "https://gpcv.whu.edu.cn/data", "http://gpcv.whu.edu.cn/data")),
                 page="https://study.rsgis.whu.edu.cn/pages/download/building_dataset.html",
                 member_marker=WHU_MEMBER_MARKER, into=WHU_DIRNAME, size="≈4.5 GB [3rd]"),),
        # the layout is preparers.common.whu_tree (what prepare_whu_ss reads); these globs describe it
        required=tuple(f"{WHU_DIRNAME}/{s}/{role}/*" for s in WHU_SPLITS for role in WHU_FOLDERS),
        check=whu_layout_problems,
        licence="academic use, from the GPCV group's page",
        counts=whu_count_globs(),
        expected={"train tiles": 4736, "val tiles": 1036, "test tiles": 2416},
        note="Direct URL seen in three public repos; reachability without a browser unverified. "
             "No checksum published: SHA-256 trusted on first use."),
    RawSource(
        "whu-cd", "WHU building change detection, 256² crops in the BIT form (A/, B/, label/, list/)",
        (Archive("WHU-CD-256.zip", urls=("https://www.dropbox.com/s/r76a00jcxp5d3hl/WHU-CD-256.zip?dl=1",),
                 page="DDPM-CD's README, §5.1 (wgcban/ddpm-cd; TinyCD and others reuse the link); official "
                      "whole-scene data: https://study.rsgis.whu.edu.cn/pages/download/building_dataset.html",
                 member_marker=f"{WHU_CD_FOLDERS[0]}/*", into=""),),
        required=(*(f"{k}/*" for k in WHU_CD_FOLDERS), *(f"list/{s}.txt" for s, req in WHU_CD_LISTS.items() if req)),
        check=whu_cd_layout_problems,  # preparers.common: what prepare_whu_cd reads
        licence="third-party re-packaging of the WHU change detection data",
        counts=(("pairs (A)", "A/*"), ("labels", "label/*")),
        expected={"pairs (A)": 7620},
        note="Dropbox link from DDPM-CD's README §5.1 [3rd]; its inner layout is unverified (a wrapper folder is "
             "stripped). The paper's 959 pairs come from an unknown 256² source [unverified]."),
    RawSource(
        "xview2", "xView2 / xBD challenge archives (santa-rosa-wildfire is used)",
        (Archive("train_images_labels_targets.tar.gz", page="https://xview2.org/dataset",
                 md5="a20ebbfb7eb3452785b63ad02ffd1e16", checksum_source="torchgeo datasets/xview (notes)",
                 member_marker="images/*_pre_disaster.png", into="train", size="≈7.8 GB"),
         Archive("test_images_labels_targets.tar.gz", page="https://xview2.org/dataset",
                 md5="1b39c47e05d1319c17cc8763cee6fe0c", checksum_source="torchgeo datasets/xview (notes)",
                 member_marker="images/*_pre_disaster.png", into="test", size="≈2.6 GB")),
        required=("train/images/santa-rosa-wildfire_*_pre_disaster.png", "train/labels/*.json",
                  "test/images/santa-rosa-wildfire_*_pre_disaster.png", "test/labels/*.json"),
        manual="registration at xview2.org required (CC BY-NC-SA 4.0)",
        licence="CC BY-NC-SA 4.0",
        counts=(("train santa-rosa pairs", "train/images/santa-rosa-wildfire_*_pre_disaster.png"),
                ("test santa-rosa pairs", "test/images/santa-rosa-wildfire_*_pre_disaster.png"),
                ("train pairs (all disasters)", "train/images/*_pre_disaster.png"))),
    RawSource(
        "aid", "AID (Aerial Image Dataset), 30 scene classes",
        (Archive("AID.zip",
                 page="https://captain-whu.github.io/AID/ (Baidu Pan https://pan.baidu.com/s/1mifOBv6; a OneDrive "
                      "link https://1drv.ms/u/s!AthY3vMZmuxChNR0Co7QHpJ56M-SvQ is also used [3rd])",
                 member_marker="*/*.jpg", into="AID"),),
        required=("AID/*/*.jpg|*/*.jpg",),
        manual="hosted on cloud drives by its authors (a browser is needed)",
        licence="research use, per the authors' page",
        counts=_AID_COUNTS, expected=_AID_EXPECTED, strict=True,
        note="No checksum published anywhere: SHA-256 trusted on first use, and the tree must match the "
             "published per-class counts (30 classes, 10,000 images)."),
    RawSource(
        "majortom", "MAJOR-TOM Core-S2L2A (Sentinel-2 L2A), one parquet shard — Table III ablation",
        (Archive("part_00001.parquet",
                 urls=("https://huggingface.co/datasets/Major-TOM/Core-S2L2A/resolve/"
                       "58b62714cd2782bdf32aab82a03c476ba0e9b604/images/part_00001.parquet",),
                 page="https://huggingface.co/datasets/Major-TOM/Core-S2L2A (images/part_*.parquet)",
                 member_marker="*.parquet", into="images", size="≈4.45 GB"),),
        required=("images/*.parquet",),
        licence="CC BY-SA 4.0 (dataset card)",
        counts=(("parquet shards", "images/*.parquet"),),
        in_workflow=False,
        note="Table III only (pretrain.dataset: majortom; preparer `majortom`). Whether one shard holds "
             "enough grid cells for 10k 256² RGB patches (bands B4, B3, B2) is unverified."),
    RawSource(
        "imagenet", "ImageNet-1k (ILSVRC2012) validation images — Table III ablation",
        (Archive("ILSVRC2012_img_val.tar", page="https://image-net.org/download-images.php (account required)",
                 md5="29b22e2961454d5413ddabcf34fc5622", checksum_source="torchvision datasets/imagenet.py",
                 member_marker="ILSVRC2012_val_*.JPEG", into="val", size="≈6.3 GB"),),
        required=("val/*.JPEG|train/*/*.JPEG",),
        manual="registration at image-net.org required (non-commercial research terms)",
        licence="ImageNet terms of access",
        counts=(("val images", "val/*.JPEG"), ("train images", "train/*/*.JPEG")),
        expected={"val images": 50000},
        in_workflow=False,
        note="Not used by the paper preset's workflow. The paper samples 10k ImageNet images without saying "
             "from which split; the 50k validation images are this suite's choice (an ImageFolder copy of "
             "train at imagenet/train/<wnid>/*.JPEG is accepted too)."),
]}


# --------------------------------------------------------------------------------------------
# layout checks


def get_source(name: str) -> RawSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownNameError("raw data set", name, SOURCES) from None


def _first_match(root: Path, pattern: str) -> Path | None:
    for alt in pattern.split("|"):
        hit = next(root.glob(alt), None)
        if hit is not None:
            return hit
    return None


def _stray(path: Path, root: Path) -> bool:
    """A macOS leftover of a zip made on a Mac: ``__MACOSX/``, ``.DS_Store``, ``._*`` files."""
    return any(part == "__MACOSX" or part.startswith(".") for part in path.relative_to(root).parts)


def _count(root: Path, pattern: str) -> int:
    for alt in pattern.split("|"):
        if alt.endswith("/"):
            n = sum(1 for p in root.glob(alt.rstrip("/")) if p.is_dir() and not _stray(p, root))
        else:
            n = sum(1 for p in root.glob(alt) if p.is_file() and not _stray(p, root))
        if n:
            return n
    return 0


def layout_problems(source: RawSource, root: Path) -> list[str]:
    """The required globs that do not match under ``root`` (empty list: layout in place)."""
    root = Path(root)
    if not root.is_dir():
        return [f"{root} does not exist"]
    if source.check is not None:
        return source.check(root)
    return [f"no {root / p.split('|')[0]}" for p in source.required if _first_match(root, p) is None]


def layout_counts(source: RawSource, root: Path) -> dict:
    return {label: _count(Path(root), pattern) for label, pattern in source.counts}


def count_mismatches(source: RawSource, counts: dict) -> list[str]:
    return [f"{label}: {counts.get(label, 0)}, expected {n}" for label, n in source.expected.items()
            if counts.get(label, 0) != n]


def is_synthetic(root: Path) -> bool:
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def check_raw(name: str, raw_root: Path) -> Path:
    """Return ``raw_root/name`` if its layout is in place; otherwise say how to get it (no I/O)."""
    source, root = get_source(name), Path(raw_root) / name
    problems = layout_problems(source, root)
    if not problems:
        return root
    raise DataNotFoundError(f"raw data set {name!r} not found: {problems[0]}.\n"
                            + how_to_get(source, root, Path(DEFAULT_DOWNLOADS), source.archives))


def how_to_get(source: RawSource, root: Path, downloads: Path, archives, raw_root: Path | None = None) -> str:
    """Exact instructions: which file, from where, to which path; then the command."""
    raw_root = raw_root or root.parent
    lines = []
    why = source.manual or "the download failed or is not possible here"
    lines.append(f"{source.title}: {why}. Get these files and put them at the paths shown:")
    for a in archives:
        where = a.page or (a.urls[0] if a.urls else "?")
        direct = f" (direct URL: {a.urls[0]})" if a.urls and a.page else ""
        lines.append(f"  {a.describe()}\n    from {where}{direct}\n    put it at {downloads / a.file}")
    lines.append(f"then run `noise2map acquire {source.name} --raw {raw_root} --downloads {downloads}` (or the "
                 f"workflow): it verifies the archive(s), extracts them into {root} and records "
                 f"{raw_root / MANIFEST.format(name=source.name)}. A mirror that serves the files by name "
                 "works too (--mirror URL, config key data_mirror).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# checksums


def read_lock(downloads: Path) -> dict:
    path = Path(downloads) / LOCK
    return read_json(path, "delete it and run acquire again (the archives are re-verified)") if path.is_file() else {}


def _digests(path: Path, md5: bool) -> tuple[str, str | None]:
    s, m = hashlib.sha256(), hashlib.md5() if md5 else None
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            s.update(block)
            if m is not None:
                m.update(block)
    return s.hexdigest(), (m.hexdigest() if m is not None else None)


def _expected_sha256(a: Archive, lock: dict) -> str | None:
    return a.sha256 or (None if a.pinned else lock.get(a.file, {}).get("sha256"))


def _check_local(a: Archive, path: Path, lock: dict) -> tuple[str, str | None]:
    """Verify an archive that was already in the downloads folder; a bad one is moved aside
    (``<file>.corrupt``: it may have cost hours to get by hand, so it is not deleted)."""
    sha, md5 = _digests(path, md5=bool(a.md5))
    want_sha = _expected_sha256(a, lock)
    problems = []
    if want_sha and sha != want_sha:
        what = "its published" if a.sha256 else f"the one recorded at first use in {Path(path).parent / LOCK}"
        problems.append(f"SHA-256 {sha}, expected {want_sha} ({what})")
    if a.md5 and md5 != a.md5:
        problems.append(f"MD5 {md5}, expected {a.md5} (published; {a.checksum_source})")
    if problems:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        raise ChecksumError(f"{path} does not match its checksum ({'; '.join(problems)}); it was moved to {bad}. "
                            f"Get {a.file} again and put it at {path}.")
    return sha, md5


def _fetch(a: Archive, path: Path, lock: dict, base_url: str | None, quiet: bool) -> tuple[str, str | None, str]:
    """Download ``a`` to ``path`` (resuming a ``.part``) from the first URL that works."""
    errors = []
    for url in a.fetch_urls(base_url):
        log.info("downloading %s from %s", a.file, url)
        try:
            sha = download(url, path, sha256=_expected_sha256(a, lock), md5=a.md5, quiet=quiet)
        except DownloadError as err:
            errors.append(str(err))
            continue
        except ChecksumError as err:
            raise ChecksumError(f"{a.file} downloaded from {url} is corrupt: {err}") from err
        return sha, a.md5, url  # verify() checked the MD5 (when one is published)
    raise DownloadError(f"could not download {a.file}:\n  " + "\n  ".join(errors))


# --------------------------------------------------------------------------------------------
# acquire


def manifest_path(raw_root: Path, name: str) -> Path:
    return Path(raw_root) / MANIFEST.format(name=name)


def read_manifest(raw_root: Path, name: str) -> dict | None:
    path = manifest_path(raw_root, name)
    return read_json(path, f"delete it and run `noise2map acquire {name}` again") if path.is_file() else None


def _tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def acquire(name: str, raw_root, downloads_dir=DEFAULT_DOWNLOADS, base_url: str | None = None,
            quiet: bool = False) -> dict:
    """Put raw data set ``name`` in place under ``raw_root/name``; return its manifest.

    Raises DataNotFoundError (a manual archive is missing: names file, URL and path),
    DownloadError (every URL failed; rerunning resumes), ChecksumError (a bad archive: a
    downloaded one is deleted, a hand-supplied one moved to ``<file>.corrupt``) or
    DataFormatError (the archive is unreadable or does not hold the layout). On any error no
    tree is left at ``raw_root/name`` and no manifest is written.
    """
    source = get_source(name)
    raw_root, downloads = Path(raw_root), Path(downloads_dir)
    root = raw_root / name
    mpath = manifest_path(raw_root, name)
    if not layout_problems(source, root):
        added = [] if is_synthetic(root) else _add_plain_files(source, root, raw_root, downloads, base_url, quiet)
        old = read_manifest(raw_root, name)
        if old is not None:
            if added:
                old = {**old, "archives": old.get("archives", []) + added}
                write_json(mpath, old)
            return old
        files, size = _tree_size(root)
        manifest = {"name": name, "raw_dir": str(root),
                    "source": "synthetic" if is_synthetic(root) else "found in place (not extracted by noise2map)",
                    "verified": False, "archives": added, "counts": layout_counts(source, root),
                    "files": files, "bytes": size, "acquired": _now(), "noise2map_version": __version__}
        write_json(mpath, manifest)
        return manifest
    if root.exists() and any(root.iterdir()):
        raise DataFormatError(
            f"{root} exists but is not a complete {name} tree ({'; '.join(layout_problems(source, root))}). "
            "noise2map only ever renames finished trees into place, so this one was put there by hand: "
            f"complete it, or move it away and rerun to extract the archive(s).")
    mpath.unlink(missing_ok=True)

    lock = read_lock(downloads)
    missing = [a for a in source.archives if not (downloads / a.file).is_file() and not a.fetch_urls(base_url)]
    if missing:
        raise DataNotFoundError(f"raw data set {name!r} is not in place ({layout_problems(source, root)[0]}) and "
                                f"{len(missing)} archive(s) are missing.\n"
                                + how_to_get(source, root, downloads, missing, raw_root))
    if source.licence:
        log.info("%s: terms of use: %s", name, source.licence)  # said before anything is fetched
    got = []  # (archive, path, sha256, md5, origin, fetched-now)
    for a in source.archives:
        path = downloads / a.file
        if path.is_file():
            sha, md5 = _check_local(a, path, lock)
            got.append((a, path, sha, md5, "user-supplied or earlier download", False))
            continue
        try:
            sha, md5, url = _fetch(a, path, lock, base_url, quiet)
        except DownloadError as err:
            raise DownloadError(f"{err}\nRerun to resume, or fetch it yourself:\n"
                                + how_to_get(source, root, downloads, [a], raw_root)) from err
        got.append((a, path, sha, md5, url, True))

    stage = ex.staging_dir(raw_root, name)
    tree = stage / "tree"
    try:
        tree.mkdir()
        for i, (a, path, _sha, _md5, _origin, fresh) in enumerate(got):
            if a.plain:
                (tree / a.into).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, tree / a.into)
                continue
            unpacked = stage / f"archive{i}"
            t0 = time.monotonic()
            members = ex.extract(path, unpacked)
            found = ex.content_root(unpacked, a.member_marker)
            if found is None:
                raise DataFormatError(
                    f"{path} ({members} members) does not hold the {name} layout: no {a.member_marker} in it "
                    f"(within 3 folders). Is it the right archive ({a.describe()})?")
            ex.move_into(found, tree / a.into if a.into else tree)
            log.info("%s: extracted %d members in %.1f s", a.file, members, time.monotonic() - t0)
        problems = layout_problems(source, tree)
        if problems:
            raise DataFormatError(f"the extracted {name} archive(s) lack part of the layout: {'; '.join(problems)}"
                                  .replace(str(tree), str(root)))
        counts = layout_counts(source, tree)
        mismatches = count_mismatches(source, counts)
        if mismatches and source.strict:
            raise DataFormatError(
                f"the extracted {name} tree does not match the published counts ({'; '.join(mismatches)}); "
                f"{', '.join(str(g[1]) for g in got)} is not the complete {source.title} release. Nothing was "
                "recorded or kept in place.")
        for m in mismatches:
            log.warning("%s: %s (recorded in the manifest)", name, m)
        files, size = _tree_size(tree)
        ex.publish(tree, root)
    except DataFormatError:
        # A fresh download that no published checksum vouches for and that is no usable archive
        # (an HTML page, the wrong file) is deleted: the next run fetches it again.
        for a, path, _sha, _md5, _origin, fresh in got:
            if fresh and not a.pinned:
                path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    archives = []
    for a, path, sha, md5, origin, _fresh in got:
        if a.pinned:
            checksum = f"{'MD5' if a.md5 else 'SHA-256'} published ({a.checksum_source})"
        elif a.file in lock:
            checksum = f"SHA-256 recorded at first use ({lock[a.file]['recorded']}) in {downloads / LOCK}"
        else:
            checksum = f"SHA-256 trusted on first use, now recorded in {downloads / LOCK}"
            lock[a.file] = {"sha256": sha, "bytes": path.stat().st_size, "source": origin, "recorded": _now()}
        archives.append({"file": a.file, "path": str(path), "bytes": path.stat().st_size, "sha256": sha,
                         "md5": md5, "checksum": checksum, "source": origin, "into": a.into or "."})
    write_json(downloads / LOCK, lock)
    manifest = {"name": name, "raw_dir": str(root), "source": "archive", "verified": True, "archives": archives,
                "counts": counts, "count_mismatches": mismatches, "files": files, "bytes": size,
                "acquired": _now(), "noise2map_version": __version__}
    write_json(mpath, manifest)
    return manifest


def _add_plain_files(source: RawSource, root: Path, raw_root: Path, downloads: Path, base_url: str | None,
                     quiet: bool) -> list[dict]:
    """Fetch the plain files (``Archive.plain``) that a tree put in place by hand lacks; their
    records for the manifest. The file lands by one rename: a killed fetch leaves nothing."""
    added = []
    for a in (a for a in source.archives if a.plain and not (root / a.into).is_file()):
        path = downloads / a.file
        lock = read_lock(downloads)
        if path.is_file():
            sha, md5 = _check_local(a, path, lock)
            origin = "user-supplied or earlier download"
        elif a.fetch_urls(base_url):
            try:
                sha, md5, origin = _fetch(a, path, lock, base_url, quiet)
            except DownloadError as err:
                raise DownloadError(f"{err}\nRerun to resume, or fetch it yourself:\n"
                                    + how_to_get(source, root, downloads, [a], raw_root)) from err
        else:
            raise DataNotFoundError(how_to_get(source, root, downloads, [a], raw_root))
        tmp = root / f".{Path(a.into).name}.part"
        shutil.copyfile(path, tmp)
        os.replace(tmp, root / a.into)
        log.info("%s: %s put at %s", source.name, a.file, root / a.into)
        added.append({"file": a.file, "path": str(path), "bytes": path.stat().st_size, "sha256": sha, "md5": md5,
                      "checksum": f"SHA-256 published ({a.checksum_source})", "source": origin, "into": a.into})
    return added


# --------------------------------------------------------------------------------------------
# status


def status(config: dict) -> list[dict]:
    """Per raw data set: present / verified / prepared counts / what is left to do."""
    from ..config import store_name
    from .preparers.common import RAW_DIR_OF

    data_dir = Path(config["data_dir"])
    raw_root, prepared_root = data_dir / "raw", data_dir / "prepared"
    downloads = Path(config.get("downloads_dir") or DEFAULT_DOWNLOADS)
    mirror = config.get("data_mirror")
    synthetic = config.get("raw_source") == "synthetic"
    rows = []
    for name, source in SOURCES.items():
        root = raw_root / name
        problems = layout_problems(source, root)
        manifest = read_manifest(raw_root, name)
        present = not problems
        prepared = {}
        for pname in (p for p, r in RAW_DIR_OF.items() if r == name):
            mp = prepared_root / store_name(config, pname) / "manifest.json"
            if mp.is_file():
                m = read_json(mp, "delete the store's folder and prepare it again")
                splits = {s: v["count"] for s, v in m["splits"].items()}
                prepared[pname] = {"splits": splits, "total": sum(splits.values()), "paper": PAPER_COUNTS.get(pname),
                                   "count_mismatches": m.get("count_mismatches", []),
                                   "release_check": m.get("release_check")}
            else:
                prepared[pname] = None
        archives = {a.file: (downloads / a.file).is_file() for a in source.archives}
        todo = _todo(source, present, manifest, prepared, archives, raw_root, downloads, mirror, synthetic)
        rows.append({"name": name, "title": source.title, "in_workflow": source.in_workflow, "licence": source.licence,
                     "raw_dir": str(root), "present": present, "missing": problems,
                     "synthetic": present and is_synthetic(root), "manifest": manifest,
                     "counts": (manifest or {}).get("counts") or (layout_counts(source, root) if present else {}),
                     "verified": bool(manifest and manifest.get("verified")) and present,
                     "archives_present": archives, "prepared": prepared, "todo": todo})
    return rows


def _todo(source, present, manifest, prepared, archives, raw_root, downloads, mirror, synthetic) -> str:
    cmd = f"noise2map acquire {source.name} --raw {raw_root} --downloads {downloads}" + (
        f" --mirror {mirror}" if mirror else "")
    if synthetic and source.in_workflow:
        return "nothing to fetch: this preset generates synthetic data (raw_source: synthetic)"
    if not present:
        if all(archives.values()):
            return f"archives are in {downloads}: run `{cmd}` (verify + extract)"
        missing = [a for a in source.archives if not archives[a.file]]
        if mirror or all(a.urls for a in missing):
            where = mirror or ", ".join(a.urls[0] for a in missing)
            return f"run `{cmd}` (downloads {', '.join(a.describe() for a in missing)} from {where})"
        return ("get " + "; ".join(f"{a.file} from {a.page} and put it at {downloads / a.file}" for a in missing)
                + f"; then run `{cmd}`")
    left = []
    if not manifest or not manifest.get("verified"):
        left.append("not verified against an archive (extracted by hand); to verify, move the folder away, put "
                    f"the archive(s) in {downloads} and run `{cmd}`")
    if not source.in_workflow:
        left.append("not used by the paper preset's workflow (Table III ablation)")
    elif any(v is None for v in prepared.values()):
        names = [p for p, v in prepared.items() if v is None]
        left.append(f"prepare {', '.join(names)}: run the workflow (snakemake --cores all results/table1.csv) or "
                    "`noise2map prepare NAME --config CFG`")
    return "; ".join(left) or "nothing"


def _check_lines(row: dict) -> list[str]:
    """What the prepared stores found against the full data's counts, and the xView2 self-check."""
    mismatches, checks = [], []
    for p in (p for p in row["prepared"].values() if p):
        mismatches += [m for m in p.get("count_mismatches") or [] if m not in mismatches]
        if p.get("release_check") and not checks:
            match = p["release_check"]["pre_footprints_match_release"]
            checks.append(f"  release:  the pairs without a pre-label building {'are' if match else 'are not'} the "
                          "release's 9 missing masks" + ("" if match else " (the footprint reading is not confirmed "
                                                                           "on this data)"))
    note = " (synthetic data)" if row["synthetic"] else ""
    return ([f"  counts:   differ from the full data{note}: {'; '.join(mismatches)}"] if mismatches else []) + checks


def format_status(rows: list[dict], config: dict) -> str:
    data_dir = Path(config["data_dir"])
    out = [f"data status: preset {config.get('preset', '?')}, raw {data_dir / 'raw'}, downloads "
           f"{config.get('downloads_dir') or DEFAULT_DOWNLOADS}, prepared {data_dir / 'prepared'}"
           + (f", mirror {config['data_mirror']}" if config.get("data_mirror") else "")]
    for r in rows:
        out.append("")
        out.append(f"{r['name']}: {r['title']}" + ("" if r["in_workflow"] else " [not in the paper workflow]"))
        if r.get("licence"):
            out.append(f"  terms:    {r['licence']}")
        if r["present"]:
            counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if not k.startswith("class ")) or "-"
            out.append(f"  present:  yes{' (synthetic)' if r['synthetic'] else ''}, {r['raw_dir']} ({counts})")
        else:
            have = ", ".join(f"{f} {'in downloads' if ok else 'missing'}" for f, ok in r["archives_present"].items())
            out.append(f"  present:  no ({r['missing'][0]}); archives: {have}")
        if r["verified"]:
            sums = "; ".join(f"{a['file']} {a['bytes']} bytes sha256 {a['sha256'][:16]}… — {a['checksum']}"
                             for a in r["manifest"]["archives"])
            out.append(f"  verified: yes ({sums})")
        else:
            out.append("  verified: no")
        prep = []
        for pname, p in r["prepared"].items():
            if p is None:
                prep.append(f"{pname} not prepared")
            else:
                splits = " / ".join(f"{s} {n}" for s, n in p["splits"].items())
                prep.append(f"{pname} {splits} = {p['total']} (paper {p['paper']})")
        out.append(f"  prepared: {'; '.join(prep) if prep else '-'}")
        out += _check_lines(r)
        out.append(f"  to do:    {r['todo']}")
    return "\n".join(out)


__all__ = ["AID_CLASS_COUNTS", "Archive", "PAPER_COUNTS", "RawSource", "SOURCES", "acquire", "check_raw",
           "format_status", "get_source", "layout_counts", "layout_problems", "read_lock", "read_manifest",
           "status"]
