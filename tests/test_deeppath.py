"""snapws.deeppath: syscalls on paths longer than PATH_MAX."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from snapws import deeppath

DEPTH = 3_000  # "/d" * 3000: 6,000 bytes, beyond PATH_MAX


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[bytes]:
    """The path of a file DEPTH levels below ``tmp_path`` (removed with
    ``rm -rf``: pytest's own clean-up recurses)."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEPTH):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    out = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"deep")
    os.close(out)
    os.close(fd)
    yield os.fsencode(tmp_path) + b"/d" * DEPTH + b"/f"
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


def test_a_short_path_is_given_as_it_is(tmp_path: Path) -> None:
    with deeppath.reach(str(tmp_path)) as short:
        assert short == str(tmp_path)


def test_a_long_path_is_reached_and_nothing_stays_open(deep: bytes) -> None:
    with pytest.raises(OSError) as e:
        os.lstat(deep)
    assert e.value.errno == 36  # ENAMETOOLONG: what the module is for
    with deeppath.reach(deep) as short:
        assert len(short) < 4096
        with open(short, "rb") as f:
            assert f.read() == b"deep"
    assert deeppath.lstat(deep).st_size == 4
    assert deeppath.lexists(deep) and not deeppath.lexists(deep + b"x")
    assert deeppath.open_anchors() == 0


def test_an_error_names_the_long_path(deep: bytes) -> None:
    with pytest.raises(FileNotFoundError) as e:
        deeppath.lstat(deep + b"x")
    assert e.value.filename == deep + b"x"


def test_a_walk_keeps_few_anchors_and_closes_them(deep: bytes) -> None:
    root = deep[: -len(b"/d" * DEPTH + b"/f")]
    with deeppath.anchored():
        for n in range(1, DEPTH + 1):
            deeppath.lstat(root + b"/d" * n)
        assert 0 < deeppath.open_anchors() <= deeppath.MAX_ANCHORS
    assert deeppath.open_anchors() == 0


def test_threads_share_anchors(deep: bytes) -> None:
    with deeppath.anchored(), ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: deeppath.lstat(deep).st_size, range(200)))
    assert sizes == [4] * 200
    assert deeppath.open_anchors() == 0


def test_a_removed_anchor_is_opened_again(deep: bytes) -> None:
    root = deep[: -len(b"/d" * DEPTH + b"/f")]
    with deeppath.anchored():
        assert deeppath.lexists(deep)
        subprocess.run(["rm", "-rf", os.fsdecode(root + b"/d")], check=True)
        assert not deeppath.lexists(deep)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.close(fd)
        assert deeppath.lstat(deep).st_size == 0  # the new file, not the removed one
