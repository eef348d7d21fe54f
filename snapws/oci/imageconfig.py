"""Reading an image's config, which is foreign input: its ``diff_ids`` and
the OCI chain ids made of them, its ``created`` time, the snapws labels
(the snapshot record, its layer ids, the proof of a merged top), and which
layers are history layers rather than content (:mod:`snapws.oci.history`).
Every malformed or contradictory value is a BadImageError.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from snapws.errors import BadImageError
from snapws.ids import BlobDigest, LayerId, SnapshotId, is_blob_digest
from snapws.model import SnapshotRecord, manifest_id
from snapws.oci.image import (
    ANNOTATION_HISTORY,
    HISTORY_MEDIA_TYPE,
    LABEL_HISTORY,
    LABEL_LAYER_MANIFEST,
    LABEL_LAYERS,
    LABEL_RECORD,
    LABEL_SNAPSHOT,
    MAX_CONFIG,
    MAX_PROOF,
    Descriptor,
    ParsedManifest,
    annotated_layer_ids,
)


def read_config(open_blob: Callable[[Descriptor], BinaryIO], desc: Descriptor) -> dict[str, Any]:
    if desc.size > MAX_CONFIG:
        raise BadImageError(f"an image config of {desc.size} bytes (too large)")
    with open_blob(desc) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or BlobDigest.of(data) != desc.digest:
        raise BadImageError(f"config blob {desc.digest} does not match its descriptor")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise BadImageError(f"the image config is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadImageError("the image config is not a JSON object")
    return obj


@dataclass(frozen=True)
class SnapwsInfo:
    record: SnapshotRecord
    layers: list[LayerId]
    layer_manifest: bytes | None  # the record layer's manifest (verified), if carried


def snapws_info(
    parsed: ParsedManifest, config: dict[str, Any], manifest: bytes
) -> SnapwsInfo | None:
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
    annotated = annotated_layer_ids(parsed.layers)
    if len(listed) != len(parsed.layers) or (
        any(a is not None for a in annotated) and annotated != listed
    ):
        # (copies through docker archives lose the annotations: the label stays)
        raise BadImageError("the image's layer annotations differ from its org.snapws.layers label")
    return SnapwsInfo(rec, listed, read_proof(labels.get(LABEL_LAYER_MANIFEST), rec.layer))


def without_history(
    parsed: ParsedManifest, config: dict[str, Any], diff_ids: list[BlobDigest] | None
) -> tuple[ParsedManifest, list[BlobDigest] | None]:
    """The manifest and diff_ids without snapws history layers (the last
    layers, named by the config's :data:`LABEL_HISTORY` label or annotated
    so): they carry ancestors' records, not content (snapws.oci.history)."""
    cfg = config.get("config")
    labels = cfg.get("Labels") if isinstance(cfg, dict) else None
    named = _digests(str(labels.get(LABEL_HISTORY, ""))) if isinstance(labels, dict) else set()
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


def read_proof(text: Any, layer: LayerId) -> bytes | None:
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


def _digests(text: str) -> set[BlobDigest]:
    """The well-formed digests of a comma-separated list (others ignored)."""
    return {BlobDigest.parse(part) for part in text.split(",") if is_blob_digest(part)}


def chain_ids_of(diff_ids: list[BlobDigest]) -> list[BlobDigest | None]:
    """The OCI chain id of each layer: its diff_id, hashed with those below."""
    out: list[BlobDigest | None] = []
    prev: BlobDigest | None = None
    for d in diff_ids:
        prev = d if prev is None else BlobDigest.of(f"{prev} {d}".encode())
        out.append(prev)
    return out


def diff_ids_of(config: dict[str, Any], count: int) -> list[BlobDigest] | None:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or len(ids) != count:
        raise BadImageError(
            f"the image config lists {len(ids) if isinstance(ids, list) else 'no'} diff_ids "
            f"for {count} layers"
        )
    out = []
    for d in ids:
        try:
            out.append(BlobDigest.parse(str(d)))
        except ValueError:
            raise BadImageError(f"diff_id {str(d)[:80]!r} is not a sha256 digest") from None
    return out


def created_ns(config: dict[str, Any]) -> int | None:
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
