"""The interface every remote implements (a registry repository, an OCI
layout directory), and the transfer statistics they keep.

A remote stores content-addressed blobs and manifests named by tags, as the
OCI distribution spec does. Blobs are named by ``sha256:<64 hex>`` digests
(:class:`snapws.ids.BlobDigest`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from snapws.ids import BlobDigest

#: manifest media types snapws reads and writes
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_tag(text: str) -> bool:
    """True for a valid OCI tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    return bool(_TAG_RE.match(text))


@dataclass(slots=True)
class TransferStats:
    """What a remote did so far (one instance per remote object)."""

    requests: int = 0
    blobs_sent: int = 0
    blobs_skipped: int = 0  # the remote had them (HEAD)
    blobs_mounted: int = 0  # cross-repository mounts: no bytes sent
    blobs_received: int = 0
    bytes_sent: int = 0  # blob bytes put on the wire, retries included
    bytes_received: int = 0  # blob bytes read from the wire, retries included
    retries: int = 0  # requests repeated after a failure
    resumed: int = 0  # uploads/downloads continued from where they stopped
    restarted: int = 0  # uploads the registry could not resume: begun again
    manifests_sent: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "blobs_sent": self.blobs_sent,
            "blobs_skipped": self.blobs_skipped,
            "blobs_mounted": self.blobs_mounted,
            "blobs_received": self.blobs_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "retries": self.retries,
            "resumed": self.resumed,
            "restarted": self.restarted,
        }


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as stored on a remote: its bytes, media type and digest."""

    data: bytes
    media_type: str
    digest: BlobDigest


class DownloadedBlob(io.BufferedRandom):
    """A blob downloaded into a private file and verified while it came in:
    ``verified_digest`` is its sha256 (readers need not hash it again), and
    ``path`` names the file while it is open. Closing it deletes the file."""

    def __init__(self, raw: io.FileIO, path: Path, digest: BlobDigest) -> None:
        super().__init__(raw, 1 << 20)
        self.path = path
        self.verified_digest = digest

    def close(self) -> None:
        if not self.closed:
            super().close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


#: a progress callback: bytes done so far, and the total if known
ByteProgress = Callable[[int, int | None], None]


class Remote(Protocol):
    """A place blobs and tagged manifests live. Every method raises
    RemoteError when the remote fails, AuthError when it refuses us."""

    stats: TransferStats

    @property
    def display(self) -> str:
        """The remote for people: ``host/repo`` or ``dir:/path``."""
        ...

    def has_blob(self, digest: BlobDigest) -> bool:
        """True if the remote holds blob ``digest``."""
        ...

    def put_blob(
        self,
        digest: BlobDigest,
        size: int,
        path: Path,
        progress: ByteProgress | None = None,
        *,
        check: bool = True,
    ) -> bool:
        """Store the file ``path`` (``size`` bytes, sha256 ``digest``) unless
        the remote has it (asked first if ``check``). Returns True if bytes
        were sent (False: it was there, or was mounted from another
        repository)."""
        ...

    def open_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        """An open binary file positioned at 0 holding blob ``digest``,
        verified against it. Raises RemoteNotFoundError if it is missing,
        RemoteError if its content does not match."""
        ...

    def stream_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        """Like :meth:`open_blob`, but readable while it is still arriving:
        the bytes are verified by the time ``read`` reports the end (the
        read that would return ``b""`` raises RemoteError instead if they do
        not match). Raises RemoteNotFoundError at once if it is missing."""
        ...

    def get_manifest(self, reference: str) -> Manifest | None:
        """The manifest tagged ``reference`` (a tag or a digest); None if absent."""
        ...

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> BlobDigest:
        """Tag ``data`` as ``tag`` (its blobs must be there). Returns its digest."""
        ...

    def list_tags(self) -> list[str]:
        """Every tag, sorted; [] if the repository does not exist yet."""
        ...

    def delete_manifest(self, digest: BlobDigest) -> bool:
        """Delete the manifest ``digest`` (and so the tags naming it).
        Returns False if it was not there."""
        ...

    def close(self) -> None:
        """Release connections and temporary files."""
        ...
