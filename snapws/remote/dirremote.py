"""An OCI image layout directory as a remote (air-gapped transfers, tests).

    <dir>/oci-layout          {"imageLayoutVersion": "1.0.0"}
    <dir>/index.json          manifests, tagged by org.opencontainers.image.ref.name
    <dir>/blobs/sha256/<hex>  blobs and manifests

umoci, skopeo (``oci:DIR:TAG``) and podman read it. Blobs are written to a
temporary name, verified against their digest, fsynced and renamed into
place; index.json is replaced atomically under an flock of the directory,
so concurrent writers never lose each other's tags.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import RemoteError, RemoteNotFoundError
from snapws.ids import BlobDigest, is_blob_digest
from snapws.remote.base import ByteProgress, Manifest, TransferStats
from snapws.store.atomic import fsync_dir, write_atomic

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = {"imageLayoutVersion": "1.0.0"}
BLOCK = 1 << 20


class DirRemote:
    """An OCI layout at ``path`` (see :class:`snapws.remote.base.Remote`).
    ``create``: make the layout if the directory is missing or empty
    (push); otherwise a missing layout raises RemoteError."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        self.stats = TransferStats()
        self._create = create

    @property
    def display(self) -> str:
        return f"oci:{self.path}"

    def close(self) -> None:
        pass

    # ---- layout ----------------------------------------------------------------------
    def _blob(self, digest: BlobDigest) -> Path:
        return self.path / "blobs" / "sha256" / digest.hex

    def _ensure(self, write: bool) -> None:
        if (self.path / "oci-layout").is_file():
            return
        if not (write and self._create):
            if not self.path.exists():
                raise RemoteError(
                    f"the directory remote {self.path} does not exist",
                    hint="push to it first (push creates it), or fix the remote's path",
                )
            raise RemoteError(f"{self.path} is not an OCI image layout (no oci-layout file)")
        if self.path.exists() and any(self.path.iterdir()):
            raise RemoteError(
                f"{self.path} is neither empty nor an OCI image layout: refusing to write there",
                hint="give a new or empty directory for the remote",
            )
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not (self.path / "index.json").exists():
                self._write_index({"schemaVersion": 2, "manifests": []})
            write_atomic(self.path / "oci-layout", json.dumps(LAYOUT).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        except (OSError, ValueError) as e:
            raise RemoteError(f"{self.path}/index.json is unreadable: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise RemoteError(f"{self.path}/index.json is not an OCI index")
        data.setdefault("manifests", [])
        return data

    def _write_index(self, index: dict[str, Any]) -> None:
        write_atomic(self.path / "index.json", json.dumps(index, indent=1).encode() + b"\n")

    # ---- blobs -----------------------------------------------------------------------
    def has_blob(self, digest: BlobDigest) -> bool:
        if not self._create:
            self._ensure(write=False)
        return self._blob(digest).is_file()

    def put_blob(
        self,
        digest: BlobDigest,
        size: int,
        path: Path,
        progress: ByteProgress | None = None,
        *,
        check: bool = True,
    ) -> bool:
        self._ensure(write=True)
        dest = self._blob(digest)
        if dest.is_file():
            self.stats.blobs_skipped += 1
            return False
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        h = hashlib.sha256()
        done = 0
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                while block := src.read(BLOCK):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, size)
                out.flush()
                os.fsync(out.fileno())
            if BlobDigest(h.hexdigest()) != digest or done != size:
                raise RemoteError(f"{path} does not match {digest} ({done} bytes, want {size})")
            os.rename(tmp, dest)
            fsync_dir(dest.parent)
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.blobs_sent += 1
        self.stats.bytes_sent += done
        return True

    def open_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        self._ensure(write=False)
        try:
            f: BinaryIO = open(self._blob(digest), "rb")  # noqa: SIM115 (returned)
        except FileNotFoundError:
            raise RemoteNotFoundError(f"{self.display}: blob {digest} is missing") from None
        h = hashlib.sha256()
        done = 0
        while block := f.read(BLOCK):
            h.update(block)
            done += len(block)
            if progress is not None:
                progress(done, size)
        if BlobDigest(h.hexdigest()) != digest or (size is not None and done != size):
            f.close()
            raise RemoteError(f"{self.display}: blob {digest} does not match its digest")
        f.seek(0)
        self.stats.blobs_received += 1
        self.stats.bytes_received += done
        return f

    def stream_blob(
        self, digest: BlobDigest, size: int | None, progress: ByteProgress | None = None
    ) -> BinaryIO:
        return self.open_blob(digest, size, progress)  # a local file: nothing to overlap

    # ---- manifests -------------------------------------------------------------------
    def get_manifest(self, reference: str) -> Manifest | None:
        fresh = not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))
        if self._create and fresh:
            return None  # a push will create it: nothing is tagged yet
        self._ensure(write=False)
        if is_blob_digest(reference):
            entry: dict[str, Any] | None = {"digest": reference}
        else:
            entry = next(
                (
                    m
                    for m in reversed(self._read_index()["manifests"])
                    if isinstance(m, dict)
                    and (m.get("annotations") or {}).get(REF_NAME) == reference
                ),
                None,
            )
        if entry is None:
            return None
        text = str(entry.get("digest", ""))
        try:
            digest = BlobDigest.parse(text)
        except ValueError:
            raise RemoteError(f"not a sha256 digest: {text!r}") from None
        try:
            data = self._blob(digest).read_bytes()
        except FileNotFoundError:
            if is_blob_digest(reference):
                return None
            raise RemoteError(
                f"{self.display}: tag {reference} names missing blob {digest}"
            ) from None
        if BlobDigest.of(data) != digest:
            raise RemoteError(f"{self.display}: manifest {digest} does not match its digest")
        media_type = str(entry.get("mediaType") or _media_type(data))
        return Manifest(data, media_type, digest)

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> BlobDigest:
        self._ensure(write=True)
        digest = BlobDigest.of(data)
        dest = self._blob(digest)
        if not dest.is_file():
            write_atomic(dest, data)
        with self._locked():
            index = self._read_index()
            index["manifests"] = [m for m in index["manifests"] if _ref_name(m) != tag]
            index["manifests"].append(
                {
                    "mediaType": media_type,
                    "digest": str(digest),
                    "size": len(data),
                    "annotations": {REF_NAME: tag},
                }
            )
            self._write_index(index)
        self.stats.manifests_sent += 1
        return digest

    def list_tags(self) -> list[str]:
        if not (self.path / "oci-layout").is_file():
            return []
        names = (_ref_name(m) for m in self._read_index()["manifests"])
        return sorted({n for n in names if n is not None})

    def delete_manifest(self, digest: BlobDigest) -> bool:
        self._ensure(write=False)
        blob = self._blob(digest)
        with self._locked():
            index = self._read_index()
            keep = [
                m
                for m in index["manifests"]
                if not (isinstance(m, dict) and m.get("digest") == str(digest))
            ]
            removed = len(keep) != len(index["manifests"])
            if removed:
                index["manifests"] = keep
                self._write_index(index)
        existed = blob.is_file()
        if existed:
            blob.unlink()
            fsync_dir(blob.parent)
        return removed or existed


def _media_type(data: bytes) -> str:
    try:
        obj = json.loads(data)
    except ValueError:
        return ""
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    return mt if isinstance(mt, str) else ""


def _ref_name(entry: Any) -> str | None:
    """The tag of an index entry (None: untagged or malformed)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), dict):
        return None
    name = entry["annotations"].get(REF_NAME)
    return name if isinstance(name, str) else None
