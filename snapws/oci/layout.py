"""OCI image layouts (a directory or a tar of one) and docker archives.

Writing: ``oci-layout``, ``blobs/sha256/<hex>`` and ``index.json`` naming the
image with ``org.opencontainers.image.ref.name``. A directory that already
is a layout gains the image (an older image of the same name is replaced in
the index); blobs are written before the index, each by rename, so a crash
leaves the old layout valid. ``FILE.tar`` gets the same content as a
reproducible tar (fixed order, times and owners).

Reading (:func:`open_source`): an OCI layout directory or tar, choosing the
image by ``ref`` (or the only one; an image index picks this machine's
platform, snapws.oci.platform), or a docker archive (``docker save``, ``skopeo copy
... docker-archive:``): its ``manifest.json`` is turned into an OCI manifest
whose layers are the archive's uncompressed layer tars.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import (
    AmbiguousRevisionError,
    BadImageError,
    BadPathError,
    RevisionNotFoundError,
)
from snapws.ids import BlobDigest
from snapws.oci import tarformat as tf
from snapws.oci.blobcache import digest_hex
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
    Image,
    canonical_json,
)
from snapws.oci.platform import choose_manifest
from snapws.store.atomic import fsync_dir, write_atomic

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
DEFAULT_REF = "latest"
MAX_INDEX = 4 << 20  # index.json, oci-layout, manifest.json and manifests
MAX_MEMBERS = 1 << 16  # files in a layout or docker archive tar


# ---- writing ------------------------------------------------------------------------


def _index_with(old: dict[str, Any] | None, image: Image, ref: str) -> bytes:
    manifests = [
        m
        for m in (old or {}).get("manifests", [])
        if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) != ref
    ]
    manifests.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
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
        _copy_blob(path, blobs / digest_hex(desc.digest), desc.size)
    target = blobs / digest_hex(image.manifest_digest)
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
        digest_hex(image.manifest_digest): (image.manifest, len(image.manifest)),
        digest_hex(image.config.descriptor.digest): (
            image.config.path,
            image.config.descriptor.size,
        ),
    }
    for b in image.layers:
        blobs[digest_hex(b.descriptor.digest)] = (b.path, b.descriptor.size)
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


# ---- reading: files of a directory or of a tar ---------------------------------------


class _Files:
    """Named files of a directory or of an uncompressed tar."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, cap: int) -> bytes:
        """The content of ``name``, at most ``cap`` bytes (else BadImageError)."""
        with self.open(name) as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise BadImageError(f"{name} is larger than {cap} bytes")
        return data

    def close(self) -> None:
        return None


_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class _DirFiles(_Files):
    """Files of a layout directory, read only beneath it: the directory is
    opened once; each name is walked one component at a time with
    ``openat(O_NOFOLLOW | O_DIRECTORY)``, and the file itself is opened with
    ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file (fstat). A
    symlink, FIFO, device or directory anywhere on the way is refused
    (BadImageError naming it, never its content)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BadImageError(f"cannot open {root}: {e.strerror}") from None

    def _parts(self, name: str) -> list[str]:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts or name.startswith("/") or not parts:
            raise BadImageError(f"the image names a file outside it: {name[:200]!r}")
        return parts

    def _open_parent(self, parts: list[str], name: str) -> int | None:
        """A new fd of the directory holding ``parts[-1]`` (None: a component
        is missing)."""
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                except FileNotFoundError:
                    os.close(fd)
                    return None
                except OSError:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    where = "/".join(parts[: i + 1])
                    raise BadImageError(
                        f"{where} in the image is {_kind(st.st_mode)}, not a directory "
                        f"(while opening {name})"
                    ) from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lstat(self, name: str) -> os.stat_result | None:
        parts = self._parts(name)
        fd = self._open_parent(parts, name)
        if fd is None:
            return None
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(fd)

    def _open_fd(self, name: str) -> int:
        """An fd of regular file ``name`` beneath the layout. Raises
        BadImageError (missing, or not a regular file)."""
        parts = self._parts(name)
        dfd = self._open_parent(parts, name)
        if dfd is None:
            raise _missing(name)
        try:
            try:
                fd = os.open(
                    parts[-1],
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=dfd,
                )
            except FileNotFoundError:
                raise _missing(name) from None
            except OSError:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                raise BadImageError(
                    f"{name} in the image is {_kind(st.st_mode)}, not a regular file"
                ) from None
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadImageError(
                    f"{name} in the image is {_kind(st.st_mode)}, not a regular file"
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def exists(self, name: str) -> bool:
        return self._lstat(name) is not None

    def size(self, name: str) -> int:
        fd = self._open_fd(name)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def open(self, name: str) -> BinaryIO:
        return os.fdopen(self._open_fd(name), "rb")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Section(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, as a stream."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed with the section)
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


class _TarFiles(_Files):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, tuple[int, int]] = {}
        with open(path, "rb") as f:

            def skip(n: int) -> None:
                f.seek(n, os.SEEK_CUR)

            reader = tf.TarReader(f.read, str(path), skip=skip)
            for count, h in enumerate(reader.entries()):
                if count >= MAX_MEMBERS:
                    raise BadImageError(f"{path} holds more than {MAX_MEMBERS} entries")
                name = "/".join(p for p in os.fsdecode(h.name).split("/") if p not in ("", "."))
                if h.type == tf.REGULAR:
                    if name in self.members:
                        raise BadImageError(f"{path}: duplicate member {name!r}")
                    self.members[name] = (reader.offset, h.size)
        if not self.members:
            raise BadImageError(f"{path} holds no files")

    def exists(self, name: str) -> bool:
        return name in self.members

    def size(self, name: str) -> int:
        try:
            return self.members[name][1]
        except KeyError:
            raise _missing(name) from None

    def open(self, name: str) -> BinaryIO:
        try:
            offset, size = self.members[name]
        except KeyError:
            raise _missing(name) from None
        return io.BufferedReader(_Section(self.path, offset, size), 1 << 20)


def _missing(name: str) -> BadImageError:
    return BadImageError(f"the image points at {name}, which is not there (a missing blob)")


# ---- reading: images -------------------------------------------------------------------


@dataclass
class ImageSource:
    """An image ready to import: its manifest and a way to open its blobs.
    ``name`` describes it for people (and the imported snapshot's message)."""

    name: str
    manifest: bytes
    files: _Files
    blob_names: dict[str, str] = field(default_factory=dict)  # digest -> file name

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """Open blob ``desc`` (not verified here: import_image checks it)."""
        name = self.blob_names.get(desc.digest) or f"blobs/sha256/{digest_hex(desc.digest)}"
        return self.files.open(name)

    def close(self) -> None:
        self.files.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json(files: _Files, name: str, cap: int = MAX_INDEX) -> Any:
    try:
        return json.loads(files.read(name, cap))
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise BadImageError(f"{name} is not valid JSON: {e}") from None


def _verified_blob(files: _Files, desc: Descriptor, cap: int = MAX_INDEX) -> bytes:
    if desc.size > cap:
        raise BadImageError(f"blob {desc.digest} is too large for a manifest ({desc.size} bytes)")
    with files.open(f"blobs/sha256/{digest_hex(desc.digest)}") as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size or str(BlobDigest.of(data)) != desc.digest:
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


def _open_oci(files: _Files, where: str, ref: str | None) -> ImageSource:
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
    name = ref or (_ref_names(chosen) or [desc.digest[:19]])[0]
    return ImageSource(f"{where}:{name}", manifest, files)


def _open_docker(files: _Files, where: str, ref: str | None) -> ImageSource:
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
    blob_names = {str(BlobDigest.of(config)): config_name}
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
        desc = Descriptor(OCI_LAYER, digest, files.size(lname), ann)
        Descriptor.from_json(desc.to_json())  # checks the digest's form
        blob_names[digest] = lname
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
    files: _Files
    if path.is_dir():
        files = _DirFiles(path)
    elif path.is_file():
        files = _TarFiles(path)
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
