"""A repository of an OCI registry as a remote (the OCI distribution spec,
``/v2/`` API): manifests by tag or digest, tags, blobs with
HEAD-before-upload and cross-repository mounts. The blob bytes themselves
travel by :mod:`snapws.remote.blobtransfer`: chunked uploads that resume
after a dropped connection, downloads verified against their sha256 that
resume by Range.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import quote, urlencode, urljoin

from snapws.errors import AuthError, RemoteError
from snapws.ids import BlobDigest, is_blob_digest
from snapws.remote.base import (
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    ByteProgress,
    DownloadedBlob,
    Manifest,
    TransferStats,
)
from snapws.remote.blobtransfer import Uploader, download_blob
from snapws.remote.download import StreamingBlob
from snapws.remote.http import HttpClient, RetryPolicy
from snapws.remote.url import RemoteSpec

DEFAULT_CHUNK = 8 << 20
MAX_MANIFEST = 4 << 20


class RegistryRemote:
    """One repository of a registry (see :class:`snapws.remote.base.Remote`).

    ``push``: ask for push rights up front (one token for the whole push).
    ``mount_from``: other repositories of the same registry to mount blobs
    from instead of uploading them. ``tmpdir``: where :meth:`open_blob`
    keeps downloads (private files, deleted when closed; :meth:`stream_blob`
    keeps nothing)."""

    def __init__(
        self,
        spec: RemoteSpec,
        *,
        push: bool = False,
        chunk_size: int = DEFAULT_CHUNK,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        mount_from: Sequence[str] = (),
        tmpdir: Path | None = None,
        env: Mapping[str, str] | None = None,
        client: HttpClient | None = None,
    ) -> None:
        assert spec.kind == "registry"
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.spec = spec
        self.repository = spec.repository
        self.stats = TransferStats()
        self.client = client or HttpClient(
            spec.api_host, spec.insecure, timeout, retry, self.stats, env=env
        )
        self.client.stats = self.stats
        self.retry = self.client.retry
        self.chunk_size = chunk_size
        self.mount_from = [r for r in mount_from if r != spec.repository]
        self.tmpdir = tmpdir
        self.scope = f"repository:{self.repository}:{'pull,push' if push else 'pull'}"
        self._uploads = Uploader(
            self.client,
            self._url("blobs", "uploads", ""),
            self.scope,
            self.display,
            chunk_size,
            self.has_blob,
        )

    @property
    def display(self) -> str:
        return f"{self.spec.host}/{self.repository}"

    def close(self) -> None:
        self.client.close()

    def _url(self, *parts: str, query: Mapping[str, str] | None = None) -> str:
        path = f"/v2/{self.repository}/" + "/".join(quote(p, safe=":") for p in parts)
        return self.client.url(path) + (f"?{urlencode(query)}" if query else "")

    # ---- probing ---------------------------------------------------------------------
    def ping(self) -> None:
        """Check that the registry answers ``/v2/`` (authenticating if asked).
        Raises RemoteError, AuthError."""
        self.client.request("GET", self.client.url("/v2/"), scope=self.scope)

    def has_blob(self, digest: BlobDigest) -> bool:
        resp = self.client.request(
            "HEAD", self._url("blobs", str(digest)), scope=self.scope, also=(404,)
        )
        return resp.status == 200

    # ---- manifests -----------------------------------------------------------------
    def get_manifest(self, reference: str) -> Manifest | None:
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        resp = self.client.request(
            "GET", self._url("manifests", reference), headers, scope=self.scope, also=(404,)
        )
        if resp.status == 404:
            return None
        data = resp.body
        if len(data) > MAX_MANIFEST:
            raise RemoteError(f"{self.display}:{reference}: manifest larger than 4 MiB")
        digest = BlobDigest.of(data)
        claimed = resp.header("Docker-Content-Digest")
        if is_blob_digest(reference) and digest != BlobDigest.parse(reference):
            raise RemoteError(f"{self.display}: manifest {reference} does not match its digest")
        if claimed and claimed.startswith("sha256:") and claimed != str(digest):
            raise RemoteError(f"{self.display}:{reference}: manifest does not match its digest")
        media_type = resp.header("Content-Type").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = _media_type_of(data) or media_type
        return Manifest(data, media_type, digest)

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> BlobDigest:
        resp = self.client.request(
            "PUT",
            self._url("manifests", tag),
            {"Content-Type": media_type},
            data,
            scope=self.scope,
            ok=(200, 201, 202),
        )
        self.stats.manifests_sent += 1
        digest = BlobDigest.of(data)
        claimed = resp.header("Docker-Content-Digest")
        if claimed and claimed != str(digest):
            raise RemoteError(f"{self.display}: the registry stored the manifest as {claimed}")
        return digest

    def list_tags(self, page_size: int = 1000) -> list[str]:
        tags: list[str] = []
        url: str | None = self._url("tags", "list", query={"n": str(page_size)})
        seen = set()
        while url is not None and url not in seen:
            seen.add(url)
            resp = self.client.request("GET", url, scope=self.scope, also=(404,))
            if resp.status == 404:
                return []
            try:
                page = json.loads(resp.body).get("tags") or []
            except (ValueError, AttributeError):
                raise RemoteError(f"{self.display}: unreadable tag list") from None
            tags.extend(str(t) for t in page)
            url = _next_link(resp.header("Link"), url)
        return sorted(set(tags))

    def delete_manifest(self, digest: BlobDigest) -> bool:
        resp = self.client.request(
            "DELETE",
            self._url("manifests", str(digest)),
            scope=self.scope,
            ok=(200, 202),
            also=(404, 405),
        )
        if resp.status == 405:
            raise RemoteError(
                f"{self.display}: the registry does not allow deleting manifests",
                hint="its operator must enable deletes (Distribution: storage.delete.enabled)",
            )
        return resp.status != 404

    # ---- blobs: download -------------------------------------------------------------
    def open_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        url, fd, path = self._download_target(digest)
        f = DownloadedBlob(io.FileIO(fd, "r+"), path, digest)
        try:
            download_blob(
                self.client,
                url,
                digest,
                size,
                f.write,
                progress,
                scope=self.scope,
                display=self.display,
            )
            f.flush()
        except BaseException:
            f.close()
            raise
        f.seek(0)
        self.stats.blobs_received += 1
        return f

    def stream_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        url = self._url("blobs", str(digest))
        blob = StreamingBlob(digest)

        def fetch() -> None:
            download_blob(
                self.client,
                url,
                digest,
                size,
                blob.append,
                progress,
                scope=self.scope,
                display=self.display,
                stop=blob.stop,
                answered=blob.answered,
            )
            self.stats.blobs_received += 1

        blob.start(fetch)
        return cast(BinaryIO, blob)

    def _download_target(self, digest: BlobDigest) -> tuple[str, int, Path]:
        """The URL of blob ``digest`` and a new private temp file (descriptor,
        path) to download it into. Raises OSError."""
        fd, name = tempfile.mkstemp(prefix="download-", dir=self.tmpdir)
        return self._url("blobs", str(digest)), fd, Path(name)

    # ---- blobs: upload ---------------------------------------------------------------
    def put_blob(
        self,
        digest: BlobDigest,
        size: int,
        path: Path,
        progress: ByteProgress | None = None,
        *,
        check: bool = True,
    ) -> bool:
        if check and self.has_blob(digest):
            self.stats.blobs_skipped += 1
            return False
        location = None
        for i, source in enumerate(self.mount_from):
            try:
                resp = self.client.request(
                    "POST",
                    self._url("blobs", "uploads", "", query={"mount": str(digest), "from": source}),
                    {"Content-Length": "0"},
                    scope=f"{self.scope} repository:{source}:pull",
                    ok=(201, 202),
                )
            except AuthError:
                continue  # no access to that repository: upload instead
            if resp.status == 201:
                self.stats.blobs_mounted += 1
                return False
            here = urljoin(resp.url, resp.header("Location"))
            if i == len(self.mount_from) - 1:
                location = here  # not mountable: upload into the session it opened
            else:
                self._uploads.cancel(here)
        self._uploads.upload(digest, size, path, location, progress)
        self.stats.blobs_sent += 1
        return True


def _next_link(header: str, base: str) -> str | None:
    """The ``rel="next"`` target of a Link header, absolute."""
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            target = part.split(";")[0].strip().strip("<>")
            return urljoin(base, target)
    return None


def _media_type_of(data: bytes) -> str | None:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(mt, str):
        return mt
    if isinstance(obj, dict) and "manifests" in obj:
        return OCI_INDEX
    if isinstance(obj, dict) and "layers" in obj:
        return OCI_MANIFEST
    return None
