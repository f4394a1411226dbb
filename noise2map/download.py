"""Resumable, verified HTTP downloads (weights now, data archives later).

A download goes to ``<target>.part``; an interrupted one resumes with an HTTP Range request;
failures are retried with exponential back-off; the finished file is checked against its
SHA-256 (or the source's MD5) and only then renamed into place. A mismatch deletes the file
and raises ChecksumError: a corrupt file never sits where a verified one is expected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from noise2map.errors import ChecksumError, Noise2MapError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(Noise2MapError, OSError):
    """A download failed after every retry."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None = None, md5: str | None = None) -> str:
    """Check ``path`` against the given digests; return its SHA-256. Delete it on mismatch."""
    got = file_digest(path, "sha256")
    problems = []
    if sha256 and got != sha256.lower():
        problems.append(f"SHA-256 {got}, expected {sha256}")
    if md5:
        got_md5 = file_digest(path, "md5")
        if got_md5 != md5.lower():
            problems.append(f"MD5 {got_md5}, expected {md5}")
    if problems:
        Path(path).unlink(missing_ok=True)
        raise ChecksumError(f"{path} is corrupt ({'; '.join(problems)}); the file was removed, fetch it again")
    return got


def _fetch_once(url: str, part: Path, timeout: float, progress, headers: dict | None = None) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if headers is not None:
            headers.update({k.lower(): v for k, v in response.headers.items()})
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        with open(part, "ab" if have else "wb") as out:
            bar = progress(total=total, initial=have)
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            finally:
                bar.close()
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"{url}: connection closed at {part.stat().st_size} of {total} bytes")


def _progress(desc: str, quiet: bool):
    from tqdm import tqdm

    return lambda total, initial: tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc,
                                       disable=quiet, leave=False)


def download(url: str, target: str | os.PathLike, sha256: str | None = None, md5: str | None = None,
             retries: int = 4, backoff: float = 1.0, timeout: float = 60.0, quiet: bool = False,
             headers: dict | None = None) -> str:
    """Download ``url`` to ``target`` (resuming ``target.part``) and verify it.

    Returns the file's SHA-256. Raises DownloadError after ``retries`` failed attempts and
    ChecksumError if the finished file does not match (the bad file is removed). ``headers``,
    if given, receives the last response's headers (lower-case names).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    progress = _progress(target.name, quiet)
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout, progress, headers)
            break
        except (urllib.error.URLError, OSError, DownloadError) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code in (401, 403, 404):
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {retries + 1} attempts ({err}); "
                                    f"rerun to resume from {part}") from err
            wait = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.1f s (resuming at %d bytes)", url, err, wait,
                        part.stat().st_size if part.exists() else 0)
            time.sleep(wait)
    digest = verify(part, sha256, md5)
    os.replace(part, target)
    return digest
