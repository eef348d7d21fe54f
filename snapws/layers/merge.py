"""Flattening: merging the bottom layers of a chain into one equivalent layer.

The merged tree is built from the merged view of the source layers: regular
files are hardlinked to the source layers' (immutable) inodes, so flattening
costs metadata, not data, and stores nothing twice; everything else is
recreated with its attributes. Because the run includes the bottom layer,
the result needs no whiteouts or opaque markers. Content hashes come from the
source manifests, so no file is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from snapws.layers.entries import Node, join
from snapws.layers.materialise import apply_meta
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView, HashCache
from snapws.model import Entry, Kind, decode_manifest, encode_manifest


def known_hashes(trees: Sequence[bytes], manifests: Sequence[bytes]) -> HashCache:
    """A hash cache filled from manifests: ``trees[i]`` is described by
    ``manifests[i]`` (bytes of the manifest file)."""
    cache = HashCache()
    for tree, data in zip(trees, manifests, strict=True):
        for e in decode_manifest(data):
            if e.kind is Kind.FILE and e.hash is not None:
                cache.put(join(tree, e.path), e.hash)
    return cache


def build_flat_tree(
    trees: Sequence[bytes],
    dest: bytes,
    hashes: HashCache,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """Write the merged view of ``trees`` (topmost first, the last one being
    a chain's bottom layer) as one plain tree at ``dest`` (must not exist).
    Returns the canonical manifest of the result. Raises OSError."""
    view = ChainView(list(trees), hashes)
    os.mkdir(dest, 0o700)
    dirs: list[tuple[bytes, Node]] = []
    source_of: dict[bytes, bytes] = {}
    for count, loc in enumerate(view.walk(), 1):
        node = loc.node
        dst = dest if node.path == b"." else dest + b"/" + node.path
        if node.kind is Kind.DIR:
            if node.path != b".":
                os.mkdir(dst, 0o700)
            dirs.append((dst, node))
        elif node.kind is Kind.FILE:
            os.link(node.abspath, dst)
            source_of[dst] = node.abspath
        elif node.kind is Kind.SYMLINK:
            assert node.target is not None
            os.symlink(node.target, dst)
            apply_meta(node, dst)
        elif node.kind is Kind.FIFO:
            os.mkfifo(dst, 0o600)
            apply_meta(node, dst)
        elif node.kind in (Kind.CHARDEV, Kind.BLOCKDEV, Kind.SOCKET):
            os.mknod(dst, node.st.st_mode, node.st.st_rdev)
            apply_meta(node, dst)
        if progress is not None and count % 1000 == 0:
            progress(count)
    for dst, dnode in reversed(dirs):
        apply_meta(dnode, dst)
    for dst, src in source_of.items():
        h = hashes.peek(src)
        if h is not None:
            hashes.put(dst, h)
    entries: list[Entry] = entries_of(read_tree(dest), known=hashes)
    return encode_manifest(entries)
