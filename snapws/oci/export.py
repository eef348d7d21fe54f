"""Snapshots as OCI images: a snapshot's layer chain as compressed layer
tars (made once, then taken from the store's blob cache), a config whose
labels carry the snapshot's record, and a manifest (see
:mod:`snapws.oci.image` for the format).
"""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from collections.abc import Callable

from snapws.errors import StoreCorruptError
from snapws.ids import BlobDigest, LayerId, SnapshotId
from snapws.model import Kind, SnapshotRecord, decode_manifest
from snapws.oci.blobcache import (
    BlobWriter,
    CachedLayer,
    blob_path,
    cached_layer,
    known_layer,
    put_blob_bytes,
    record_layer,
)
from snapws.oci.compress import COMPRESSIONS, GZIP, compressor
from snapws.oci.image import (
    ANNOTATION_LAYER,
    LABEL_LAYER_MANIFEST,
    LABEL_LAYERS,
    LABEL_RECORD,
    LABEL_SNAPSHOT,
    LAYER_MEDIA_TYPE,
    OCI_CONFIG,
    OCI_MANIFEST,
    Blob,
    Descriptor,
    Image,
    canonical_json,
    host_architecture,
)
from snapws.oci.tarwriter import write_layer_tar
from snapws.store.store import EMPTY_LAYER, Store


def _rfc3339(ns: int) -> str:
    sec, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return text + (f".{frac:09d}" if frac else "") + "Z"


def _layer_bytes(store: Store, lid: LayerId) -> int:
    """The file bytes a layer's tar carries (for progress)."""
    return sum(
        e.size
        for e in decode_manifest(store.read_manifest(lid))
        if e.kind is Kind.FILE and e.link is None
    )


def _held_elsewhere(
    store: Store, lid: LayerId, compression: str, have: Callable[[BlobDigest], bool] | None
) -> CachedLayer | None:
    """The blob recorded as ``lid`` compressed (not kept here) when
    ``have`` says the remote holds it."""
    known = known_layer(store, lid, compression) if have is not None else None
    return known if known is not None and have is not None and have(known.digest) else None


def export_layer(
    store: Store,
    lid: LayerId,
    compression: str,
    progress: Callable[[int], None] | None = None,
    have: Callable[[BlobDigest], bool] | None = None,
) -> CachedLayer:
    """The compressed tar of layer ``lid``, from the blob cache or made now
    (and cached). A blob the store does not keep but knows to be the layer
    (an import recorded it) is taken when ``have(digest)`` says the remote
    it goes to holds it: the entry is returned, its file is absent.
    Precondition: the store lock is held (shared is enough). Raises
    UnsupportedError, StoreCorruptError, OSError, what ``have`` raises."""
    hit = cached_layer(store, lid, compression)
    if hit is not None:
        return hit
    held = _held_elsewhere(store, lid, compression, have)
    if held is not None:
        return held
    try:
        entries = decode_manifest(store.read_manifest(lid))
    except ValueError as e:
        raise StoreCorruptError(f"manifest of layer {lid.short()} is unreadable: {e}") from e
    diff = hashlib.sha256()
    c = compressor(compression)
    with BlobWriter(store) as w:

        def emit(data: bytes) -> None:
            diff.update(data)
            out = c.compress(data)
            if out:
                w.write(out)

        write_layer_tar(store.layer_tree(lid), entries, emit, progress)
        w.write(c.flush())
        w.commit()
        entry = CachedLayer(w.digest, BlobDigest(diff.hexdigest()), w.size)
    record_layer(store, lid, compression, entry)
    return entry


def build_image(
    store: Store,
    sid: SnapshotId,
    compression: str = GZIP,
    progress: Callable[[int, int], None] | None = None,
    have: Callable[[BlobDigest], bool] | None = None,
) -> Image:
    """The OCI image of snapshot ``sid``: its chain's layers (compressed once,
    then taken from the store's blob cache), a config and a manifest, all
    kept as blobs in the store. ``progress(done, total)`` counts file bytes
    of layers being compressed. ``have``: see :func:`export_layer` (a layer
    blob the remote holds and the store does not keep has no file: the
    image is for that remote only).

    Precondition: the store lock is held (shared is enough). Raises
    RevisionNotFoundError/StoreCorruptError for a missing snapshot,
    UnsupportedError (zstd without zstandard, a socket), ValueError for an
    unknown ``compression``."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    compressor(compression)  # fail early when zstd is missing
    rec = store.read_snapshot(sid)
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    todo = [
        lid
        for lid in chain
        if cached_layer(store, lid, compression) is None
        and _held_elsewhere(store, lid, compression, have) is None
    ]
    total = sum(_layer_bytes(store, lid) for lid in todo)
    done_before = 0
    layers: list[Blob] = []
    diff_ids: list[BlobDigest] = []
    for lid in chain:
        base = done_before

        def step(n: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n, total)

        entry = export_layer(store, lid, compression, step, have)
        if lid in todo:
            done_before += _layer_bytes(store, lid) if progress is not None else 0
        desc = Descriptor(
            LAYER_MEDIA_TYPE[compression], entry.digest, entry.size, {ANNOTATION_LAYER: lid.hex}
        )
        layers.append(Blob(desc, blob_path(store, entry.digest)))
        diff_ids.append(entry.diff_id)
    labels = {
        LABEL_SNAPSHOT: sid.hex,
        LABEL_RECORD: rec.canonical().decode(),
        LABEL_LAYERS: ",".join(lid.hex for lid in chain),
    }
    proof = layer_proof(store, rec, chain)
    if proof is not None:
        labels[LABEL_LAYER_MANIFEST] = proof
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": _rfc3339(rec.time_ns),
        "author": rec.author,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
    }
    config_bytes = canonical_json(config)
    cdigest, cpath = put_blob_bytes(store, config_bytes)
    config_blob = Blob(Descriptor(OCI_CONFIG, cdigest, len(config_bytes)), cpath)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_blob.descriptor.to_json(),
            "layers": [b.descriptor.to_json() for b in layers],
            "annotations": {LABEL_SNAPSHOT: sid.hex},
        }
    )
    if progress is not None:
        progress(total, total)
    return Image(manifest, BlobDigest.of(manifest), config_blob, layers)


def layer_proof(store: Store, rec: SnapshotRecord, chain: list[LayerId]) -> str | None:
    """The :data:`LABEL_LAYER_MANIFEST` value of an export whose chain's top
    is not the record's layer (None when it is, or when the record's layer
    is empty or no longer stored: importers then refuse the image unless
    they have that layer)."""
    top = chain[-1] if chain else EMPTY_LAYER
    if rec.layer in (top, EMPTY_LAYER) or not store.has_layer(rec.layer):
        return None
    return base64.b64encode(zlib.compress(store.read_manifest(rec.layer), 9)).decode()
