"""A snapshot's history travelling with its image.

A pushed image carries the records of the pushed snapshot's ancestors in
*history layers* after its own: each a gzip'd tar that is empty (its
end-of-archive marker, 1024 zero bytes) followed by a JSON document of
media type :data:`HISTORY_MEDIA_TYPE`. A push that fast-forwards a tag
keeps the tag's history layers and adds one holding only the records they
lack (:func:`with_history`); past :data:`MAX_CHUNKS` layers, or when the
push is not a fast-forward, one layer holds them all::

    {"mediaType": "application/vnd.snapws.history.v1+json",
     "snapshots": [{"record": "<canonical record>", "chain": ["<layer id>", ...],
                    "proof": "<base64 zlib manifest>"}, ...],
     "layers": {"<layer id>": {"mediaType", "digest", "size"}, ...}}

``layers`` names the blobs of chain layers the image itself does not carry
(older snapshots' chains after compaction or flatten): a push uploads them
beside the image, and a fetch downloads those the store lacks, so older
snapshots check out too. (Only the tagged manifest's own blobs are kept by
a registry's garbage collection with ``--delete-untagged``; those blobs are
kept by the manifests that first pushed them.)

Being a layer of the tagged manifest, registry garbage collection keeps it
as long as the tag lives (Distribution 2.8 has no referrers API), and every
OCI tool accepts them: umoci, skopeo, podman and docker unpack an empty
layer (tar readers stop at the marker). Their descriptors are annotated
``org.snapws.history`` and the config lists their digests in the label of
the same name, so importers leave them out of the snapshot's chain.

Nothing in it is trusted: :func:`import_history` takes a record only when it
hashes to an id that an imported record names as a parent, and checks its
chain against its parent's as an image import does.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import BadImageError, RemoteNotFoundError
from snapws.ids import BlobDigest, LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.oci.blobcache import blob_path
from snapws.oci.chaincheck import check_record, content_of
from snapws.oci.compress import GZIP
from snapws.oci.export import export_layer, layer_proof
from snapws.oci.image import (
    ANNOTATION_HISTORY,
    ANNOTATION_LAYER,
    HISTORY_MEDIA_TYPE,
    LABEL_HISTORY,
    LABEL_LAYER_MANIFEST,
    LABEL_LAYERS,
    LABEL_RECORD,
    LABEL_SNAPSHOT,
    LAYER_MEDIA_TYPE,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Blob,
    Descriptor,
    Image,
    canonical_json,
)
from snapws.oci.imageconfig import read_proof
from snapws.oci.importer import import_image
from snapws.store.store import EMPTY_LAYER, Store

EMPTY_TAR = bytes(1024)  # a tar's end-of-archive marker: no entries
MAX_HISTORY = 1 << 28  # bytes of the document, uncompressed
MAX_SNAPSHOTS = 1_000_000
#: history layers one image carries at most: each push adds one with the
#: records the remote lacks; past this many, one layer carries them all
MAX_CHUNKS = 16


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One ancestor: its record, the chain it mounts, and the manifest of
    its layer when the chain's top is a merged layer (the proof)."""

    record: SnapshotRecord
    chain: list[LayerId]
    proof: str | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "record": self.record.canonical().decode(),
            "chain": [lid.hex for lid in self.chain],
        }
        if self.proof is not None:
            obj["proof"] = self.proof
        return obj


def ancestors(store: Store, sid: SnapshotId, limit: int = MAX_SNAPSHOTS) -> list[SnapshotId]:
    """``sid``'s ancestors the store has (not ``sid``), nearest first; the
    walk stops at snapshots the store lacks or forgot."""
    seen = {sid}
    order: list[SnapshotId] = []
    todo = [sid]
    while todo and len(order) < limit:
        nxt = []
        for s in todo:
            for p in store.read_snapshot(s).parents:
                if p not in seen and store.has_snapshot(p):
                    seen.add(p)
                    order.append(p)
                    nxt.append(p)
        todo = nxt
    return order[:limit]


def history_entries(store: Store, sid: SnapshotId) -> list[HistoryEntry]:
    """The :class:`HistoryEntry` of each ancestor of ``sid`` the store has.
    Precondition: the store lock is held (shared is enough)."""
    out = []
    for a in ancestors(store, sid):
        rec = store.read_snapshot(a)
        chain = [lid for lid in store.chain(a) if lid != EMPTY_LAYER]
        out.append(HistoryEntry(rec, chain, layer_proof(store, rec, chain)))
    return out


@dataclass(frozen=True, slots=True)
class History:
    """A history document: entries by the id their record hashes to, and
    the blobs of chain layers the image does not carry."""

    entries: dict[SnapshotId, HistoryEntry]
    layers: dict[LayerId, Descriptor]


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """What a push of a snapshot can carry: an entry for every ancestor the
    store has, and the blobs of their chains' layers its image does not
    carry (the table a history layer lists; each blob with the snapshot
    that needs it)."""

    entries: list[HistoryEntry]
    layers: dict[LayerId, Descriptor]
    extra: list[tuple[SnapshotId, Blob]]


@dataclass(frozen=True, slots=True)
class RemoteHistory:
    """The history layers a remote's tagged image carries (each blob kept
    in a local file, with its diff_id) and the snapshots they hold."""

    layers: list[tuple[Blob, BlobDigest]]
    snapshots: set[SnapshotId]
    listed: set[LayerId]  # layers whose blobs their tables name


def history_layer(
    entries: list[HistoryEntry], layers: dict[LayerId, Descriptor] | None = None
) -> tuple[bytes, BlobDigest]:
    """A history layer's blob (gzip, reproducible) and its diff_id."""
    table = {
        lid.hex: {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size}
        for lid, d in (layers or {}).items()
    }
    doc = canonical_json(
        {
            "mediaType": HISTORY_MEDIA_TYPE,
            "snapshots": [e.to_json() for e in entries],
            "layers": table,
        }
    )
    raw = EMPTY_TAR + doc
    return gzip.compress(raw, compresslevel=6, mtime=0), BlobDigest.of(raw)


def plan_history(
    store: Store,
    image: Image,
    sid: SnapshotId,
    compression: str = GZIP,
    have: Callable[[BlobDigest], bool] | None = None,
) -> HistoryPlan:
    """The :class:`HistoryPlan` of ``image`` (of ``sid``): the entries of
    every ancestor of ``sid`` the store has, and the blobs (compressed once,
    then cached; ``have``: as for export_layer) of their chains' layers that
    ``image`` does not carry and the store has. Precondition: the store
    lock is held (shared is enough). Raises what export_layer raises."""
    entries = history_entries(store, sid)
    carried = {b.descriptor.annotations.get(ANNOTATION_LAYER) for b in image.layers}
    table: dict[LayerId, Descriptor] = {}
    extra: list[tuple[SnapshotId, Blob]] = []
    for e in entries:
        for lid in e.chain:
            if lid.hex in carried or not store.has_layer(lid):
                continue
            if lid not in table:
                cached = export_layer(store, lid, compression, have=have)
                table[lid] = Descriptor(LAYER_MEDIA_TYPE[compression], cached.digest, cached.size)
            d = table[lid]
            desc = Descriptor(d.media_type, d.digest, d.size, {ANNOTATION_LAYER: lid.hex})
            extra.append((e.record.id, Blob(desc, blob_path(store, d.digest))))
    return HistoryPlan(entries, table, extra)


def with_history(
    image: Image, plan: HistoryPlan, reuse: RemoteHistory | None, workdir: Path
) -> Image:
    """``image`` with its history layers: those of ``reuse`` (the remote
    tag's, when the push is a fast-forward of it; dropped once there are
    :data:`MAX_CHUNKS` of them, then one layer carries everything again),
    then one with the entries of ``plan`` they do not hold (the records the
    remote lacks) and their blobs' table. New blobs (that layer, the
    config) are written in ``workdir``. ``image`` itself when there is no
    history at all."""
    if reuse is not None and len(reuse.layers) >= MAX_CHUNKS:
        reuse = None
    kept = list(reuse.layers) if reuse is not None else []
    have = reuse.snapshots if reuse is not None else set()
    listed = reuse.listed if reuse is not None else set()
    fresh = [e for e in plan.entries if e.record.id not in have]
    # every older layer this image does not carry must be named somewhere
    # (a layer an earlier image carried may no longer be in this one)
    table = {lid: d for lid, d in plan.layers.items() if lid not in listed}
    if not kept and not fresh and not table:
        return image
    layers = list(kept)
    if fresh or table:
        blob, diff_id = history_layer(fresh, table)
        digest = BlobDigest.of(blob)
        path = workdir / digest.hex
        path.write_bytes(blob)
        layers.append((Blob(_history_descriptor(digest, len(blob)), path), diff_id))
    config = json.loads(image.config.path.read_bytes())
    config["config"]["Labels"][LABEL_HISTORY] = ",".join(
        str(b.descriptor.digest) for b, _ in layers
    )
    config["rootfs"]["diff_ids"].extend(str(diff_id) for _, diff_id in layers)
    config_bytes = canonical_json(config)
    cdigest = BlobDigest.of(config_bytes)
    cpath = workdir / cdigest.hex
    cpath.write_bytes(config_bytes)
    config_blob = Blob(Descriptor(OCI_CONFIG, cdigest, len(config_bytes)), cpath)
    manifest = json.loads(image.manifest)
    manifest["config"] = config_blob.descriptor.to_json()
    manifest["layers"].extend(b.descriptor.to_json() for b, _ in layers)
    data = canonical_json(manifest)
    return Image(data, BlobDigest.of(data), config_blob, [*image.layers, *(b for b, _ in layers)])


def _history_descriptor(digest: BlobDigest, size: int) -> Descriptor:
    return Descriptor(OCI_LAYER_GZIP, digest, size, {ANNOTATION_HISTORY: HISTORY_MEDIA_TYPE})


def history_descriptors(manifest: bytes) -> list[Descriptor]:
    """The history layers' descriptors in an image manifest, in order."""
    try:
        layers = json.loads(manifest).get("layers") or []
        return [
            Descriptor.from_json(obj)
            for obj in layers
            if (obj.get("annotations") or {}).get(ANNOTATION_HISTORY) == HISTORY_MEDIA_TYPE
        ][-MAX_CHUNKS:]
    except (ValueError, AttributeError, TypeError, BadImageError):
        return []


def history_descriptor(manifest: bytes) -> Descriptor | None:
    """The last history layer's descriptor in an image manifest (None: none)."""
    found = history_descriptors(manifest)
    return found[-1] if found else None


def read_remote_history(
    manifest: bytes, open_blob: Callable[[Descriptor], BinaryIO], workdir: Path
) -> RemoteHistory:
    """The history layers of a remote's image ``manifest``, each downloaded
    into ``workdir`` and read. Raises BadImageError, RemoteError."""
    layers = []
    held: set[SnapshotId] = set()
    listed: set[LayerId] = set()
    for desc in history_descriptors(manifest):
        data = _history_bytes(open_blob, desc)
        history, diff_id = _decode(data, desc)
        path = workdir / desc.digest.hex
        path.write_bytes(data)
        layers.append((Blob(_history_descriptor(desc.digest, desc.size), path), diff_id))
        held |= set(history.entries)
        listed |= set(history.layers)
    return RemoteHistory(layers, held, listed)


def read_histories(open_blob: Callable[[Descriptor], BinaryIO], manifest: bytes) -> History | None:
    """Every history layer of ``manifest`` read and merged (None: none).
    Raises BadImageError, RemoteError."""
    descs = history_descriptors(manifest)
    if not descs:
        return None
    entries: dict[SnapshotId, HistoryEntry] = {}
    layers: dict[LayerId, Descriptor] = {}
    for desc in descs:
        h = read_history(open_blob, desc)
        entries.update(h.entries)
        layers.update(h.layers)
    return History(entries, layers)


def read_history(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> History:
    """The history layer ``desc``: its entries by the id their record
    hashes to, and its layer table. Raises BadImageError (a blob not
    matching its descriptor, not a history document, oversized, malformed)."""
    return _decode(_history_bytes(open_blob, desc), desc)[0]


def _history_bytes(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> bytes:
    if desc.size > MAX_HISTORY:
        raise BadImageError(
            f"history blob {str(desc.digest)[:19]} of {desc.size} bytes (too large)"
        )
    with open_blob(desc) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or BlobDigest.of(data) != desc.digest:
        raise BadImageError(f"history blob {desc.digest} does not match its descriptor")
    return data


def _decode(data: bytes, desc: Descriptor) -> tuple[History, BlobDigest]:
    """A history blob's document and the diff_id of its uncompressed bytes."""
    z = zlib.decompressobj(wbits=31)
    try:
        raw = z.decompress(data, MAX_HISTORY + len(EMPTY_TAR))
    except zlib.error as e:
        raise BadImageError(f"history blob {str(desc.digest)[:19]}: {e}") from None
    if z.unconsumed_tail or not z.eof:
        raise BadImageError(f"history blob {str(desc.digest)[:19]} is truncated or too large")
    if not raw.startswith(EMPTY_TAR):
        raise BadImageError(f"history blob {str(desc.digest)[:19]} is not an empty tar")
    try:
        doc = json.loads(raw[len(EMPTY_TAR) :])
        if doc.get("mediaType") != HISTORY_MEDIA_TYPE:
            raise ValueError(f"media type {doc.get('mediaType')!r}")
        items = doc["snapshots"]
        if not isinstance(items, list) or len(items) > MAX_SNAPSHOTS:
            raise ValueError("no usable snapshot list")
        out: dict[SnapshotId, HistoryEntry] = {}
        for item in items:
            rec = SnapshotRecord.from_canonical(str(item["record"]).encode())
            chain = [LayerId(str(x)) for x in item["chain"]]
            proof = item.get("proof")
            out[rec.id] = HistoryEntry(rec, chain, str(proof) if proof is not None else None)
        table = doc.get("layers") or {}
        if not isinstance(table, dict):
            raise ValueError("'layers' is not an object")
        layers = {LayerId(str(k)): Descriptor.from_json(v) for k, v in table.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadImageError(f"history blob {str(desc.digest)[:19]} is malformed: {e}") from None
    return History(out, layers), BlobDigest.of(raw)


def import_history(
    store: Store,
    tip: SnapshotId,
    history: History,
    depth: int | None,
    open_blob: Callable[[Descriptor], BinaryIO] | None = None,
) -> list[SnapshotId]:
    """Write the records of ``tip``'s ancestors found in ``history`` whose
    layers the store has or ``open_blob`` brings (those in its layer
    table: each is verified as an image's layer, and must unpack to the
    layer id the chain names), down to ``depth`` snapshots counting ``tip``
    as 1 (None: all), oldest first. Each record is reached through a parent id
    of one already taken and hashes to that id (entries are keyed by their
    own hash), and its chain is checked against its parent's as an image's
    is (:func:`snapws.oci.chaincheck.check_record`). History ends at the first
    snapshot not taken: a tombstone marks it, as in a shallow clone.
    A record that fails a check is not taken (nothing of it is kept). Returns
    the snapshots written. Precondition: the caller holds the store lock
    exclusively. Raises RemoteError, AuthError (a failing remote), OSError."""
    entries = history.entries
    wanted = _within_depth(store, tip, entries, depth)
    written = []
    for sid in reversed(wanted):  # oldest first: parents are checked before children
        entry = entries[sid]
        chain = entry.chain
        missing = [lid for lid in chain if not store.has_layer(lid)]
        if missing:
            if open_blob is None or not all(lid in history.layers for lid in missing):
                continue  # its layers did not travel: history ends here
            try:
                if _import_entry(store, entry, history.layers, open_blob) == sid:
                    written.append(sid)
            except RemoteNotFoundError:
                pass  # the registry no longer has a blob (collected): history ends here
            except BadImageError:
                pass  # forged or damaged: not taken (the import kept nothing)
            continue
        rec = entry.record
        # (a parent not taken, beyond depth or without its layers, is checked
        # as an imported image's is: its chain must show the record's layer)
        if not _extends_parent(store, rec, chain):
            if not rec.parents and not _shows_own_layer(store, rec, chain):
                continue  # a first snapshot is its layer: any other content is refused
            try:
                carried = read_proof(entry.proof, rec.layer) if entry.proof is not None else None
                check_record(store, rec, chain, carried)
            except BadImageError:
                continue  # its chain does not show its record: not taken
        store.write_snapshot(rec, chain)
        written.append(sid)
    for sid in [tip, *written]:
        for parent in store.read_snapshot(sid).parents:
            if not store.has_snapshot(parent) and not store.is_forgotten(parent):
                store.delete_snapshot(parent)  # the tombstone only
    return written


def _import_entry(
    store: Store,
    entry: HistoryEntry,
    table: dict[LayerId, Descriptor],
    open_blob: Callable[[Descriptor], BinaryIO],
) -> SnapshotId:
    """Import one history snapshot whose chain has layers the store lacks,
    as the image of it :func:`snapws.oci.export.build_image` would give
    (same record, chain and proof; layers the store has are not read), so
    that every check of an import applies. Raises BadImageError."""
    rec = entry.record
    placeholder = BlobDigest("0" * 64)  # a layer the store has: never opened
    descs = []
    for lid in entry.chain:
        d = table.get(lid)
        if d is None:
            d = Descriptor(OCI_LAYER_GZIP, placeholder, 0)
        descs.append(Descriptor(d.media_type, d.digest, d.size, {ANNOTATION_LAYER: lid.hex}))
    labels = {
        LABEL_SNAPSHOT: rec.id.hex,
        LABEL_RECORD: rec.canonical().decode(),
        LABEL_LAYERS: ",".join(lid.hex for lid in entry.chain),
    }
    if entry.proof is not None:
        labels[LABEL_LAYER_MANIFEST] = entry.proof
    config = canonical_json({"config": {"Labels": labels}})  # layers are checked by their ids
    cdesc = Descriptor(OCI_CONFIG, BlobDigest.of(config), len(config))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cdesc.to_json(),
            "layers": [d.to_json() for d in descs],
        }
    )

    def opener(d: Descriptor) -> BinaryIO:
        return io.BytesIO(config) if d.digest == cdesc.digest else open_blob(d)

    return import_image(store, manifest, opener, source="a pushed history")


def _within_depth(
    store: Store, tip: SnapshotId, entries: dict[SnapshotId, HistoryEntry], depth: int | None
) -> list[SnapshotId]:
    """Ancestors of ``tip`` that ``entries`` hold and the store lacks,
    nearest first, at most ``depth - 1`` generations below ``tip`` (the
    walk goes through ancestors the store has)."""
    out: list[SnapshotId] = []
    seen = {tip}
    level = [tip]
    generation = 1
    while level and (depth is None or generation < depth):
        nxt = []
        for s in level:
            rec = store.read_snapshot(s) if store.has_snapshot(s) else entries[s].record
            for p in rec.parents:
                if p in seen or not (store.has_snapshot(p) or p in entries):
                    continue
                seen.add(p)
                nxt.append(p)  # walk through stored ones too (a deepening fetch)
                if not store.has_snapshot(p):
                    out.append(p)
        level = nxt
        generation += 1
    return out


def _shows_own_layer(store: Store, rec: SnapshotRecord, chain: list[LayerId]) -> bool:
    """True when ``chain`` shows exactly the tree of first snapshot ``rec``:
    its layer's (whose manifest the store must have)."""
    if rec.layer != EMPTY_LAYER and not store.has_layer(rec.layer):
        return False
    own = [rec.layer] if rec.layer != EMPTY_LAYER else []
    return content_of(store, chain) == content_of(store, own)


def _extends_parent(store: Store, rec: SnapshotRecord, chain: list[LayerId]) -> bool:
    """True when ``chain`` is its (single, stored) parent's chain with the
    record's layer on top, or the record's layer alone for a first
    snapshot: then it shows the record by construction."""
    if not rec.parents:
        return chain == ([rec.layer] if rec.layer != EMPTY_LAYER else [])
    if len(rec.parents) != 1 or not store.has_snapshot(rec.parents[0]):
        return False
    below = [lid for lid in store.chain(rec.parents[0]) if lid != EMPTY_LAYER]
    top = [rec.layer] if rec.layer != EMPTY_LAYER else []
    return chain == below + top
