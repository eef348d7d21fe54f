"""A snapshot's history travelling with its image.

A pushed image carries the records of the pushed snapshot's ancestors in
one more layer, the *history layer*: a gzip'd tar that is empty (its
end-of-archive marker, 1024 zero bytes) followed by a JSON document of
media type :data:`HISTORY_MEDIA_TYPE`::

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
OCI tool accepts it: umoci, skopeo, podman and docker unpack an empty layer
(tar readers stop at the marker). Its descriptor is annotated
``org.snapws.history`` and the config names its digest in the label of the
same name, so importers leave it out of the snapshot's chain.

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
from typing import Any, BinaryIO

from snapws.errors import BadImageError, RemoteNotFoundError
from snapws.ids import LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.oci.blobcache import blob_path, put_blob_bytes
from snapws.oci.compress import GZIP
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
    _check_record,
    _content,
    _layer_proof,
    _read_proof,
    canonical_json,
    export_layer,
    import_image,
    sha256_digest,
)
from snapws.store.store import EMPTY_LAYER, Store

EMPTY_TAR = bytes(1024)  # a tar's end-of-archive marker: no entries
MAX_HISTORY = 1 << 28  # bytes of the document, uncompressed
MAX_SNAPSHOTS = 1_000_000


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
        out.append(HistoryEntry(rec, chain, _layer_proof(store, rec, chain)))
    return out


@dataclass(frozen=True, slots=True)
class History:
    """A history document: entries by the id their record hashes to, and
    the blobs of chain layers the image does not carry."""

    entries: dict[SnapshotId, HistoryEntry]
    layers: dict[LayerId, Descriptor]


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """An image with its history layer, and the blobs of older snapshots'
    layers it does not carry, each with the snapshot that needs it."""

    image: Image
    extra: list[tuple[SnapshotId, Blob]]


def history_layer(
    entries: list[HistoryEntry], layers: dict[LayerId, Descriptor] | None = None
) -> tuple[bytes, str]:
    """The history layer's blob (gzip, reproducible) and its diff_id."""
    table = {
        lid.hex: {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
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
    return gzip.compress(raw, compresslevel=6, mtime=0), sha256_digest(raw)


def add_history(
    store: Store, image: Image, sid: SnapshotId, compression: str = GZIP
) -> HistoryPlan:
    """``image`` (of ``sid``) with a history layer carrying the records of
    every ancestor of ``sid`` the store has (unchanged when it has none),
    and the blobs (compressed once, then cached) of their chains' layers
    that ``image`` does not carry and the store has. Precondition: the
    store lock is held (shared is enough). Raises what export_layer raises."""
    entries = history_entries(store, sid)
    if not entries:
        return HistoryPlan(image, [])
    carried = {b.descriptor.annotations.get(ANNOTATION_LAYER) for b in image.layers}
    table: dict[LayerId, Descriptor] = {}
    extra: list[tuple[SnapshotId, Blob]] = []
    for e in entries:
        for lid in e.chain:
            if lid.hex in carried or not store.has_layer(lid):
                continue
            if lid not in table:
                cached = export_layer(store, lid, compression)
                table[lid] = Descriptor(LAYER_MEDIA_TYPE[compression], cached.digest, cached.size)
            d = table[lid]
            desc = Descriptor(d.media_type, d.digest, d.size, {ANNOTATION_LAYER: lid.hex})
            extra.append((e.record.id, Blob(desc, blob_path(store, d.digest))))
    blob, diff_id = history_layer(entries, table)
    digest, path = put_blob_bytes(store, blob)
    layer = Blob(
        Descriptor(OCI_LAYER_GZIP, digest, len(blob), {ANNOTATION_HISTORY: HISTORY_MEDIA_TYPE}),
        path,
    )
    config = json.loads(image.config.path.read_bytes())
    config["config"]["Labels"][LABEL_HISTORY] = digest
    config["rootfs"]["diff_ids"].append(diff_id)
    config_bytes = canonical_json(config)
    cdigest, cpath = put_blob_bytes(store, config_bytes)
    config_blob = Blob(Descriptor(OCI_CONFIG, cdigest, len(config_bytes)), cpath)
    manifest = json.loads(image.manifest)
    manifest["config"] = config_blob.descriptor.to_json()
    manifest["layers"].append(layer.descriptor.to_json())
    data = canonical_json(manifest)
    full = Image(data, sha256_digest(data), config_blob, [*image.layers, layer])
    return HistoryPlan(full, extra)


def history_descriptor(manifest: bytes) -> Descriptor | None:
    """The history layer's descriptor in an image manifest (None: none)."""
    try:
        layers = json.loads(manifest).get("layers") or []
        for obj in reversed(layers):
            if (obj.get("annotations") or {}).get(ANNOTATION_HISTORY) == HISTORY_MEDIA_TYPE:
                return Descriptor.from_json(obj)
    except (ValueError, AttributeError, TypeError):
        return None
    return None


def read_history(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> History:
    """The history layer ``desc``: its entries by the id their record
    hashes to, and its layer table. Raises BadImageError (a blob not matching its descriptor, not a
    history document, oversized, malformed)."""
    if desc.size > MAX_HISTORY:
        raise BadImageError(f"history blob {desc.digest[:19]} of {desc.size} bytes (too large)")
    with open_blob(desc) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or sha256_digest(data) != desc.digest:
        raise BadImageError(f"history blob {desc.digest} does not match its descriptor")
    z = zlib.decompressobj(wbits=31)
    try:
        raw = z.decompress(data, MAX_HISTORY + len(EMPTY_TAR))
    except zlib.error as e:
        raise BadImageError(f"history blob {desc.digest[:19]}: {e}") from None
    if z.unconsumed_tail or not z.eof:
        raise BadImageError(f"history blob {desc.digest[:19]} is truncated or too large")
    if not raw.startswith(EMPTY_TAR):
        raise BadImageError(f"history blob {desc.digest[:19]} is not an empty tar")
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
        raise BadImageError(f"history blob {desc.digest[:19]} is malformed: {e}") from None
    return History(out, layers)


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
    is (:func:`snapws.oci.image._check_record`). History ends at the first
    snapshot not taken: a tombstone marks it, as in a shallow clone.
    Returns the snapshots written. Precondition: the caller holds the store
    lock exclusively. Raises BadImageError for a chain that does not show
    its record."""
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
            continue
        rec = entry.record
        # (a parent not taken, beyond depth or without its layers, is checked
        # as an imported image's is: its chain must show the record's layer)
        if not _extends_parent(store, rec, chain):
            if not rec.parents and not _shows_own_layer(store, rec, chain):
                continue  # a first snapshot is its layer: any other content is refused
            carried = _read_proof(entry.proof, rec.layer) if entry.proof is not None else None
            _check_record(store, rec, chain, carried)
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
    as the image of it :func:`snapws.oci.image.build_image` would give
    (same record, chain and proof; layers the store has are not read), so
    that every check of an import applies. Raises BadImageError."""
    rec = entry.record
    placeholder = "sha256:" + "0" * 64  # a layer the store has: never opened
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
    cdesc = Descriptor(OCI_CONFIG, sha256_digest(config), len(config))
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
    return _content(store, chain) == _content(store, own)


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
