"""A repository of an OCI registry as a remote (the OCI distribution spec,
``/v2/`` API): manifests by tag or digest, blobs with HEAD-before-upload,
cross-repository mounts, chunked uploads that resume after a dropped
connection, downloads verified against their sha256 that resume by Range.

A registry may not resume an upload whose last chunk it half-received
(Distribution 2.8 then cancels the session): the upload then begins again,
which :attr:`TransferStats.restarted` counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import quote, urlencode, urljoin

from snapws.errors import AuthError, RemoteError, RemoteNotFoundError
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
from snapws.remote.download import DownloadStopped, StreamingBlob
from snapws.remote.http import NETWORK_ERRORS, RETRY_STATUSES, HttpClient, RetryPolicy
from snapws.remote.url import RemoteSpec

DEFAULT_CHUNK = 8 << 20
MAX_MANIFEST = 4 << 20
READ_BLOCK = 1 << 20


class _Retryable(Exception):
    """A failure worth resuming after (network error, 5xx)."""


class _Restart(Exception):
    """The registry lost or refused the upload session: begin again."""


@dataclass(slots=True)
class _Session:
    """An upload in progress: where to send (None: open a session first)
    and the next byte the registry expects."""

    location: str | None
    offset: int = 0


class RegistryRemote:
    """One repository of a registry (see :class:`snapws.remote.base.Remote`).

    ``push``: ask for push rights up front (one token for the whole push).
    ``mount_from``: other repositories of the same registry to mount blobs
    from instead of uploading them. ``tmpdir``: where downloads are kept
    (private files, deleted when closed)."""

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

    def has_blob(self, digest: str) -> bool:
        _check_digest(digest)
        resp = self.client.request(
            "HEAD", self._url("blobs", digest), scope=self.scope, also=(404,)
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
        digest = str(BlobDigest.of(data))
        claimed = resp.header("Docker-Content-Digest")
        if is_blob_digest(reference) and digest != reference:
            raise RemoteError(f"{self.display}: manifest {reference} does not match its digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RemoteError(f"{self.display}:{reference}: manifest does not match its digest")
        media_type = resp.header("Content-Type").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = _media_type_of(data) or media_type
        return Manifest(data, media_type, digest)

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        resp = self.client.request(
            "PUT",
            self._url("manifests", tag),
            {"Content-Type": media_type},
            data,
            scope=self.scope,
            ok=(200, 201, 202),
        )
        self.stats.manifests_sent += 1
        digest = str(BlobDigest.of(data))
        claimed = resp.header("Docker-Content-Digest")
        if claimed and claimed != digest:
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

    def delete_manifest(self, digest: str) -> bool:
        _check_digest(digest)
        resp = self.client.request(
            "DELETE",
            self._url("manifests", digest),
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
        self, digest: str, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        _check_digest(digest)
        url = self._url("blobs", digest)
        fd, name = tempfile.mkstemp(prefix="download-", dir=self.tmpdir)
        f = DownloadedBlob(io.FileIO(fd, "r+"), Path(name), digest)
        try:
            self._download(url, digest, size, f.write, progress)
            f.flush()
        except BaseException:
            f.close()
            raise
        f.seek(0)
        self.stats.blobs_received += 1
        return f

    def stream_blob(
        self, digest: str, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        _check_digest(digest)
        url = self._url("blobs", digest)
        fd, name = tempfile.mkstemp(prefix="download-", dir=self.tmpdir)
        blob = StreamingBlob(fd, Path(name), digest)

        def fetch() -> None:
            self._download(url, digest, size, blob.append, progress, blob.stop, blob.answered)
            self.stats.blobs_received += 1

        blob.start(fetch)
        return cast(BinaryIO, blob)

    def _download(
        self,
        url: str,
        digest: str,
        size: int | None,
        sink: Callable[[bytes], object],
        progress: ByteProgress | None,
        stop: threading.Event | None = None,
        answered: Callable[[], None] | None = None,
    ) -> None:
        """GET blob ``digest`` into ``sink`` (bytes in order, each once),
        resuming by Range after a failure, and check its size and sha256.
        ``answered`` is called once the registry answers with the blob;
        ``stop`` set: give up quietly (raises DownloadStopped)."""
        h = hashlib.sha256()
        got = 0  # bytes handed to the sink
        failures = 0
        while True:
            try:
                headers = {"Range": f"bytes={got}-"} if got else {}
                resp = self.client.send("GET", url, headers, scope=self.scope)
                base = 0  # the offset of the answer's first byte
                if resp.status == 404:
                    resp.read()
                    raise RemoteNotFoundError(f"{self.display}: blob {digest} is missing")
                if resp.status == 206:
                    start = (resp.getheader("Content-Range") or "").split(" ")[-1].split("-")[0]
                    if start != str(got):
                        resp.read()
                        raise _Retryable(f"answered range {start!r}, asked for {got}")
                    base = got
                    self.stats.resumed += 1
                elif resp.status != 200:
                    body = resp.read()
                    if resp.status in RETRY_STATUSES:
                        raise _Retryable(f"{resp.status} {resp.reason}")
                    raise RemoteError(f"GET {url}: {resp.status} {resp.reason} {body[:200]!r}")
                # (a 200 after a failure: the registry ignored Range and sends
                # everything again; the bytes we have already are skipped)
                if answered is not None:
                    answered()
                    answered = None
                expect = resp.getheader("Content-Length")
                want = base + int(expect) if expect and expect.isdigit() else size
                pos = base
                while block := resp.read(READ_BLOCK):
                    if stop is not None and stop.is_set():
                        self.client.drop_connections()
                        raise DownloadStopped
                    self.stats.bytes_received += len(block)
                    if pos < got:  # already have these
                        skip = min(got - pos, len(block))
                        pos += skip
                        block = block[skip:]
                        if not block:
                            continue
                    sink(block)
                    h.update(block)
                    got += len(block)
                    pos = got
                    if size is not None and got > size:
                        raise RemoteError(f"{self.display}: blob {digest} is longer than {size}")
                    if progress is not None:
                        progress(got, size)
                if resp.will_close:
                    self.client.drop_connections()
                if want is not None and pos < want:
                    raise _Retryable(f"connection closed after {got} of {want} bytes")
                break
            except _DOWNLOAD_FAILURES as e:
                self.client.drop_connections()
                failures += 1
                if failures >= self.retry.attempts:
                    raise RemoteError(
                        f"cannot download {digest} from {self.display}: {e} "
                        f"(after {failures} tries)"
                    ) from None
                self.stats.retries += 1
                self.retry.wait(failures)
        if size is not None and got != size:
            raise RemoteError(f"{self.display}: blob {digest} has {got} bytes, expected {size}")
        if str(BlobDigest(h.hexdigest())) != digest:
            raise RemoteError(
                f"{self.display}: blob {digest} does not match its digest (corrupt or tampered)"
            )

    # ---- blobs: upload ---------------------------------------------------------------
    def put_blob(
        self,
        digest: str,
        size: int,
        path: Path,
        progress: ByteProgress | None = None,
        *,
        check: bool = True,
    ) -> bool:
        _check_digest(digest)
        if check and self.has_blob(digest):
            self.stats.blobs_skipped += 1
            return False
        location = None
        for i, source in enumerate(self.mount_from):
            try:
                resp = self.client.request(
                    "POST",
                    self._url("blobs", "uploads", "", query={"mount": digest, "from": source}),
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
                self._cancel(here)
        self._upload(digest, size, path, location, progress)
        self.stats.blobs_sent += 1
        return True

    def _start_upload(self) -> str:
        resp = self.client.request(
            "POST",
            self._url("blobs", "uploads", ""),
            {"Content-Length": "0"},
            scope=self.scope,
            ok=(202,),
        )
        location = resp.header("Location")
        if not location:
            raise RemoteError(f"{self.display}: the registry opened an upload without a Location")
        return urljoin(resp.url, location)

    def _cancel(self, location: str) -> None:
        with contextlib.suppress(RemoteError):
            self.client.request(
                "DELETE", location, scope=self.scope, ok=(204,), also=(400, 404), retry=False
            )

    def _upload(
        self,
        digest: str,
        size: int,
        path: Path,
        location: str | None,
        progress: ByteProgress | None,
    ) -> None:
        """Send ``path`` into upload session ``location`` (None: open one).
        After a network failure or 5xx, ask the registry how much it has and
        resume there (or begin again if it lost the session); give up with
        RemoteError after ``retry.attempts`` failures."""
        failures = 0
        up = _Session(location)
        with open(path, "rb") as f:
            while True:
                try:
                    if up.location is None:
                        up.location = self._start_upload()
                        up.offset = 0
                    self._send_from(f, digest, size, up, progress)
                    return
                except _UPLOAD_FAILURES as e:
                    failure: BaseException = e
                self.client.drop_connections()
                failures += 1
                if failures >= self.retry.attempts:
                    raise RemoteError(
                        f"cannot upload {digest} to {self.display}: {_text(failure)} "
                        f"(after {failures} tries)"
                    )
                self.stats.retries += 1
                self.retry.wait(failures)
                if self.has_blob(digest):
                    return  # the last request did finish it
                if isinstance(failure, _Restart):
                    up.location = None
                    self.stats.restarted += 1
                else:
                    self._upload_status(up)

    def _upload_status(self, up: _Session) -> None:
        """Ask where upload session ``up`` stands (the spec's upload status):
        move it to the registry's offset, or drop it when the registry lost
        it (the upload then begins again)."""
        assert up.location is not None
        resp = self.client.request("GET", up.location, scope=self.scope, ok=(204,), also=(400, 404))
        if resp.status != 204:
            self.stats.restarted += 1
            up.location = None
            return
        self.stats.resumed += 1
        new = resp.header("Location")
        if new:
            up.location = urljoin(up.location, new)
        up.offset = _range_end(resp.header("Range")) + 1

    def _send_from(
        self,
        f: BinaryIO,
        digest: str,
        size: int,
        up: _Session,
        progress: ByteProgress | None,
    ) -> None:
        """Send the file from ``up.offset`` on, then close the upload with
        its digest. ``up`` follows the registry's answers (location, offset)."""
        assert up.location is not None
        if up.offset == 0 and size <= self.chunk_size:
            # small blob: one PUT carries it (the spec's monolithic upload)
            f.seek(0)
            data = f.read()
            self.stats.bytes_sent += len(data)
            self._finish(up.location, digest, data)
            if progress is not None:
                progress(size, size)
            return
        while up.offset < size:
            f.seek(up.offset)
            data = f.read(min(self.chunk_size, size - up.offset))
            if not data:
                raise RemoteError(f"{f.name}: shorter than {size} bytes (changed while sent?)")
            end = up.offset + len(data) - 1
            self.stats.bytes_sent += len(data)
            resp = self.client.send(
                "PATCH",
                up.location,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{up.offset}-{end}",
                    "Content-Length": str(len(data)),
                },
                data,
                scope=self.scope,
                follow=False,
            )
            body = resp.read()
            if resp.status in (400, 404):  # BLOB_UPLOAD_INVALID / _UNKNOWN
                raise _Restart(f"{resp.status} {resp.reason}")
            if resp.status == 416:
                raise _Retryable("range not accepted")
            if resp.status != 202:
                if resp.status in RETRY_STATUSES:
                    raise _Retryable(f"{resp.status} {resp.reason}")
                raise RemoteError(
                    f"PATCH {up.location}: {resp.status} {resp.reason} {body[:200]!r}"
                )
            new = resp.getheader("Location")
            if new:
                up.location = urljoin(up.location, new)
            got = _range_end(resp.getheader("Range"))
            up.offset = got + 1 if got >= end else end + 1
            if progress is not None:
                progress(up.offset, size)
        self._finish(up.location, digest, b"")

    def _finish(self, location: str, digest: str, data: bytes) -> None:
        sep = "&" if "?" in location else "?"
        resp = self.client.send(
            "PUT",
            f"{location}{sep}{urlencode({'digest': digest})}",
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data,
            scope=self.scope,
            follow=False,
        )
        body = resp.read()
        if resp.status in (201, 204):
            return
        if resp.status in (400, 404):  # DIGEST_INVALID (a chunk went astray), session lost
            raise _Restart(f"{resp.status} {resp.reason}")
        if resp.status in RETRY_STATUSES:
            raise _Retryable(f"{resp.status} {resp.reason}")
        raise RemoteError(f"PUT {location}: {resp.status} {resp.reason} {body[:200]!r}")


_DOWNLOAD_FAILURES: tuple[type[BaseException], ...] = (_Retryable, *NETWORK_ERRORS)
_UPLOAD_FAILURES: tuple[type[BaseException], ...] = (_Retryable, _Restart, *NETWORK_ERRORS)


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _check_digest(digest: str) -> None:
    if not is_blob_digest(digest):
        raise RemoteError(f"not a sha256 digest: {digest!r}")


def _range_end(value: str | None) -> int:
    """The last byte of ``Range: 0-N`` (-1 if absent or unreadable)."""
    if not value:
        return -1
    tail = value.split("=")[-1].split("-")[-1].strip()
    return int(tail) if tail.isdigit() else -1


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
