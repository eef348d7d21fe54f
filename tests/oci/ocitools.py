"""Building OCI layouts and layer tars by hand (for hostile and foreign
images), importing them through the library, and reading what a store holds."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.ids import SnapshotId
from snapws.layers.view import ChainView
from snapws.model import ROOT, Entry
from snapws.oci.imagesource import open_source
from snapws.oci.importer import import_image
from snapws.store.store import EMPTY_LAYER, Store

T0 = 1_600_000_000


@dataclass
class Member:
    """One tar member for :func:`tar_of` (``type`` is a tarfile type)."""

    name: str | bytes
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = T0
    linkname: str | bytes = ""
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def _text(name: str | bytes) -> str:
    return os.fsdecode(name) if isinstance(name, bytes) else name


def tar_of(members: Iterable[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar (Python's tarfile) of ``members``, in order."""
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for m in members:
            info = tarfile.TarInfo(_text(m.name))
            info.type = m.type
            info.mode = m.mode
            info.uid, info.gid = m.uid, m.gid
            info.mtime = m.mtime
            info.linkname = _text(m.linkname)
            info.devmajor, info.devminor = m.devmajor, m.devminor
            info.pax_headers = dict(m.pax)
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def d(name: str, **kw: Any) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw)


def f(name: str | bytes, data: bytes = b"", **kw: Any) -> Member:
    return Member(name, tarfile.REGTYPE, data, **kw)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layout(
    dest: Path,
    layers: list[bytes],
    *,
    compress: Callable[[bytes], bytes] | None = None,
    media: str = "application/vnd.oci.image.layer.v1.tar+gzip",
    config: dict[str, Any] | None = None,
    ref: str = "latest",
    layer_annotations: list[dict[str, str]] | None = None,
    mutate: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    skip_blobs: tuple[int, ...] = (),
) -> None:
    """An OCI layout at ``dest`` with raw layer tars ``layers`` (compressed
    with ``compress``, default gzip). ``mutate(manifest, config)`` may
    tamper before writing; layer ``i`` in ``skip_blobs`` is left out."""
    compress = compress or (lambda b: gzip.compress(b, mtime=0))
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descs = []
    for i, raw in enumerate(layers):
        blob = compress(raw)
        if i not in skip_blobs:
            (blobs / sha(blob)[7:]).write_bytes(blob)
        desc: dict[str, Any] = {"mediaType": media, "digest": sha(blob), "size": len(blob)}
        if layer_annotations:
            desc["annotations"] = layer_annotations[i]
        descs.append(desc)
    cfg: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-06T07:08:09.5Z",
        "rootfs": {"type": "layers", "diff_ids": [sha(raw) for raw in layers]},
    }
    cfg.update(config or {})
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "layers": descs,
    }
    if mutate is not None:
        mutate(manifest, cfg)
    cfg_bytes = json.dumps(cfg).encode()
    (blobs / sha(cfg_bytes)[7:]).write_bytes(cfg_bytes)
    manifest.setdefault(
        "config",
        {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha(cfg_bytes),
            "size": len(cfg_bytes),
        },
    )
    man_bytes = json.dumps(manifest).encode()
    (blobs / sha(man_bytes)[7:]).write_bytes(man_bytes)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(man_bytes),
                "size": len(man_bytes),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (dest / "index.json").write_text(json.dumps(index))


def import_layout(store: Store, src: Path | str, ref: str | None = None) -> SnapshotId:
    """Import through the library, as ``snapws import`` does."""
    with store.lock(True, 10), open_source(str(src), ref) as source:
        return import_image(store, source.manifest, source.open_blob, source=source.name)


def merged(store: Store, sid: SnapshotId) -> dict[bytes, Entry]:
    """The merged tree of ``sid`` as manifest entries (without mounting)."""
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    view = ChainView([os.fsencode(store.layer_tree(lid)) for lid in reversed(chain)])
    return {loc.node.path: view.entry_of(loc) for loc in view.walk(ROOT)}


def store_listing(store: Store) -> dict[str, list[str]]:
    """What a failed import must leave unchanged."""
    out = {}
    for sub in ("layers", "snapshots", "chains", "staging", "refs/heads", "refs/tags"):
        p = store.root / sub
        out[sub] = sorted(os.listdir(p)) if p.is_dir() else []
    blobs = store.root / "oci" / "blobs" / "sha256"
    out["blobs"] = sorted(os.listdir(blobs)) if blobs.is_dir() else []
    return out
