"""Snapshots as OCI images, and OCI images as snapshots.

An exported snapshot is an OCI image manifest whose layers are the
snapshot's layer chain (bottom first), one layer tar each, annotated
``org.snapws.layer=<layer id>``; its config records the snapshot in labels
(``org.snapws.snapshot``, ``org.snapws.record``: the canonical record,
``org.snapws.layers``) and ``created`` from the record's time. Everything is
serialized canonically, so the same snapshot gives the same digests.

Importing verifies the sha256 and size of every blob it reads against its
descriptor and the sha256 of every uncompressed layer against the config's
``diff_ids``, fetches only layers the store lacks, and recreates a snapws
image's record exactly (same snapshot id; each layer must hash to the id it
is annotated with). Any other image becomes a chain of layers under a new
root snapshot. This is the API the remotes (push, pull, cache) build on.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import os
import platform
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import BadImageError, SnapwsError, StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers.equivalence import chain_content, covers
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.model import Entry, Kind, SnapshotRecord, decode_manifest, manifest_id
from snapws.oci import tarformat as tf
from snapws.oci.blobcache import (
    BlobWriter,
    CachedLayer,
    blob_path,
    cached_layer,
    chain_layer,
    digest_hex,
    put_blob_bytes,
    record_chain,
    record_layer,
)
from snapws.oci.blobstream import LayerBlobStream
from snapws.oci.compress import COMPRESSIONS, GZIP, ZSTD, compressor
from snapws.oci.tarlayer import (
    ExtractedLayer,
    extract_layer,
    publish_extracted,
    write_layer_tar,
)
from snapws.store.store import EMPTY_LAYER, Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
LAYER_MEDIA_TYPE = {GZIP: OCI_LAYER_GZIP, ZSTD: OCI_LAYER_ZSTD}

ANNOTATION_LAYER = "org.snapws.layer"
LABEL_SNAPSHOT = "org.snapws.snapshot"
LABEL_RECORD = "org.snapws.record"
LABEL_LAYERS = "org.snapws.layers"
#: base64 of the zlib-compressed manifest of the record's layer, when the
#: chain's top is a merged layer (compaction): the proof that the top has it
LABEL_LAYER_MANIFEST = "org.snapws.layer-manifest"
MAX_PROOF = 256 << 20  # a record layer's manifest, decompressed
#: the history layer (snapws.oci.history): annotation on its descriptor, and
#: config label naming its digest; not part of the snapshot's chain
ANNOTATION_HISTORY = LABEL_HISTORY = "org.snapws.history"
HISTORY_MEDIA_TYPE = "application/vnd.snapws.history.v1+json"

MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20
MAX_LAYERS = 4096
MAX_BLOB = 1 << 42
MAX_TRAILER = 64 << 20  # bytes after a layer's end-of-archive marker

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


def host_architecture() -> str:
    """This machine's architecture in Go's spelling (amd64, arm64, ...)."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine.lower())


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, ASCII: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            obj["annotations"] = dict(self.annotations)
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> Descriptor:
        """Parse a descriptor. Raises BadImageError if it is malformed or
        names a digest other than sha256."""
        if not isinstance(obj, dict):
            raise BadImageError("a descriptor is not a JSON object")
        media, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        ann = obj.get("annotations") or {}
        if not isinstance(media, str) or not isinstance(digest, str):
            raise BadImageError("a descriptor lacks its mediaType or digest")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB:
            raise BadImageError(f"descriptor {digest[:80]} has a bad size {size!r}")
        try:
            digest_hex(digest)
        except ValueError:
            raise BadImageError(
                f"descriptor digest {digest[:80]!r} is not sha256:<64 hex digits>"
            ) from None
        if not isinstance(ann, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
        ):
            raise BadImageError(f"descriptor {digest} has malformed annotations")
        return cls(media, digest, size, dict(ann))


@dataclass(frozen=True)
class Blob:
    """A blob on disk: its descriptor and the file holding its bytes."""

    descriptor: Descriptor
    path: Path


@dataclass(frozen=True)
class Image:
    """A built image: manifest bytes and digest, config and layer blobs."""

    manifest: bytes
    manifest_digest: str
    config: Blob
    layers: list[Blob]


# ---- building ----------------------------------------------------------------------


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


def export_layer(
    store: Store,
    lid: LayerId,
    compression: str,
    progress: Callable[[int], None] | None = None,
) -> CachedLayer:
    """The compressed tar of layer ``lid``, from the blob cache or made now
    (and cached). Precondition: the store lock is held (shared is enough).
    Raises UnsupportedError, StoreCorruptError, OSError."""
    hit = cached_layer(store, lid, compression)
    if hit is not None:
        return hit
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
        entry = CachedLayer(w.digest, "sha256:" + diff.hexdigest(), w.size)
    record_layer(store, lid, compression, entry)
    return entry


def build_image(
    store: Store,
    sid: SnapshotId,
    compression: str = GZIP,
    progress: Callable[[int, int], None] | None = None,
) -> Image:
    """The OCI image of snapshot ``sid``: its chain's layers (compressed once,
    then taken from the store's blob cache), a config and a manifest, all
    kept as blobs in the store. ``progress(done, total)`` counts file bytes
    of layers being compressed.

    Precondition: the store lock is held (shared is enough). Raises
    RevisionNotFoundError/StoreCorruptError for a missing snapshot,
    UnsupportedError (zstd without zstandard, a socket), ValueError for an
    unknown ``compression``."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    compressor(compression)  # fail early when zstd is missing
    rec = store.read_snapshot(sid)
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    todo = [lid for lid in chain if cached_layer(store, lid, compression) is None]
    total = sum(_layer_bytes(store, lid) for lid in todo)
    done_before = 0
    layers: list[Blob] = []
    diff_ids: list[str] = []
    for lid in chain:
        base = done_before

        def step(n: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n, total)

        entry = export_layer(store, lid, compression, step)
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
    proof = _layer_proof(store, rec, chain)
    if proof is not None:
        labels[LABEL_LAYER_MANIFEST] = proof
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": _rfc3339(rec.time_ns),
        "author": rec.author,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
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
    return Image(manifest, sha256_digest(manifest), config_blob, layers)


def _layer_proof(store: Store, rec: SnapshotRecord, chain: list[LayerId]) -> str | None:
    """The :data:`LABEL_LAYER_MANIFEST` value of an export whose chain's top
    is not the record's layer (None when it is, or when the record's layer
    is empty or no longer stored: importers then refuse the image unless
    they have that layer)."""
    top = chain[-1] if chain else EMPTY_LAYER
    if rec.layer in (top, EMPTY_LAYER) or not store.has_layer(rec.layer):
        return None
    return base64.b64encode(zlib.compress(store.read_manifest(rec.layer), 9)).decode()


# ---- reading manifests --------------------------------------------------------------


@dataclass(frozen=True)
class ParsedManifest:
    """An image manifest, checked: config and layer descriptors."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str]


def parse_manifest(manifest: bytes) -> ParsedManifest:
    """Parse an OCI or Docker (schema 2) image manifest. Raises BadImageError
    (an index, another artifact, malformed JSON or descriptors)."""
    if len(manifest) > MAX_MANIFEST:
        raise BadImageError(f"an image manifest of {len(manifest)} bytes (too large)")
    try:
        obj = json.loads(manifest)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise BadImageError(f"the image manifest is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadImageError("the image manifest is not a JSON object")
    media = obj.get("mediaType", OCI_MANIFEST)
    if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in obj:
        raise BadImageError(
            "this is an image index (several images), not an image manifest",
            hint="choose one image of the index (--ref NAME)",
        )
    if media not in (OCI_MANIFEST, DOCKER_MANIFEST) or obj.get("schemaVersion") != 2:
        raise BadImageError(
            f"unsupported manifest type {media!r} (schema {obj.get('schemaVersion')})"
        )
    layers = obj.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise BadImageError("the image manifest has no usable layer list")
    descs = [Descriptor.from_json(x) for x in layers]
    for d in descs:
        if not d.media_type.startswith(LAYER_TYPE_PREFIXES):
            raise BadImageError(f"blob {d.digest} of type {d.media_type!r} is not a layer")
    ann = obj.get("annotations") or {}
    return ParsedManifest(
        media,
        Descriptor.from_json(obj.get("config")),
        descs,
        {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
    )


def layer_ids_of(manifest: bytes) -> list[LayerId | None]:
    """The snapws layer id each layer of ``manifest`` is annotated with
    (None for layers without a valid ``org.snapws.layer``). Raises
    BadImageError for a malformed manifest."""
    out: list[LayerId | None] = []
    for d in parse_manifest(manifest).layers:
        try:
            out.append(LayerId(d.annotations.get(ANNOTATION_LAYER, "")))
        except ValueError:
            out.append(None)
    return out


def _read_config(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> dict[str, Any]:
    if desc.size > MAX_CONFIG:
        raise BadImageError(f"an image config of {desc.size} bytes (too large)")
    with open_blob(desc) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or sha256_digest(data) != desc.digest:
        raise BadImageError(f"config blob {desc.digest} does not match its descriptor")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BadImageError(f"the image config is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadImageError("the image config is not a JSON object")
    return obj


@dataclass(frozen=True)
class _SnapwsInfo:
    record: SnapshotRecord
    layers: list[LayerId]
    layer_manifest: bytes | None  # the record layer's manifest (verified), if carried


def _snapws_info(
    parsed: ParsedManifest, config: dict[str, Any], manifest: bytes
) -> _SnapwsInfo | None:
    """The record and layer ids of a snapws image (None: a foreign image).
    Raises BadImageError when the labels contradict each other."""
    cfg = config.get("config") or {}
    labels = cfg.get("Labels") if isinstance(cfg, dict) else None
    if not isinstance(labels, dict) or LABEL_RECORD not in labels:
        return None
    try:
        rec = SnapshotRecord.from_canonical(str(labels[LABEL_RECORD]).encode())
        sid = SnapshotId(str(labels.get(LABEL_SNAPSHOT, "")))
        listed = [LayerId(x) for x in str(labels.get(LABEL_LAYERS, "")).split(",") if x]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise BadImageError(f"the snapws labels of the image config are malformed: {e}") from None
    if rec.id != sid:
        raise BadImageError(
            f"the image's snapshot record hashes to {rec.id.short()}, "
            f"not to the {sid.short()} it claims"
        )
    annotated = _annotated_ids(parsed.layers)
    if len(listed) != len(parsed.layers) or (
        any(a is not None for a in annotated) and annotated != listed
    ):
        # (copies through docker archives lose the annotations: the label stays)
        raise BadImageError("the image's layer annotations differ from its org.snapws.layers label")
    return _SnapwsInfo(rec, listed, _read_proof(labels.get(LABEL_LAYER_MANIFEST), rec.layer))


def _annotated_ids(layers: list[Descriptor]) -> list[LayerId | None]:
    out: list[LayerId | None] = []
    for d in layers:
        try:
            out.append(LayerId(d.annotations.get(ANNOTATION_LAYER, "")))
        except ValueError:
            out.append(None)
    return out


def _without_history(
    parsed: ParsedManifest, config: dict[str, Any], diff_ids: list[str] | None
) -> tuple[ParsedManifest, list[str] | None]:
    """The manifest and diff_ids without snapws history layers (the last
    layers, named by the config's :data:`LABEL_HISTORY` label or annotated
    so): they carry ancestors' records, not content (snapws.oci.history)."""
    cfg = config.get("config")
    labels = cfg.get("Labels") if isinstance(cfg, dict) else None
    named = str(labels.get(LABEL_HISTORY, "")).split(",") if isinstance(labels, dict) else []
    n = len(parsed.layers)
    while n and (
        parsed.layers[n - 1].digest in named
        or parsed.layers[n - 1].annotations.get(ANNOTATION_HISTORY) == HISTORY_MEDIA_TYPE
    ):
        n -= 1
    if n == len(parsed.layers):
        return parsed, diff_ids
    kept = ParsedManifest(parsed.media_type, parsed.config, parsed.layers[:n], parsed.annotations)
    return kept, diff_ids[:n] if diff_ids is not None else None


def _read_proof(text: Any, layer: LayerId) -> bytes | None:
    """The manifest carried in :data:`LABEL_LAYER_MANIFEST`, once it hashes
    to ``layer``. Raises BadImageError (malformed, too large, another layer)."""
    if text is None:
        return None
    try:
        packed = base64.b64decode(str(text), validate=True)
        z = zlib.decompressobj()
        data = z.decompress(packed, MAX_PROOF)
        if z.unconsumed_tail or not z.eof:
            raise ValueError("too large or truncated")
    except (ValueError, zlib.error) as e:
        raise BadImageError(
            f"the image's {LABEL_LAYER_MANIFEST} label is malformed ({e})"
        ) from None
    if manifest_id(data) != layer:
        raise BadImageError(
            f"the image's {LABEL_LAYER_MANIFEST} label is not the manifest of layer {layer.short()}"
        )
    return data


def chain_ids_of(diff_ids: list[str]) -> list[str | None]:
    """The OCI chain id of each layer: its diff_id, hashed with those below."""
    out: list[str | None] = []
    prev: str | None = None
    for d in diff_ids:
        prev = d if prev is None else sha256_digest(f"{prev} {d}".encode())
        out.append(prev)
    return out


def _diff_ids(config: dict[str, Any], count: int) -> list[str] | None:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or len(ids) != count:
        raise BadImageError(
            f"the image config lists {len(ids) if isinstance(ids, list) else 'no'} diff_ids "
            f"for {count} layers"
        )
    for d in ids:
        try:
            digest_hex(str(d))
        except ValueError:
            raise BadImageError(f"diff_id {str(d)[:80]!r} is not a sha256 digest") from None
    return [str(d) for d in ids]


# ---- importing -------------------------------------------------------------------


def _keeper(store: Store, raw: BinaryIO, desc: Descriptor) -> tuple[BlobWriter, bool]:
    """The blob-cache copy of a layer blob being read: the remote's own
    verified download hardlinked when it lies on the store's filesystem
    (True: nothing to write), else a writer the reader fills."""
    path = getattr(raw, "path", None)
    if isinstance(path, Path) and getattr(raw, "verified_digest", None) == desc.digest:
        try:
            return BlobWriter.adopt(store, path, desc.digest, desc.size), True
        except OSError:
            pass  # another filesystem: copy
    return BlobWriter(store), False


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
    if size != desc.size or "sha256:" + h.hexdigest() != desc.digest:
        raise BadImageError(f"blob {desc.digest} does not match its descriptor")


def _import_layer(
    store: Store,
    desc: Descriptor,
    index: int,
    open_blob: Callable[[Descriptor], BinaryIO],
    lower: list[Path],
    diff_id: str | None,
    cache: bool,
    threads: int,
    progress: Callable[[int], None] | None,
    budget: tf.ImportBudget | None = None,
) -> tuple[ExtractedLayer, CachedLayer | None, str, BlobWriter | None]:
    """Fetch, verify and unpack one layer blob (not published). Returns the
    layer, its cache entry and compression (when ``cache``), and the kept
    copy of the blob to commit once the layer is published.

    The blob is read once: a :class:`LayerBlobStream` hashes, keeps and
    decompresses it in a background thread while this one unpacks the tar.
    A remote's verified private download is neither hashed again nor
    copied: the blob cache hardlinks it."""
    what = f"layer {index + 1} ({desc.digest[:19]})"
    keep: BlobWriter | None = None
    try:
        with open_blob(desc) as raw:
            # a remote's verified private download needs no second sha256
            verified = getattr(raw, "verified_digest", None) == desc.digest
            adopted = False
            if cache:
                keep, adopted = _keeper(store, raw, desc)
            stream = LayerBlobStream(
                raw,
                what,
                desc.size,
                hash_raw=not verified,
                keep=None if adopted else keep,
                progress=progress,
            )
            try:
                reader = tf.TarReader(stream.read, what, budget=budget)
                try:
                    layer = extract_layer(store, reader, lower, threads)
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
                            raise BadImageError(
                                f"{what}: {trailer} bytes follow the end of the tar"
                            )
                    raw_digest, diff = stream.finish()
                    if stream.raw_size != desc.size or raw_digest not in (None, desc.digest):
                        raise BadImageError(
                            f"blob {desc.digest} does not match its descriptor "
                            f"({stream.raw_size} bytes, {(raw_digest or '?')[:23]}...)"
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
                    store.discard(layer.staging)
                    raise
            finally:
                stream.close()
    except BaseException:
        if keep is not None:
            keep.abort()
        raise
    entry = None
    if keep is not None and stream.format in LAYER_MEDIA_TYPE:
        entry = CachedLayer(desc.digest, diff, desc.size)
    elif keep is not None:
        keep.abort()
        keep = None
    return layer, entry, stream.format, keep


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
    parsed = parse_manifest(manifest)
    config = _read_config(open_blob, parsed.config)
    diff_ids = _diff_ids(config, len(parsed.layers))
    parsed, diff_ids = _without_history(parsed, config, diff_ids)
    info = _snapws_info(parsed, config, manifest)
    if info is not None and _same_as_stored(store, info):
        _mark_shallow(store, info.record)
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
    kept: list[tuple[BlobWriter, bool, LayerId, str, CachedLayer]] = []
    chain_ids: list[LayerId] = []
    try:
        for i, desc in enumerate(parsed.layers):
            want = expected[i]
            known = have[i]
            if known is not None:
                chain_ids.append(known)
                continue
            lower = [store.layer_tree(lid) for lid in reversed(chain_ids) if lid != EMPTY_LAYER]
            layer, entry, fmt, keep = _import_layer(
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
            )
            try:
                if want is not None and layer.id != want:
                    raise BadImageError(
                        f"layer {i + 1} ({desc.digest[:19]}) unpacks to layer "
                        f"{layer.id.short()}, but the image says {want.short()}"
                    )
                existed = store.has_layer(layer.id)
                lid = publish_extracted(store, layer, dedup)
            except BaseException:
                if layer.staging.exists():
                    store.discard(layer.staging)
                if keep is not None:
                    keep.abort()
                raise
            if not existed:
                published.append(lid)
            if keep is not None and entry is not None:
                kept.append((keep, not existed, lid, fmt, entry))  # kept once all checks pass
            cid = cids[i]
            if want is None and cid is not None:
                record_chain(store, cid, lid)
            chain_ids.append(lid)
        if info is not None:
            record = info.record
            entries = _check_record(store, record, chain_ids, info.layer_manifest)
            _check_stored(store, record.id, chain_ids)
            if not store.has_layer(record.layer) and _keep_record_layer(
                store, record.layer, chain_ids[-1], entries
            ):
                published.append(record.layer)
        else:
            record = SnapshotRecord(
                parents=(),
                layer=chain_ids[-1] if chain_ids else EMPTY_LAYER,
                # the image's id (docker's and podman's IMAGE ID), not where it
                # came from: a layout, a tar and a registry give the same snapshot
                message=f"import image {parsed.config.digest[7:19]}",
                author=author,
                time_ns=_created_ns(config) or time.time_ns(),
            )
        for keep, synced, lid, fmt, entry in kept:
            keep.commit(synced=synced)  # publishing ran syncfs
            record_layer(store, lid, fmt, entry)
        kept.clear()
        sid = store.write_snapshot(record, chain_ids)
        if not all(store.has_layer(lid) for lid in store.chain(sid)):
            store.write_chain(sid, chain_ids)  # a stored record whose layers were lost
        _mark_shallow(store, record)
        return sid
    except BaseException:
        for keep, *_ in kept:
            keep.abort()
        for lid in published:
            store.delete_layer(lid)
        raise


def _nonempty(chain: list[LayerId]) -> list[LayerId]:
    return [lid for lid in chain if lid != EMPTY_LAYER]


def _entries(store: Store, lid: LayerId) -> list[Entry]:
    try:
        return decode_manifest(store.read_manifest(lid))
    except ValueError as e:
        raise StoreCorruptError(f"manifest of layer {lid.short()} is unreadable: {e}") from e


def _content(store: Store, chain: list[LayerId]) -> list[Entry]:
    return chain_content([_entries(store, lid) for lid in _nonempty(chain)])


def _same_as_stored(store: Store, info: _SnapwsInfo) -> bool:
    """True if the store has the image's snapshot with all its layers, and
    the image lists that chain or one showing the same content (nothing to
    fetch). A stored id is never trusted over content: an image listing other
    layers is imported and compared (:func:`_check_stored`)."""
    sid = info.record.id
    if not store.has_snapshot(sid):
        return False
    local = _nonempty(store.chain(sid))
    listed = _nonempty(info.layers)
    if not all(store.has_layer(lid) for lid in local):
        return False
    if listed == local:
        return True
    return all(store.has_layer(lid) for lid in listed) and _content(store, listed) == _content(
        store, local
    )


def _check_record(
    store: Store, record: SnapshotRecord, chain: list[LayerId], carried: bytes | None
) -> list[Entry]:
    """Check that ``chain`` (imported, verified layers) is what ``record``
    says: its top is the record's layer, or covers it (a merged top; the
    layer's manifest from the store or ``carried`` by the image); and, when
    the store has the parent, the chain shows the parent's content with the
    record's layer on top. Returns the record layer's entries. Raises
    BadImageError."""
    ch = _nonempty(chain)
    top = ch[-1] if ch else EMPTY_LAYER
    sid = record.id.short()
    if record.layer == top:
        entries = _entries(store, top)
    elif record.layer == EMPTY_LAYER:
        entries = []
    else:
        if store.has_layer(record.layer):
            data = store.read_manifest(record.layer)
        elif carried is not None:
            data = carried
        else:
            raise BadImageError(
                f"snapshot {sid}: the image's top layer {top.short()} is not the record's "
                f"layer {record.layer.short()}, and the image does not carry that layer's "
                "manifest to show that the top includes it",
                hint="nothing was imported; export the snapshot again with this snapws "
                "from a store that has its layer, or import it from its source",
            )
        try:
            entries = decode_manifest(data)
        except ValueError as e:
            raise BadImageError(f"the manifest of layer {record.layer.short()}: {e}") from None
        if not covers(_entries(store, top), entries, len(ch) == 1):
            raise BadImageError(
                f"snapshot {sid}: the image's layers are not the record's: its top layer "
                f"{top.short()} does not hold layer {record.layer.short()}",
                hint="nothing was imported; the image was forged or damaged: "
                "get it again from its source",
            )
    if len(record.parents) == 1 and store.has_snapshot(record.parents[0]):
        try:
            below = _nonempty(store.chain(record.parents[0]))
        except StoreCorruptError:
            below = None
        if below is not None and all(store.has_layer(lid) for lid in below):
            want = chain_content([*(_entries(store, lid) for lid in below), entries])
            if _content(store, ch) != want:
                raise BadImageError(
                    f"snapshot {sid}: the image's layers do not show its parent "
                    f"{record.parents[0].short()} with layer {record.layer.short()} on top",
                    hint="nothing was imported; the image was forged or damaged: "
                    "get it again from its source",
                )
    return entries


def _check_stored(store: Store, sid: SnapshotId, chain: list[LayerId]) -> None:
    """Refuse (BadImageError) when the store already has snapshot ``sid``
    with all its layers but other content than ``chain`` shows."""
    if not store.has_snapshot(sid):
        return
    local = _nonempty(store.chain(sid))
    if all(store.has_layer(lid) for lid in local) and _content(store, local) != _content(
        store, chain
    ):
        raise BadImageError(
            f"snapshot {sid.short()} is in this store with other content than the image gives it",
            hint="nothing was imported; `snapws verify` checks the stored snapshot; "
            "if it is the forged one, delete it (prune) and import again",
        )


def _keep_record_layer(store: Store, lid: LayerId, top: LayerId, entries: list[Entry]) -> bool:
    """Publish the record's layer ``lid`` (whose ``entries`` the merged
    layer ``top`` covers) from ``top``'s tree, so that exports from this
    store can prove their merged tops too. Best effort: False (nothing
    kept) if the tree made does not hash to ``lid`` or writing fails."""
    staging = store.new_staging("record-layer")
    try:
        manifest = build_merged_tree(
            [RunLayer(os.fsencode(store.layer_tree(top)), entries)],
            os.fsencode(staging / "tree"),
            False,
            None,
            store.xattr_form,
        )
        if manifest_id(manifest) != lid:
            store.discard(staging)
            return False
        store.write_pending_manifest(staging, manifest)
        return store.publish_pending(staging) == lid
    except OSError:
        if staging.exists():
            store.discard(staging)
        return False


def _mark_shallow(store: Store, record: SnapshotRecord) -> None:
    """Parents the store lacks get a tombstone (as ``snapws prune`` leaves):
    history then ends there, as in a shallow clone, instead of naming
    records that are missing."""
    for parent in record.parents:
        if not store.has_snapshot(parent) and not store.is_forgotten(parent):
            store.delete_snapshot(parent)  # writes the tombstone only


def _created_ns(config: dict[str, Any]) -> int | None:
    """The config's ``created`` time in ns (None if absent or unreadable)."""
    text = config.get("created")
    if not isinstance(text, str):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text)
    if m is None:
        return None
    sec = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        sec -= sign * (int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    return sec * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))
