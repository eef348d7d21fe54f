"""``snapws eject`` on the kernel and plain backends: the directory keeps its
current tree (uncommitted changes included), unmounted, the store keeps its
snapshots and forgets the workspace; SIGKILL at every eject step, then the
next command, leaves the workspace either intact (before) or ejected (after),
never anything lost."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import mounts_under, run_cli
from helpers import gen

from snapws.crash import steps_of
from snapws.store.store import Store

from .conftest import tree_of

pytestmark = pytest.mark.root

BASE = {"a.txt": "alpha\n", "b.txt": "bravo\n", "d": {"x": "x\n", "sub": {"y": "y\n"}}}

#: The steps each backend reaches (plain has nothing to copy or unmount).
REACHED = {
    "kernel": steps_of("eject"),
    "plain": ("eject:journaled", "eject:record-removed"),
}


def _make(root: Path, backend: str) -> tuple[Path, Path, dict[str, tuple[str, int, bytes | None]]]:
    ws, store = root / "ws", root / "store"
    gen(ws, BASE)
    run_cli("--store", store, "init", "--backend", backend, ws, cwd=root)
    (ws / "a.txt").write_text("alpha 2\n")
    run_cli("--store", store, "-C", ws, "commit", "-m", "second", cwd=root)
    # uncommitted: added, modified, deleted, a removed directory, a mode
    (ws / "new.txt").write_text("new\n")
    (ws / "b.txt").write_text("bravo, changed\n")
    (ws / "d" / "sub" / "y").unlink()
    (ws / "d" / "sub").rmdir()
    os.chmod(ws / "d" / "x", 0o600)
    return ws, store, tree_of(ws)


def _assert_ejected(root: Path, ws: Path, store: Path, before: object) -> None:
    assert mounts_under(ws) == []
    assert tree_of(ws) == before
    s = Store.open(store)
    assert s.workspaces() == []
    assert len(s.snapshot_ids()) == 2  # the store keeps its snapshots
    assert s.read_journal() is None
    assert list((store / "staging").iterdir()) == []
    r = run_cli("--store", store, "-C", ws, "status", cwd=root, check=False)
    assert r.returncode == 3, r.stderr  # not a workspace any more
    # an ordinary directory: writable, and init makes it a workspace again
    (ws / "later.txt").write_text("later\n")
    run_cli("--store", store, "init", "-b", "again", ws, cwd=root)
    assert (ws / "new.txt").read_text() == "new\n"


@pytest.mark.parametrize("backend", sorted(REACHED))
def test_eject_keeps_the_current_tree(mount_guard: Path, backend: str) -> None:
    ws, store, before = _make(mount_guard, backend)
    r = run_cli("--store", store, "eject", ws, cwd=mount_guard)
    assert r.stdout.startswith(f"Ejected {ws}: an ordinary directory now"), r.stdout
    _assert_ejected(mount_guard, ws, store, before)


def test_eject_refuses_while_a_process_uses_the_workspace(mount_guard: Path) -> None:
    ws, store, before = _make(mount_guard, "kernel")
    holder = subprocess.Popen(["sleep", "60"], cwd=ws)
    try:
        r = run_cli("--store", store, "-C", ws, "eject", cwd=mount_guard, check=False)
        assert r.returncode == 10, r.stderr
        assert "hint:" in r.stderr
        assert f"pid {holder.pid} (sleep): cwd" in r.stderr  # the holder is named
        # nothing changed: still a mounted, writable workspace, no staging left
        assert [t for p, t in mounts_under(ws) if p == str(ws)] == ["overlay"]
        (ws / "more.txt").write_text("more\n")
        status = run_cli("--store", store, "-C", ws, "status", "--porcelain", cwd=mount_guard)
        assert "?? more.txt" in status.stdout
        assert list((store / "staging").iterdir()) == []
        (ws / "more.txt").unlink()
    finally:
        holder.kill()
        holder.wait()
    run_cli("--store", store, "-C", ws, "eject", cwd=mount_guard)
    _assert_ejected(mount_guard, ws, store, before)


@pytest.mark.parametrize(
    ("backend", "step"), [(b, s) for b, steps in sorted(REACHED.items()) for s in steps]
)
def test_crash_during_eject(mount_guard: Path, backend: str, step: str) -> None:
    ws, store, before = _make(mount_guard, backend)
    r = run_cli(
        "--store", store, "-C", ws, "eject", cwd=mount_guard, check=False,
        env={"SNAPWS_CRASH_AT": step},
    )  # fmt: skip
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    # the next command recovers: rolled back (still a workspace, as before)
    # or finished (ejected)
    after = run_cli(
        "--store", store, "-C", ws, "status", "--porcelain", cwd=mount_guard, check=False
    )
    assert Store.open(store).read_journal() is None
    if after.returncode == 0:
        assert step == "eject:journaled" and backend == "kernel", "a finished eject was undone"
        assert tree_of(ws) == before
        assert [t for p, t in mounts_under(ws) if p == str(ws)] == ["overlay"]
        (ws / "w.txt").write_text("writable\n")  # thawed
        (ws / "w.txt").unlink()
        run_cli("--store", store, "-C", ws, "eject", cwd=mount_guard)
    else:
        assert after.returncode == 3, after.stderr
    _assert_ejected(mount_guard, ws, store, before)
