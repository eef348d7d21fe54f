"""The OCI layout directory remote: blobs verified and published whole,
tags in index.json, errors for what is not a layout."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from snapws.errors import RemoteError, RemoteNotFoundError
from snapws.ids import BlobDigest
from snapws.remote.base import OCI_MANIFEST
from snapws.remote.dirremote import REF_NAME, DirRemote


def blob(tmp_path: Path, data: bytes) -> tuple[Path, BlobDigest]:
    path = tmp_path / f"src-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path, BlobDigest.of(data)


def test_layout_is_created_by_a_push_only(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with pytest.raises(RemoteError, match="does not exist"):
        DirRemote(layout).get_manifest("x")
    assert DirRemote(layout).list_tags() == []
    r = DirRemote(layout, create=True)
    path, digest = blob(tmp_path, b"hello")
    assert r.put_blob(digest, 5, path) is True
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((layout / "index.json").read_text())["manifests"] == []
    assert (layout / "blobs" / "sha256" / digest.hex).read_bytes() == b"hello"
    assert r.put_blob(digest, 5, path) is False
    assert (r.stats.blobs_sent, r.stats.blobs_skipped) == (1, 1)


def test_refuses_a_directory_that_is_not_a_layout(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("mine")
    path, digest = blob(tmp_path, b"x")
    with pytest.raises(RemoteError, match="neither empty nor an OCI image layout"):
        DirRemote(tmp_path / "stuff", create=True).put_blob(digest, 1, path)
    with pytest.raises(RemoteError, match="not an OCI image layout"):
        DirRemote(tmp_path / "stuff").open_blob(digest, 1)
    assert sorted(p.name for p in (tmp_path / "stuff").iterdir()) == ["file"]


def test_a_blob_that_does_not_match_is_not_published(tmp_path: Path) -> None:
    r = DirRemote(tmp_path / "layout", create=True)
    path, _ = blob(tmp_path, b"actual content")
    wrong = BlobDigest("0" * 64)
    with pytest.raises(RemoteError, match="does not match"):
        r.put_blob(wrong, 14, path)
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []


def test_reading_verifies(tmp_path: Path) -> None:
    r = DirRemote(tmp_path / "layout", create=True)
    path, digest = blob(tmp_path, b"payload")
    r.put_blob(digest, 7, path)
    with DirRemote(tmp_path / "layout").open_blob(digest, 7) as f:
        assert f.read() == b"payload"
    (tmp_path / "layout" / "blobs" / "sha256" / digest.hex).write_bytes(b"paylOad")
    with pytest.raises(RemoteError, match="does not match its digest"):
        r.open_blob(digest, None)
    with pytest.raises(RemoteNotFoundError):
        r.open_blob(BlobDigest("1" * 64), 1)


def test_tags_replace_and_delete(tmp_path: Path) -> None:
    r = DirRemote(tmp_path / "layout", create=True)
    m1, m2 = b'{"schemaVersion":2,"n":1}', b'{"schemaVersion":2,"n":2}'
    d1 = r.put_manifest("main", m1, OCI_MANIFEST)
    r.put_manifest("v1", m1, OCI_MANIFEST)
    got = r.get_manifest("main")
    assert got is not None and (got.data, got.digest, got.media_type) == (m1, d1, OCI_MANIFEST)
    d2 = r.put_manifest("main", m2, OCI_MANIFEST)
    got = r.get_manifest("main")
    assert got is not None and got.digest == d2
    assert r.list_tags() == ["main", "v1"]
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert [m["annotations"][REF_NAME] for m in index["manifests"]] == ["v1", "main"]
    assert r.delete_manifest(d1) is True
    assert r.list_tags() == ["main"] and r.get_manifest("v1") is None
    assert r.get_manifest(str(d1)) is None
    assert r.delete_manifest(d1) is False


def test_concurrent_tag_writers_keep_every_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    DirRemote(layout, create=True).put_manifest("seed", b"{}", OCI_MANIFEST)

    def writer(i: int) -> None:
        r = DirRemote(layout, create=True)
        for j in range(10):
            r.put_manifest(f"t{i}-{j}", f'{{"i":{i},"j":{j}}}'.encode(), OCI_MANIFEST)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(DirRemote(layout).list_tags()) == 41
