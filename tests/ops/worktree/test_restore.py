"""``snapws restore``: paths back from a snapshot, the rest left alone."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import File, state_diff, tree_files, tree_state

History = tuple[Workspace, list[str], dict[bytes, object]]

BASE = {
    "a.txt": File("a0\n", mode=0o640, mtime_ns=1_600_000_000_123_456_789),
    "b.txt": "b0\n",
    "d": {"x": "x0\n", "sub": {"y": File("y0\n", mode=0o755)}},
}


@pytest.fixture
def hist(make_workspace: WorkspaceFactory) -> History:
    """c0: BASE; c1: a.txt=a1, d/x=x1, d/z added. Then uncommitted: a.txt=a2,
    b.txt deleted, d removed, new.txt added. Returns (ws, [c0, c1], states of
    c0 by path)."""
    ws = make_workspace(spec=BASE)
    c0_state = tree_state(ws.path)
    ids = [ws.head()]
    (ws.path / "a.txt").write_text("a1\n")
    (ws.path / "d" / "x").write_text("x1\n")
    (ws.path / "d" / "z").write_text("z1\n")
    ids.append(ws.commit("c1"))
    (ws.path / "a.txt").write_text("a2\n")
    (ws.path / "b.txt").unlink()
    shutil.rmtree(ws.path / "d")
    (ws.path / "new.txt").write_text("n\n")
    return ws, ids, dict(c0_state)


def test_restore_modified_file(hist: History) -> None:
    ws, _, _ = hist
    r = ws.run("restore", "a.txt")
    assert r.stdout == ""
    assert "restored 1 path(s) from" in r.stderr
    assert (ws.path / "a.txt").read_text() == "a1\n"
    # other changes are intact; a.txt is no longer one of them
    assert ws.porcelain() == [
        " D b.txt",
        " D d/",
        " D d/sub/",
        " D d/sub/y",
        " D d/x",
        " D d/z",
        "?? new.txt",
    ]


def test_restore_deleted_file(hist: History) -> None:
    ws, _, c0 = hist
    ws.run("restore", "b.txt")
    assert (ws.path / "b.txt").read_text() == "b0\n"
    assert " D b.txt" not in ws.porcelain()
    assert " M a.txt" in ws.porcelain()
    assert ws.porcelain()[-1] == "?? new.txt"
    assert tree_state(ws.path)[b"b.txt"] == c0[b"b.txt"]


def test_restore_directory_from_older_snapshot(hist: History) -> None:
    ws, _, c0 = hist
    ws.run("restore", "--source", "HEAD~1", "d")
    assert tree_files(ws.path / "d") == {"sub/": None, "sub/y": "y0\n", "x": "x0\n"}
    now = tree_state(ws.path)
    # exactly c0's directory: modes, owners, mtimes of files
    for p in (b"d/x", b"d/sub/y"):
        assert now[p] == c0[p], p
    # compared with HEAD (c1): d/x differs, d/z is gone; the rest is untouched
    assert ws.porcelain() == [" M a.txt", " D b.txt", " M d/x", " D d/z", "?? new.txt"]
    assert (ws.path / "a.txt").read_text() == "a2\n"


def test_restore_file_keeps_metadata(hist: History) -> None:
    ws, ids, c0 = hist
    ws.run("restore", "-s", ids[0], "a.txt")
    assert state_diff({b"a.txt": c0[b"a.txt"]}, {b"a.txt": tree_state(ws.path)[b"a.txt"]}) == []
    assert ws.porcelain()[0] == " M a.txt"
    st = ws.json("status")["changes"][0]
    assert st["new"]["mode"] == "0640"


def test_restore_several_paths_and_nested(hist: History) -> None:
    ws, _, _ = hist
    # d is gone from the working tree: its parents are recreated from the source
    ws.run("restore", "d/sub/y", "b.txt")
    assert tree_files(ws.path / "d") == {"sub/": None, "sub/y": "y0\n"}
    assert (ws.path / "b.txt").read_text() == "b0\n"
    assert ws.porcelain() == [" M a.txt", " D d/x", " D d/z", "?? new.txt"]


def test_restore_from_inside_a_subdirectory(hist: History) -> None:
    """Paths are relative to the current directory (here via -C)."""
    ws, _, _ = hist
    ws.run("restore", "d")
    (ws.path / "d" / "x").write_text("changed")
    run_cli("-C", ws.path / "d", "restore", "x", "sub", cwd=ws.outside)
    assert (ws.path / "d" / "x").read_text() == "x1\n"
    assert ws.porcelain() == [" M a.txt", " D b.txt", "?? new.txt"]


def test_restore_path_not_in_source(hist: History) -> None:
    ws, _, _ = hist
    before = tree_state(ws.path)
    r = ws.run("restore", "--source", "HEAD~1", "d/z", check=False)
    assert r.returncode == 12
    assert "snapws: error: not in snapshot" in r.stderr
    assert "d/z" in r.stderr
    assert "hint:" in r.stderr
    # nothing changed, not even the paths that exist
    r = ws.run("restore", "b.txt", "nope.txt", check=False)
    assert r.returncode == 12
    assert "nope.txt" in r.stderr
    assert not (ws.path / "b.txt").exists()
    assert state_diff(before, tree_state(ws.path)) == []


def test_restore_outside_the_workspace(hist: History) -> None:
    ws, _, _ = hist
    r = ws.run("restore", "../elsewhere", check=False)
    assert r.returncode == 12
    assert "outside the workspace" in r.stderr
    assert "hint:" in r.stderr


def test_restore_unknown_source(hist: History) -> None:
    ws, _, _ = hist
    r = ws.run("restore", "--source", "nope", "a.txt", check=False)
    assert r.returncode == 4
    assert (ws.path / "a.txt").read_text() == "a2\n"


def test_restore_then_commit(hist: History) -> None:
    ws, ids, c0 = hist
    ws.run("restore", "-s", ids[0], "d", "a.txt", "b.txt")
    os.unlink(ws.path / "new.txt")
    # the working tree is c0 again, so committing records c0's tree
    assert ws.porcelain() == [" M a.txt", " M d/x", " D d/z"]
    ws.commit("back to c0")
    assert ws.run("diff", ids[0], "HEAD").stdout == ""
    assert state_diff(c0, tree_state(ws.path)) == []
