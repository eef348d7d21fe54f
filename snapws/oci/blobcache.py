"""Compressed layer blobs kept in the store, so a layer is compressed once.

    <store>/oci/blobs/sha256/<hex>          blobs (layers, configs), immutable
    <store>/oci/layers/<layer id>.<comp>.json  {"digest", "diff_id", "size"}
    <store>/oci/chains/<chain id hex>.json     {"layer"}: a foreign layer, imported

A map entry says which blob is the layer compressed; the blob itself may be
absent: an import (pull, cache restore) records the digest of the blob it
unpacked without keeping the blob (writing it would cost as much as the
tree when the layer does not compress). :func:`cached_layer` answers only
with a blob that is here; :func:`known_layer` also with one that is not, so
a push can skip the layer when the remote has that blob
(:func:`snapws.oci.export.export_layer`'s ``have``) and compress it again
only for a remote that lacks it.

A blob is written to a temporary file under ``staging/``, fsynced and renamed
into place (two writers of one blob write the same bytes, so either wins);
the map entry is written atomically after it. Entries are checked before use
(the blob must exist with the recorded size) and are rebuilt when damaged.
:func:`prune_blob_cache` drops what belongs to deleted layers (for gc).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from snapws.ids import BlobDigest, LayerId
from snapws.store.atomic import fsync_dir, write_atomic
from snapws.store.store import Store

OCI_DIR = "oci"


@dataclass(frozen=True, slots=True)
class CachedLayer:
    """A layer's compressed tar: its digest and size, and the sha256 of the
    uncompressed tar (the image config's ``diff_id``)."""

    digest: BlobDigest
    diff_id: BlobDigest
    size: int

    def to_json(self) -> dict[str, object]:
        return {"digest": str(self.digest), "diff_id": str(self.diff_id), "size": self.size}


def digest_hex(digest: str) -> str:
    """The hex part of the text ``sha256:<hex>`` (a digest read from a file);
    raises ValueError otherwise."""
    return BlobDigest.parse(digest).hex


def blobs_dir(store: Store) -> Path:
    return store.root / OCI_DIR / "blobs" / "sha256"


def blob_path(store: Store, digest: BlobDigest) -> Path:
    """Where blob ``digest`` is (or would be) kept."""
    return blobs_dir(store) / digest.hex


def _map_path(store: Store, lid: LayerId, compression: str) -> Path:
    return store.root / OCI_DIR / "layers" / f"{lid.hex}.{compression}.json"


def known_layer(store: Store, lid: LayerId, compression: str) -> CachedLayer | None:
    """The blob recorded as ``lid`` compressed with ``compression``, whether
    or not this store keeps it (None: none recorded, or the entry is
    unreadable)."""
    try:
        obj = json.loads(_map_path(store, lid, compression).read_bytes())
        return CachedLayer(
            BlobDigest.parse(str(obj["digest"])),
            BlobDigest.parse(str(obj["diff_id"])),
            int(obj["size"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_layer(store: Store, lid: LayerId, compression: str) -> CachedLayer | None:
    """The cached blob of ``lid`` compressed with ``compression``, if it is
    there whole (its file exists with the recorded size)."""
    entry = known_layer(store, lid, compression)
    if entry is None:
        return None
    try:
        if os.stat(blob_path(store, entry.digest)).st_size != entry.size:
            return None
    except OSError:
        return None
    return entry


def record_layer(store: Store, lid: LayerId, compression: str, entry: CachedLayer) -> None:
    """Remember that blob ``entry.digest`` (already stored) is ``lid`` compressed."""
    path = _map_path(store, lid, compression)
    write_atomic(path, json.dumps(entry.to_json(), sort_keys=True).encode())


def _chain_path(store: Store, chain_id: BlobDigest) -> Path:
    return store.root / OCI_DIR / "chains" / f"{chain_id.hex}.json"


def chain_layer(store: Store, chain_id: BlobDigest) -> LayerId | None:
    """The layer a foreign layer tar with OCI chain id ``chain_id`` (its
    diff_id and those of the layers below) was imported as, if recorded."""
    try:
        return LayerId(json.loads(_chain_path(store, chain_id).read_bytes())["layer"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_chain(store: Store, chain_id: BlobDigest, lid: LayerId) -> None:
    """Remember that the layer tar of chain id ``chain_id`` imports as ``lid``
    (so importing the same base image again fetches nothing)."""
    write_atomic(_chain_path(store, chain_id), json.dumps({"layer": lid.hex}).encode())


class BlobWriter:
    """A blob being written: ``write`` bytes, then :meth:`commit` publishes it
    (fsync, rename) under its sha256; :meth:`abort` drops it. Use as a
    context manager (leaving without commit aborts)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tmp = store.root / "staging" / f"blob-{secrets.token_hex(8)}"
        self._f: BinaryIO = open(self.tmp, "xb")  # noqa: SIM115 (closed by commit/abort)
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._h.update(data)
        self._f.write(data)
        self.size += len(data)

    @property
    def digest(self) -> BlobDigest:
        return BlobDigest(self._h.hexdigest())

    def commit(self, synced: bool = False) -> Path:
        """Publish the blob; returns its path. ``synced``: its bytes are on
        disk already (a syncfs ran since the last write): no fsync."""
        self._f.flush()
        if not synced:
            os.fsync(self._f.fileno())
        self._f.close()
        dest = blob_path(self.store, self.digest)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(dest.parent.parent)
        os.chmod(self.tmp, 0o444)
        os.rename(self.tmp, dest)
        fsync_dir(dest.parent)
        return dest

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tmp.exists():
            self.abort()


def put_blob_bytes(store: Store, data: bytes) -> tuple[BlobDigest, Path]:
    """Store ``data`` as a blob (once); returns its digest and path."""
    digest = BlobDigest.of(data)
    path = blob_path(store, digest)
    if path.is_file() and path.stat().st_size == len(data):
        return digest, path
    with BlobWriter(store) as w:
        w.write(data)
        return digest, w.commit()


@dataclass(frozen=True, slots=True)
class BlobPrune:
    """What pruning the blob cache deletes: map and chain-id entries of
    layers that are gone, and blob files no remaining entry names, with
    the disk usage each frees (``st_blocks * 512``)."""

    entries: list[Path]
    blobs: list[tuple[Path, int]]

    @property
    def bytes_freed(self) -> int:
        return sum(n for _p, n in self.blobs)


def plan_blob_prune(
    store: Store, live_layers: Iterable[LayerId], grace: float = 0.0, now: float | None = None
) -> BlobPrune:
    """What :func:`prune_blob_cache` would delete (reads only). A blob
    changed less than ``grace`` seconds before ``now`` stays (a push that
    built its image under the shared lock uploads the config blob later,
    without it). Unreadable entries count as gone."""
    now = time.time() if now is None else now
    live = {lid.hex for lid in live_layers}
    drop: list[Path] = []
    keep: set[str] = set()
    maps = store.root / OCI_DIR / "layers"
    for p in sorted(maps.iterdir()) if maps.is_dir() else ():
        if p.name.split(".", 1)[0] not in live or not p.name.endswith(".json"):
            drop.append(p)
            continue
        try:
            keep.add(digest_hex(str(json.loads(p.read_bytes())["digest"])))
        except (OSError, ValueError, KeyError, TypeError):
            drop.append(p)
    chains = store.root / OCI_DIR / "chains"
    for p in sorted(chains.iterdir()) if chains.is_dir() else ():
        try:
            if json.loads(p.read_bytes())["layer"] in live:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        drop.append(p)
    blobs: list[tuple[Path, int]] = []
    top = blobs_dir(store)
    for p in sorted(top.iterdir()) if top.is_dir() else ():
        if p.name in keep:
            continue
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if now - max(st.st_mtime, st.st_ctime) < grace:
            continue
        blobs.append((p, st.st_blocks * 512))
    return BlobPrune(drop, blobs)


def prune_blob_cache(
    store: Store,
    live_layers: Iterable[LayerId] | None = None,
    grace: float = 0.0,
    now: float | None = None,
    plan: BlobPrune | None = None,
) -> BlobPrune:
    """Drop map entries (and chain-id entries) of layers not in
    ``live_layers``, and every blob no remaining entry names (image configs
    included: they are cheap to make again) unless younger than ``grace``
    seconds; or carry out ``plan`` (from :func:`plan_blob_prune`). Returns
    what was deleted. A crash midway leaves entries whose blob is gone,
    which :func:`cached_layer` ignores (the blob is made again), and blobs
    nothing names, which the next prune deletes.

    Precondition: the caller holds the store lock exclusively (no export is
    writing the cache). Raises OSError."""
    if plan is None:
        assert live_layers is not None, "live_layers or plan"
        plan = plan_blob_prune(store, live_layers, grace, now)
    for p in plan.entries:
        p.unlink(missing_ok=True)
    for p, _n in plan.blobs:
        p.unlink(missing_ok=True)
    for d in {p.parent for p in plan.entries} | {p.parent for p, _n in plan.blobs}:
        fsync_dir(d)
    return plan
