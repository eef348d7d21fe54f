"""OCI images as snapshots.

Importing verifies the sha256 and size of every blob it reads against its
descriptor and the sha256 of every uncompressed layer against the config's
``diff_ids``, fetches only layers the store lacks, and recreates a snapws
image's record exactly (same snapshot id; each layer must hash to the id it
is annotated with; :mod:`snapws.oci.chaincheck`). Any other image becomes a
chain of layers under a new root snapshot. This is the API the remotes
(pull, cache) build on.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from snapws.errors import BadImageError, SnapwsError
from snapws.ids import BlobDigest, LayerId, SnapshotId
from snapws.model import Entry, SnapshotRecord
from snapws.oci import tarformat as tf
from snapws.oci.blobcache import CachedLayer, chain_layer, record_chain, record_layer
from snapws.oci.blobstream import LayerBlobStream
from snapws.oci.chaincheck import check_record, check_stored, keep_record_layer, same_as_stored
from snapws.oci.extractedlayer import (
    ExtractedLayer,
    discard_extracted,
    extract_layer,
    publish_extracted,
)
from snapws.oci.image import LAYER_MEDIA_TYPE, MAX_TRAILER, Descriptor, parse_manifest
from snapws.oci.imageconfig import (
    chain_ids_of,
    created_ns,
    diff_ids_of,
    read_config,
    snapws_info,
    without_history,
)
from snapws.store.store import EMPTY_LAYER, Store


def _check_authentic(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> None:
    """Raise BadImageError, saying only that the blob does not match, unless
    blob ``desc`` has its descriptor's size and sha256. Called before an
    error that quotes a layer's content is shown: only the bytes of a blob
    whose digest was checked may appear in a message."""
    h = hashlib.sha256()
    size = 0
    try:
        with open_blob(desc) as f:
            while size <= desc.size and (data := f.read(min(1 << 20, desc.size + 1 - size))):
                h.update(data)
                size += len(data)
    except OSError:
        size = -1
    if size > desc.size:
        raise BadImageError(
            f"blob {desc.digest} does not match its descriptor "
            f"(it is longer than the {desc.size} bytes its descriptor says)"
        )
    if size != desc.size or BlobDigest(h.hexdigest()) != desc.digest:
        raise BadImageError(f"blob {desc.digest} does not match its descriptor")


def _import_layer(
    store: Store,
    desc: Descriptor,
    index: int,
    open_blob: Callable[[Descriptor], BinaryIO],
    lower: list[Path],
    diff_id: BlobDigest | None,
    cache: bool,
    threads: int,
    progress: Callable[[int], None] | None,
    budget: tf.ImportBudget | None = None,
    dedup: bool = False,
) -> tuple[ExtractedLayer, CachedLayer | None, str]:
    """Fetch, verify and unpack one layer blob (not published). Returns the
    layer, and when ``cache`` its blob-cache entry and compression (the
    blob's digest is recorded, the blob itself is not kept: see
    :mod:`snapws.oci.blobcache`).

    The blob is read once: a :class:`LayerBlobStream` hashes and
    decompresses it in a background thread while this one unpacks the tar.
    A remote's verified download is not hashed again."""
    what = f"layer {index + 1} ({str(desc.digest)[:19]})"
    with open_blob(desc) as raw:
        # a remote's verified private download needs no second sha256
        verified = getattr(raw, "verified_digest", None) == desc.digest
        stream = LayerBlobStream(raw, what, desc.size, hash_raw=not verified, progress=progress)
        try:
            reader = tf.TarReader(stream.read, what, budget=budget)
            try:
                layer = extract_layer(store, reader, lower, threads, dedup)
            except SnapwsError:
                if not verified:
                    stream.close()
                    _check_authentic(open_blob, desc)  # never echo a forged blob's bytes
                raise
            try:
                trailer = 0
                while data := stream.read(1 << 20):
                    trailer += len(data)
                    if trailer > MAX_TRAILER:
                        raise BadImageError(f"{what}: {trailer} bytes follow the end of the tar")
                raw_digest, diff = stream.finish()
                if stream.raw_size != desc.size or raw_digest not in (None, desc.digest):
                    raise BadImageError(
                        f"blob {desc.digest} does not match its descriptor "
                        f"({stream.raw_size} bytes, {str(raw_digest or '?')[:23]}...)"
                    )
                if reader.unterminated and diff != diff_id:  # whole only if diff_id says so
                    raise BadImageError(
                        f"{what}: truncated (no end-of-archive marker, and the "
                        f"uncompressed tar does not match diff_id {diff_id})"
                    )
                if diff_id is not None and diff != diff_id:
                    raise BadImageError(
                        f"{what}: the uncompressed tar does not match diff_id {diff_id}"
                    )
            except BaseException:
                discard_extracted(store, layer)
                raise
        finally:
            stream.close()
    entry = None
    if cache and stream.format in LAYER_MEDIA_TYPE:
        entry = CachedLayer(desc.digest, diff, desc.size)
    return layer, entry, stream.format


def import_image(
    store: Store,
    manifest: bytes,
    open_blob: Callable[[Descriptor], BinaryIO],
    progress: Callable[[int, int], None] | None = None,
    *,
    source: str = "an OCI image",
    author: str = "snapws import",
    threads: int = 8,
    dedup: bool = False,
) -> SnapshotId:
    """Import the image whose manifest is ``manifest``; returns its snapshot.

    ``open_blob(descriptor)`` opens a blob for reading (the caller's stream
    is closed here). Only layers the store lacks are fetched; every blob read
    is checked against its descriptor (sha256, size) and every layer against
    its ``diff_id``. A snapws image gives back the exact snapshot (same id,
    same layer ids, else BadImageError); another image becomes a chain of its
    layers under a new snapshot without parents (message ``import image
    ID``, ID the config digest's first 12 hex digits as docker shows it;
    time from the config's ``created``): the same image gives the same
    snapshot from any ``source`` (which only describes it to people).
    ``progress(done, total)`` counts blob bytes read. On any error nothing
    new remains in the store.

    Precondition: the caller holds the store lock exclusively. Raises
    BadImageError, UnsupportedError (device nodes or owners when not root,
    zstd without zstandard), OSError."""
    with collector_paused():
        return _import_image(store, manifest, open_blob, progress, author, threads, dedup)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the ``with`` block (as it
    was after). An import makes a few objects per file that live until it
    ends (entries, stats, names), nearly none in cycles; each full
    collection walks them all, and the collector runs one each time they
    grew by a quarter: on 100,000 files, 1 s of the unpacking thread (whose
    time is the import's) in collections that freed nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import_image(
    store: Store,
    manifest: bytes,
    open_blob: Callable[[Descriptor], BinaryIO],
    progress: Callable[[int, int], None] | None,
    author: str,
    threads: int,
    dedup: bool,
) -> SnapshotId:
    """:func:`import_image`'s work."""
    parsed = parse_manifest(manifest)
    config = read_config(open_blob, parsed.config)
    diff_ids = diff_ids_of(config, len(parsed.layers))
    parsed, diff_ids = without_history(parsed, config, diff_ids)
    info = snapws_info(parsed, config, manifest)
    if info is not None and same_as_stored(store, info):
        mark_shallow(store, info.record)
        return info.record.id
    expected: list[LayerId | None] = (
        list(info.layers) if info is not None else [None] * len(parsed.layers)
    )
    # layers the store has: a snapws layer by its id, a foreign one by the
    # chain id (its diff_id and those below) it was imported from before
    cids = chain_ids_of(diff_ids) if diff_ids else [None] * len(parsed.layers)
    have: list[LayerId | None] = []
    for want, cid in zip(expected, cids, strict=True):
        known = want if want is not None else chain_layer(store, cid) if cid else None
        have.append(known if known is not None and store.has_layer(known) else None)
    fetch = [i for i in range(len(parsed.layers)) if have[i] is None]
    total = sum(parsed.layers[i].size for i in fetch)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    budget = tf.ImportBudget()  # entries and bytes, over every layer of this import
    published: list[LayerId] = []
    unpacked: dict[LayerId, list[Entry]] = {}  # entries of the layers unpacked here
    recorded: list[tuple[LayerId, str, CachedLayer]] = []
    chain_ids: list[LayerId] = []
    try:
        for i, desc in enumerate(parsed.layers):
            want = expected[i]
            known = have[i]
            if known is not None:
                chain_ids.append(known)
                continue
            lower = [store.layer_tree(lid) for lid in reversed(chain_ids) if lid != EMPTY_LAYER]
            layer, entry, fmt = _import_layer(
                store,
                desc,
                i,
                open_blob,
                lower,
                diff_ids[i] if diff_ids else None,
                want is not None,
                threads,
                advance,
                budget,
                dedup,
            )
            try:
                if want is not None and layer.id != want:
                    raise BadImageError(
                        f"layer {i + 1} ({str(desc.digest)[:19]}) unpacks to layer "
                        f"{layer.id.short()}, but the image says {want.short()}"
                    )
                existed = store.has_layer(layer.id)
                lid = publish_extracted(store, layer, dedup)
            except BaseException:
                discard_extracted(store, layer)
                raise
            if not existed:
                published.append(lid)
            unpacked[lid] = layer.entries
            if entry is not None:
                recorded.append((lid, fmt, entry))  # recorded once all checks pass
            cid = cids[i]
            if want is None and cid is not None:
                record_chain(store, cid, lid)
            chain_ids.append(lid)
        if info is not None:
            record = info.record
            tops = [lid for lid in chain_ids if lid != EMPTY_LAYER][-1:]  # check_record's top
            entries = check_record(
                store,
                record,
                chain_ids,
                info.layer_manifest,
                unpacked.get(tops[0]) if tops else None,
            )
            check_stored(store, record.id, chain_ids)
            if not store.has_layer(record.layer) and keep_record_layer(
                store, record.layer, chain_ids[-1], entries
            ):
                published.append(record.layer)
        else:
            record = SnapshotRecord(
                parents=(),
                layer=chain_ids[-1] if chain_ids else EMPTY_LAYER,
                # the image's id (docker's and podman's IMAGE ID), not where it
                # came from: a layout, a tar and a registry give the same snapshot
                message=f"import image {parsed.config.digest.short()}",
                author=author,
                time_ns=created_ns(config) or time.time_ns(),
            )
        for lid, fmt, entry in recorded:
            record_layer(store, lid, fmt, entry)
        sid = store.write_snapshot(record, chain_ids)
        if not all(store.has_layer(lid) for lid in store.chain(sid)):
            store.write_chain(sid, chain_ids)  # a stored record whose layers were lost
        mark_shallow(store, record)
        return sid
    except BaseException:
        for lid in published:
            store.delete_layer(lid)
        raise


def mark_shallow(store: Store, record: SnapshotRecord) -> None:
    """Parents the store lacks get a tombstone (as ``snapws prune`` leaves):
    history then ends there, as in a shallow clone, instead of naming
    records that are missing."""
    for parent in record.parents:
        if not store.has_snapshot(parent) and not store.is_forgotten(parent):
            store.delete_snapshot(parent)  # writes the tombstone only
