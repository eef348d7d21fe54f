"""snapws.store.nofollow: store paths walked without following a link; what
is found instead of a directory is told (missing, a file, a link)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snapws.store import nofollow
from snapws.store.nofollow import UnsafeEntryError, open_dirs


def test_open_dirs_yields_one_descriptor_per_level(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    with open_dirs(tmp_path, ["a", "b"]) as fds:
        assert len(fds) == 3
        assert os.fstat(fds[2]).st_ino == (tmp_path / "a" / "b").stat().st_ino


def test_a_link_on_the_way_is_unsafe_and_named(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "a")
    with pytest.raises(UnsafeEntryError) as caught, open_dirs(tmp_path, ["a", "b"]):
        pass
    assert caught.value.path == "a"
    assert caught.value.what == "a symbolic link"


def test_a_file_on_the_way_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("x")
    with (
        pytest.raises(NotADirectoryError, match="a/b is a regular file"),
        open_dirs(tmp_path, ["a", "b"], create=True),
    ):
        pass


def test_create_makes_missing_directories_and_syncs_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(nofollow, "fsync_fd", lambda fd: synced.append(os.fstat(fd).st_ino))
    with pytest.raises(FileNotFoundError), open_dirs(tmp_path, ["x"]):
        pass
    with open_dirs(tmp_path, ["x", "y"], create=True):
        pass
    assert stat.S_ISDIR((tmp_path / "x" / "y").lstat().st_mode)
    assert synced == [tmp_path.stat().st_ino, (tmp_path / "x").stat().st_ino]


@pytest.mark.parametrize("part", ["", ".", "..", "a/b"])
def test_only_plain_names(tmp_path: Path, part: str) -> None:
    with pytest.raises(ValueError), open_dirs(tmp_path, [part]):
        pass
