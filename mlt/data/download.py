"""Download and unpack the official dataset archives: resumable, checksummed, safe to re-run.

``fetch_dataset("voc2007", "data")`` leaves the standard layout ``data/VOCdevkit/VOC2007`` (both
the trainval and the test archive merged into it), ``"voc2012"`` gives ``data/VOCdevkit/VOC2012``
and ``"tiny-imagenet"`` gives ``data/tiny-imagenet-200``; the archives themselves stay in
``data/downloads/`` unless asked to delete them.

Guarantees:

* **Downloads resume.** Bytes go to ``<file>.part``; a later run (or a retry after a dropped
  connection) asks the server for the rest with ``Range: bytes=N-``. A server that ignores the
  range (``200``) is handled by starting again from zero; ``416`` means the part is complete.
* **Nothing unverified is published.** The MD5 (computed while streaming, over the resumed prefix
  too) and the size are checked before ``.part`` is renamed to the final name; on a mismatch the
  ``.part`` is removed and the error names the file and both checksums.
* **Unpacking is safe and atomic per archive.** Members with absolute paths, ``..`` components,
  links leading outside the destination or device files are refused before anything is written.
  Each archive is unpacked into a temporary folder beside its destination, then moved into the
  destination tree (merging with what other archives of the same dataset put there), and only
  then is its marker ``<dest>/.mlt-complete/<archive>.json`` written. An interrupted unpack has no
  marker and is redone on the next run; a completed one is skipped without any network traffic.
* **Mirrors.** ``base_url=`` (or the ``MLT_DOWNLOAD_MIRROR`` environment variable) replaces the
  scheme, host and folder of every archive URL, keeping the file name: the archives can be served
  from a local mirror, an ``http(s)://`` or ``file://`` URL, or a plain local folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from mlt.errors import InputError, MltError

log = logging.getLogger("mlt.data.download")

MIRROR_ENV = "MLT_DOWNLOAD_MIRROR"
"""Environment variable naming a mirror that replaces the origin of every archive URL."""

MARKER = ".mlt-complete"
"""Name of the completion markers: a folder of per-archive markers in the unpack destination,
and a file in the dataset root once every archive of the dataset is in place."""

USER_AGENT = "mlt-download/0.1 (+urllib)"
_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0


class DownloadError(MltError):
    """A download, checksum or unpack failure; the message names the URL or file and the cause."""


@dataclass(frozen=True)
class Archive:
    """One official archive of a dataset.

    ``dest_subdir`` is the dataset root (POSIX-style, relative to the unpack destination) that the
    archive's contents land in, e.g. ``"VOCdevkit/VOC2007"``. ``size`` is in bytes (None: unknown).
    """

    url: str
    filename: str
    md5: str
    size: int | None
    dest_subdir: str


_VOC07 = "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/"
_VOC12 = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"

DATASETS: dict[str, list[Archive]] = {
    "tiny-imagenet": [
        Archive(
            url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            filename="tiny-imagenet-200.zip",
            md5="90528d7ca1a48142e341f4ef8d21d0de",
            size=248_100_043,
            dest_subdir="tiny-imagenet-200",
        ),
    ],
    "voc2007": [
        Archive(
            url=_VOC07 + "VOCtrainval_06-Nov-2007.tar",
            filename="VOCtrainval_06-Nov-2007.tar",
            md5="c52e279531787c972589f7e41ab4ae64",
            size=460_032_000,
            dest_subdir="VOCdevkit/VOC2007",
        ),
        Archive(
            url=_VOC07 + "VOCtest_06-Nov-2007.tar",
            filename="VOCtest_06-Nov-2007.tar",
            md5="b6e924de25625d8de591ea690078ad9f",
            size=451_020_800,
            dest_subdir="VOCdevkit/VOC2007",
        ),
    ],
    "voc2012": [
        Archive(
            url=_VOC12 + "VOCtrainval_11-May-2012.tar",
            filename="VOCtrainval_11-May-2012.tar",
            md5="6cd6e144f989b92b3379bac3b3de84fd",
            size=1_999_639_040,
            dest_subdir="VOCdevkit/VOC2012",
        ),
    ],
}

DESCRIPTIONS: dict[str, str] = {
    "tiny-imagenet": "Tiny ImageNet: 200 ImageNet classes, 64x64 images (a source set)",
    "voc2007": "PASCAL VOC 2007 trainval + test, 20 object classes (a target set)",
    "voc2012": "PASCAL VOC 2012 trainval, objects and actions (a target set)",
}


def dataset_size(name: str) -> int | None:
    """Returns the total size in bytes of a catalogued dataset's archives (None if unknown)."""
    sizes = [a.size for a in _lookup(name)]
    return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


def human_size(n: int | None) -> str:
    """Returns ``n`` bytes in binary units, e.g. ``"237 MiB"`` (``"?"`` for None)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if value >= 10 or unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# URLs and mirrors


def _mirror_base(base_url: str) -> str:
    """Returns the mirror as a URL prefix: a URL is checked, a local folder becomes ``file://``."""
    if "://" not in base_url:
        folder = Path(base_url).expanduser()
        if folder.is_dir():
            return folder.resolve().as_uri()
        raise InputError(
            None, "mirror", base_url, "an http://, https:// or file:// URL, or an existing folder"
        )
    scheme = urllib.parse.urlsplit(base_url).scheme.lower()
    if scheme not in {"http", "https", "ftp", "file"}:
        raise InputError(None, "mirror", base_url, "an http://, https://, ftp:// or file:// URL")
    return base_url


def archive_url(archive: Archive, base_url: str | None = None) -> str:
    """Returns the URL to fetch ``archive`` from.

    ``base_url`` (else ``$MLT_DOWNLOAD_MIRROR``) replaces the scheme, host and folder of the
    official URL and keeps the file name: ``archive_url(a, "http://m/voc")`` is
    ``http://m/voc/VOCtest_06-Nov-2007.tar``. Without either, the official URL.
    """
    base = base_url or os.environ.get(MIRROR_ENV) or None
    if not base:
        return archive.url
    return _mirror_base(base).rstrip("/") + "/" + urllib.parse.quote(archive.filename)


# --------------------------------------------------------------------------------------------
# small helpers


def _say(message: str, progress: bool) -> None:
    """Tells the user (stderr, clear of progress bars) when progress output is on; logs otherwise."""
    if progress:
        tqdm.write(message, file=sys.stderr)
    else:
        log.info(message)


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Returns the hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while buf := f.read(chunk):
            h.update(buf)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``lock_path`` (POSIX flock; a no-op elsewhere).

    Two processes fetching into the same folder (e.g. several workers on one node) then take
    turns instead of writing the same ``.part`` or unpacking the same archive at once.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# download


class _Transient(Exception):
    """A failure worth retrying (connection dropped, timeout, 5xx); carries a short reason."""


class _Restart(Exception):
    """The partial file cannot be resumed; it has been emptied and the next attempt starts at 0."""


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Returns ``(first byte, total size)`` of a Content-Range header (None where absent/``*``)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None, None
    first = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return first, total


class _PartFile:
    """The ``.part`` file and a running MD5 over exactly the bytes it holds."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path = path
        self.chunk = chunk
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.hashed = 0

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self) -> None:
        self.path.write_bytes(b"")
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.hashed = 0

    def sync_hash(self) -> None:
        """Brings the running MD5 in line with the file (hashes a prefix left by an earlier run)."""
        size = self.size()
        if self.hashed == size:
            return
        self.hasher = hashlib.md5(usedforsecurity=False)
        self.hashed = 0
        if size:
            with open(self.path, "rb") as f:
                while buf := f.read(self.chunk):
                    self.hasher.update(buf)
                    self.hashed += len(buf)

    def append(self, fh, buf: bytes) -> None:
        try:
            fh.write(buf)
        except OSError as e:
            raise DownloadError(f"cannot write {self.path}: {e}") from e
        self.hasher.update(buf)
        self.hashed += len(buf)


def _check_disk_space(path: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:  # pragma: no cover
        return
    if needed > free:
        raise DownloadError(
            f"not enough disk space for {path.name} in {path.parent}: "
            f"{human_size(needed)} still to download, {human_size(free)} free"
        )


def _attempt(
    url: str,
    part: _PartFile,
    expected_size: int | None,
    progress: bool,
    timeout: float,
) -> None:
    """One HTTP request: appends what the server sends to the part file, or raises
    :class:`_Transient` / :class:`_Restart` / :class:`DownloadError`. Returns None when the
    server has sent everything it announced."""
    offset = part.size()
    if expected_size is not None and offset > expected_size:
        part.truncate()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - URL is ours
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            if e.code == 416 and offset:
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                if total is None or total == offset:
                    return  # the part already holds the whole file: verify it
                _say(
                    f"{part.path.name}: partial file does not match the server's; starting over",
                    progress,
                )
                part.truncate()
                raise _Restart from None
            if e.code in _TRANSIENT_HTTP:
                raise _Transient(f"HTTP {e.code} {e.reason}") from None
            raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _Transient(f"{e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from None

    with contextlib.closing(response):
        status = getattr(response, "status", None)
        resumed = bool(offset) and status == 206
        if resumed:
            first, total = _parse_content_range(response.headers.get("Content-Range"))
            if first != offset:
                part.truncate()
                raise _Restart
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None

        if total is not None and expected_size is not None and total != expected_size:
            raise DownloadError(
                f"{url}: the server offers {total} bytes but {part.path.name.removesuffix('.part')} "
                f"should be {expected_size} bytes; wrong file or mirror?"
            )
        if resumed:
            part.sync_hash()
        else:
            if offset:
                _say(
                    f"{part.path.name}: the server ignored the resume request; starting from zero",
                    progress,
                )
            part.truncate()
            offset = 0
        if total is not None:
            _check_disk_space(part.path, total - offset)

        received = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.path.name.removesuffix(".part"),
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        with bar, open(part.path, "ab") as fh:
            while True:
                try:
                    buf = response.read(part.chunk)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(
                        f"connection lost after {offset + received} bytes: {e}"
                    ) from None
                if not buf:
                    break
                part.append(fh, buf)
                received += len(buf)
                bar.update(len(buf))
        if total is not None and offset + received < total:
            raise _Transient(f"connection closed after {offset + received} of {total} bytes")


def download(
    url: str,
    dest_file: str | os.PathLike,
    md5: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
    chunk: int = 1 << 20,
    retries: int = 3,
    *,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``url`` to ``dest_file``, resuming and verifying; returns the final path.

    Bytes stream into ``<dest_file>.part``; an existing ``.part`` is resumed with a ``Range``
    request. Dropped connections, timeouts and 5xx answers are retried up to ``retries`` times in
    a row (waits ``backoff * 2**k`` seconds, each retry resumes; an attempt that makes progress
    resets the count). The MD5 (if given) and size (if given) are checked before the ``.part`` is
    renamed to ``dest_file``; a mismatch removes the ``.part`` and raises :class:`DownloadError`.
    An existing ``dest_file`` that passes the checks is kept and nothing is fetched.
    """
    dest = Path(dest_file)
    md5 = md5.strip().lower() if md5 else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(f".{dest.name}.lock")):
        if dest.exists():
            problem = _check_file(dest, md5, expected_size, chunk)
            if problem is None:
                what = "checksum ok" if md5 else "no checksum to verify"
                _say(f"{dest.name}: already downloaded ({what}), skipping", progress)
                return dest
            _say(
                f"{dest.name}: existing file is not the expected one ({problem}); downloading again",
                progress,
            )

        part = _PartFile(dest.with_name(dest.name + ".part"), chunk)
        failures = restarts = 0
        best = part.size()
        while True:
            try:
                _attempt(url, part, expected_size, progress, timeout)
                break
            except _Restart:
                best, restarts = 0, restarts + 1
                if restarts > retries:
                    raise DownloadError(
                        f"cannot download {url}: the server keeps answering the resume request "
                        "with a different range"
                    ) from None
                continue
            except _Transient as e:
                now = part.size()
                if now > best:
                    best, failures = now, 0
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"cannot download {url}: {e} (gave up after {failures} attempts; "
                        f"run again to resume from byte {part.size()})"
                    ) from None
                wait = min(_MAX_BACKOFF_S, backoff * 2 ** (failures - 1))
                _say(f"{dest.name}: {e}; retrying in {wait:.1f}s ({failures}/{retries})", progress)
                time.sleep(wait)

        part.sync_hash()
        size = part.size()
        if expected_size is not None and size != expected_size:
            part.path.unlink(missing_ok=True)
            raise DownloadError(
                f"size mismatch for {dest.name} from {url}: got {size} bytes, expected "
                f"{expected_size}; the partial download was removed"
            )
        actual = part.hasher.hexdigest()
        if md5 is not None and actual != md5:
            part.path.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {dest.name} from {url}: expected md5 {md5}, got {actual}; "
                "the download was removed (nothing published)"
            )
        os.replace(part.path, dest)
    _say(f"{dest.name}: downloaded {human_size(size)}" + (" (md5 ok)" if md5 else ""), progress)
    return dest


def _check_file(path: Path, md5: str | None, size: int | None, chunk: int) -> str | None:
    """Returns None if ``path`` has the expected size and MD5, else what is wrong with it."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"{actual_size} bytes, expected {size}"
    if md5 is not None:
        actual = file_md5(path, chunk)
        if actual != md5:
            return f"md5 {actual}, expected {md5}"
    return None


# --------------------------------------------------------------------------------------------
# extract


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    """Returns the member's path relative to the destination (None for the root itself), or
    raises :class:`DownloadError` for an absolute path or a ``..`` component."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(
            f"refusing to unpack {archive.name}: member {name!r} has an absolute path"
        )
    parts = [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(
            f"refusing to unpack {archive.name}: member {name!r} leads outside the destination ('..')"
        )
    return PurePosixPath(*parts) if parts else None


def _check_link(member: tarfile.TarInfo, rel: PurePosixPath, archive: Path) -> None:
    target = member.linkname
    kind = "symlink" if member.issym() else "hard link"
    if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        raise DownloadError(
            f"refusing to unpack {archive.name}: {kind} {member.name!r} points to the absolute path {target!r}"
        )
    # a symlink is relative to its own folder, a hard link to the archive root
    base = posixpath.dirname(str(rel)) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        raise DownloadError(
            f"refusing to unpack {archive.name}: {kind} {member.name!r} -> {target!r} points outside the destination"
        )


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in tf.getmembers():
        rel = _safe_name(m.name, archive)
        if m.issym() or m.islnk():
            if rel is None:
                raise DownloadError(
                    f"refusing to unpack {archive.name}: link member {m.name!r} has no name"
                )
            _check_link(m, rel, archive)
        elif not (m.isfile() or m.isdir()):
            raise DownloadError(
                f"refusing to unpack {archive.name}: member {m.name!r} is a device or fifo, not a file"
            )
        if rel is not None:
            members.append(m)
    return members


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[str]:
    names = []
    for info in zf.infolist():
        if _safe_name(info.filename, archive) is not None:
            names.append(info.filename)
    return names


def _unpack(archive: Path, into: Path) -> int:
    """Checks every member, then unpacks ``archive`` into the empty folder ``into``; returns the
    number of members."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = _zip_members(zf, archive)
                into.mkdir(parents=True)
                zf.extractall(into, members=names)
                return len(names)
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = _tar_members(tf, archive)
                into.mkdir(parents=True)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(into, members=members)
                return len(members)
    except DownloadError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise DownloadError(f"cannot unpack {archive}: {type(e).__name__}: {e}") from e
    raise DownloadError(f"cannot unpack {archive}: not a zip or tar archive")


def _merge_into(src: Path, dst: Path, archive: Path) -> None:
    """Moves the tree ``src`` into ``dst``: whole subtrees where ``dst`` has nothing yet, file by
    file where both have a folder (files from ``src`` replace files already there)."""
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        s = Path(entry.path)
        d = dst / entry.name
        d_is_dir = d.is_dir() and not d.is_symlink()
        if entry.is_dir(follow_symlinks=False):
            if d_is_dir:
                _merge_into(s, d, archive)
                continue
            if d.exists() or d.is_symlink():
                raise DownloadError(
                    f"cannot unpack {archive.name}: {d} is a file but the archive has a folder there"
                )
        elif d_is_dir:
            raise DownloadError(
                f"cannot unpack {archive.name}: {d} is a folder but the archive has a file there"
            )
        os.replace(s, d)


def extraction_marker(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Returns the path of the marker that says ``archive`` is completely unpacked in ``dest_dir``."""
    return Path(dest_dir) / MARKER / f"{Path(archive).name}.json"


def is_extracted(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> bool:
    """Returns True if ``archive`` was completely unpacked into ``dest_dir`` (its marker exists)."""
    return extraction_marker(archive, dest_dir).is_file()


def extract(
    archive: str | os.PathLike, dest_dir: str | os.PathLike, progress: bool = False
) -> Path:
    """Unpacks a zip or tar (plain, gz, bz2, xz) archive into ``dest_dir``; returns ``dest_dir``.

    Every member is checked first: absolute paths, ``..`` components, links pointing outside
    ``dest_dir`` and device files are refused with a :class:`DownloadError` naming the member,
    before anything is written. The archive is unpacked into a temporary folder inside
    ``dest_dir``, moved into place (merging with trees other archives put there) and then marked
    complete in ``dest_dir/.mlt-complete/``; an archive already marked is skipped.
    """
    archive = Path(archive)
    dest = Path(dest_dir)
    marker = extraction_marker(archive, dest)
    dest.mkdir(parents=True, exist_ok=True)
    with _locked(marker.with_suffix(".lock")):
        if marker.is_file():
            _say(f"{archive.name}: already unpacked in {dest}, skipping", progress)
            return dest
        if not archive.is_file():
            raise DownloadError(f"cannot unpack {archive}: no such file")
        tmp = dest / f".mlt-tmp-{archive.name}"
        if tmp.exists():  # left by an interrupted run
            shutil.rmtree(tmp)
        _say(f"{archive.name}: unpacking into {dest}", progress)
        try:
            count = _unpack(archive, tmp)
            _merge_into(tmp, dest, archive)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _write_json_atomic(
            marker,
            {
                "archive": archive.name,
                "archive_bytes": archive.stat().st_size,
                "members": count,
                "unpacked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    return dest


# --------------------------------------------------------------------------------------------
# datasets


def _lookup(name: str) -> list[Archive]:
    try:
        return DATASETS[name]
    except KeyError:
        raise InputError(
            None, "dataset", name, "one of: " + ", ".join(sorted(DATASETS)), kind="unknown dataset"
        ) from None


def fetch_archives(
    archives: Iterable[Archive],
    dest_root: str | os.PathLike,
    base_url: str | None = None,
    progress: bool = True,
    keep_archives: bool = True,
    *,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``archives`` into ``dest_root/downloads/`` and unpacks them into ``dest_root``;
    returns the dataset root ``dest_root/<dest_subdir>`` shared by the archives.

    Archives already unpacked (marker present and the dataset root there) are skipped without any
    network request, so a second run is free; ``keep_archives=False`` deletes each archive once
    unpacked. When all are in place, ``<dataset root>/.mlt-complete`` lists them.
    """
    archives = list(archives)
    if not archives:
        raise ValueError("fetch_archives needs at least one archive")
    subdirs = {a.dest_subdir for a in archives}
    if len(subdirs) != 1:
        raise ValueError(f"archives of one dataset must share dest_subdir, got {sorted(subdirs)}")
    dest_root = Path(dest_root).expanduser()
    downloads = dest_root / "downloads"
    root = dest_root.joinpath(*PurePosixPath(subdirs.pop()).parts)

    for a in archives:
        path = downloads / a.filename
        if is_extracted(path, dest_root) and root.is_dir():
            _say(f"{a.filename}: already downloaded and unpacked, skipping", progress)
            continue
        extraction_marker(path, dest_root).unlink(missing_ok=True)  # stale: the tree is gone
        download(
            archive_url(a, base_url),
            path,
            md5=a.md5,
            expected_size=a.size,
            progress=progress,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
        )
        extract(path, dest_root, progress=progress)
        if not keep_archives:
            path.unlink(missing_ok=True)

    if not root.is_dir():
        names = ", ".join(a.filename for a in archives)
        raise DownloadError(
            f"unpacking {names} into {dest_root} did not create {root}; "
            "is the mirror serving the right archives?"
        )
    _write_json_atomic(
        root / MARKER,
        {"archives": [{"filename": a.filename, "md5": a.md5, "size": a.size} for a in archives]},
    )
    return root


def fetch_dataset(
    name: str,
    dest_root: str | os.PathLike,
    base_url: str | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Downloads and unpacks the catalogued dataset ``name`` (see :data:`DATASETS`) under
    ``dest_root``; returns its root, e.g. ``dest_root/VOCdevkit/VOC2007``.

    An unknown ``name`` raises an :class:`InputError` listing the valid names. ``base_url`` (or
    ``$MLT_DOWNLOAD_MIRROR``) fetches the archives from a mirror instead of the official hosts.
    """
    archives = _lookup(name)
    return fetch_archives(
        archives, dest_root, base_url=base_url, progress=progress, keep_archives=keep_archives
    )


__all__ = [
    "DATASETS",
    "DESCRIPTIONS",
    "MARKER",
    "MIRROR_ENV",
    "Archive",
    "DownloadError",
    "archive_url",
    "dataset_size",
    "download",
    "extract",
    "extraction_marker",
    "fetch_archives",
    "fetch_dataset",
    "file_md5",
    "human_size",
    "is_extracted",
]
