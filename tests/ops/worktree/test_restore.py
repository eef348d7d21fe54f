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


def test_restore_path_in_neither_source_nor_head(hist: History) -> None:
    ws, _, _ = hist
    before = tree_state(ws.path)
    # d/z is in HEAD (tracked), not in HEAD~1: as git, no error; it is not
    # in the working tree either, so nothing is done
    r = ws.run("restore", "--source", "HEAD~1", "d/z")
    assert r.stderr.startswith("restored 0 path(s) from ")
    # in neither: git's "did not match any file(s) known to git"; nothing
    # changed, not even the paths that exist
    r = ws.run("restore", "b.txt", "nope.txt", check=False)
    assert r.returncode == 12
    lines = r.stderr.splitlines()
    assert lines[0].startswith("snapws: error: did not match any path in snapshot ")
    assert lines[0].endswith(" (HEAD): nope.txt")  # (the source is HEAD)
    assert lines[1].startswith("hint: paths are relative to the current directory")
    assert not (ws.path / "b.txt").exists()
    # a new file (untracked) is no more known than a missing one
    r = ws.run("restore", "new.txt", check=False)
    assert r.returncode == 12 and "nope" not in r.stderr and "new.txt" in r.stderr
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


# ---- untracked paths are left alone, as git's restore leaves them ------------


def test_restore_dot_in_a_subdirectory_keeps_new_files(hist: History) -> None:
    ws, _, _ = hist
    ws.run("restore", "d")
    (ws.path / "d" / "x").write_text("changed")
    (ws.path / "d" / "newfile.txt").write_text("new\n")
    (ws.path / "d" / "newdir").mkdir()
    (ws.path / "d" / "newdir" / "f").write_text("f\n")
    r = run_cli("-C", ws.path / "d", "restore", ".", cwd=ws.outside)
    assert r.stderr.startswith("restored 1 path(s) from ")  # d/x
    assert (ws.path / "d" / "x").read_text() == "x1\n"
    assert (ws.path / "d" / "newfile.txt").read_text() == "new\n"
    assert (ws.path / "d" / "newdir" / "f").read_text() == "f\n"
    assert ws.porcelain() == [
        " M a.txt",
        " D b.txt",
        "?? d/newdir/",
        "?? d/newdir/f",
        "?? d/newfile.txt",
        "?? new.txt",
    ]


def test_restore_dot_at_the_root_restores_everything_tracked(hist: History) -> None:
    ws, _, _ = hist
    r = run_cli("-C", ws.path, "restore", ".", cwd=ws.outside)
    assert r.returncode == 0
    assert ws.porcelain() == ["?? new.txt"]
    assert (ws.path / "new.txt").read_text() == "n\n"
    assert tree_files(ws.path / "d") == {
        "sub/": None,
        "sub/y": "y0\n",
        "x": "x1\n",
        "z": "z1\n",
    }


def test_restore_removes_tracked_paths_absent_from_the_source(hist: History) -> None:
    """git's no-overlay mode: d/z is in HEAD, not in HEAD~1, so restoring d
    from HEAD~1 removes it; d/new is in neither and stays."""
    ws, _, _ = hist
    ws.run("restore", "d")
    (ws.path / "d" / "new").write_text("mine\n")
    ws.run("restore", "-s", "HEAD~1", "d")
    assert tree_files(ws.path / "d") == {
        "new": "mine\n",
        "sub/": None,
        "sub/y": "y0\n",
        "x": "x0\n",
    }


def test_a_tracked_directory_absent_from_the_source_keeps_untracked_files(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(spec={"a": "a0"})
    (ws.path / "t").mkdir()
    (ws.path / "t" / "f").write_text("f\n")
    ws.commit("adds t")
    (ws.path / "t" / "mine").write_text("m\n")
    ws.run("restore", "-s", "HEAD~1", ".")
    assert tree_files(ws.path) == {"a": "a0", "t/": None, "t/mine": "m\n"}
    (ws.path / "t" / "mine").unlink()
    ws.run("restore", "-s", "HEAD~1", ".")
    assert tree_files(ws.path) == {"a": "a0"}


def test_restore_glob_pathspecs(hist: History) -> None:
    ws, _, _ = hist
    (ws.path / "x.txt").write_text("untracked\n")
    ws.run("restore", "-s", "HEAD~1", "*.txt")
    # a.txt and b.txt from c0; new.txt and x.txt untracked: untouched
    assert (ws.path / "a.txt").read_text() == "a0\n"
    assert (ws.path / "b.txt").read_text() == "b0\n"
    assert (ws.path / "x.txt").read_text() == "untracked\n"
    assert not (ws.path / "d").exists()
    # * crosses '/': d/sub/y, its parents made from the source
    ws.run("restore", "d/*y")
    assert tree_files(ws.path / "d") == {"sub/": None, "sub/y": "y0\n"}
    r = ws.run("restore", "*.nothing", check=False)
    assert r.returncode == 12 and "*.nothing" in r.stderr


def test_a_full_disk_leaves_the_working_trees_file_whole(
    hist: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is restored under a hidden name and renamed over the working
    tree's: a write that fails (ENOSPC here) leaves the file as it was and
    no copy; the next restore finds a killed run's copy and replaces it."""
    import errno

    from snapws.layers import materialise

    ws, _, _ = hist
    real = materialise.copy_into

    def full(src: bytes, fd: int) -> None:
        os.write(fd, b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(materialise, "copy_into", full)
    r = ws.run("restore", "a.txt", check=False)
    assert r.returncode == 17, r.stderr
    assert (ws.path / "a.txt").read_text() == "a2\n", "the working tree's file, whole"
    assert not [n for n in os.listdir(ws.path) if n.startswith(".snapws-tmp-")]
    monkeypatch.setattr(materialise, "copy_into", real)
    (ws.path / os.fsdecode(materialise.temp_name(b"a.txt"))).write_text("a killed run's copy")
    ws.run("restore", "a.txt")
    assert (ws.path / "a.txt").read_text() == "a1\n"
    assert not [n for n in os.listdir(ws.path) if n.startswith(".snapws-tmp-")]
