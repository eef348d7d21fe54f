"""Read-only commands work on a read-only store (a read-only bind mount of
it, as root): log, status, diff, show. The shared lock is taken on a
read-only descriptor of the lock file (snapws/store/lock.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory

pytestmark = pytest.mark.root


def _mount(*args: str | Path) -> None:
    subprocess.run(["mount", *map(str, args)], check=True, capture_output=True)


@pytest.fixture
def ro_store(make_workspace: WorkspaceFactory) -> Iterator[Workspace]:
    """A workspace with two snapshots and an uncommitted change, whose store
    is then bind-mounted read-only over itself (the workspace's own mount
    keeps writing its upperdir through its own reference)."""
    ws = make_workspace(spec={"a": "a0\n", "sub": {"b": "b0\n"}})
    (ws.path / "a").write_text("a1\n")
    ws.commit("second")
    (ws.path / "sub" / "b").write_text("b1\n")
    _mount("--bind", ws.store, ws.store)
    try:
        _mount("-o", "remount,bind,ro", ws.store)
        yield ws
    finally:
        subprocess.run(["umount", str(ws.store)], check=True)


def test_read_only_commands_on_a_read_only_store(ro_store: Workspace) -> None:
    ws = ro_store
    probe = subprocess.run(["touch", str(ws.store / "probe")], capture_output=True)
    assert probe.returncode != 0, "the store should be read-only"
    assert ws.run("status", "--porcelain").stdout == " M sub/b\n"
    assert ws.run("diff", "--name-status").stdout == "M\tsub/b\n"
    assert ws.run("diff", "HEAD~1", "HEAD", "--name-only").stdout == "a\n"
    assert ws.run("show", "--name-status").stdout == "M\ta\n"
    log = ws.run("log", "--oneline").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in log] == ["(HEAD -> main) second", "initial snapshot"]
