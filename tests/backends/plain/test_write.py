"""snapws.backends.plain.write: a rewrite writes each file whole or not at
all, and a rewrite that cannot fit is refused before anything changes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from snapws.backends.plain import fsops
from snapws.backends.plain.write import (
    bytes_written,
    check_space,
    rewrite_paths,
    temp_name,
)
from snapws.errors import ExitCode, StoreFullError
from snapws.layers.view import ChainView
from snapws.model import Change, ChangeType, Entry, Kind


def _layer(tmp_path: Path) -> ChainView:
    layer = tmp_path / "layer"
    (layer / "d").mkdir(parents=True)
    (layer / "d" / "f.bin").write_bytes(b"new" * 100_000)
    (layer / "g.txt").write_text("g\n")
    return ChainView([os.fsencode(layer)])


def test_a_file_is_written_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = _layer(tmp_path)
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "f.bin").write_bytes(b"old")
    real = fsops.copy_into

    def full(src: bytes, fd: int) -> None:
        os.write(fd, b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsops, "copy_into", full)
    with pytest.raises(OSError) as info:
        rewrite_paths(os.fsencode(ws), view, [b"d/f.bin"], True)
    assert info.value.errno == errno.ENOSPC
    assert (ws / "d" / "f.bin").read_bytes() == b"old", "the old file stays whole"
    assert sorted(os.listdir(ws / "d")) == ["f.bin"], "no copy left"

    monkeypatch.setattr(fsops, "copy_into", real)
    (ws / "d" / os.fsdecode(temp_name(b"f.bin"))).write_bytes(b"a killed run's copy")
    rewrite_paths(os.fsencode(ws), view, [b"d/f.bin", b"g.txt"], True)
    assert (ws / "d" / "f.bin").read_bytes() == b"new" * 100_000
    assert (ws / "g.txt").read_text() == "g\n"
    assert sorted(os.listdir(ws / "d")) == ["f.bin"]


def test_a_directory_is_replaced_by_a_file(tmp_path: Path) -> None:
    view = _layer(tmp_path)
    ws = tmp_path / "ws"
    (ws / "g.txt" / "sub").mkdir(parents=True)
    rewrite_paths(os.fsencode(ws), view, [b"g.txt"], True)
    assert (ws / "g.txt").read_text() == "g\n"


def _file(path: bytes, size: int) -> Entry:
    return Entry(path, Kind.FILE, 0o644, size=size)


def test_bytes_written_counts_the_target_files_but_metadata_only() -> None:
    between = [
        Change(b"a", ChangeType.MODIFIED, _file(b"a", 1), _file(b"a", 100)),
        Change(b"b", ChangeType.DELETED, _file(b"b", 7), None),
        Change(b"m", ChangeType.MODIFIED, _file(b"m", 5), _file(b"m", 5), ("mode",)),
    ]
    mine = [
        Change(b"a", ChangeType.MODIFIED, _file(b"a", 100), _file(b"a", 3)),
        Change(b"c", ChangeType.MODIFIED, _file(b"c", 20), _file(b"c", 30)),
    ]
    assert bytes_written(between, mine, {b"m"}) == 100 + 0 + 20


def test_check_space_refuses_what_does_not_fit(tmp_path: Path) -> None:
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bfree * vfs.f_frsize
    check_space(os.fsencode(tmp_path), 1 << 20, "switch snapshots")
    with pytest.raises(StoreFullError) as info:
        check_space(os.fsencode(tmp_path), free, "switch snapshots")
    assert info.value.exit_code is ExitCode.NO_SPACE
    assert "not enough space to switch snapshots" in str(info.value)
