"""snapws.backends.upperdir.prepare_layer_tree: a frozen upperdir made equal
to its manifest, from the nodes the commit's scan read or by reading them
again (a commit finished after a crash)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from layers import WH, Opaque, build

from snapws.backends import upperdir
from snapws.backends.upperdir import prepare_layer_tree
from snapws.layers.entries import Node
from snapws.layers.scan import entries_of, read_tree
from snapws.model import encode_manifest


def _upper(tmp_path: Path) -> tuple[Path, list[Node], bytes]:
    """An upperdir with overlay bookkeeping on its nodes, its nodes as a
    scan reads them, and its manifest."""
    root = build(tmp_path / "upper", {"d": Opaque({"f": "x"}), "e": {"g": "y"}, "w": WH})
    os.setxattr(root / "d", "trusted.overlay.impure", b"y")
    os.setxattr(root / "e", "trusted.overlay.origin", b"o")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", b"o")
    os.setxattr(root / "d" / "f", "user.keep", b"k")
    nodes = read_tree(os.fsencode(root))
    return root, nodes, encode_manifest(entries_of(nodes))


def _overlay_left(root: Path) -> dict[str, list[str]]:
    out = {}
    for rel in ("d", "e", "d/f", "e/g"):
        names = sorted(n for n in os.listxattr(root / rel) if n != "user.keep")
        if names:
            out[rel] = names
    return out


def test_the_nodes_read_by_the_scan_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, nodes, manifest = _upper(tmp_path)
    os.utime(root / "e", ns=(5, 5))  # (the manifest's mtime comes back)

    def no_read(*args: object) -> Node:
        raise AssertionError("read again")

    monkeypatch.setattr(upperdir, "read_node", no_read)
    prepare_layer_tree(root, [], manifest, "overlay", "trusted", nodes)
    assert _overlay_left(root) == {"d": ["trusted.overlay.opaque"]}
    assert os.getxattr(root / "d" / "f", "user.keep") == b"k"
    assert (
        os.lstat(root / "e").st_mtime_ns
        == nodes[[n.path for n in nodes].index(b"e")].st.st_mtime_ns
    )


@pytest.mark.parametrize("which", ["none", "other paths", "another upperdir", "partial"])
def test_nodes_that_are_not_the_manifests_are_read_again(tmp_path: Path, which: str) -> None:
    root, nodes, manifest = _upper(tmp_path)
    os.setxattr(root / "e" / "g", "trusted.overlay.origin", b"late")  # (not in ``nodes``)
    read: list[Node] | None
    if which == "none":
        read = None
    elif which == "other paths":
        read = [n for n in nodes if n.path != b"e/g"]
    elif which == "another upperdir":
        other, _, _ = _upper(tmp_path / "other")
        read = read_tree(os.fsencode(other))
    else:
        from dataclasses import replace

        read = [replace(n, partial=True) if n.path == b"e" else n for n in nodes]
    prepare_layer_tree(root, [], manifest, "overlay", "trusted", read)
    assert _overlay_left(root) == {"d": ["trusted.overlay.opaque"]}
