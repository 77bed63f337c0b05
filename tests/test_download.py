"""Dataset download and unpack, against a local HTTP server that can resume, drop and ignore ranges."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from mlt.cli.data_download import download as download_cmd
from mlt.data import download as dl
from mlt.data.download import (
    MARKER,
    Archive,
    DownloadError,
    archive_url,
    download,
    extract,
    extraction_marker,
    fetch_archives,
    fetch_dataset,
)
from mlt.errors import MltError

# --------------------------------------------------------------------------------------------
# the server


@dataclass
class ServerState:
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    bytes_sent: int = 0
    drop_after: int | None = None  # send only this many body bytes of the next response, once
    ignore_range: bool = False
    fail_status: int | None = None  # answer the next request with this HTTP status, once
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files from ``server.state.root`` with ``Range: bytes=N-`` support."""

    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence the access log
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        state: ServerState = self.server.state
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
        with state.lock:
            fail, state.fail_status = state.fail_status, None
        if fail is not None:
            self.send_error(fail)
            return
        path = state.root / unquote(self.path.lstrip("/"))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start, status = 0, 200
        if rng and not state.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        with state.lock:
            limit, state.drop_after = state.drop_after, None
        if limit is not None:
            body = body[:limit]
        # Counted before writing: the client may finish (and the test assert) before this
        # handler thread runs again after the write.
        with state.lock:
            state.bytes_sent += len(body)
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@dataclass
class Server:
    url: str
    state: ServerState

    @property
    def root(self) -> Path:
        return self.state.root


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.state = ServerState(root)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/mirror", httpd.state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


# --------------------------------------------------------------------------------------------
# test archives


def _noise(n: int, seed: int) -> bytes:
    out = bytearray()
    block = seed.to_bytes(8, "little")
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        dirs = sorted({str(Path(n).parent) for n in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TINY_FILES = {
    "tiny-imagenet-200/wnids.txt": b"n01443537\nn01629819\n",
    "tiny-imagenet-200/words.txt": b"n01443537\tgoldfish\nn01629819\tEuropean fire salamander\n",
    "tiny-imagenet-200/train/n01443537/images/n01443537_0.JPEG": _noise(150_000, 1),
    "tiny-imagenet-200/train/n01443537/n01443537_boxes.txt": b"n01443537_0.JPEG\t0\t0\t63\t63\n",
    "tiny-imagenet-200/val/val_annotations.txt": b"val_0.JPEG\tn01443537\t0\t0\t63\t63\n",
    "tiny-imagenet-200/val/images/val_0.JPEG": _noise(50_000, 2),
}

VOC_TRAINVAL = {
    "VOCdevkit/VOC2007/Annotations/000005.xml": b"<annotation><filename>000005.jpg</filename></annotation>",
    "VOCdevkit/VOC2007/JPEGImages/000005.jpg": _noise(60_000, 3),
    "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt": b"000005\n",
    "VOCdevkit/VOC2007/ImageSets/Main/cat_trainval.txt": b"000005 -1\n",
}
VOC_TEST = {
    "VOCdevkit/VOC2007/Annotations/000001.xml": b"<annotation><filename>000001.jpg</filename></annotation>",
    "VOCdevkit/VOC2007/JPEGImages/000001.jpg": _noise(40_000, 4),
    "VOCdevkit/VOC2007/ImageSets/Main/test.txt": b"000001\n",
    "VOCdevkit/VOC2007/ImageSets/Main/cat_test.txt": b"000001 1\n",
}


def _publish(server: Server, filename: str, data: bytes, subdir: str) -> Archive:
    """Puts ``data`` on the server and returns an Archive whose official URL is elsewhere."""
    (server.root / "mirror").mkdir(exist_ok=True)
    (server.root / "mirror" / filename).write_bytes(data)
    return Archive(
        url=f"http://official.invalid/some/dir/{filename}",
        filename=filename,
        md5=_md5(data),
        size=len(data),
        dest_subdir=subdir,
    )


@pytest.fixture
def tiny(server):
    data = _zip_bytes(TINY_FILES)
    return data, _publish(server, "tiny-imagenet-200.zip", data, "tiny-imagenet-200")


@pytest.fixture
def voc2007(server):
    return [
        _publish(
            server, "VOCtrainval_06-Nov-2007.tar", _tar_bytes(VOC_TRAINVAL), "VOCdevkit/VOC2007"
        ),
        _publish(server, "VOCtest_06-Nov-2007.tar", _tar_bytes(VOC_TEST), "VOCdevkit/VOC2007"),
    ]


FAST = {"progress": False, "backoff": 0.0, "timeout": 5.0}


# --------------------------------------------------------------------------------------------
# catalogue and mirrors


def test_catalogue_is_consistent():
    assert set(dl.DATASETS) == {"tiny-imagenet", "voc2007", "voc2012"}
    for name, archives in dl.DATASETS.items():
        assert name in dl.DESCRIPTIONS
        for a in archives:
            assert re.fullmatch(r"[0-9a-f]{32}", a.md5)
            assert a.url.endswith("/" + a.filename)
            assert a.size and a.size > 0
    assert [a.dest_subdir for a in dl.DATASETS["voc2007"]] == ["VOCdevkit/VOC2007"] * 2
    assert dl.DATASETS["voc2012"][0].dest_subdir == "VOCdevkit/VOC2012"
    assert dl.DATASETS["tiny-imagenet"][0].dest_subdir == "tiny-imagenet-200"


def test_archive_url_mirror(monkeypatch, tmp_path):
    a = dl.DATASETS["voc2007"][1]
    assert archive_url(a) == a.url
    assert archive_url(a, "http://m.example/voc/") == "http://m.example/voc/VOCtest_06-Nov-2007.tar"
    monkeypatch.setenv(dl.MIRROR_ENV, "https://env.example/data")
    assert archive_url(a) == "https://env.example/data/VOCtest_06-Nov-2007.tar"
    assert archive_url(a, "http://arg.example") == "http://arg.example/VOCtest_06-Nov-2007.tar"
    assert archive_url(a, str(tmp_path)) == tmp_path.resolve().as_uri() + "/VOCtest_06-Nov-2007.tar"
    with pytest.raises(MltError, match="mirror"):
        archive_url(a, str(tmp_path / "missing"))
    with pytest.raises(MltError, match="mirror"):
        archive_url(a, "gopher://old.example/")


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(MltError) as err:
        fetch_dataset("imagenet-22k", tmp_path)
    for name in ("tiny-imagenet", "voc2007", "voc2012", "imagenet-22k"):
        assert name in str(err.value)


# --------------------------------------------------------------------------------------------
# download


def test_full_fetch_via_mirror(server, tiny, tmp_path):
    data, archive = tiny
    root = fetch_archives([archive], tmp_path / "data", base_url=server.url, **FAST)
    assert root == tmp_path / "data" / "tiny-imagenet-200"
    for name, content in TINY_FILES.items():
        assert (tmp_path / "data" / name).read_bytes() == content
    assert (tmp_path / "data" / "downloads" / archive.filename).read_bytes() == data
    assert not list((tmp_path / "data" / "downloads").glob("*.part"))
    assert (root / MARKER).is_file()
    assert extraction_marker(archive.filename, tmp_path / "data").is_file()
    assert not list((tmp_path / "data").glob(".mlt-tmp-*/"))
    assert server.state.requests == [(f"/mirror/{archive.filename}", None)]


def test_progress_output_and_skip_message(server, tiny, tmp_path, capsys):
    data, archive = tiny
    url = f"{server.url}/{archive.filename}"
    download(
        url, tmp_path / archive.filename, md5=archive.md5, expected_size=len(data), progress=True
    )
    download(url, tmp_path / archive.filename, md5=archive.md5, progress=True)
    err = capsys.readouterr().err
    assert "already downloaded (checksum ok)" in err
    assert len(server.state.requests) == 1


def test_resume_from_existing_part(server, tiny, tmp_path):
    data, archive = tiny
    dest = tmp_path / archive.filename
    have = 70_000
    Path(str(dest) + ".part").write_bytes(data[:have])
    out = download(
        f"{server.url}/{archive.filename}",
        dest,
        md5=archive.md5,
        expected_size=len(data),
        chunk=4096,
        **FAST,
    )
    assert out == dest and dest.read_bytes() == data
    assert server.state.requests == [(f"/mirror/{archive.filename}", f"bytes={have}-")]
    assert server.state.bytes_sent == len(data) - have
    assert not Path(str(dest) + ".part").exists()


def test_dropped_connection_is_retried_and_resumed(server, tiny, tmp_path):
    data, archive = tiny
    server.state.drop_after = 30_000
    dest = tmp_path / archive.filename
    download(
        f"{server.url}/{archive.filename}",
        dest,
        md5=archive.md5,
        expected_size=len(data),
        chunk=4096,
        retries=2,
        **FAST,
    )
    assert dest.read_bytes() == data
    assert [r for _, r in server.state.requests] == [None, "bytes=30000-"]
    assert server.state.bytes_sent == len(data)


def test_server_error_is_retried(server, tiny, tmp_path):
    data, archive = tiny
    server.state.fail_status = 503
    dest = tmp_path / archive.filename
    download(f"{server.url}/{archive.filename}", dest, md5=archive.md5, retries=1, **FAST)
    assert dest.read_bytes() == data
    assert len(server.state.requests) == 2


def test_concurrent_downloads_of_one_file_take_turns(server, tiny, tmp_path):
    data, archive = tiny
    dest = tmp_path / archive.filename
    errors = []

    def worker():
        try:
            download(f"{server.url}/{archive.filename}", dest, md5=archive.md5, chunk=1024, **FAST)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and dest.read_bytes() == data
    assert len(server.state.requests) == 1


def test_local_folder_mirror(server, voc2007, tmp_path):
    root = fetch_archives(voc2007, tmp_path / "data", base_url=str(server.root / "mirror"), **FAST)
    assert (root / "ImageSets" / "Main" / "test.txt").is_file()
    assert server.state.requests == []


def test_server_ignoring_range_restarts_from_zero(server, tiny, tmp_path):
    data, archive = tiny
    server.state.ignore_range = True
    dest = tmp_path / archive.filename
    Path(str(dest) + ".part").write_bytes(b"stale bytes that must not survive")
    download(f"{server.url}/{archive.filename}", dest, md5=archive.md5, **FAST)
    assert dest.read_bytes() == data
    assert [r for _, r in server.state.requests] == ["bytes=33-"]
    assert server.state.bytes_sent == len(data)


def test_complete_part_gets_416_and_is_published(server, tiny, tmp_path):
    data, archive = tiny
    dest = tmp_path / archive.filename
    Path(str(dest) + ".part").write_bytes(data)
    download(
        f"{server.url}/{archive.filename}", dest, md5=archive.md5, expected_size=len(data), **FAST
    )
    assert dest.read_bytes() == data
    assert server.state.bytes_sent == 0
    assert [r for _, r in server.state.requests] == [f"bytes={len(data)}-"]


def test_checksum_mismatch_publishes_nothing(server, tiny, tmp_path):
    data, archive = tiny
    dest = tmp_path / archive.filename
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        download(f"{server.url}/{archive.filename}", dest, md5=wrong, **FAST)
    msg = str(err.value)
    assert archive.filename in msg and wrong in msg and _md5(data) in msg
    assert not dest.exists()
    assert not Path(str(dest) + ".part").exists()


def test_checksum_mismatch_in_fetch_is_an_mlt_error(server, tiny, tmp_path):
    _, archive = tiny
    bad = Archive(archive.url, archive.filename, "f" * 32, archive.size, archive.dest_subdir)
    with pytest.raises(MltError, match="checksum mismatch"):
        fetch_archives([bad], tmp_path / "data", base_url=server.url, **FAST)
    assert not (tmp_path / "data" / "downloads" / archive.filename).exists()
    assert not (tmp_path / "data" / "tiny-imagenet-200").exists()


def test_wrong_size_is_refused_before_downloading(server, tiny, tmp_path):
    data, archive = tiny
    with pytest.raises(DownloadError, match=f"{len(data)} bytes"):
        download(
            f"{server.url}/{archive.filename}",
            tmp_path / "x.zip",
            expected_size=len(data) + 1,
            **FAST,
        )
    assert not (tmp_path / "x.zip").exists()
    assert not (tmp_path / "x.zip.part").exists()


def test_http_404_names_the_url(server, tmp_path):
    url = f"{server.url}/nothing-here.tar"
    with pytest.raises(DownloadError, match=re.escape(url) + ".*404"):
        download(url, tmp_path / "nothing-here.tar", **FAST)
    assert len(server.state.requests) == 1  # a 404 is not retried


def test_connection_refused_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.tar"
    with pytest.raises(DownloadError, match=re.escape(url) + ".*refused.*2 attempts"):
        download(url, tmp_path / "a.tar", retries=1, **FAST)
    assert not (tmp_path / "a.tar").exists()


def test_existing_bad_final_file_is_replaced(server, tiny, tmp_path):
    data, archive = tiny
    dest = tmp_path / archive.filename
    dest.write_bytes(b"corrupt")
    download(f"{server.url}/{archive.filename}", dest, md5=archive.md5, **FAST)
    assert dest.read_bytes() == data


# --------------------------------------------------------------------------------------------
# extract


def _evil_tar(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("VOCdevkit/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo("VOCdevkit/../../evil")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tmp/evil")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            info = tarfile.TarInfo("VOCdevkit/evil")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../etc"
            tf.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("VOCdevkit/evil")
            info.type = tarfile.LNKTYPE
            info.linkname = "../outside"
            tf.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("VOCdevkit/evil")
            info.type = tarfile.CHRTYPE
            tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device", "zip"])
def test_unsafe_members_are_refused(tmp_path, kind):
    archive = tmp_path / ("evil.zip" if kind == "zip" else "evil.tar")
    if kind == "zip":
        archive.write_bytes(_zip_bytes({"tiny-imagenet-200/ok.txt": b"ok", "../evil": b"evil"}))
    else:
        archive.write_bytes(_evil_tar(kind))
    dest = tmp_path / "a" / "b"
    with pytest.raises(DownloadError) as err:
        extract(archive, dest)
    assert "evil" in str(err.value) and archive.name in str(err.value)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (dest / "VOCdevkit").exists() and not (dest / "tiny-imagenet-200").exists()
    assert not extraction_marker(archive, dest).exists()


def test_extract_tar_gz_and_inner_links(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg/data/a.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("pkg/latest")
        link.type = tarfile.SYMTYPE
        link.linkname = "data/a.txt"
        tf.addfile(link)
    archive = tmp_path / "pkg.tar.gz"
    archive.write_bytes(buf.getvalue())
    assert extract(archive, tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "pkg" / "latest").read_text() == "a"


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"<html>mirror error page</html>")
    with pytest.raises(DownloadError, match="bogus.tar.*not a zip or tar"):
        extract(bogus, tmp_path / "out")


def test_interrupted_unpack_is_redone(tmp_path):
    archive = tmp_path / "t.tar"
    archive.write_bytes(_tar_bytes(VOC_TEST))
    dest = tmp_path / "data"
    # what an interrupted run leaves: a temp folder and part of the tree, but no marker
    (dest / f".mlt-tmp-{archive.name}" / "junk").mkdir(parents=True)
    (dest / "VOCdevkit" / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (dest / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg").write_bytes(b"trunc")
    extract(archive, dest)
    assert (dest / "VOCdevkit/VOC2007/JPEGImages/000001.jpg").read_bytes() == VOC_TEST[
        "VOCdevkit/VOC2007/JPEGImages/000001.jpg"
    ]
    assert not (dest / f".mlt-tmp-{archive.name}").exists()
    assert extraction_marker(archive, dest).is_file()
    # a second call is a no-op, even with the archive gone
    archive.unlink()
    extract(archive, dest)


# --------------------------------------------------------------------------------------------
# datasets


def test_two_voc_tars_merge_into_one_tree(server, voc2007, tmp_path):
    root = fetch_archives(voc2007, tmp_path / "data", base_url=server.url, **FAST)
    assert root == tmp_path / "data" / "VOCdevkit" / "VOC2007"
    for name, content in {**VOC_TRAINVAL, **VOC_TEST}.items():
        assert (tmp_path / "data" / name).read_bytes() == content
    assert sorted(p.name for p in (root / "ImageSets" / "Main").iterdir()) == [
        "cat_test.txt",
        "cat_trainval.txt",
        "test.txt",
        "trainval.txt",
    ]
    for a in voc2007:
        assert extraction_marker(a.filename, tmp_path / "data").is_file()


@pytest.mark.parametrize("keep", [True, False])
def test_second_run_makes_no_requests(server, voc2007, tmp_path, keep):
    dest = tmp_path / "data"
    fetch_archives(voc2007, dest, base_url=server.url, keep_archives=keep, **FAST)
    seen = len(server.state.requests)
    assert seen == 2
    assert all((dest / "downloads" / a.filename).exists() == keep for a in voc2007)
    root = fetch_archives(voc2007, dest, base_url=server.url, keep_archives=keep, **FAST)
    assert len(server.state.requests) == seen
    assert (root / "JPEGImages" / "000001.jpg").is_file()


def test_deleted_tree_is_fetched_again(server, tiny, tmp_path):
    import shutil

    _, archive = tiny
    dest = tmp_path / "data"
    root = fetch_archives([archive], dest, base_url=server.url, **FAST)
    shutil.rmtree(root)
    fetch_archives([archive], dest, base_url=server.url, **FAST)
    assert (root / "wnids.txt").is_file()
    assert len(server.state.requests) == 1  # the kept archive was re-verified, not re-downloaded


def test_mirror_with_wrong_layout_is_reported(server, tmp_path):
    data = _tar_bytes({"something/else.txt": b"x"})
    archive = _publish(server, "VOCtrainval_11-May-2012.tar", data, "VOCdevkit/VOC2012")
    with pytest.raises(DownloadError, match="did not create"):
        fetch_archives([archive], tmp_path / "data", base_url=server.url, **FAST)


def test_fetch_dataset_uses_env_mirror(server, tiny, tmp_path, monkeypatch):
    _, archive = tiny
    monkeypatch.setitem(dl.DATASETS, "tiny-imagenet", [archive])
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    root = fetch_dataset("tiny-imagenet", tmp_path / "data", progress=False)
    assert (root / "wnids.txt").read_bytes() == TINY_FILES["tiny-imagenet-200/wnids.txt"]


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_download_with_mirror(server, voc2007, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.DATASETS, "voc2007", voc2007)
    dest = tmp_path / "data"
    args = ["voc2007", "--dest", str(dest), "--mirror", server.url, "--no-progress"]
    result = CliRunner().invoke(download_cmd, [*args, "--delete-archives"])
    assert result.exit_code == 0, result.output
    root = dest / "VOCdevkit" / "VOC2007"
    assert str(root) in result.output
    assert (root / "ImageSets" / "Main" / "test.txt").is_file()
    assert not (dest / "downloads" / voc2007[0].filename).exists()
    again = CliRunner().invoke(download_cmd, args)
    assert again.exit_code == 0 and len(server.state.requests) == 2


def test_cli_errors_are_mlt_errors(server, voc2007, tmp_path, monkeypatch):
    a = voc2007[0]
    monkeypatch.setitem(
        dl.DATASETS, "voc2007", [Archive(a.url, a.filename, "0" * 32, a.size, a.dest_subdir)]
    )
    result = CliRunner().invoke(
        download_cmd, ["voc2007", "--dest", str(tmp_path), "--mirror", server.url, "--no-progress"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, MltError)
    assert "checksum mismatch" in str(result.exception)


def test_cli_help_lists_datasets():
    result = CliRunner().invoke(download_cmd, ["--help"])
    assert result.exit_code == 0
    for name in ("tiny-imagenet", "voc2007", "voc2012", "resume", "MD5", "--mirror"):
        assert name in result.output


def test_cli_rejects_unknown_dataset():
    result = CliRunner().invoke(download_cmd, ["coco"])
    assert result.exit_code == 2 and "coco" in result.output
