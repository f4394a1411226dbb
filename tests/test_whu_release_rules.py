"""WHU-SS and WHU-CD against the released loaders (alishibli97/noise2map @ 731e9f1,
noise2map/datasets/whu_sem.py, whu_cd.py, train.py): each release rule is written here as a
small function in the release's own terms (``sorted(os.listdir(...))``, PIL
``convert("L")``, torchvision ``Resize`` + ``ToTensor`` + ``.long()``) and compared with the
preparer under the paper preset's options; the corrected preset's options must give the
other behaviour. And acquisition's layout check and the preparers must accept and refuse the
same trees."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from noise2map.config import load_config, preparation_options
from noise2map.data import acquire as acq
from noise2map.data import prepare
from noise2map.data.preparers.common import WHU_DIRNAME, WHU_MEMBER_MARKER
from noise2map.errors import DataFormatError, DataNotFoundError

PAPER = load_config("workflow/config/paper.yaml")
CORRECTED = load_config("workflow/config/corrected.yaml")
WHU_ZIP = "3. The cropped aerial image tiles and raster labels.zip"


# ------------------------------------------------------------------------------------------
# the release's rules, in its own terms


def release_file_order(folder: Path) -> list[str]:
    """whu_sem.py L53 ``sorted(os.listdir(self.image_dir))``; whu_cd.py L75 ``sorted(os.listdir(self.pre_dir))``."""
    return sorted(os.listdir(folder))


def release_ss_target(mask_path: Path, size: int) -> np.ndarray:
    """whu_sem.py L61-62, L71 (``Resize((s, s))``, ``ToTensor()`` on ``Image.open(mask)``) and
    train.py L132 (``target.squeeze(1).long()``)."""
    tensor = T.Compose([T.Resize((size, size)), T.ToTensor()])(Image.open(mask_path))
    return tensor.squeeze(0).long().numpy()


def release_cd_label(label_path: Path) -> tuple[bool, np.ndarray]:
    """whu_cd.py L86-88 (kept iff ``torch.unique`` of ``ToTensor(convert("L"))`` has > 1 value),
    L64 + L100 (``ToTensor()`` of ``convert("L")``) and train.py L132 (``.long()``)."""
    label = T.ToTensor()(Image.open(label_path).convert("L"))
    return len(torch.unique(label)) > 1, label.squeeze(0).long().numpy()


# ------------------------------------------------------------------------------------------
# small raw trees


def _rgb(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _rect(size: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def whu_tree(root: Path, names: dict[str, list[str]], image="image", label="label", base: str | None = WHU_DIRNAME,
             size: int = 16) -> Path:
    """``root/whu/[<base>/]<split>/{image,label}/<name>``: random RGB images, 0/255 L masks."""
    top = root / "whu" / base if base else root / "whu"
    for split, files in names.items():
        for i, n in enumerate(files):
            _save(Image.fromarray(_rgb(i, size)), top / split / image / n)
            _save(Image.fromarray(_rect(size, 2, 2 + i % 7 + 3, 3, 12).astype(np.uint8) * 255), top / split / label / n)
    return root / "whu"


def _ids(store: Path, split: str) -> list[str]:
    return [line.split(",")[0] for line in (store / split / "tiles.csv").read_text().splitlines()[1:]]


# ------------------------------------------------------------------------------------------
# 1. order


def test_whu_ss_paper_order_is_the_release_sorted_listdir_and_corrected_is_natural(tmp_path):
    names = {"train": ["2.tif", "10.tif", "1.tif", "100.tif", "20.tif", "0.tif", "11.tif"],
             "val": ["9.tif", "10.tif", "8.tif"], "test": ["7.tif", "12.tif", "30.tif", "4.tif"]}
    raw = whu_tree(tmp_path, names)
    paper, corrected = preparation_options(PAPER, "whu-ss"), preparation_options(CORRECTED, "whu-ss")
    assert (paper["order"], corrected["order"]) == ("sorted", "natural")
    m_p = prepare("whu-ss", tmp_path, tmp_path / "p", 8, options=paper)
    m_c = prepare("whu-ss", tmp_path, tmp_path / "c", 8, options=corrected)
    for split in names:
        released = [Path(n).stem for n in release_file_order(raw / WHU_DIRNAME / split / "image")]
        assert _ids(tmp_path / "p", split) == released
    assert _ids(tmp_path / "p", "train") == ["0", "1", "10", "100", "11", "2", "20"]
    assert _ids(tmp_path / "p", "test") == ["12", "30", "4", "7"]
    assert _ids(tmp_path / "c", "train") == ["0", "1", "2", "10", "11", "20", "100"]
    assert _ids(tmp_path / "c", "test") == ["4", "7", "12", "30"]
    # the images and masks moved with their names: test tile "4" is the 4th file written (i = 3)
    c_img = np.load(tmp_path / "c" / "test" / "images.npy")[0]
    p_img = np.load(tmp_path / "p" / "test" / "images.npy")[2]
    assert np.array_equal(c_img, p_img) and np.array_equal(
        c_img, np.asarray(Image.fromarray(_rgb(3, 16)).resize((8, 8), Image.BILINEAR)))
    assert any("sorted(os.listdir" in r and "10.tif before 2.tif" in r for r in m_p["rules"])
    assert any("natural order" in r for r in m_c["rules"])


def _whu_cd_tree(root: Path, labels: dict[str, Image.Image], lists: dict[str, list[str]], size: int = 16) -> Path:
    raw = root / "whu-cd"
    for i, (n, lab) in enumerate(labels.items()):
        _save(Image.fromarray(_rgb(2 * i, size)), raw / "A" / n)
        _save(Image.fromarray(_rgb(2 * i + 1, size)), raw / "B" / n)
        _save(lab, raw / "label" / n)
    for split, names in lists.items():
        (raw / "list").mkdir(parents=True, exist_ok=True)
        (raw / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return raw


def test_whu_cd_paper_order_is_the_release_sorted_listdir_and_corrected_keeps_the_list(tmp_path):
    change = Image.fromarray(_rect(16, 4, 9, 4, 12).astype(np.uint8) * 255)
    lists = {"train": ["whucd_00031.png", "whucd_00004.png", "whucd_00120.png", "whucd_00007.png"],
             "val": ["whucd_00200.png", "whucd_00100.png"],
             "test": ["whucd_00012.png", "whucd_00003.png", "whucd_00009.png"]}
    raw = _whu_cd_tree(tmp_path, {n: change for names in lists.values() for n in names}, lists)
    paper, corrected = preparation_options(PAPER, "whu-cd"), preparation_options(CORRECTED, "whu-cd")
    assert (paper["order"], corrected["order"]) == ("sorted", "list")
    m_p = prepare("whu-cd", tmp_path, tmp_path / "p", 16, options=paper)
    prepare("whu-cd", tmp_path, tmp_path / "c", 16, options=corrected)
    for split, names in lists.items():
        # the release's train|test/A folder holds exactly the split's files
        split_a = tmp_path / "release" / split / "A"
        split_a.mkdir(parents=True)
        for n in names:
            (split_a / n).write_bytes((raw / "A" / n).read_bytes())
        assert _ids(tmp_path / "p", split) == [Path(n).stem for n in release_file_order(split_a)]
        assert _ids(tmp_path / "c", split) == [Path(n).stem for n in names]
    assert _ids(tmp_path / "p", "test") == ["whucd_00003", "whucd_00009", "whucd_00012"]
    assert _ids(tmp_path / "c", "test") == ["whucd_00012", "whucd_00003", "whucd_00009"]
    pre_p, pre_c = (np.load(tmp_path / d / "test" / "pre.npy") for d in ("p", "c"))
    assert np.array_equal(pre_p[0], pre_c[1])  # whucd_00003 moved from list position 1 to 0
    assert any("sorted(os.listdir(A))" in r for r in m_p["rules"])


# ------------------------------------------------------------------------------------------
# 3. label modes


def _palette(indices: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    img = Image.fromarray(indices.astype(np.uint8), "P")
    img.putpalette([v for c in colours for v in c])
    return img


def test_whu_cd_labels_of_every_mode_are_read_as_the_release_reads_them(tmp_path):
    s = 16
    rect = _rect(s, 3, 11, 2, 9)  # 8 x 7 = 56 changed pixels
    labels = {
        "a_L_0_255.png": Image.fromarray(rect.astype(np.uint8) * 255),
        "b_L_0_1.png": Image.fromarray(rect.astype(np.uint8)),                       # values 0/1
        "c_1.png": Image.fromarray(rect),                                            # mode 1
        "d_P_black_white.png": _palette(rect, [(0, 0, 0), (255, 255, 255)]),
        "e_P_red.png": _palette(rect, [(0, 0, 0), (255, 0, 0)]),                     # grey 76
        "f_RGB_white.png": Image.fromarray(np.repeat(rect[..., None], 3, 2).astype(np.uint8) * 255),
        "g_RGB_black.png": Image.fromarray(np.zeros((s, s, 3), np.uint8)),           # no change
        "h_RGBA_white.png": Image.fromarray(np.dstack([np.repeat(rect[..., None], 3, 2) * 255,
                                                       np.full((s, s), 255)]).astype(np.uint8)),
        "i_L_all_255.png": Image.fromarray(np.full((s, s), 255, np.uint8)),          # all change
    }
    names = list(labels)
    raw = _whu_cd_tree(tmp_path, labels, {"train": names, "test": names})
    assert [Image.open(raw / "label" / n).mode for n in names] == ["L", "L", "1", "P", "P", "RGB", "RGB", "RGBA", "L"]

    m = prepare("whu-cd", tmp_path, tmp_path / "p", s, options=preparation_options(PAPER, "whu-cd"))
    released = {n: release_cd_label(raw / "label" / n) for n in names}
    kept = [n for n in sorted(names) if released[n][0]]
    assert kept == [n for n in names if not n.startswith(("g_", "i_"))]  # the uniform labels go
    assert _ids(tmp_path / "p", "train") == [Path(n).stem for n in kept]
    labs = np.load(tmp_path / "p" / "train" / "labels.npy")
    for k, n in enumerate(kept):
        assert np.array_equal(labs[k], released[n][1]), n
    # the release's truncation: a 0/1 or a red-palette label is all no-change
    assert {n: int(labs[k].sum()) for k, n in enumerate(kept)} == {
        "a_L_0_255.png": 56, "b_L_0_1.png": 0, "c_1.png": 56, "d_P_black_white.png": 56, "e_P_red.png": 0,
        "f_RGB_white.png": 56, "h_RGBA_white.png": 56}
    assert m["dropped"] == {"train": 2, "test": 2}
    assert m["label_modes"] == {"1": 2, "L": 6, "P": 4, "RGB": 4, "RGBA": 2}
    assert m["labels_not_0_255"] == 4  # b and e, in both splits

    # corrected: change where the grey value is > 0, only the no-change pair dropped
    m_c = prepare("whu-cd", tmp_path, tmp_path / "c", s, options=preparation_options(CORRECTED, "whu-cd"))
    assert m_c["dropped"] == {"train": 1, "test": 1}
    labs_c = np.load(tmp_path / "c" / "train" / "labels.npy")
    kept_c = [n for n in names if not n.startswith("g_")]
    assert _ids(tmp_path / "c", "train") == [Path(n).stem for n in kept_c]
    sums = {n: int(labs_c[k].sum()) for k, n in enumerate(kept_c)}
    assert sums == {**{n: 56 for n in kept_c}, "i_L_all_255.png": s * s}
    for k, n in enumerate(kept_c):
        assert np.array_equal(labs_c[k], (np.asarray(Image.open(raw / "label" / n).convert("L")) > 0).astype(np.uint8))


def _l_shape(n: int) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[6:45, 10:19] = True   # a bar
    m[6:13, 10:41] = True   # an arm
    m[37:58, 47:60] = True  # an off-centre block
    return m


def test_whu_ss_masks_of_mode_1_and_P_are_resized_nearest_as_pil_forces_it(tmp_path):
    src, t = 64, 32
    mask = _l_shape(src)
    top = tmp_path / "whu" / WHU_DIRNAME
    masks = {"1.tif": Image.fromarray(mask),                                             # mode 1
             "2.tif": _palette(mask.astype(np.uint8) * 255, [(0, 0, 0)] * 255 + [(255, 255, 255)]),  # P
             "3.tif": Image.fromarray(mask.astype(np.uint8) * 255)}                      # L
    for split in ("train", "val", "test"):
        for i, (n, m) in enumerate(masks.items()):
            _save(Image.fromarray(_rgb(i, src)), top / split / "image" / n)
            _save(m, top / split / "label" / n)
    assert [Image.open(top / "train" / "label" / n).mode for n in masks] == ["1", "P", "L"]

    m_p = prepare("whu-ss", tmp_path, tmp_path / "p", t, options=preparation_options(PAPER, "whu-ss"))
    labs = np.load(tmp_path / "p" / "train" / "labels.npy")
    released = [release_ss_target(top / "train" / "label" / n, t) for n in masks]
    for k in range(3):
        assert np.array_equal(labs[k], released[k]), list(masks)[k]
    nearest = mask[1::2, 1::2].astype(np.uint8)  # PIL NEAREST, 2x down: pixel 2i+1
    assert np.array_equal(labs[0], nearest) and np.array_equal(labs[1], nearest)
    assert int(nearest.sum()) == 186 and int(labs[2].sum()) == 121  # mode L: bilinear + .long() erodes
    assert m_p["label_modes"] == {"1": 3, "L": 3, "P": 3}
    assert any("mode 1 or P mask is resized nearest" in r and "1 3, L 3, P 3" in r for r in m_p["rules"])

    # corrected: every mode nearest
    prepare("whu-ss", tmp_path, tmp_path / "c", t, options=preparation_options(CORRECTED, "whu-ss"))
    assert all(np.array_equal(lab, nearest) for lab in np.load(tmp_path / "c" / "train" / "labels.npy"))


def test_whu_ss_masks_the_release_would_empty_or_cannot_train_on_are_named(tmp_path):
    src = 16
    top = tmp_path / "whu" / WHU_DIRNAME
    for split in ("train", "val", "test"):
        _save(Image.fromarray(_rgb(0, src)), top / split / "image" / "1.tif")
        _save(Image.fromarray(_rect(src, 2, 9, 2, 9).astype(np.uint8) * 255), top / split / "label" / "1.tif")
    bad = top / "val" / "label" / "1.tif"
    # a palette mask with indices 0/1: ToTensor gives 1/255, .long() 0: the building would vanish
    _save(_palette(_rect(src, 2, 9, 2, 9), [(0, 0, 0), (255, 255, 255)]), bad)
    assert release_ss_target(bad, 8).sum() == 0
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}: palette indices [1] other than 0/255 (mode P)")):
        prepare("whu-ss", tmp_path, tmp_path / "out", 8)
    _save(Image.fromarray(np.zeros((src, src, 3), np.uint8)), bad)  # RGB: 3 target channels
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}: mask mode RGB (3 bands)")):
        prepare("whu-ss", tmp_path, tmp_path / "out", 8)


# ------------------------------------------------------------------------------------------
# 2. one layout: acquisition accepts a tree exactly when the preparer reads it


def _both(tmp_path: Path, name: str, store: str) -> tuple[list[str], Exception | None]:
    problems = acq.layout_problems(acq.SOURCES[name], tmp_path / name)
    try:
        prepare(store, tmp_path, tmp_path / "out", 8)
        return problems, None
    except (DataNotFoundError, DataFormatError) as err:
        return problems, err


SS_NAMES = {"train": ["1.tif", "2.tif"], "val": ["3.tif"], "test": ["4.tif"]}


@pytest.mark.parametrize("variant", ["official", "capitalised", "any_case_at_root"])
def test_image_mask_folders_in_any_case_are_accepted_by_acquisition_and_the_preparer(tmp_path, variant):
    image, label, base = {"official": ("image", "label", WHU_DIRNAME), "capitalised": ("Image", "Mask", WHU_DIRNAME),
                          "any_case_at_root": ("IMAGES", "masks", None)}[variant]
    whu_tree(tmp_path, SS_NAMES, image=image, label=label, base=base)
    problems, err = _both(tmp_path, "whu", "whu-ss")
    assert problems == [] and err is None
    manifest = acq.acquire("whu", tmp_path, tmp_path / "dl", quiet=True)  # found in place: no download
    assert manifest["counts"] == {"train tiles": 2, "val tiles": 1, "test tiles": 1}
    assert acq.check_raw("whu", tmp_path) == tmp_path / "whu"


def test_a_capitalised_archive_extracts_and_prepares(tmp_path):
    src = tmp_path / "src"
    whu_tree(src, SS_NAMES, image="Image", label="Mask", base=None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a re-packaged copy: WHU-Building-Dataset/{split}/{Image,Mask}/
        for p in sorted((src / "whu").rglob("*")):
            if p.is_file():
                zf.write(p, f"WHU-Building-Dataset/{p.relative_to(src / 'whu').as_posix()}")
    assert Path("train/Image/1.tif").match(WHU_MEMBER_MARKER) and Path("train/images/1.tif").match(WHU_MEMBER_MARKER)
    dl, raw = tmp_path / "dl", tmp_path / "raw"
    dl.mkdir()
    (dl / WHU_ZIP).write_bytes(buf.getvalue())
    manifest = acq.acquire("whu", raw, dl, quiet=True)
    assert manifest["counts"] == {"train tiles": 2, "val tiles": 1, "test tiles": 1}
    assert (raw / "whu" / WHU_DIRNAME / "train" / "Mask" / "1.tif").is_file()
    assert prepare("whu-ss", raw, tmp_path / "p", 8)["splits"]["val"]["count"] == 1


@pytest.mark.parametrize("variant,missing", [
    ("no_val", "val"),                  # the release's own train|test layout
    ("no_val_label", "val/label"),
    ("empty_test_images", "test/Image"),
])
def test_a_tree_lacking_a_folder_is_refused_by_both_naming_it(tmp_path, variant, missing):
    names = {k: v for k, v in SS_NAMES.items() if not (variant == "no_val" and k == "val")}
    raw = whu_tree(tmp_path, names, image="Image", label="Mask")
    top = raw / WHU_DIRNAME
    if variant == "no_val_label":
        for p in (top / "val" / "Mask").iterdir():
            p.unlink()
        (top / "val" / "Mask").rmdir()
    if variant == "empty_test_images":
        for p in (top / "test" / "Image").iterdir():
            p.unlink()
    problems, err = _both(tmp_path, "whu", "whu-ss")
    folder = str(top / missing)
    assert len(problems) == 1 and folder in problems[0]
    assert isinstance(err, DataNotFoundError) and problems[0] in str(err)
    with pytest.raises(DataNotFoundError, match=re.escape(folder)):
        acq.check_raw("whu", tmp_path)
    with pytest.raises(DataFormatError, match=re.escape(f"not a complete whu tree ({problems[0]})")):
        acq.acquire("whu", tmp_path, tmp_path / "dl", quiet=True)


def test_two_image_folders_of_one_split_are_refused_by_both(tmp_path):
    raw = whu_tree(tmp_path, SS_NAMES)
    second = raw / WHU_DIRNAME / "train" / "Image"
    if (raw / WHU_DIRNAME / "train" / "IMAGE").exists():  # a case-insensitive file system
        pytest.skip("the file system folds case")
    second.mkdir()
    (second / "1.tif").write_bytes((raw / WHU_DIRNAME / "train" / "image" / "1.tif").read_bytes())
    problems, err = _both(tmp_path, "whu", "whu-ss")
    assert problems == [f"train has 2 image folders (Image, image) in {raw / WHU_DIRNAME / 'train'}; keep one"]
    assert isinstance(err, DataNotFoundError) and problems[0] in str(err)


@pytest.mark.parametrize("variant", ["complete", "no_val_list", "no_B", "no_test_list"])
def test_whu_cd_layout_is_one_definition_for_acquisition_and_the_preparer(tmp_path, variant):
    lab = Image.fromarray(_rect(16, 4, 9, 4, 12).astype(np.uint8) * 255)
    lists = {"train": ["whucd_00001.png"], "val": ["whucd_00002.png"], "test": ["whucd_00003.png"]}
    raw = _whu_cd_tree(tmp_path, {n: lab for v in lists.values() for n in v}, lists)
    if variant == "no_val_list":
        (raw / "list" / "val.txt").unlink()
    if variant == "no_B":
        for p in (raw / "B").iterdir():
            p.unlink()
        (raw / "B").rmdir()
    if variant == "no_test_list":
        (raw / "list" / "test.txt").unlink()
    problems, err = _both(tmp_path, "whu-cd", "whu-cd")
    if variant in ("complete", "no_val_list"):  # val.txt is optional for both
        assert problems == [] and err is None
        splits = prepare("whu-cd", tmp_path, tmp_path / "o2", 16)["splits"]
        assert list(splits) == (["train", "val", "test"] if variant == "complete" else ["train", "test"])
        return
    missing = str(raw / "B") if variant == "no_B" else str(raw / "list" / "test.txt")
    assert len(problems) == 1 and missing in problems[0]
    assert isinstance(err, DataNotFoundError) and problems[0] in str(err)
