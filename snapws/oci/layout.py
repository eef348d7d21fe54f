"""Writing OCI image layouts (a directory or a tar of one).

``oci-layout``, ``blobs/sha256/<hex>`` and ``index.json`` naming the
image with ``org.opencontainers.image.ref.name``. A directory that already
is a layout gains the image (an older image of the same name is replaced in
the index); blobs are written before the index, each by rename, so a crash
leaves the old layout valid. ``FILE.tar`` gets the same content as a
reproducible tar (fixed order, times and owners).

Reading an image to import (a layout or a docker archive) is
:mod:`snapws.oci.imagesource`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from snapws.errors import BadImageError, BadPathError
from snapws.oci import tarformat as tf
from snapws.oci.image import OCI_INDEX, OCI_MANIFEST, Image, canonical_json
from snapws.store.atomic import fsync_dir, write_atomic

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
DEFAULT_REF = "latest"


def _index_with(old: dict[str, Any] | None, image: Image, ref: str) -> bytes:
    manifests = [
        m
        for m in (old or {}).get("manifests", [])
        if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) != ref
    ]
    manifests.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": str(image.manifest_digest),
            "size": len(image.manifest),
            "annotations": {REF_NAME: ref},
        }
    )
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def write_layout_dir(image: Image, dest: Path, ref: str = DEFAULT_REF) -> None:
    """Write ``image`` into the OCI layout directory ``dest`` under ``ref``
    (created if missing; an existing layout keeps its other images).
    Raises BadPathError if ``dest`` is a non-empty directory that is not an
    OCI layout, BadImageError if its index is unreadable, OSError."""
    dest.mkdir(parents=True, exist_ok=True)
    old = None
    if (dest / LAYOUT_FILE).exists():
        try:
            old = json.loads((dest / "index.json").read_bytes())
        except FileNotFoundError:
            old = None
        except ValueError as e:
            raise BadImageError(f"{dest}/index.json is unreadable: {e}") from None
    elif any(dest.iterdir()):
        raise BadPathError(
            f"{dest} is a non-empty directory and not an OCI image layout",
            hint="give a new or empty directory, an existing layout, or FILE.tar",
        )
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for desc_path in [(image.config.descriptor, image.config.path)] + [
        (b.descriptor, b.path) for b in image.layers
    ]:
        desc, path = desc_path
        _copy_blob(path, blobs / desc.digest.hex, desc.size)
    target = blobs / image.manifest_digest.hex
    if not target.exists():
        write_atomic(target, image.manifest, mode=0o444)
    fsync_dir(blobs)
    write_atomic(dest / LAYOUT_FILE, canonical_json(LAYOUT_VERSION))
    write_atomic(dest / "index.json", _index_with(old, image, ref))


def _copy_blob(src: Path, dst: Path, size: int) -> None:
    if dst.is_file() and dst.stat().st_size == size:
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{secrets.token_hex(4)}")
    try:
        shutil.copyfile(src, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o444)
        os.rename(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def write_layout_tar(image: Image, dest: Path, ref: str = DEFAULT_REF) -> None:
    """Write ``image`` as a tar of an OCI layout at ``dest`` (replaced
    atomically). The same image and ref give the same bytes. Raises OSError."""
    members: list[tuple[str, bytes | Path, int]] = [
        (LAYOUT_FILE, canonical_json(LAYOUT_VERSION), 0),
        ("index.json", _index_with(None, image, ref), 0),
    ]
    blobs: dict[str, tuple[bytes | Path, int]] = {
        image.manifest_digest.hex: (image.manifest, len(image.manifest)),
        image.config.descriptor.digest.hex: (
            image.config.path,
            image.config.descriptor.size,
        ),
    }
    for b in image.layers:
        blobs[b.descriptor.digest.hex] = (b.path, b.descriptor.size)
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as out:
            for name, data, _ in members:
                assert isinstance(data, bytes)
                out.write(
                    tf.encode_header(tf.Header(name.encode(), tf.REGULAR, 0o644, size=len(data)))
                )
                out.write(data + tf.padding(len(data)))
            for d in ("blobs/", "blobs/sha256/"):
                out.write(tf.encode_header(tf.Header(d.encode(), tf.DIRECTORY, 0o755)))
            for hexd in sorted(blobs):
                content, size = blobs[hexd]
                bname = f"blobs/sha256/{hexd}".encode()
                out.write(tf.encode_header(tf.Header(bname, tf.REGULAR, 0o644, size=size)))
                if isinstance(content, bytes):
                    out.write(content)
                else:
                    with open(content, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                out.write(tf.padding(size))
            out.write(tf.END_OF_ARCHIVE)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
