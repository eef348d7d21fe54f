"""The tar extractor's writer pool: small files made by worker threads give
the same layer as one thread making every file, hardlinks and many
directories included, and a failure in a worker ends the import cleanly."""

from __future__ import annotations

import errno
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from snapws.oci import tarformat as tf
from snapws.oci.tarextractor import SMALL_FILE, LayerExtractor, extract_layer
from snapws.store.store import Store

from .ocitools import Member, d, f, tar_of


def _members() -> list[Member]:
    # more directories than the extractor keeps descriptors for, files of
    # every size class (empty, small, zero-filled holes, larger than the
    # pool takes), modes the umask would change, other owners, hardlinks
    out: list[Member] = []
    for i in range(LayerExtractor.MAX_DIR_FDS + 10):
        out.append(d(f"d{i:03}/", mode=0o750))
        for j in range(6):
            out.append(f(f"d{i:03}/f{j}", bytes([i % 251, j]) * (j * 997), mode=0o640 + j % 2))
    out.append(f("zeros", bytes(3 << 20), mode=0o600))
    out.append(f("big", os.urandom(SMALL_FILE + 12345), mode=0o4755, uid=1234, gid=99))
    out.append(f("d000/g", b"group", mode=0o2777))
    out.append(Member("link-to-small", tarfile.LNKTYPE, linkname="d001/f3"))
    out.append(Member("link-to-big", tarfile.LNKTYPE, linkname="big"))
    out.append(f("last", b"the end"))
    return out


def _extract(store: Store, data: bytes, writers: int) -> tuple[str, list[tuple[str, int]]]:
    layer = extract_layer(store, tf.TarReader(io.BytesIO(data).read, "t"), [], writers=writers)
    try:
        tree = layer.staging / "tree"
        inodes = sorted(
            (str(p.relative_to(tree)), p.lstat().st_nlink) for p in tree.rglob("*") if p.is_file()
        )
        return layer.id.hex, inodes
    finally:
        store.discard(layer.staging)


def test_writer_pool_gives_the_same_layer_as_one_thread(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "store")
    data = tar_of(_members())
    one = _extract(store, data, 0)
    assert _extract(store, data, 3) == one
    assert dict(one[1])["link-to-small"] == 2


def test_a_failing_worker_ends_the_import_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.create(tmp_path / "store")
    data = tar_of(_members())
    real = LayerExtractor._write_file

    def failing(self: LayerExtractor, rel: bytes, *args: object) -> object:
        if rel == b"d040/f2":
            raise OSError(errno.EIO, "injected")
        return real(self, rel, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LayerExtractor, "_write_file", failing)
    with pytest.raises(OSError, match="injected"):
        extract_layer(store, tf.TarReader(io.BytesIO(data).read, "t"), [], writers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("tar-writer")]
    assert not list((tmp_path / "store" / "staging").iterdir())
