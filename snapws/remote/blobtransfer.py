"""Moving blob bytes to and from one repository of a registry, resuming
after failures: downloads verified against their sha256 that resume by
``Range``, and chunked upload sessions that resume where the registry says
it stands (the distribution spec's upload status).

A registry may not resume an upload whose last chunk it half-received
(Distribution 2.8 then cancels the session): the upload then begins again,
which :attr:`TransferStats.restarted` counts. The client's
:class:`~snapws.remote.http.RetryPolicy` says how often to try; its
:class:`TransferStats` counts what was sent, received, resumed and retried.
Used by :class:`snapws.remote.registry.RegistryRemote`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin

from snapws.errors import RemoteError, RemoteNotFoundError
from snapws.ids import BlobDigest
from snapws.remote.base import ByteProgress
from snapws.remote.download import DownloadStopped
from snapws.remote.http import NETWORK_ERRORS, RETRY_STATUSES, HttpClient

READ_BLOCK = 1 << 20


class Retryable(Exception):
    """A failure worth resuming after (network error, 5xx)."""


class Restart(Exception):
    """The registry lost or refused the upload session: begin again."""


@dataclass(slots=True)
class _Session:
    """An upload in progress: where to send (None: open a session first)
    and the next byte the registry expects."""

    location: str | None
    offset: int = 0


def download_blob(
    client: HttpClient,
    url: str,
    digest: BlobDigest,
    size: int | None,
    sink: Callable[[bytes], object],
    progress: ByteProgress | None,
    *,
    scope: str,
    display: str,
    stop: threading.Event | None = None,
    answered: Callable[[], None] | None = None,
) -> None:
    """GET blob ``digest`` from ``url`` into ``sink`` (bytes in order, each
    once), resuming by Range after a failure, and check its size and sha256.
    ``answered`` is called once the registry answers with the blob; ``stop``
    set: give up quietly (raises DownloadStopped). ``display`` names the
    repository in errors. Raises RemoteNotFoundError (no such blob),
    RemoteError (it does not match, or ``retry.attempts`` failures)."""
    h = hashlib.sha256()
    got = 0  # bytes handed to the sink
    failures = 0
    while True:
        try:
            headers = {"Range": f"bytes={got}-"} if got else {}
            resp = client.send("GET", url, headers, scope=scope)
            base = 0  # the offset of the answer's first byte
            if resp.status == 404:
                resp.read()
                raise RemoteNotFoundError(f"{display}: blob {digest} is missing")
            if resp.status == 206:
                start = (resp.getheader("Content-Range") or "").split(" ")[-1].split("-")[0]
                if start != str(got):
                    resp.read()
                    raise Retryable(f"answered range {start!r}, asked for {got}")
                base = got
                client.stats.resumed += 1
            elif resp.status != 200:
                body = resp.read()
                if resp.status in RETRY_STATUSES:
                    raise Retryable(f"{resp.status} {resp.reason}")
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
                    client.drop_connections()
                    raise DownloadStopped
                client.stats.bytes_received += len(block)
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
                    raise RemoteError(f"{display}: blob {digest} is longer than {size}")
                if progress is not None:
                    progress(got, size)
            if resp.will_close:
                client.drop_connections()
            if want is not None and pos < want:
                raise Retryable(f"connection closed after {got} of {want} bytes")
            break
        except _DOWNLOAD_FAILURES as e:
            client.drop_connections()
            failures += 1
            if failures >= client.retry.attempts:
                raise RemoteError(
                    f"cannot download {digest} from {display}: {e} (after {failures} tries)"
                ) from None
            client.stats.retries += 1
            client.retry.wait(failures)
    if size is not None and got != size:
        raise RemoteError(f"{display}: blob {digest} has {got} bytes, expected {size}")
    if BlobDigest(h.hexdigest()) != digest:
        raise RemoteError(
            f"{display}: blob {digest} does not match its digest (corrupt or tampered)"
        )


@dataclass
class Uploader:
    """Uploads into one repository: ``uploads_url`` is its
    ``/v2/<name>/blobs/uploads/``; ``has_blob`` asks whether a blob is there
    (to learn that a failed request did finish an upload)."""

    client: HttpClient
    uploads_url: str
    scope: str
    display: str
    chunk_size: int
    has_blob: Callable[[BlobDigest], bool]

    def start(self) -> str:
        resp = self.client.request(
            "POST",
            self.uploads_url,
            {"Content-Length": "0"},
            scope=self.scope,
            ok=(202,),
        )
        location = resp.header("Location")
        if not location:
            raise RemoteError(f"{self.display}: the registry opened an upload without a Location")
        return urljoin(resp.url, location)

    def cancel(self, location: str) -> None:
        with contextlib.suppress(RemoteError):
            self.client.request(
                "DELETE", location, scope=self.scope, ok=(204,), also=(400, 404), retry=False
            )

    def upload(
        self,
        digest: BlobDigest,
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
                        up.location = self.start()
                        up.offset = 0
                    self._send_from(f, digest, size, up, progress)
                    return
                except _UPLOAD_FAILURES as e:
                    failure: BaseException = e
                self.client.drop_connections()
                failures += 1
                if failures >= self.client.retry.attempts:
                    raise RemoteError(
                        f"cannot upload {digest} to {self.display}: {_text(failure)} "
                        f"(after {failures} tries)"
                    )
                self.client.stats.retries += 1
                self.client.retry.wait(failures)
                if self.has_blob(digest):
                    return  # the last request did finish it
                if isinstance(failure, Restart):
                    up.location = None
                    self.client.stats.restarted += 1
                else:
                    self._status(up)

    def _status(self, up: _Session) -> None:
        """Ask where upload session ``up`` stands (the spec's upload status):
        move it to the registry's offset, or drop it when the registry lost
        it (the upload then begins again)."""
        assert up.location is not None
        resp = self.client.request("GET", up.location, scope=self.scope, ok=(204,), also=(400, 404))
        if resp.status != 204:
            self.client.stats.restarted += 1
            up.location = None
            return
        self.client.stats.resumed += 1
        new = resp.header("Location")
        if new:
            up.location = urljoin(up.location, new)
        up.offset = _range_end(resp.header("Range")) + 1

    def _send_from(
        self,
        f: BinaryIO,
        digest: BlobDigest,
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
            self.client.stats.bytes_sent += len(data)
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
            self.client.stats.bytes_sent += len(data)
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
            _check_answer(resp, (202,), f"PATCH {up.location}")
            new = resp.getheader("Location")
            if new:
                up.location = urljoin(up.location, new)
            got = _range_end(resp.getheader("Range"))
            up.offset = got + 1 if got >= end else end + 1
            if progress is not None:
                progress(up.offset, size)
        self._finish(up.location, digest, b"")

    def _finish(self, location: str, digest: BlobDigest, data: bytes) -> None:
        sep = "&" if "?" in location else "?"
        resp = self.client.send(
            "PUT",
            f"{location}{sep}{urlencode({'digest': str(digest)})}",
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data,
            scope=self.scope,
            follow=False,
        )
        _check_answer(resp, (201, 204), f"PUT {location}")


_DOWNLOAD_FAILURES: tuple[type[BaseException], ...] = (Retryable, *NETWORK_ERRORS)
_UPLOAD_FAILURES: tuple[type[BaseException], ...] = (Retryable, Restart, *NETWORK_ERRORS)


def _text(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _check_answer(resp: http.client.HTTPResponse, ok: tuple[int, ...], what: str) -> None:
    """Read the answer to an upload request; unless its status is in ``ok``
    raise Restart (400/404: the session is lost or unknown, or the digest is
    invalid: a chunk went astray), Retryable (416: the range was not taken;
    408, 429, 5xx) or RemoteError (any other status)."""
    body = resp.read()
    if resp.status in ok:
        return
    if resp.status in (400, 404):
        raise Restart(f"{resp.status} {resp.reason}")
    if resp.status == 416:
        raise Retryable("range not accepted")
    if resp.status in RETRY_STATUSES:
        raise Retryable(f"{resp.status} {resp.reason}")
    raise RemoteError(f"{what}: {resp.status} {resp.reason} {body[:200]!r}")


def _range_end(value: str | None) -> int:
    """The last byte of ``Range: 0-N`` (-1 if absent or unreadable)."""
    if not value:
        return -1
    tail = value.split("=")[-1].split("-")[-1].strip()
    return int(tail) if tail.isdigit() else -1
