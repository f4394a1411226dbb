"""Safe, atomic extraction of data archives (.tar, .tar.gz/.tgz/.tar.bz2/.tar.xz, .zip, or a plain file).

Extraction never writes into the final raw folder directly. Everything goes into a hidden
staging folder beside it (``<raw_root>/.<name>.extracting-<pid>``) and the finished, checked
tree is renamed into place in one ``os.rename``: a killed extraction leaves only the hidden
staging folder (removed by the next run), never a half tree that looks complete.

Members are checked as they are written: an absolute name, a ``..`` component, a link or a
device member is refused by name, for zip as for tar (the data sets' archives hold plain
files and folders only). Tar members also go through Python's ``"data"`` filter, or, on the
Pythons that predate it (3.10 < 3.10.12, 3.11 < 3.11.4: Debian 12's 3.11.2 among them),
through the same checks here.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections import deque
from pathlib import Path

from ..errors import DataFormatError

STAGING = ".{name}.extracting-{pid}"
HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def archive_kind(path: Path) -> str:
    """``"tar"``, ``"zip"`` or ``"file"`` (anything else is copied as it is)."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    return "file"


def _head(path: Path, n: int = 60) -> str:
    with open(path, "rb") as fh:
        return fh.read(n).decode("latin-1").replace("\n", " ").strip()


class UnsafeMember(Exception):
    """A member a data archive has no business holding (see :func:`_refuse_unsafe`)."""


def _refuse_unsafe(name: str, link: bool, special: bool = False) -> None:
    """The data sets' archives hold plain files and folders: an absolute name, a ``..``
    component, a link or a device member means a wrong or tampered archive, refused by name
    (for zip as for tar) rather than silently rewritten."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeMember(f"member {name!r} has an absolute path")
    if ".." in parts:
        raise UnsafeMember(f"member {name!r} climbs out of the folder ('..')")
    if link:
        raise UnsafeMember(f"member {name!r} is a link")
    if special:
        raise UnsafeMember(f"member {name!r} is a device or FIFO")


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract_member(archive, member, dest: Path) -> None:
    """Write one member (one seam, so tests can interrupt an extraction half-way)."""
    if isinstance(archive, tarfile.TarFile):
        _refuse_unsafe(member.name, member.issym() or member.islnk(), member.isdev())
    else:
        _refuse_unsafe(member.filename, _zip_is_link(member))
    if isinstance(archive, tarfile.TarFile):
        if HAS_DATA_FILTER:
            archive.extract(member, dest, filter="data")
        else:
            archive.extract(_checked_member(member, dest), dest)
    else:
        archive.extract(member, dest)


def _checked_member(member: tarfile.TarInfo, dest: Path) -> tarfile.TarInfo:
    """The "data" filter's rules: leading slashes stripped; names or link targets outside
    ``dest``, absolute link targets, device and FIFO members refused; permissions reduced to
    rwx for the user, r-x for others."""
    root = Path(dest).resolve()

    def inside(path: Path) -> bool:
        return path.resolve() == root or root in path.resolve().parents

    member.name = member.name.lstrip("/" + os.sep)
    target = root / member.name
    if not inside(target):
        raise tarfile.TarError(f"member {member.name!r} would be written outside the extraction folder")
    if member.issym() or member.islnk():
        link = (target.parent if member.issym() else root) / member.linkname
        if os.path.isabs(member.linkname) or not inside(link):
            raise tarfile.TarError(f"member {member.name!r} links to {member.linkname!r}, outside the folder")
    if member.isdev():
        raise tarfile.TarError(f"member {member.name!r} is a device or FIFO, not data")
    member.mode &= 0o755
    return member


def extract(path: Path, dest: Path) -> int:
    """Extract ``path`` into the (new) folder ``dest``; return the number of members written.

    Raises DataFormatError, naming the file, if it is not a readable archive of its kind (a
    truncated download, an HTML page saved under an archive's name) or a member tries to
    leave ``dest``.
    """
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(path)
    count = 0
    try:
        if kind == "tar":
            with tarfile.open(path, "r:*") as tf:
                for member in tf:  # streamed: one pass over a compressed archive
                    _extract_member(tf, member, dest)
                    count += 1
        elif kind == "zip":
            with zipfile.ZipFile(path) as zf:
                for member in zf.infolist():
                    _extract_member(zf, member, dest)
                    count += 1
        else:
            target = dest / path.name
            try:  # same file system: a hard link, no copy of a multi-GB file
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            count = 1
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise DataFormatError(
            f"{path} is not a readable {kind} archive ({type(exc).__name__}: {exc}); it begins with "
            f"{_head(path)!r}. Fetch it again (a truncated download or a web page saved under the "
            "archive's name looks like this)."
        ) from exc
    except UnsafeMember as exc:
        raise DataFormatError(
            f"{path}: {exc}; a data archive holds plain files and folders only, so this one is not the "
            "data set's (or was tampered with): nothing was extracted into the raw folder. Fetch it again "
            "from the source named in docs/data.md."
        ) from None
    if count == 0:
        raise DataFormatError(f"{path} is an empty {kind} archive; fetch it again.")
    return count


def content_root(tree: Path, marker: str, max_depth: int = 3) -> Path | None:
    """The shallowest folder under ``tree`` (``tree`` included) where glob ``marker`` matches.

    Archives differ in how many wrapper folders they put around the data
    (``WHU-CD-256/A/…`` vs ``A/…``); the layout's own marker finds where the data starts.
    """
    queue = deque([(Path(tree), 0)])
    while queue:
        folder, depth = queue.popleft()
        if next(folder.glob(marker), None) is not None:
            return folder
        if depth < max_depth:
            queue.extend((d, depth + 1) for d in sorted(folder.iterdir()) if d.is_dir() and not d.is_symlink())
    return None


def move_into(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``; merge into ``dst`` if it exists (two archives, one tree)."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        return
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and target.is_dir():
            move_into(child, target)
        elif target.exists():
            raise DataFormatError(f"two archives both hold {target.name} at {dst}; cannot merge them.")
        else:
            os.rename(child, target)
    src.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_dir(raw_root: Path, name: str) -> Path:
    """A fresh hidden staging folder beside ``raw_root/name``, after removing the ones that
    killed extractions left behind (those whose process is gone)."""
    raw_root = Path(raw_root)
    raw_root.mkdir(parents=True, exist_ok=True)
    for old in raw_root.glob(STAGING.format(name=name, pid="*")):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    stage = raw_root / STAGING.format(name=name, pid=os.getpid())
    stage.mkdir()
    return stage


def stale_staging(raw_root: Path, name: str) -> list[Path]:
    """Staging folders of ``name`` left in ``raw_root`` (by a running or a killed extraction)."""
    return sorted(Path(raw_root).glob(STAGING.format(name=name, pid="*")))


def publish(tree: Path, target: Path) -> None:
    """Rename the finished ``tree`` to ``target`` in one step (an empty ``target`` is replaced)."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if target.exists():
        raise DataFormatError(f"{target} appeared while extracting; leaving the new tree at {tree}.")
    os.rename(tree, target)


__all__ = ["archive_kind", "content_root", "extract", "move_into", "publish", "stale_staging", "staging_dir"]
