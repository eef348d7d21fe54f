"""Reading an image to import (:func:`open_source`): an OCI layout directory
or tar, choosing the image by ``ref`` (or the only one; an image index picks
this machine's platform, snapws.oci.platform), or a docker archive (``docker
save``, ``skopeo copy ... docker-archive:``): its ``manifest.json`` is turned
into an OCI manifest whose layers are the archive's uncompressed layer tars.

The input is hostile: its files are read through :mod:`snapws.oci.imagefiles`,
indexes and manifests with a size cap, each checked against its digest
before it is parsed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import AmbiguousRevisionError, BadImageError, RevisionNotFoundError
from snapws.ids import BlobDigest
from snapws.oci.image import (
    ANNOTATION_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LABEL_LAYERS,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    canonical_json,
)
from snapws.oci.imagefiles import DirImageFiles, ImageFiles, TarImageFiles
from snapws.oci.layout import LAYOUT_FILE, REF_NAME
from snapws.oci.platform import choose_manifest

CONTAINERD_NAME = "io.containerd.image.name"
MAX_INDEX = 4 << 20  # index.json, oci-layout, manifest.json and manifests


@dataclass
class ImageSource:
    """An image ready to import: its manifest and a way to open its blobs.
    ``name`` describes it for people (and the imported snapshot's message)."""

    name: str
    manifest: bytes
    files: ImageFiles
    blob_names: dict[BlobDigest, str] = field(default_factory=dict)  # digest -> file name

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """Open blob ``desc`` (not verified here: import_image checks it)."""
        name = self.blob_names.get(desc.digest) or f"blobs/sha256/{desc.digest.hex}"
        return self.files.open(name)

    def close(self) -> None:
        self.files.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json(files: ImageFiles, name: str, cap: int = MAX_INDEX) -> Any:
    try:
        return json.loads(files.read(name, cap))
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise BadImageError(f"{name} is not valid JSON: {e}") from None


def _verified_blob(files: ImageFiles, desc: Descriptor, cap: int = MAX_INDEX) -> bytes:
    if desc.size > cap:
        raise BadImageError(f"blob {desc.digest} is too large for a manifest ({desc.size} bytes)")
    with files.open(f"blobs/sha256/{desc.digest.hex}") as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or BlobDigest.of(data) != desc.digest:
        raise BadImageError(f"blob {desc.digest} does not match its descriptor")
    return data


def _choose(
    candidates: list[Any], names: Callable[[Any], list[str]], ref: str | None, where: str
) -> Any:
    if ref is not None:
        hits = [c for c in candidates if ref in names(c)]
        if not hits:
            known = sorted({n for c in candidates for n in names(c)})
            raise RevisionNotFoundError(
                f"{where} has no image named {ref!r}",
                hint=f"images there: {', '.join(known) or '(none named)'}",
            )
        return hits[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise BadImageError(f"{where} holds no image")
    known = sorted({n for c in candidates for n in names(c)})
    raise AmbiguousRevisionError(
        f"{where} holds {len(candidates)} images",
        hint=f"choose one with --ref NAME: {', '.join(known) or '(none named)'}",
    )


def _ref_names(desc: Any) -> list[str]:
    ann = desc.get("annotations") or {} if isinstance(desc, dict) else {}
    out = []
    if isinstance(ann.get(REF_NAME), str):
        out.append(ann[REF_NAME])
    full = ann.get(CONTAINERD_NAME)
    if isinstance(full, str):
        out.append(full)
        out.append(full.rsplit(":", 1)[-1])
    return out


def _open_oci(files: ImageFiles, where: str, ref: str | None) -> ImageSource:
    index = _json(files, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise BadImageError(f"{where}: index.json lists no manifests")
    chosen = _choose(manifests, _ref_names, ref, where)
    desc = Descriptor.from_json(chosen)
    for _ in range(4):  # an index may name an index
        if desc.media_type not in (OCI_INDEX, DOCKER_LIST):
            break
        try:
            nested = json.loads(_verified_blob(files, desc))
        except (ValueError, RecursionError) as e:
            raise BadImageError(f"{where}: image index {desc.digest} is not JSON: {e}") from None
        desc = choose_manifest(nested, where, None)  # the host's platform
    if desc.media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise BadImageError(f"{where}: {desc.digest} is a {desc.media_type}, not an image")
    manifest = _verified_blob(files, desc)
    name = ref or (_ref_names(chosen) or [str(desc.digest)[:19]])[0]
    return ImageSource(f"{where}:{name}", manifest, files)


def _open_docker(files: ImageFiles, where: str, ref: str | None) -> ImageSource:
    entries = _json(files, "manifest.json")
    if not isinstance(entries, list):
        raise BadImageError(f"{where}: manifest.json is not a list")

    def names(e: Any) -> list[str]:
        tags = e.get("RepoTags") or [] if isinstance(e, dict) else []
        out = [t for t in tags if isinstance(t, str)]
        return out + [t.rsplit(":", 1)[-1] for t in out]

    chosen = _choose(entries, names, ref, where)
    if not isinstance(chosen, dict):
        raise BadImageError(f"{where}: a malformed manifest.json entry")
    config_name, layer_names = chosen.get("Config"), chosen.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise BadImageError(f"{where}: manifest.json lacks Config or Layers")
    config = files.read(config_name, 16 << 20)
    try:
        cobj = json.loads(config)
        diff_ids = cobj["rootfs"]["diff_ids"]
        labels = (cobj.get("config") or {}).get("Labels") or {}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise BadImageError(f"{where}: the image config is unreadable: {e}") from None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
        raise BadImageError(f"{where}: the config's diff_ids do not match the layer list")
    snapws_ids = str(labels.get(LABEL_LAYERS, "")).split(",") if isinstance(labels, dict) else []
    blob_names = {BlobDigest.of(config): config_name}
    layers = []
    for i, lname in enumerate(layer_names):
        if not isinstance(lname, str):
            raise BadImageError(f"{where}: a malformed layer name")
        parts = lname.split("/")
        if len(parts) == 3 and parts[:2] == ["blobs", "sha256"]:
            digest = "sha256:" + parts[2]  # content-addressed (docker 25 and later)
        else:
            digest = str(diff_ids[i])  # uncompressed: the blob is its diff_id
        ann = {ANNOTATION_LAYER: snapws_ids[i]} if len(snapws_ids) == len(layer_names) else {}
        desc = Descriptor.from_json(  # checks the digest's form
            {
                "mediaType": OCI_LAYER,
                "digest": digest,
                "size": files.size(lname),
                "annotations": ann,
            }
        )
        blob_names[desc.digest] = lname
        layers.append(desc.to_json())
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": str(BlobDigest.of(config)),
                "size": len(config),
            },
            "layers": layers,
        }
    )
    name = ref or (names(chosen) or ["image"])[0]
    return ImageSource(f"{where}:{name}", manifest, files, blob_names)


_TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:")


def source_relative_to(src: str, cwd: Path) -> str:
    """``src`` with a relative path made absolute against ``cwd`` (the
    transport prefix, if any, kept)."""
    for prefix in _TRANSPORTS:
        if src.startswith(prefix):
            rest = src[len(prefix) :]
            return prefix + (rest if os.path.isabs(rest) else str(cwd / rest))
    return src if os.path.isabs(src) else str(cwd / src)


def open_source(src: str, ref: str | None = None) -> ImageSource:
    """Open an image to import: an OCI layout directory or tar, or a docker
    archive (tar or directory). ``src`` may carry skopeo's transport prefix
    (``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``, ``docker-archive:FILE``).
    Raises BadImageError (not an image, malformed), RevisionNotFoundError
    (no image named ``ref``), AmbiguousRevisionError (several, no ``ref``)."""
    path_text = src
    for prefix in _TRANSPORTS:
        if src.startswith(prefix):
            path_text = src[len(prefix) :]
            if prefix != "docker-archive:" and ":" in path_text and not Path(path_text).exists():
                path_text, _, tag = path_text.rpartition(":")
                ref = ref or tag
            break
    path = Path(path_text)
    files: ImageFiles
    if path.is_dir():
        files = DirImageFiles(path)
    elif path.is_file():
        files = TarImageFiles(path)
    else:
        raise BadImageError(
            f"{path} does not exist", hint="give an OCI layout directory, or a .tar of one"
        )
    try:
        if files.exists(LAYOUT_FILE) and files.exists("index.json"):
            files.read(LAYOUT_FILE, 4096)  # a regular file beneath the layout, or refused
            return _open_oci(files, str(path), ref)
        if files.exists("manifest.json"):
            return _open_docker(files, str(path), ref)
    except BaseException:
        files.close()
        raise
    files.close()
    raise BadImageError(
        f"{path} is neither an OCI image layout nor a docker archive",
        hint="give a directory with oci-layout and index.json, or a tar of one "
        "(`skopeo copy ... oci:DIR:TAG` writes one)",
    )
