"""Crash safety: SIGKILL at every named step of init, commit, checkout and
reset (``SNAPWS_CRASH_AT``), then the next command (``snapws status``)
recovers. After it the store verifies, and the workspace is consistently in
the state before or after the command, with no change lost."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from snapws.crash import STEPS, steps_of

from .conftest import Workspace, crash, is_mounted_rw, mount_flags, recover, tree_of
from .verify import assert_store_ok

pytestmark = pytest.mark.root

Tree = dict[str, tuple[str, int, bytes | None]]

BASE = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "run.sh": "#!/bin/sh\necho run\n",
    "docs": {"readme.md": "# readme\n", "guide.md": "guide\n"},
    "old": {"x.txt": "x\n", "sub": {"y.txt": "y\n", "z.bin": bytes(range(256))}},
    "keep": {"k.txt": "k\n"},
    "stable": {"s.txt": "s\n"},
}


def steps(op: str) -> list[str]:
    """The steps of ``op`` a kernel workspace reaches (all but the plain
    backend's own)."""
    found = list(steps_of(op, "kernel"))
    assert found, f"no crash steps for {op}"
    return found


def test_every_step_is_exercised() -> None:
    # a step of a new operation needs its own crash test here (flatten's
    # are in test_crash_flatten.py, prune's and gc's in test_crash_gc.py,
    # push's in tests/remote/test_push_pull.py, eject's in test_crash_eject.py,
    # the plain backend's in tests/backends/plain/test_crash.py)
    assert {s.split(":")[0] for s in STEPS} == {
        "init",
        "commit",
        "checkout",
        "flatten",
        "prune",
        "gc",
        "push",
        "eject",
    }


def make_uncommitted_changes(ws: Workspace) -> None:
    """Added, modified, deleted files, a removed directory, a mode change and a
    no-op copy-up (which commit prunes)."""
    p = ws.path
    (p / "new.txt").write_text("new\n")
    (p / "newdir" / "deep").mkdir(parents=True)
    (p / "newdir" / "deep" / "n.txt").write_text("n\n")
    (p / "b.txt").write_text("bravo, changed\n")
    (p / "docs" / "guide.md").unlink()
    for sub in ("old/sub/y.txt", "old/sub/z.bin", "old/x.txt"):
        (p / sub).unlink()
    (p / "old" / "sub").rmdir()
    (p / "old").rmdir()
    os.chmod(p / "run.sh", 0o755)
    with open(p / "keep" / "k.txt", "a"):
        pass  # a copy-up that changes nothing


@dataclass
class History:
    s0: str  # init
    s1: str  # main~1, also branch "feature"
    s2: str  # main, HEAD
    t1: Tree
    t2: Tree
    changes: list[str]  # status --porcelain with the uncommitted changes
    before: Tree  # the working tree with them


def make_history(ws: Workspace) -> History:
    """main: S0 -> S1 -> S2 (HEAD), branch feature at S1, plus uncommitted
    changes that touch no path changed between S1 and S2."""
    ws.init(BASE)
    s0 = ws.state().head.hex
    (ws.path / "a.txt").write_text("alpha 2\n")
    (ws.path / "c.txt").write_text("charlie\n")
    s1 = ws.commit("second")
    t1 = ws.tree()
    ws.run("branch", "feature")
    (ws.path / "stable" / "s2.txt").write_text("s2\n")
    (ws.path / "c.txt").write_text("charlie 2\n")
    s2 = ws.commit("third")
    t2 = ws.tree()
    assert t1 != t2
    make_uncommitted_changes(ws)
    changes = ws.status()
    assert len(changes) >= 6, changes
    return History(s0, s1, s2, t1, t2, changes, ws.tree())


def snapshot_count(ws: Workspace) -> int:
    return len(ws.store().snapshot_ids())


# --------------------------------------------------------------------------- commit


@pytest.mark.parametrize("step", steps("commit"))
def test_crash_during_commit(ws: Workspace, step: str) -> None:
    h = make_history(ws)
    n_before = snapshot_count(ws)

    crash(ws, "commit", "-m", "crashing", step=step)
    lines = recover(ws)

    state = ws.state()
    after = ws.tree()
    if state.head.hex == h.s2:
        # rolled back: no new snapshot, every change still uncommitted
        assert step in ("commit:frozen", "commit:staged"), "a journaled commit was rolled back"
        assert snapshot_count(ws) == n_before
        assert lines == h.changes
        assert after == h.before
        assert ws.log_ids() == [h.s2, h.s1, h.s0]
    else:
        # rolled forward: one new snapshot on main holding exactly the changes
        assert snapshot_count(ws) == n_before + 1
        assert lines == []
        assert after == h.before
        assert state.branch == "main"
        assert ws.store().read_ref("heads", "main") == state.head
        assert ws.log_ids() == [state.head.hex, h.s2, h.s1, h.s0]
        shown = ws.run("show", "--name-only", "HEAD").stdout
        for line in h.changes:
            assert line.split(None, 1)[1].rstrip("/") in shown, (line, shown)
    # the workspace works normally afterwards
    (ws.path / "after.txt").write_text("after\n")
    ws.commit("after the crash")
    assert ws.status() == []
    assert ws.tree() == {**h.before, "after.txt": ws.tree()["after.txt"]}
    assert_store_ok(ws.store_path)


def test_crash_during_commit_steps_cover_rollback_and_rollforward() -> None:
    # the first steps come before the journal (nothing recorded: roll back),
    # the others after it (recovery finishes the commit)
    assert steps("commit")[:2] == ["commit:frozen", "commit:staged"]
    assert "commit:journaled" in steps("commit")


# --------------------------------------------------------------------------- checkout / reset

SWITCHES = {
    "checkout": ("checkout", "--discard", "feature"),
    "reset-hard": ("reset", "--hard", "HEAD~1"),
    "reset-keep": ("reset", "HEAD~1"),
}


def expected_keep(h: History) -> Tree:
    """S1's tree with the uncommitted changes on top (reset without --hard)."""
    out = dict(h.t1)
    for path in h.t2.keys() | h.before.keys():
        if h.before.get(path) != h.t2.get(path):
            if path in h.before:
                out[path] = h.before[path]
            else:
                out.pop(path, None)
    return out


@pytest.mark.parametrize("step", steps("checkout"))
@pytest.mark.parametrize("kind", sorted(SWITCHES))
def test_crash_during_switch(ws: Workspace, kind: str, step: str) -> None:
    h = make_history(ws)
    args = SWITCHES[kind]

    crash(ws, *args, step=step)
    lines = recover(ws)

    state = ws.state()
    main = ws.store().read_ref("heads", "main")
    assert state.head.hex in (h.s2, h.s1), "HEAD is neither the old nor the new snapshot"
    if state.head.hex == h.s2:
        # not switched: everything as before the command
        assert state.branch == "main"
        assert main is not None and main.hex == h.s2
        assert lines == h.changes
        assert ws.tree() == h.before
    elif kind == "checkout":
        assert state.branch == "feature"
        assert main is not None and main.hex == h.s2, "checkout moved the old branch"
        assert lines == []
        assert ws.tree() == h.t1
    elif kind == "reset-hard":
        assert state.branch == "main"
        assert main == state.head, "HEAD and its branch disagree"
        assert lines == []
        assert ws.tree() == h.t1
    else:
        assert state.branch == "main"
        assert main == state.head, "HEAD and its branch disagree"
        assert sorted(lines) == sorted(h.changes)
        assert ws.tree() == expected_keep(h)
    # the workspace works normally afterwards
    (ws.path / "after.txt").write_text("after\n")
    ws.commit("after the crash")
    assert ws.status() == []
    assert_store_ok(ws.store_path)


# --------------------------------------------------------------------------- init

INIT_TREE = {
    "file.txt": "hello\n",
    "bin": {"tool": "#!/bin/sh\n"},
    "nested": {"a": {"b": {"c.txt": "deep\n"}}, "empty": {}},
    "data.bin": bytes(range(256)) * 64,
}


def init_original(ws: Workspace) -> Tree:
    ws.gen(INIT_TREE)
    os.chmod(ws.path / "bin" / "tool", 0o755)
    os.chmod(ws.path / "nested" / "a", 0o700)
    os.symlink("file.txt", ws.path / "link")
    os.chmod(ws.path, 0o751)
    return tree_of(ws.path)


def check_after_init_crash(ws: Workspace, original: Tree, step: str) -> bool:
    """Recover and check; True if the init was rolled forward."""
    proc = ws.run("status", check=False)  # the next command must recover
    assert_store_ok(ws.store_path)
    store = ws.store()
    if store.workspaces():
        # rolled forward: a complete workspace showing the original content
        assert proc.returncode == 0, (step, proc.stdout, proc.stderr)
        assert "nothing to commit" in proc.stdout
        assert is_mounted_rw(ws.path)
        assert ws.tree() == original
        assert len(store.snapshot_ids()) == 1
        assert ws.log_ids() == [ws.state().head.hex]
        assert store.read_ref("heads", "main") == ws.state().head
        forward = True
    else:
        # rolled back: the original files are back in DIR, nothing mounted
        assert proc.returncode == 3, (step, proc.returncode, proc.stdout, proc.stderr)
        assert mount_flags(ws.path) is None, "DIR is still mounted after a rollback"
        assert tree_of(ws.path) == original
        assert store.snapshot_ids() == []
        assert store.list_refs("heads") == {}
        # and init works again
        ws.run("init")
        assert ws.tree() == original
        forward = False
    assert_store_ok(ws.store_path)
    return forward


def test_init_steps_cover_rollback_and_rollforward() -> None:
    assert steps("init")[:2] == ["init:journaled", "init:moved"]


@pytest.mark.parametrize("step", steps("init"))
def test_crash_during_init(ws: Workspace, step: str) -> None:
    original = init_original(ws)
    crash(ws, "init", step=step)
    forward = check_after_init_crash(ws, original, step)
    # until the layer is published a crash rolls back, after it forward
    assert forward == (step not in ("init:journaled", "init:moved"))


def test_crash_during_init_of_2000_files(ws: Workspace) -> None:
    for d in range(20):
        ws.gen({f"d{d:02}": {f"f{i:03}.txt": f"{d}/{i}\n" * (i % 7 + 1) for i in range(100)}})
    original = tree_of(ws.path)
    assert sum(1 for v in original.values() if v[0] == "file") == 2000
    crash(ws, "init", step="init:moved")
    assert os.listdir(ws.path) == [], "init:moved crashed before moving the files"
    assert not check_after_init_crash(ws, original, "init:moved")
