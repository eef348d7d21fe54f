"""snapws.remote.blobtransfer on its own, against a real Distribution
registry on 127.0.0.1: a download into any sink, an upload session, the
Range header. RegistryRemote's use of them (resuming through cut
connections, mounts, restarts) is tested in test_registry_client.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from registry import Registry

from snapws.errors import RemoteError, RemoteNotFoundError
from snapws.remote.blobtransfer import Uploader, _range_end, download_blob
from snapws.remote.download import DownloadStopped

from .test_registry_client import blob_file, remote_at


@pytest.mark.parametrize(
    ("header", "end"), [(None, -1), ("", -1), ("0-99", 99), ("bytes=0-4095", 4095), ("0-", -1)]
)
def test_range_end(header: str | None, end: int) -> None:
    assert _range_end(header) == end


def test_an_upload_session_then_a_download_into_a_sink(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    path, digest, data = blob_file(tmp_path, 200_000, seed=21)
    up = Uploader(r.client, r._url("blobs", "uploads", ""), r.scope, r.display, 50_000, r.has_blob)
    up.upload(digest, len(data), path, None, None)
    assert r.has_blob(digest)
    assert r.stats.bytes_sent == len(data)
    got: list[bytes] = []
    seen: list[tuple[int, int | None]] = []
    url = r._url("blobs", str(digest))
    download_blob(
        r.client,
        url,
        digest,
        len(data),
        got.append,
        lambda done, total: seen.append((done, total)),
        scope=r.scope,
        display=r.display,
    )
    assert b"".join(got) == data
    assert seen[-1] == (len(data), len(data))
    with pytest.raises(RemoteError, match="is longer than 1"):
        download_blob(r.client, url, digest, 1, got.append, None, scope=r.scope, display="x")


def test_a_missing_blob_and_a_stopped_download(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    path, digest, data = blob_file(tmp_path, 10_000, seed=22)
    with pytest.raises(RemoteNotFoundError, match="missing"):
        download_blob(
            r.client,
            r._url("blobs", str(digest)),
            digest,
            None,
            bytes,
            None,
            scope=r.scope,
            display="x",
        )
    r.put_blob(digest, len(data), path)
    stop = threading.Event()
    stop.set()
    with pytest.raises(DownloadStopped):
        download_blob(
            r.client,
            r._url("blobs", str(digest)),
            digest,
            None,
            bytes,
            None,
            scope=r.scope,
            display="x",
            stop=stop,
        )
