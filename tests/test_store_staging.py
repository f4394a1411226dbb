"""A store is built beside the old one and swapped in only when complete: a failed rerun
(bad raw file, full disk, kill -9) leaves the previous store exactly as it was, and its
leftovers are cleared by the next run. A split that would be empty is an error."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from noise2map.data import generate, prepare
from noise2map.errors import DataFormatError


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def whu_cd(tmp_path):
    raw = tmp_path / "raw"
    generate("whu-cd", raw, seed=0)
    store = tmp_path / "prepared" / "whu-cd"
    prepare("whu-cd", raw, store, 32)
    return raw, store


def test_a_failing_rerun_leaves_the_complete_store_as_it_was(whu_cd):
    raw, store = whu_cd
    before = _tree(store)
    for listed in (raw / "whu-cd" / "list" / "train.txt").read_text().split():
        (raw / "whu-cd" / "A" / listed).write_bytes(b"not a png")
    with pytest.raises(DataFormatError):
        prepare("whu-cd", raw, store, 32)
    assert _tree(store) == before  # manifest and arrays untouched
    assert sorted(p.name for p in store.parent.iterdir()) == ["whu-cd"]  # no staging left


def test_a_full_disk_mid_write_leaves_the_old_store_and_no_leftovers(whu_cd, monkeypatch):
    raw, store = whu_cd
    before = _tree(store)
    prep = sys.modules["noise2map.data.preparers.common"]

    written = []

    def full_after_two(path, array):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, array)

    real = prep.write_npy
    monkeypatch.setattr(prep, "write_npy", full_after_two)
    with pytest.raises(OSError, match="No space left"):
        prepare("whu-cd", raw, store, 32)
    assert len(written) == 2 and all(".whu-cd.staging" in str(p) for p in written)
    assert _tree(store) == before and sorted(p.name for p in store.parent.iterdir()) == ["whu-cd"]


def test_leftovers_of_a_killed_run_are_cleared_and_a_retired_store_put_back(whu_cd):
    raw, store = whu_cd
    before = _tree(store)
    staging = store.parent / ".whu-cd.staging"
    (staging / "train").mkdir(parents=True)
    (staging / "train" / ".pre.npy.abc.tmp").write_bytes(b"half an array")  # kill -9 mid-write
    prepare("whu-cd", raw, store, 32)
    assert not staging.exists() and _tree(store).keys() == before.keys()
    # killed between the swap's two renames: the old store is retired, the new one not in place
    old = store.parent / ".whu-cd.old"
    store.rename(old)
    (raw / "whu-cd" / "list" / "train.txt").write_text("")  # and this rerun fails
    with pytest.raises(DataFormatError):
        prepare("whu-cd", raw, store, 32)
    assert _tree(store) == before and not old.exists()


def test_an_empty_split_is_an_error_and_writes_nothing(tmp_path):
    raw = tmp_path / "raw"
    generate("whu-cd", raw, seed=0)
    (raw / "whu-cd" / "list" / "test.txt").write_text("")
    store = tmp_path / "prepared" / "whu-cd"
    with pytest.raises(DataFormatError, match=r"whu-cd: split 'test' would hold no samples \(raw data in .*raw\)\. "
                                              r"Check that the raw files are all there, that the split lists"):
        prepare("whu-cd", raw, store, 32)
    assert not store.exists() and list((tmp_path / "prepared").iterdir()) == []


def test_spacenet7_aois_in_no_split_list_give_no_empty_store(tmp_path):
    raw = tmp_path / "raw"
    generate("spacenet7", raw, seed=0)
    train = raw / "spacenet7" / "train"
    for aoi in train.iterdir():  # every AOI renamed out of the Hafner split lists
        aoi.rename(train / f"{aoi.name}_renamed")
    with pytest.raises(DataFormatError, match=r"spacenet7-ss: splits 'train', 'val', 'test' would hold no samples "
                                              r".* Set aside: outside_split: 5\."):
        prepare("spacenet7-ss", raw, tmp_path / "prepared" / "spacenet7-ss", 32)
    assert not (tmp_path / "prepared" / "spacenet7-ss").exists()
    shutil.rmtree(raw)


def test_the_workflow_waits_for_a_marker_beside_the_store_not_its_manifest(tmp_path):
    """Snakemake deletes a job's outputs before rerunning it: with the marker outside the
    store, a failing rerun leaves the previous store with its manifest."""
    from noise2map.config import load_config, prepared_dir, prepared_manifest

    config = load_config("workflow/config/demo.yaml")
    config.update(data_dir=str(tmp_path / "data"))
    marker = prepared_manifest(config, "whu", "cd")
    assert marker == str(tmp_path / "data" / "prepared" / "whu-cd.prepared.json")
    generate("whu-cd", tmp_path / "data" / "raw", seed=0)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "noise2map.cli", "prepare", "whu-cd", "--config", str(cfg), "--marker", marker]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    store = prepared_dir(config, "whu", "cd")
    before = _tree(store)
    assert (store / "manifest.json").read_bytes() in before.values()
    assert json.loads(open(marker).read())["splits"] == json.loads((store / "manifest.json").read_text())["splits"]
    os.unlink(marker)  # what Snakemake does before the rerun
    (tmp_path / "data" / "raw" / "whu-cd" / "list" / "test.txt").write_text("")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "split 'test' would hold no samples" in done.stderr
    assert _tree(store) == before and not os.path.exists(marker)
