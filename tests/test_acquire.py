"""Raw data acquisition: download from a loopback server, resume, verify, extract atomically.

Archives are built here from synthetic raw data in each data set's real layout
(noise2map.data.synthetic), packed the way the real archive is packed; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from noise2map.cli import main
from noise2map.data import acquire as acq
from noise2map.data import generate, prepare
from noise2map.download import DownloadError
from noise2map.errors import ChecksumError, DataFormatError, DataNotFoundError

ROOT = Path(__file__).resolve().parent.parent
SN7 = "SN7_buildings_train.tar.gz"
WHU_ZIP = "3. The cropped aerial image tiles and raster labels.zip"
WHU_DIR = "3. The cropped image tiles and raster labels"


def _files(root: Path) -> dict[str, str]:
    """relative path → sha256 of every file under root, except the synthetic marker."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SYNTHETIC.json"}


def _tar_gz(src: Path, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for rel in _files(src):
            tf.add(src / rel, arcname=f"{prefix}{rel}")
    return buf.getvalue()


def _zip(src: Path, prefix: str = "", extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in _files(src):
            zf.write(src / rel, f"{prefix}{rel}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic raw trees (demo size) of spacenet7, whu, whu-cd and aid."""
    root = tmp_path_factory.mktemp("synthetic")
    return {name: generate(name, root, seed=0) for name in ("spacenet7", "whu", "whu-cd", "aid")}


@pytest.fixture(scope="module")
def sn7_archive(synthetic):
    """SN7_buildings_train.tar.gz as the real tarball packs it: train/<aoi>/images_masked/…"""
    return _tar_gz(synthetic["spacenet7"])


@pytest.fixture
def sn7_md5(monkeypatch, sn7_archive):
    """The registry's SpaceNet7 entry with the test archive's MD5 in place of the real one."""
    src = acq.SOURCES["spacenet7"]
    monkeypatch.setitem(acq.SOURCES, "spacenet7",
                        replace(src, archives=(replace(src.archives[0], md5=_md5(sn7_archive)),)))
    return _md5(sn7_archive)


def _write_metadata_from_udm(root: Path) -> None:
    """metadata_train.json in Hafner et al.'s format: one entry per monthly mosaic, ``mask`` true
    where the month has a UDM_masks file, ``label`` where it has a labels_match_pix file."""
    meta = {}
    for aoi in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        entries = []
        for i, img in enumerate(sorted((aoi / "images_masked").glob("*.tif"))):
            _, _, year, month, *_ = img.stem.split("_")
            udm = aoi / "UDM_masks"
            masked = udm.is_dir() and any(p.name.startswith(img.stem) for p in udm.iterdir())
            labelled = (aoi / "labels_match_pix" / f"{img.stem}_Buildings.geojson").is_file()
            entries.append({"aoi_id": aoi.name, "index": i, "year": int(year), "month": int(month),
                            "mask": masked, "label": labelled})
        meta[aoi.name] = entries
    (root / "metadata_train.json").write_text(json.dumps(meta, indent=4))


def _no_leftovers(raw: Path, name: str):
    assert not (raw / name).exists()
    assert not (raw / f"{name}.acquired.json").exists()
    assert list(raw.glob(f".{name}.extracting-*")) == []


# ---------------------------------------------------------------------------------------------


def test_download_verify_extract_and_layout_via_the_cli(file_server, synthetic, sn7_archive, sn7_md5, tmp_path,
                                                        caplog):
    caplog.set_level("INFO")
    file_server.files[SN7] = sn7_archive
    raw, dl, marker = tmp_path / "raw", tmp_path / "downloads", tmp_path / "raw" / "spacenet7.ready.json"
    code = main(["acquire", "spacenet7", "--raw", str(raw), "--downloads", str(dl), "--mirror", file_server.url,
                 "--marker", str(marker)])
    assert code == 0
    assert "spacenet7: terms of use: CC BY-SA 4.0" in caplog.text  # said before the download
    assert file_server.requests == [(SN7, None)]
    assert (dl / SN7).read_bytes() == sn7_archive and not (dl / f"{SN7}.part").exists()

    # the extracted tree is the synthetic tree, file for file
    expected = _files(synthetic["spacenet7"])
    assert _files(raw / "spacenet7") == expected
    # 5 AOIs x 4 months of images and images_masked, 4 label folders of 19 labelled months, one UDM mask
    assert len(expected) == 5 * 4 * 2 + 19 * 4 + 1

    manifest = json.loads((raw / "spacenet7.acquired.json").read_text())
    (entry,) = manifest["archives"]
    assert entry["file"] == SN7 and entry["bytes"] == len(sn7_archive)
    assert entry["sha256"] == _sha(sn7_archive) and entry["md5"] == sn7_md5
    assert entry["checksum"].startswith("MD5 published") and entry["source"] == f"{file_server.url}/{SN7}"
    assert manifest["verified"] is True and manifest["files"] == len(expected)
    assert manifest["bytes"] == sum((raw / "spacenet7" / rel).stat().st_size for rel in expected)
    assert manifest["counts"] == {"AOI folders": 5, "monthly mosaics (images_masked)": 20,
                                  "label files (labels_match_pix)": 19}
    assert manifest["count_mismatches"] == ["AOI folders: 5, expected 60",  # a warning each: not strict
                                            "monthly mosaics (images_masked): 20, expected 1423"]
    ready = json.loads(marker.read_text())
    assert ready["files"] == len(expected) and _sha(sn7_archive) in ready["source"]

    # in place: a second call fetches nothing and returns the recorded manifest
    assert acq.acquire("spacenet7", raw, dl, base_url=file_server.url, quiet=True) == manifest
    assert len(file_server.requests) == 1

    # and, with Hafner et al.'s month list (mask = a UDM mask exists, as they set it), it prepares
    # exactly as the synthetic tree it was packed from (which has no list and reads UDM_masks/)
    _write_metadata_from_udm(raw / "spacenet7")
    a = prepare("spacenet7-ss", raw, tmp_path / "p1", 32)
    b = prepare("spacenet7-ss", synthetic["spacenet7"].parent, tmp_path / "p2", 32)
    # 3 train AOIs x 4 months x 4 tiles, less one unlabelled and one UDM-masked month
    assert a["splits"] == b["splits"] and a["splits"]["train"]["count"] == 3 * 4 * 4 - 4 - 4


def test_cut_connection_resumes_with_a_range_request(file_server, sn7_archive, sn7_md5, tmp_path):
    half = len(sn7_archive) // 2
    file_server.files[SN7] = sn7_archive
    file_server.cut[SN7] = half
    manifest = acq.acquire("spacenet7", tmp_path / "raw", tmp_path / "dl", base_url=file_server.url, quiet=True)
    assert file_server.requests == [(SN7, None), (SN7, f"bytes={half}-")]
    assert manifest["archives"][0]["sha256"] == _sha(sn7_archive)
    assert manifest["archives"][0]["bytes"] == len(sn7_archive)
    assert manifest["counts"]["monthly mosaics (images_masked)"] == 20


def test_corrupt_download_is_removed_and_nothing_is_extracted(file_server, sn7_archive, sn7_md5, tmp_path):
    bad = bytearray(sn7_archive)
    bad[len(bad) // 2] ^= 0xFF
    file_server.files[SN7] = bytes(bad)
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    with pytest.raises(ChecksumError) as err:
        acq.acquire("spacenet7", raw, dl, base_url=file_server.url, quiet=True)
    message = str(err.value)
    assert SN7 in message and f"MD5 {_md5(bytes(bad))}, expected {sn7_md5}" in message
    assert list(dl.iterdir()) == []  # neither the file nor its .part
    _no_leftovers(raw, "spacenet7")


def test_corrupt_archive_through_the_workflow_leaves_no_marker_and_no_prepared_store(
        file_server, sn7_archive, tmp_path):
    # The registry's real MD5 (6eda13b9…) is checked in the Snakemake job: the test tarball fails it.
    file_server.files[SN7] = sn7_archive
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "1", "--config", f"data_mirror={file_server.url}", "--",
           "data/prepared/spacenet7-ss.prepared.json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert file_server.requests == [(SN7, None)]
    log = (tmp_path / "logs" / "paper" / "acquire_raw" / "spacenet7.log").read_text()
    assert f"{SN7} downloaded from {file_server.url}/{SN7} is corrupt" in log
    assert f"expected {acq.SOURCES['spacenet7'].archives[0].md5}" in log
    assert not (tmp_path / "data" / "raw" / "spacenet7.ready.json").exists()
    assert not (tmp_path / "data" / "prepared" / "spacenet7-ss" / "manifest.json").exists()
    assert not (tmp_path / "data" / "prepared" / "spacenet7-ss.prepared.json").exists()
    assert list((tmp_path / "data" / "downloads").iterdir()) == []
    _no_leftovers(tmp_path / "data" / "raw", "spacenet7")


def test_user_supplied_zip_is_trusted_on_first_use_then_held_to_it(synthetic, tmp_path):
    body = _zip(synthetic["whu"], prefix=f"{WHU_DIR}/")  # the official zip's top folder
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    dl.mkdir()
    (dl / WHU_ZIP).write_bytes(body)
    manifest = acq.acquire("whu", raw, dl, quiet=True)  # present: no network is tried
    (entry,) = manifest["archives"]
    assert entry["sha256"] == _sha(body) and entry["md5"] is None and entry["bytes"] == len(body)
    assert "trusted on first use" in entry["checksum"]
    lock = json.loads((dl / "archives.lock.json").read_text())
    assert lock[WHU_ZIP]["sha256"] == _sha(body) and lock[WHU_ZIP]["bytes"] == len(body)
    assert manifest["counts"] == {"train tiles": 24, "val tiles": 8, "test tiles": 8}
    assert _files(raw / "whu") == _files(synthetic["whu"])
    assert prepare("whu-ss", raw, tmp_path / "p", 32)["splits"]["train"]["count"] == 24

    # a different file under the same name is refused against the recorded SHA-256 and moved aside
    (raw / "whu.acquired.json").unlink()
    import shutil

    shutil.rmtree(raw / "whu")
    other = _zip(synthetic["whu"], prefix=f"{WHU_DIR}/", extra={"README.txt": "x"})
    (dl / WHU_ZIP).write_bytes(other)
    with pytest.raises(ChecksumError, match=f"{re.escape(str(dl / WHU_ZIP))} does not match.*recorded at first use"):
        acq.acquire("whu", raw, dl, quiet=True)
    assert not (dl / WHU_ZIP).exists() and (dl / f"{WHU_ZIP}.corrupt").read_bytes() == other
    _no_leftovers(raw, "whu")


def test_html_instead_of_a_zip_is_dropped_then_the_real_zip_extracts(file_server, synthetic, tmp_path):
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    file_server.files["WHU-CD-256.zip"] = b"<!DOCTYPE html><html>sign in to download</html>"
    with pytest.raises(DataFormatError, match=r"WHU-CD-256.zip is not a readable zip archive.*<!DOCTYPE html"):
        acq.acquire("whu-cd", raw, dl, base_url=file_server.url, quiet=True)
    assert not (dl / "WHU-CD-256.zip").exists() and acq.read_lock(dl) == {}
    _no_leftovers(raw, "whu-cd")

    body = _zip(synthetic["whu-cd"], prefix="WHU-CD-256/")  # a wrapper folder is stripped
    file_server.files["WHU-CD-256.zip"] = body
    manifest = acq.acquire("whu-cd", raw, dl, base_url=file_server.url, quiet=True)
    assert _files(raw / "whu-cd") == _files(synthetic["whu-cd"])
    assert manifest["counts"] == {"pairs (A)": 40, "labels": 40}
    assert acq.read_lock(dl)["WHU-CD-256.zip"]["sha256"] == _sha(body)


def test_aid_must_match_the_published_class_counts(synthetic, tmp_path):
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    dl.mkdir()
    body = _zip(synthetic["aid"], prefix="")  # AID/<Class>/<class>_<n>.jpg
    (dl / "AID.zip").write_bytes(body)
    with pytest.raises(DataFormatError) as err:
        acq.acquire("aid", raw, dl, quiet=True)
    message = str(err.value)
    assert "scene classes: 3, expected 30" in message and "images: 12, expected 10000" in message
    assert "class Airport: 4, expected 360" in message and "class Beach: 0, expected 400" in message
    assert (dl / "AID.zip").read_bytes() == body  # the user's file is kept, but not trusted
    assert acq.read_lock(dl) == {}
    _no_leftovers(raw, "aid")
    assert sum(acq.AID_CLASS_COUNTS.values()) == 10000 and len(acq.AID_CLASS_COUNTS) == 30


def test_missing_manual_archives_name_file_url_and_path(tmp_path):
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    with pytest.raises(DataNotFoundError) as err:
        acq.acquire("xview2", raw, dl, quiet=True)
    message = str(err.value)
    for name, md5 in (("train_images_labels_targets.tar.gz", "a20ebbfb7eb3452785b63ad02ffd1e16"),
                      ("test_images_labels_targets.tar.gz", "1b39c47e05d1319c17cc8763cee6fe0c")):
        assert f"put it at {dl / name}" in message and md5 in message
    assert message.count("from https://xview2.org/dataset") == 2
    assert "registration" in message and str(raw / "xview2") in message
    assert f"noise2map acquire xview2 --raw {raw} --downloads {dl}" in message
    assert not dl.exists() or list(dl.iterdir()) == []

    with pytest.raises(DataNotFoundError, match=re.escape(f"put it at {dl / 'AID.zip'}")):
        acq.acquire("aid", raw, dl, quiet=True)


def test_extraction_killed_half_way_leaves_no_tree_and_a_rerun_succeeds(synthetic, tmp_path):
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    dl.mkdir()
    body = _zip(synthetic["whu"], prefix=f"{WHU_DIR}/")
    (dl / WHU_ZIP).write_bytes(body)
    script = f"""
import os, signal
from noise2map.data import acquire, extract
orig, done = extract._extract_member, []
def half(archive, member, dest):
    orig(archive, member, dest)
    done.append(member)
    if len(done) == 30:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the extraction
extract._extract_member = half
acquire.acquire("whu", {str(raw)!r}, {str(dl)!r}, quiet=True)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -9
    (stale,) = raw.glob(".whu.extracting-*")
    assert len([p for p in stale.rglob("*") if p.is_file()]) == 30  # the half tree stayed hidden
    assert not (raw / "whu").exists() and not (raw / "whu.acquired.json").exists()
    assert acq.read_lock(dl) == {}
    with pytest.raises(DataNotFoundError):
        acq.check_raw("whu", raw)

    # an in-process failure half-way cleans up at once
    from noise2map.data import extract

    orig, n = extract._extract_member, []

    def failing(archive, member, dest):
        orig(archive, member, dest)
        n.append(1)
        if len(n) == 10:
            raise OSError(28, "No space left on device")

    extract._extract_member = failing
    try:
        with pytest.raises(OSError, match="No space left"):
            acq.acquire("whu", raw, dl, quiet=True)
    finally:
        extract._extract_member = orig
    _no_leftovers(raw, "whu")  # the killed run's staging folder went too (its process is gone)

    manifest = acq.acquire("whu", raw, dl, quiet=True)
    assert manifest["files"] == 80 and manifest["archives"][0]["sha256"] == _sha(body)
    assert _files(raw / "whu") == _files(synthetic["whu"])
    assert list(raw.glob(".whu.extracting-*")) == []


def test_data_status_reports_present_verified_prepared_and_what_to_do(synthetic, tmp_path, capsys):
    data, dl = tmp_path / "data", tmp_path / "dl"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(data), "downloads_dir": str(dl)}))
    raw = data / "raw"
    dl.mkdir()
    # whu-cd: acquired from a supplied archive and prepared; whu: synthetic, extracted by hand;
    # xview2: one of its two archives supplied; the rest: nothing.
    (dl / "WHU-CD-256.zip").write_bytes(_zip(synthetic["whu-cd"]))
    acq.acquire("whu-cd", raw, dl, quiet=True)
    prepared = prepare("whu-cd", raw, data / "prepared" / "whu-cd", 32)
    generate("whu", raw, seed=0)
    (dl / "train_images_labels_targets.tar.gz").write_bytes(b"not checked by status")

    assert main(["data", "status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    blocks = {b.split(":", 1)[0]: b for b in out.strip().split("\n\n")[1:]}
    assert set(blocks) == {"spacenet7", "whu", "whu-cd", "xview2", "aid", "majortom", "imagenet"}
    assert "terms:    CC BY-NC-SA 4.0" in blocks["xview2"] and "terms:    CC BY-SA 4.0" in blocks["spacenet7"]
    assert all("  terms:    " in b for b in blocks.values())  # every data set says its terms

    counts = {s: v["count"] for s, v in prepared["splits"].items()}
    assert sum(counts.values()) == 30 and sum(prepared["dropped"].values()) == 10  # every 4th pair: no change
    sha = _sha((dl / "WHU-CD-256.zip").read_bytes())
    b = blocks["whu-cd"]
    assert f"present:  yes, {raw / 'whu-cd'} (pairs (A) 40, labels 40)" in b
    assert f"verified: yes (WHU-CD-256.zip {(dl / 'WHU-CD-256.zip').stat().st_size} bytes sha256 {sha[:16]}" in b
    assert (f"prepared: whu-cd train {counts['train']} / val {counts['val']} / test {counts['test']} = 30 "
            "(paper 959)") in b
    assert "to do:    nothing" in b

    b = blocks["whu"]
    assert "present:  yes (synthetic)" in b and "verified: no" in b and "whu-ss not prepared" in b
    assert "not verified against an archive" in b

    b = blocks["xview2"]
    assert ("archives: train_images_labels_targets.tar.gz in downloads, test_images_labels_targets.tar.gz missing"
            in b)
    assert (f"get test_images_labels_targets.tar.gz from https://xview2.org/dataset and put it at "
            f"{dl / 'test_images_labels_targets.tar.gz'}") in b
    assert "train_images_labels_targets.tar.gz from" not in b

    b = blocks["spacenet7"]
    assert "present:  no" in b and "spacenet7-ss not prepared; spacenet7-cd not prepared" in b
    assert f"run `noise2map acquire spacenet7 --raw {raw} --downloads {dl}` (downloads {SN7}" in b
    assert "[not in the paper workflow]" in blocks["majortom"] and "[not in the paper workflow]" in blocks["imagenet"]

    rows = {r["name"]: r for r in acq.status(acq_config(cfg))}
    assert rows["whu-cd"]["verified"] and rows["whu-cd"]["prepared"]["whu-cd"]["splits"] == counts
    assert not rows["whu"]["verified"] and rows["whu"]["synthetic"]
    assert rows["aid"]["prepared"] == {"aid": None} and not rows["aid"]["present"]


def acq_config(path):
    from noise2map.config import load_config

    return load_config(path)


def test_download_failure_names_every_url_and_the_manual_route(tmp_path, monkeypatch):
    # nothing listens on port 9 of 127.0.0.1: every URL fails at once
    src = acq.SOURCES["whu"]
    urls = ("http://127.0.0.1:9/a.zip", "http://127.0.0.1:9/b.zip")
    monkeypatch.setitem(acq.SOURCES, "whu", replace(src, archives=(replace(src.archives[0], urls=urls),)))
    monkeypatch.setattr("noise2map.download.time.sleep", lambda s: None)
    with pytest.raises(DownloadError) as err:
        acq.acquire("whu", tmp_path / "raw", tmp_path / "dl", quiet=True)
    message = str(err.value)
    assert all(u in message for u in urls) and f"put it at {tmp_path / 'dl' / WHU_ZIP}" in message
    _no_leftovers(tmp_path / "raw", "whu")


def test_paper_workflow_plans_acquire_raw_for_every_raw_data_set(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "--cores", "1", "--printshellcmds", "--config", "data_mirror=http://127.0.0.1:9/mirror", "--",
           "results/table1.csv"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"^acquire_raw\s+5$", out, re.M)
    planned = set(re.findall(r"noise2map acquire (\S+) --raw data/raw --downloads data/downloads "
                             r"--mirror http://127.0.0.1:9/mirror --marker data/raw/(\S+)\.ready\.json", out))
    assert planned == {(n, n) for n in ("spacenet7", "whu", "whu-cd", "xview2", "aid")}
    assert not (tmp_path / "data").exists()  # a dry run touches nothing


def test_zip_members_that_leave_the_folder_or_link_are_refused_by_name(tmp_path):
    import stat
    import zipfile

    from noise2map.data import extract as ex

    def zipped(name, members):
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for member, body, mode in members:
                info = zipfile.ZipInfo(member)
                info.external_attr = mode << 16
                zf.writestr(info, body)
        return path

    plain = stat.S_IFREG | 0o644
    ok = zipped("ok", [("d/a.txt", b"a", plain), ("d/b.txt", b"b", plain)])
    assert ex.extract(ok, tmp_path / "ok") == 2 and (tmp_path / "ok/d/b.txt").read_bytes() == b"b"
    for name, member, mode, why in (("dots", "../../evil.txt", plain, r"climbs out of the folder \('..'\)"),
                                    ("abs", "/tmp/evil.txt", plain, "has an absolute path"),
                                    ("link", "d/l", stat.S_IFLNK | 0o777, "'d/l' is a link")):
        with pytest.raises(DataFormatError, match=f"{name}.zip: member .*{why}"):
            ex.extract(zipped(name, [(member, b"/etc/passwd", mode)]), tmp_path / name)
        assert list((tmp_path / name).rglob("*")) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_plain_file_source_is_placed_not_extracted(file_server, tmp_path):
    shard = b"PAR1" + bytes(range(256)) * 64 + b"PAR1"  # stands in for a MAJOR-TOM parquet shard
    file_server.files["part_00001.parquet"] = shard
    raw, dl = tmp_path / "raw", tmp_path / "dl"
    manifest = acq.acquire("majortom", raw, dl, base_url=file_server.url, quiet=True)
    placed = raw / "majortom" / "images" / "part_00001.parquet"
    assert placed.read_bytes() == shard and manifest["counts"] == {"parquet shards": 1}
    assert manifest["archives"][0]["bytes"] == len(shard) == manifest["bytes"]
    assert acq.read_lock(dl)["part_00001.parquet"]["sha256"] == _sha(shard)
    assert not acq.SOURCES["majortom"].in_workflow


@pytest.mark.parametrize("data_filter", [True, False])
def test_tar_members_leaving_the_folder_are_refused(tmp_path, monkeypatch, data_filter):
    """Python's "data" filter where the Python has it, the same checks where it predates it."""
    import io
    import tarfile

    from noise2map.data import extract as ex
    from noise2map.errors import DataFormatError

    if data_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    monkeypatch.setattr(ex, "HAS_DATA_FILTER", data_filter)

    def tar(path, members):
        with tarfile.open(path, "w") as tf:
            for info, body in members:
                tf.addfile(info, io.BytesIO(body) if body is not None else None)
        return path

    def file(name, body=b"x"):
        info = tarfile.TarInfo(name)
        info.size = len(body)
        return info, body

    def link(name, target):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        return info, None

    good = tar(tmp_path / "good.tar", [file("a/b.txt"), file("a/c.txt")])
    assert ex.extract(good, tmp_path / "out") == 2 and (tmp_path / "out/a/b.txt").read_bytes() == b"x"
    absolute = tmp_path / "abs" / "evil.txt"
    for name, members, why in (("dots", [file("../evil.txt")], r"climbs out of the folder \('..'\)"),
                               ("link", [link("a/l", "../../etc/passwd")], "is a link"),
                               ("abslink", [link("a/l", "/etc/passwd")], "is a link"),
                               ("inlink", [file("a/b.txt"), link("a/c.txt", "b.txt")], "'a/c.txt' is a link"),
                               ("abs", [file(str(absolute))], "has an absolute path")):
        with pytest.raises(DataFormatError, match=f"{name}.tar: member .*{why}; a data archive holds plain files"):
            ex.extract(tar(tmp_path / f"{name}.tar", members), tmp_path / name)
    assert not (tmp_path / "evil.txt").exists() and not absolute.exists()
