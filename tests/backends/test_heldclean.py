"""The held workspace's memo of clean upperdir nodes (snapws.backends.heldclean):
a status that compares only what moved since the last one says what a
status comparing everything says, whatever was done in between."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory

from snapws.backends import heldclean

pytestmark = pytest.mark.root

#: Nodes are remembered clean once this old (the test waits that long).
RACY_NS = 50_000_000


@pytest.fixture
def held(make_workspace: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A workspace that a process holds (its cwd inside), made held by a
    commit through the live mount."""
    monkeypatch.setattr(heldclean, "RACY_NS", RACY_NS)
    spec: dict[str, object] = {
        "a.txt": "alpha\n",
        "docs": {"one.md": "1\n", "two.md": "2\n", "deep": {"x.txt": "x\n"}},
        "old": {"y.txt": "y\n", "sub": {"z.txt": "z\n"}},
        "bin": {"tool": "#!/bin/sh\n"},
        ".snapwsignore": "*.swp\n",
    }
    ws = make_workspace(spec=spec)
    holder = subprocess.Popen(["sleep", "600"], cwd=ws.path)
    try:
        (ws.path / "a.txt").write_text("alpha 2\n")
        ws.commit("held now")
        state = next(ws.store.glob("workspaces/*/state.json")).read_text()
        assert '"base"' in state  # held: the mount stays on its chain
        yield ws
    finally:
        holder.kill()
        holder.wait()


def _memo_file(ws: Workspace) -> Path:
    return next(ws.store.glob("workspaces/*")) / heldclean.NAME


def _both(ws: Workspace) -> tuple[list[str], list[str]]:
    """Status from the memo as the last status left it, and status after
    comparing every node (no memo), on the same tree."""
    memo = _memo_file(ws)
    saved = memo.read_bytes() if memo.exists() else None
    memo.unlink(missing_ok=True)
    full = ws.porcelain()
    if saved is not None:
        memo.write_bytes(saved)
    fast = ws.porcelain()
    return fast, full


def _mutate(rng: random.Random, root: Path, n: int) -> str:
    """One random change through the mount, as a user's program makes it."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    dirs = sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())
    kind = rng.choice(
        ["edit", "add", "delete", "rmdir", "remake", "chmod", "xattr", "kind", "touch", "swp"]
    )
    if kind == "edit" and files:
        f = rng.choice(files)
        f.write_text(f.read_text() + f"edit {n}\n")
    elif kind == "add":
        d = rng.choice([root, *dirs])
        (d / f"new{n}.txt").write_text(f"new {n}\n")
    elif kind == "delete" and files:
        rng.choice(files).unlink()
    elif kind == "rmdir" and dirs:
        shutil.rmtree(rng.choice(dirs))
    elif kind == "remake" and dirs:  # deleted and made again: opaque
        d = rng.choice(dirs)
        shutil.rmtree(d)
        d.mkdir()
        (d / "again.txt").write_text(f"again {n}\n")
    elif kind == "chmod" and files:
        os.chmod(rng.choice(files), rng.choice([0o600, 0o644, 0o755]))
    elif kind == "xattr" and files:
        os.setxattr(rng.choice(files), "user.note", f"n{n}".encode())
    elif kind == "kind" and files:  # a file becomes a directory
        f = rng.choice(files)
        f.unlink()
        f.mkdir()
        (f / "inside.txt").write_text("inside\n")
    elif kind == "touch" and files:  # same content, new times
        os.utime(rng.choice(files))
    elif kind == "swp":  # ignored
        (rng.choice([root, *dirs]) / f".e{n}.swp").write_text("swap\n")
    return kind


def test_status_from_the_memo_is_status_comparing_everything(held: Workspace) -> None:
    rng = random.Random(4242)
    compared = with_changes = commits = 0
    for n in range(60):
        _mutate(rng, held.path, n)
        if rng.random() < 0.2:
            held.run("commit", "-m", f"c{n}")  # HEAD moves: the memo's key too
            commits += 1
        time.sleep(RACY_NS / 1e9 * 1.5)  # old enough to be remembered
        fast, full = _both(held)
        assert fast == full, n
        compared += 1
        with_changes += bool(full)
    assert compared == 60 and with_changes > 20 and commits > 5
    assert _memo_file(held).exists()


def test_a_status_with_a_memo_compares_only_what_moved(
    held: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a status has remembered the tree clean, one edit makes the
    next status compare that file (and nothing remembered clean)."""
    from snapws.layers import upperdiff

    for i in range(20):
        (held.path / f"f{i}.txt").write_text(f"{i}\n")
    held.run("commit", "-m", "twenty")
    time.sleep(RACY_NS / 1e9 * 1.5)
    assert held.porcelain() == []  # compares everything, remembers it clean
    focused: list[set[bytes]] = []
    real = upperdiff.diff_upper

    def spy(*args: object, **kw: object) -> object:
        focus = args[5] if len(args) > 5 else kw.get("focus")
        focused.append(set(focus) if focus is not None else {b"<everything>"})  # type: ignore[call-overload]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("snapws.backends.overlay.diff_upper", spy)
    (held.path / "f3.txt").write_text("three\n")
    assert held.porcelain() == [" M f3.txt"]
    assert focused[-1] == {b"f3.txt"}


def test_a_damaged_memo_is_not_used(tmp_path: Path) -> None:
    memo = heldclean.HeldClean(b"key", {b"a": (1, 2, 3, 4, 5)}, {b"a", b"b"}, {b"b"}, {b"c"})
    heldclean.save(tmp_path, memo)
    assert heldclean.load(tmp_path, b"key") == memo
    assert heldclean.load(tmp_path, b"other key").nodes == set()
    data = (tmp_path / heldclean.NAME).read_bytes()
    (tmp_path / heldclean.NAME).write_bytes(data[:-3])
    assert heldclean.load(tmp_path, b"key").nodes == set()
    (tmp_path / heldclean.NAME).write_bytes(b"garbage")
    assert heldclean.load(tmp_path, b"key").nodes == set()


def test_a_commit_through_the_live_mount_leaves_the_memo_of_its_head(
    held: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a held commit read is what its new HEAD holds: the status after
    it compares only what moved since (here: nothing, then one file)."""
    from snapws.layers import upperdiff

    for i in range(20):
        (held.path / f"f{i}.txt").write_text(f"{i}\n")
    time.sleep(RACY_NS / 1e9 * 1.5)  # old enough when the commit reads them
    held.run("commit", "-m", "twenty")
    focused: list[set[bytes] | None] = []
    real = upperdiff.diff_upper

    def spy(*args: object, **kw: object) -> object:
        focus = args[5] if len(args) > 5 else kw.get("focus")
        focused.append(None if focus is None else set(focus))  # type: ignore[call-overload]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("snapws.backends.overlay.diff_upper", spy)
    assert held.porcelain() == []
    assert focused[-1] == set()
    (held.path / "f7.txt").write_text("seven\n")
    assert held.porcelain() == [" M f7.txt"]
    assert focused[-1] == {b"f7.txt"}
    _memo_file(held).unlink()
    assert held.porcelain() == [" M f7.txt"]  # and the same from scratch
    assert focused[-1] is None


def test_a_copy_a_killed_save_left_goes_at_the_next_status(held: Workspace) -> None:
    wsdir = _memo_file(held).parent
    stray = wsdir / f".{heldclean.NAME}.tmp-999999999"  # no such process
    stray.write_bytes(b"half")
    held.porcelain()
    assert not stray.exists()


def test_nodes_remembered_clean_are_not_read_again_unless_compared(
    held: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status after one that found the tree clean reads only the stat of
    nodes remembered clean (no attributes, no link target); one that must
    compare them after all (below an opaque directory that moved) reads them
    whole: a symlink and a file with an attribute show no change."""
    from snapws.layers import entries

    d = held.path / "old"
    shutil.rmtree(d)
    d.mkdir()  # opaque in U
    (d / "note.txt").write_text("note\n")
    os.setxattr(d / "note.txt", "user.tag", b"kept")
    os.symlink("note.txt", d / "link")
    held.run("commit", "-m", "opaque old")
    time.sleep(RACY_NS / 1e9 * 1.5)
    assert held.porcelain() == []  # remembers every node clean
    read: list[bytes] = []
    real = entries.read_node

    def spy(path: bytes, abspath: bytes, st: os.stat_result | None = None) -> entries.Node:
        read.append(path)
        return real(path, abspath, st)

    monkeypatch.setattr(entries, "read_node", spy)
    monkeypatch.setattr("snapws.layers.scan.read_node", spy)
    assert held.porcelain() == []
    assert read == [b"."]  # the root is read whole; every other node is known
    (d / "new.txt").write_text("new\n")  # "old" moves: all below it is compared
    read.clear()
    assert held.porcelain() == ["?? old/new.txt"]
    assert {b"old", b"old/new.txt", b"old/note.txt", b"old/link"} <= set(read)


def test_a_known_node_is_one_remembered_clean_with_the_same_stamp(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("f\n")
    st_d, st_f = os.lstat(tmp_path / "d"), os.lstat(tmp_path / "f")

    def stamp(st: os.stat_result) -> heldclean.Stamp:
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)

    memo = heldclean.HeldClean(b"k", {b"d": stamp(st_d), b"f": stamp(st_f)}, {b"d", b"f"})
    memo.hiding = {b"d", b"f"}  # "d" hid what lay below it: an opaque directory
    d = memo.known(b"d", os.fsencode(tmp_path / "d"), st_d)
    assert d is not None and d.partial and d.opaque
    f = memo.known(b"f", os.fsencode(tmp_path / "f"), st_f)
    assert f is not None and f.partial and not f.opaque
    memo.hiding = {b"f"}
    d = memo.known(b"d", os.fsencode(tmp_path / "d"), st_d)
    assert d is not None and not d.opaque
    os.utime(tmp_path / "f", ns=(1, 1))  # a new stamp: read it
    assert memo.known(b"f", os.fsencode(tmp_path / "f"), os.lstat(tmp_path / "f")) is None
