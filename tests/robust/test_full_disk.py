"""A full disk during commit: a documented exit code (17, NO_SPACE), nothing
lost, no staging left behind, and a commit works once space is freed. The
store and the workspace live on a small tmpfs."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import ExitCode
from tests.conftest import Workspace, unmount_all_under, workspace_factory

pytestmark = pytest.mark.root


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", fs], check=True)
    try:
        yield fs
    finally:
        unmount_all_under(fs)
        subprocess.run(["umount", "-l", fs], check=False)


def _fill(ws: Workspace) -> dict[str, bytes]:
    """Write files until the filesystem is full; returns those written whole."""
    written: dict[str, bytes] = {}
    for i in range(1000):
        data = bytes([i % 251]) * 40_000
        name = f"f{i:04d}"
        try:
            (ws.path / name).write_bytes(data)
        except OSError as e:
            assert e.errno == errno.ENOSPC
            (ws.path / name).unlink(missing_ok=True)
            return written
        written[name] = data
    raise AssertionError("the filesystem never filled")


def test_commit_on_a_full_disk(small_fs: Path) -> None:
    ws = workspace_factory(small_fs)(spec={"base.txt": "base"})
    written = _fill(ws)
    assert written
    r = ws.run("commit", "-m", "full", check=False)
    assert r.returncode == int(ExitCode.NO_SPACE), r.stderr
    assert "Traceback" not in r.stderr and "no space left" in r.stderr
    for name, data in written.items():  # nothing lost, still writable
        assert (ws.path / name).read_bytes() == data
    staging = ws.store / "staging"
    assert list(staging.iterdir()) == []
    # free space: the next commands finish cleanly and leave no staging
    for name in list(written)[: len(written) // 2]:
        (ws.path / name).unlink()
        del written[name]
    ws.run("status")
    sid = ws.commit("after space was freed")
    assert list(staging.iterdir()) == []
    assert not (ws.store / "journal.json").exists()
    for name, data in written.items():
        assert (ws.path / name).read_bytes() == data
    assert ws.porcelain() == []
    assert ws.head() == sid
    ws.run("verify")
