"""Downloads: files are checked against their checksums before they are moved into place.

A real HTTP server on loopback stands in for the public hosts (the machines that run the tests
have no general internet access)."""

import hashlib
import http.server
import io
import threading
import zipfile
from dataclasses import replace
from functools import partial

import pytest

from seqrec.data import datasets
from seqrec.data.datasets import DatasetSpec, RemoteFile
from seqrec.errors import DataError


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(monkeypatch, spec):
    monkeypatch.setitem(datasets.DATASETS, spec.name, spec)


def test_download_plain_and_zip_members_with_checksums(server, tmp_path, monkeypatch):
    root, url = server
    seq = b"1 10 11 12\n2 11 12 13\n"
    (root / "Toy.txt").write_bytes(seq)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pack/extra.txt", "hello")
    (root / "pack.zip").write_bytes(buf.getvalue())
    blob = b"hello"
    git_blob = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
    spec = DatasetSpec("toy", "toy", "toy", needs=(("Toy.txt",),), files=(
        RemoteFile("Toy.txt", f"{url}/Toy.txt", sha256=sha(seq)),
        RemoteFile("extra.txt", f"{url}/pack.zip", git_blob=git_blob, member="pack/extra.txt"),
    ), read=lambda p: None)
    register(monkeypatch, spec)
    folder = datasets.download("toy", tmp_path / "data", progress=False)
    assert (folder / "Toy.txt").read_bytes() == seq and (folder / "extra.txt").read_bytes() == blob
    assert dict(datasets.verify(spec, tmp_path / "data")) == {"Toy.txt": "ok", "extra.txt": "ok"}
    assert sorted(p.name for p in folder.iterdir()) == ["Toy.txt", "extra.txt"]  # no temp left


def test_checksum_mismatch_writes_nothing(server, tmp_path, monkeypatch):
    root, url = server
    (root / "Toy.txt").write_bytes(b"tampered\n")
    spec = DatasetSpec("toy", "toy", "toy", needs=(("Toy.txt",),), files=(
        RemoteFile("Toy.txt", f"{url}/Toy.txt", sha256=sha(b"original\n")),), read=lambda p: None)
    register(monkeypatch, spec)
    with pytest.raises(DataError, match="checksum mismatch for Toy.txt"):
        datasets.download("toy", tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "toy" / "Toy.txt").exists()


def test_unreachable_host_says_what_to_put_where(tmp_path, monkeypatch):
    spec = replace(datasets.DATASETS["lastfm"], files=tuple(
        replace(f, url="http://127.0.0.1:9/nothing") for f in datasets.DATASETS["lastfm"].files))
    register(monkeypatch, spec)
    with pytest.raises(DataError) as e:
        datasets.download("lastfm", tmp_path, timeout=2, progress=False)
    assert "could not download" in str(e.value) and str(tmp_path / "lastfm" / "LastFM.txt") in str(e.value)


def test_beauty_id_map_is_derived_after_download(data_dir, tmp_path, monkeypatch, server):
    """Beauty's id -> ASIN map is not published anywhere: it is derived from the two sequence files."""
    root, url = server
    files = []
    for name in ("Beauty.txt", "user_sequence.txt"):
        data = (data_dir / "amazon_beauty" / name).read_bytes()
        (root / name).write_bytes(data)
        files.append(RemoteFile(name, f"{url}/{name}", sha256=sha(data)))
    spec = replace(datasets.DATASETS["beauty"], files=tuple(files))
    register(monkeypatch, spec)
    folder = datasets.download("beauty", tmp_path, progress=False)
    derived = (folder / "Beauty_item_id2asin.tsv").read_text()
    assert derived == (data_dir / "amazon_beauty" / "Beauty_item_id2asin.tsv").read_text()
