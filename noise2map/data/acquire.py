"""Where each raw data set comes from, and a check that it is in place.

Automatic, resumable, checksummed downloads are the data-acquisition issue's work; until
then every source is treated as user-supplied: ``check_raw`` finds the raw layout or stops
with what to fetch, from where, and where to put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from noise2map.errors import DataNotFoundError, UnknownNameError


@dataclass(frozen=True)
class RawSource:
    """A raw data set: where to get it and the file that proves its layout is in place."""

    name: str
    marker: str  # a glob under <raw>/<name>/ that matches only if the layout is right
    how: str


SOURCES = {
    "spacenet7": RawSource(
        "spacenet7", "train/*/images_masked/global_monthly_*_mosaic_*.tif",
        "SpaceNet7 (public, no account): download SN7_buildings_train.tar.gz "
        "(md5 6eda13b9c28f6f5cdf00a7e8e218c1b1) from s3://spacenet-dataset/spacenet/SN7_buildings/tarballs/ "
        "(`aws s3 cp --no-sign-request ...`) and extract it so that {root}/train/<aoi>/images_masked/ exists."),
    "whu": RawSource(
        "whu", "3. The cropped image tiles and raster labels/train/image/*",
        "WHU aerial building dataset: download '3. The cropped aerial image tiles and raster labels.zip' from "
        "https://study.rsgis.whu.edu.cn/pages/download/building_dataset.html and unzip it into {root}/ "
        "(giving {root}/3. The cropped image tiles and raster labels/{{train,val,test}}/{{image,label}}/)."),
    "whu-cd": RawSource(
        "whu-cd", "A/*",
        "WHU building change detection, 256x256 crops (the common BIT split): put A/, B/, label/ and "
        "list/{{train,val,test}}.txt into {root}/ (e.g. the WHU-CD-256 archive linked from the TinyCD README)."),
    "xview2": RawSource(
        "xview2", "train/images/santa-rosa-wildfire_*_pre_disaster.png",
        "xView2/xBD (registration required, CC BY-NC-SA 4.0): download train_images_labels_targets.tar.gz "
        "and test_images_labels_targets.tar.gz from https://xview2.org/ and extract both into {root}/ "
        "(giving {root}/train/images/ and {root}/test/images/)."),
    "aid": RawSource(
        "aid", "AID/*/*.jpg",
        "AID (hosted on cloud drives by its authors): download AID.zip via https://captain-whu.github.io/AID/ "
        "and unzip it into {root}/ (giving {root}/AID/<Class>/<class>_<n>.jpg)."),
}


def check_raw(name: str, raw_root: Path) -> Path:
    """Return ``raw_root/name`` if its layout is in place; otherwise say how to get it."""
    if name not in SOURCES:
        raise UnknownNameError("raw data set", name, SOURCES)
    source, root = SOURCES[name], Path(raw_root) / name
    if root.is_dir() and next(root.glob(source.marker), None) is not None:
        return root
    raise DataNotFoundError(f"raw data set {name!r} not found: no {root / source.marker}.\n"
                            + source.how.format(root=root))
