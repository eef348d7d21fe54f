"""The registry client against a real Distribution registry on 127.0.0.1:
blobs (HEAD, chunked and single uploads, verified downloads), manifests,
tags, deletes, cross-repository mounts, and resuming after cut connections."""

from __future__ import annotations

import hashlib
import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from registry import Proxy, Registry

from snapws.errors import RemoteError, RemoteNotFoundError
from snapws.ids import BlobDigest
from snapws.remote.base import DOCKER_MANIFEST, OCI_MANIFEST
from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url

from .conftest import FAST_RETRY

CHUNK = 64 * 1024


def remote_at(url: str, repo: str = "team/cache", **kw: object) -> RegistryRemote:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("chunk_size", CHUNK)
    return RegistryRemote(parse_remote_url(f"{url}/{repo}", insecure=True), push=True, **kw)  # type: ignore[arg-type]


def blob_file(tmp_path: Path, size: int, seed: int = 0) -> tuple[Path, BlobDigest, bytes]:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = bytes(b ^ (i % 251) for i, b in enumerate(data[:size]))
    path = tmp_path / f"blob-{seed}-{size}"
    path.write_bytes(data)
    return path, BlobDigest.of(data), data


def image_manifest(
    config: BlobDigest, config_size: int, layers: list[tuple[BlobDigest, int]]
) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(config),
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": str(d),
                    "size": s,
                }
                for d, s in layers
            ],
        }
    ).encode()


def test_chunked_upload_then_skip_then_verified_download(
    registry: Registry, tmp_path: Path
) -> None:
    r = remote_at(registry.url)
    path, digest, data = blob_file(tmp_path, 3 * CHUNK + 123)
    assert not r.has_blob(digest)
    assert r.put_blob(digest, len(data), path) is True
    assert r.stats.blobs_sent == 1 and r.stats.bytes_sent == len(data)
    assert registry.has_blob_data(digest)
    # second time: HEAD says it is there, nothing is sent
    assert r.put_blob(digest, len(data), path) is False
    assert r.stats.blobs_skipped == 1 and r.stats.bytes_sent == len(data)
    with r.open_blob(digest, len(data)) as f:
        assert f.read() == data
    assert r.stats.bytes_received == len(data)
    assert r.stats.retries == 0


def test_small_blob_goes_in_one_put(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    path, digest, data = blob_file(tmp_path, 1000)
    before = r.stats.requests
    r.put_blob(digest, len(data), path)
    assert r.stats.requests - before == 3  # HEAD, POST, PUT ?digest=
    assert registry.has_blob_data(digest)


def test_empty_blob(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    path, digest, _ = blob_file(tmp_path, 0)
    assert r.put_blob(digest, 0, path)
    with r.open_blob(digest, 0) as f:
        assert f.read() == b""


def test_manifests_tags_and_delete(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    cpath, cdigest, cdata = blob_file(tmp_path, 100, seed=1)
    lpath, ldigest, ldata = blob_file(tmp_path, 5000, seed=2)
    r.put_blob(cdigest, len(cdata), cpath)
    r.put_blob(ldigest, len(ldata), lpath)
    manifest = image_manifest(cdigest, len(cdata), [(ldigest, len(ldata))])
    digest = r.put_manifest("v1", manifest, OCI_MANIFEST)
    assert digest == BlobDigest.of(manifest)
    r.put_manifest("v2", manifest, OCI_MANIFEST)
    got = r.get_manifest("v1")
    assert got is not None and (got.data, got.media_type, got.digest) == (
        manifest,
        OCI_MANIFEST,
        digest,
    )
    by_digest = r.get_manifest(str(digest))
    assert by_digest is not None and by_digest.data == manifest
    assert r.get_manifest("nope") is None
    assert r.list_tags() == ["v1", "v2"]
    assert registry.tags("team/cache") == ["v1", "v2"]
    assert r.delete_manifest(digest) is True
    assert r.get_manifest("v1") is None and r.list_tags() == []
    assert r.delete_manifest(digest) is False


def test_docker_manifest_type_is_accepted(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    cpath, cdigest, cdata = blob_file(tmp_path, 100, seed=3)
    r.put_blob(cdigest, len(cdata), cpath)
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": str(cdigest),
            "size": len(cdata),
        },
        "layers": [],
    }
    r.put_manifest("docker", json.dumps(doc).encode(), DOCKER_MANIFEST)
    got = r.get_manifest("docker")
    assert got is not None and got.media_type == DOCKER_MANIFEST


class PagingProxy(Proxy):
    """Answers tag lists page by page (``n``, ``last``, ``Link: rel="next"``),
    as registries that paginate do (Distribution 2.8 itself returns them all)."""

    def before(self, handler: Any) -> bool:
        parts = urlsplit(handler.path)
        if not parts.path.endswith("/tags/list"):
            return False
        query = parse_qs(parts.query)
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port)
        conn.request("GET", parts.path)
        tags = sorted(json.loads(conn.getresponse().read())["tags"])
        conn.close()
        n = int(query.get("n", ["100"])[0])
        last = query.get("last", [""])[0]
        page = [x for x in tags if x > last][:n]
        body = json.dumps({"name": "team/cache", "tags": page}).encode()
        handler.send_response_only(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if page and page[-1] != tags[-1]:
            nxt = urlencode({"n": n, "last": page[-1]})
            handler.send_header("Link", f'<{parts.path}?{nxt}>; rel="next"')
        handler.end_headers()
        handler.wfile.write(body)
        return True


def test_tag_list_follows_link_pages(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    cpath, cdigest, cdata = blob_file(tmp_path, 10, seed=4)
    r.put_blob(cdigest, len(cdata), cpath)
    manifest = image_manifest(cdigest, len(cdata), [])
    names = [f"t{i:02d}" for i in range(7)]
    for name in names:
        r.put_manifest(name, manifest, OCI_MANIFEST)
    with PagingProxy(registry.port) as proxy:
        paged = remote_at(proxy.url)
        assert paged.list_tags(page_size=3) == names
    assert [m for m, p in proxy.seen] == ["GET"] * 3  # pages of 3 + 3 + 1


def test_unknown_repository_has_no_tags(registry: Registry) -> None:
    assert remote_at(registry.url, "never/pushed").list_tags() == []


def test_cross_repository_mount(registry: Registry, tmp_path: Path) -> None:
    path, digest, data = blob_file(tmp_path, 2 * CHUNK, seed=5)
    remote_at(registry.url, "team/one").put_blob(digest, len(data), path)
    two = remote_at(registry.url, "team/two", mount_from=["team/elsewhere", "team/one"])
    assert two.put_blob(digest, len(data), path) is False
    assert two.stats.blobs_mounted == 1 and two.stats.bytes_sent == 0
    assert str(digest) in registry.linked_layers("team/two")
    with two.open_blob(digest, len(data)) as f:
        assert f.read() == data
    # not in any listed repository: the session the last mount opened takes the upload
    p2, d2, data2 = blob_file(tmp_path, 100, seed=6)
    assert two.put_blob(d2, len(data2), p2) is True
    assert two.stats.blobs_sent == 1


def test_missing_and_corrupt_blobs(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url)
    path, digest, data = blob_file(tmp_path, 5000, seed=7)
    with pytest.raises(RemoteNotFoundError):
        r.open_blob(digest, len(data))
    r.put_blob(digest, len(data), path)
    hexd = digest.hex
    stored = registry.data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other content
    with pytest.raises(RemoteError, match="does not match its digest"):
        r.open_blob(digest, len(data))


def test_download_resumes_by_range(registry: Registry, tmp_path: Path) -> None:
    path, digest, data = blob_file(tmp_path, 300_000, seed=8)
    remote_at(registry.url).put_blob(digest, len(data), path)
    cuts = iter([100_000, None])

    def cut_response(method: str, target: str) -> int | None:
        return next(cuts, None) if method == "GET" and "/blobs/sha256:" in target else None

    with Proxy(registry.port, cut_response=cut_response) as proxy:
        r = remote_at(proxy.url)
        with r.open_blob(digest, len(data)) as f:
            assert f.read() == data
    assert proxy.cuts == 1
    assert r.stats.resumed == 1 and r.stats.retries == 1
    assert r.stats.bytes_received == len(data)  # the first 100,000 bytes were not fetched again


def test_streamed_download_reads_while_it_arrives_and_resumes(
    registry: Registry, tmp_path: Path
) -> None:
    """stream_blob gives the same bytes as open_blob, through a cut
    connection (resumed by Range, nothing fetched twice), and writes no
    file: the bytes go to the reader in memory."""
    path, digest, data = blob_file(tmp_path, 3_000_000, seed=12)
    remote_at(registry.url).put_blob(digest, len(data), path)
    cuts = iter([1_000_000, None])

    def cut_response(method: str, target: str) -> int | None:
        return next(cuts, None) if method == "GET" and "/blobs/sha256:" in target else None

    tmp = tmp_path / "downloads"
    tmp.mkdir()
    with Proxy(registry.port, cut_response=cut_response) as proxy:
        r = remote_at(proxy.url, tmpdir=tmp)
        with r.stream_blob(digest, len(data)) as f:
            got = [f.read(100_000)]
            assert list(tmp.iterdir()) == []  # nothing on disk, even while open
            while block := f.read(777_777):
                got.append(block)
        assert b"".join(got) == data
    assert proxy.cuts == 1
    assert r.stats.resumed == 1 and r.stats.bytes_received == len(data)
    assert r.stats.blobs_received == 1
    assert list(tmp.iterdir()) == []


def test_streamed_download_checks_the_digest_at_the_end(registry: Registry, tmp_path: Path) -> None:
    r = remote_at(registry.url, tmpdir=tmp_path)
    path, digest, data = blob_file(tmp_path, 200_000, seed=13)
    with pytest.raises(RemoteNotFoundError):
        r.stream_blob(digest, len(data))  # missing: at once
    r.put_blob(digest, len(data), path)
    hexd = digest.hex
    stored = registry.data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with r.stream_blob(digest, len(data)) as f:
        first = f.read(1000)  # bytes that arrived are readable ...
        assert first == data[:1000]
        with pytest.raises(RemoteError, match="does not match its digest"):
            f.read()  # ... but the end is never reported for a blob that does not match
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("download-")] == []


def test_upload_resumes_after_a_dropped_chunk(registry: Registry, tmp_path: Path) -> None:
    """The connection drops before the registry saw the 3rd chunk: the
    client asks the upload's status and sends from there."""
    path, digest, data = blob_file(tmp_path, 5 * CHUNK, seed=9)
    patches = 0

    def cut(method: str, target: str, length: int) -> int | None:
        nonlocal patches
        if method == "PATCH":
            patches += 1
            return 0 if patches == 3 else None
        return None

    with Proxy(registry.port, cut=cut) as proxy:
        r = remote_at(proxy.url)
        assert r.put_blob(digest, len(data), path)
    assert proxy.cuts == 1
    assert (r.stats.resumed, r.stats.restarted) == (1, 0)
    assert r.stats.bytes_sent == len(data) + CHUNK  # the dropped chunk went twice
    with remote_at(registry.url).open_blob(digest, len(data)) as f:
        assert f.read() == data


def test_upload_begins_again_when_the_registry_cannot_resume(
    registry: Registry, tmp_path: Path
) -> None:
    """Half a chunk reached the registry before the cut: Distribution 2.8
    then refuses the old session, and the upload starts over (once)."""
    path, digest, data = blob_file(tmp_path, 4 * CHUNK, seed=10)
    patches = 0

    def cut(method: str, target: str, length: int) -> int | None:
        nonlocal patches
        if method == "PATCH":
            patches += 1
            return length // 2 if patches == 2 else None
        return None

    with Proxy(registry.port, cut=cut, forward_partial=True) as proxy:
        r = remote_at(proxy.url)
        assert r.put_blob(digest, len(data), path)
    assert proxy.cuts == 1
    assert r.stats.restarted == 1
    with remote_at(registry.url).open_blob(digest, len(data)) as f:
        assert f.read() == data


def test_gives_up_after_bounded_retries(registry: Registry, tmp_path: Path) -> None:
    path, digest, data = blob_file(tmp_path, 3 * CHUNK, seed=11)

    def cut(method: str, target: str, length: int) -> int | None:
        return 0 if method == "PATCH" else None

    with Proxy(registry.port, cut=cut) as proxy:
        r = remote_at(proxy.url)
        with pytest.raises(RemoteError, match=r"cannot upload .* \(after 4 tries\)"):
            r.put_blob(digest, len(data), path)
    assert proxy.cuts == 4
    assert not registry.has_blob_data(digest)


def test_unreachable_registry(tmp_path: Path) -> None:
    from registry import free_port

    r = remote_at(f"127.0.0.1:{free_port()}")
    with pytest.raises(RemoteError, match=r"cannot reach .*after 4 tries"):
        r.has_blob(BlobDigest("0" * 64))
    assert r.stats.retries == 3


def test_https_to_a_plain_http_registry_hints_insecure(registry: Registry) -> None:
    r = RegistryRemote(parse_remote_url(f"{registry.url}/x"), retry=FAST_RETRY)
    with pytest.raises(RemoteError) as e:
        r.list_tags()
    assert "--insecure" in e.value.hint
