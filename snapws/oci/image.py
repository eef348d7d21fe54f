"""What an OCI image is, as snapws reads and writes it: media types, the
``org.snapws.*`` labels and annotations, size limits, content descriptors,
and the checked parse of an image manifest.

An exported snapshot is an OCI image manifest whose layers are the
snapshot's layer chain (bottom first), one layer tar each, annotated
``org.snapws.layer=<layer id>``; its config records the snapshot in labels
(``org.snapws.snapshot``, ``org.snapws.record``: the canonical record,
``org.snapws.layers``) and ``created`` from the record's time. Everything is
serialized canonically, so the same snapshot gives the same digests.
:mod:`snapws.oci.export` builds such images, :mod:`snapws.oci.importer`
turns images into snapshots (the API the remotes build on).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.errors import BadImageError
from snapws.ids import BlobDigest, LayerId
from snapws.oci.compress import GZIP, ZSTD

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


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and size."""

    media_type: str
    digest: BlobDigest
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
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
            parsed = BlobDigest.parse(digest)
        except ValueError:
            raise BadImageError(
                f"descriptor digest {digest[:80]!r} is not sha256:<64 hex digits>"
            ) from None
        if not isinstance(ann, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
        ):
            raise BadImageError(f"descriptor {digest} has malformed annotations")
        return cls(media, parsed, size, dict(ann))


@dataclass(frozen=True)
class Blob:
    """A blob on disk: its descriptor and the file holding its bytes."""

    descriptor: Descriptor
    path: Path


@dataclass(frozen=True)
class Image:
    """A built image: manifest bytes and digest, config and layer blobs."""

    manifest: bytes
    manifest_digest: BlobDigest
    config: Blob
    layers: list[Blob]


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
    return annotated_layer_ids(parse_manifest(manifest).layers)


def annotated_layer_ids(layers: list[Descriptor]) -> list[LayerId | None]:
    """The :data:`ANNOTATION_LAYER` id of each layer descriptor (None where
    it is absent or not a layer id)."""
    out: list[LayerId | None] = []
    for d in layers:
        try:
            out.append(LayerId(d.annotations.get(ANNOTATION_LAYER, "")))
        except ValueError:
            out.append(None)
    return out
