"""Layer tars written with the read-ahead thread are the same bytes as
without it, and the thread ends with the writer, also when it fails."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from snapws.errors import StoreCorruptError
from snapws.layers.scan import entries_of, read_tree
from snapws.oci.tarwriter import ReadAhead, write_layer_tar


def _tree(root: Path) -> Path:
    for i in range(40):
        sub = root / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(bytes([i]) * (i * 1000))
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("d0/f0")
    os.link(root / "d1" / "f1", root / "hard")
    return root


def _tar(tree: Path, read_ahead: bool) -> bytes:
    out: list[bytes] = []
    entries = entries_of(read_tree(os.fsencode(tree)))
    write_layer_tar(tree, entries, out.append, read_ahead=read_ahead)
    return b"".join(out)


def _readahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tar-readahead"]


def test_read_ahead_changes_no_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _tree(tmp_path / "t")
    plain = _tar(tree, False)
    monkeypatch.setattr(ReadAhead, "FILES", 2)  # the window is reached and moves on
    monkeypatch.setattr(ReadAhead, "BYTES", 5000)
    assert _tar(tree, True) == plain
    assert not _readahead_threads()


def test_read_ahead_stops_when_the_writer_fails(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t")
    entries = entries_of(read_tree(os.fsencode(tree)))
    (tree / "d3" / "f3").write_bytes(b"changed behind the manifest")
    with pytest.raises(StoreCorruptError):
        write_layer_tar(tree, entries, lambda _b: None, read_ahead=True)
    assert not _readahead_threads()
