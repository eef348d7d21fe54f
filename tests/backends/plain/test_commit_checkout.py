"""Commit, checkout, reset and restore of plain workspaces: layers in the
overlay upperdir form, and only the paths that differ rewritten."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import Workspace
from helpers import File, Symlink, state_diff, tree_state

from snapws.layers.entries import has_opaque_marker

from .conftest import PlainFactory, inodes, layer_tree

BASE = {
    "a.txt": "alpha\n",
    "b.txt": File("bravo\n", mode=0o600, xattrs={"user.tag": b"b"}),
    "run.sh": File("#!/bin/sh\n", mode=0o755),
    "link": Symlink("a.txt"),
    "dir": {"x": "x\n", "sub": {"y": "y\n", "z": "z\n"}},
    "other": {"o1": "o1\n", "o2": "o2\n", "deep": {"o3": "o3\n"}},
    "f2d": "a file, later a directory\n",
    "d2f": {"inner": "i\n"},
    "re": {"keep": "keep\n", "old": "old\n"},
}


def _make_re_again(p: Path) -> None:
    """Delete ``re`` and make it again. The new directory is made before the
    old one goes, so that it has another inode number (ext4 may give a
    directory made right after a deletion the number that was freed: then
    nothing tells it from the old one)."""
    (p / "re.new").mkdir()
    (p / "re.new" / "keep").write_text("keep\n")
    (p / "re.new" / "new").write_text("new\n")
    shutil.rmtree(p / "re")
    os.rename(p / "re.new", p / "re")


@pytest.mark.parametrize("between", ["status", "status and an edit beside it"])
def test_a_directory_made_again_stays_whole_after_statuses(
    make_plain: PlainFactory, between: str
) -> None:
    """The scan that sees the inode move records the new stat: the index
    keeps the directory as made again until it is committed."""
    ws = make_plain(spec=BASE)
    p = ws.path
    assert ws.porcelain() == []
    _make_re_again(p)
    assert ws.porcelain() == [" D re/old", "?? re/new"]
    assert ws.porcelain() == [" D re/old", "?? re/new"]  # (replayed from the index)
    if between != "status":
        (p / "a.txt").write_text("alpha 2\n")  # the root is compared child by child
        assert ws.porcelain() == [" M a.txt", " D re/old", "?? re/new"]
    top = layer_tree(ws, ws.commit("made again"))
    assert has_opaque_marker(os.fsencode(top / "re"))
    assert sorted(os.listdir(top / "re")) == ["keep", "new"]
    # committed: the next change below it is an ordinary copy-up
    (p / "re" / "keep").write_text("kept\n")
    assert ws.porcelain() == [" M re/keep"]
    top = layer_tree(ws, ws.commit("below it"))
    assert not has_opaque_marker(os.fsencode(top / "re"))
    assert sorted(os.listdir(top / "re")) == ["keep"]


def test_commit_writes_the_overlay_form_and_leaves_the_directory_alone(
    make_plain: PlainFactory,
) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    assert ws.porcelain() == []  # the index has seen re/ (its inode)
    (p / "a.txt").write_text("alpha 2\n")
    (p / "other" / "o1").unlink()
    shutil.rmtree(p / "dir" / "sub")
    (p / "f2d").unlink()
    (p / "f2d").mkdir()
    (p / "f2d" / "in").write_text("in\n")
    shutil.rmtree(p / "d2f")
    (p / "d2f").write_text("now a file\n")
    _make_re_again(p)
    before = tree_state(p)
    ino = inodes(p)
    sid = ws.commit("every form")
    assert tree_state(p) == before and inodes(p) == ino  # commit only reads the tree
    top = layer_tree(ws, sid)

    def node(rel: str) -> os.stat_result:
        return os.lstat(top / rel)

    for gone in ("other/o1", "dir/sub"):  # deletions are whiteouts
        st = node(gone)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, gone
    assert (top / "a.txt").read_text() == "alpha 2\n"
    assert sorted(os.listdir(top / "other")) == ["o1"]  # a copied-up parent, no siblings
    assert (top / "d2f").read_text() == "now a file\n"  # a file hides the old directory
    assert has_opaque_marker(os.fsencode(top / "f2d"))  # a directory over a file
    assert has_opaque_marker(os.fsencode(top / "re"))  # a directory made again: whole
    assert sorted(os.listdir(top / "re")) == ["keep", "new"]
    assert not has_opaque_marker(os.fsencode(top / "other"))
    assert not os.path.lexists(top / "b.txt") and not os.path.lexists(top / "dir" / "x")
    ws.run("verify")
    assert ws.porcelain() == []
    # the new HEAD shows what the directory holds
    ws.run("checkout", "HEAD~1")
    ws.run("checkout", "main")
    assert state_diff(tree_state(p), before) == []


def test_checkout_rewrites_only_the_paths_that_differ(make_plain: PlainFactory) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    first = tree_state(p)
    s0 = ws.head()
    (p / "a.txt").write_text("alpha 2\n")
    os.chmod(p / "run.sh", 0o700)
    shutil.rmtree(p / "dir" / "sub")
    (p / "new").mkdir()
    (p / "new" / "n").write_text("n\n")
    s1 = ws.commit("second")
    second = tree_state(p)
    peek = ws.outside / "peek"
    os.link(p / "run.sh", peek)  # a mode change is a chmod, not a new file
    ino = inodes(p)
    changed = {"a.txt", "run.sh", "new/n"}
    ws.run("checkout", s0)
    assert state_diff(tree_state(p), first) == []
    after = inodes(p)
    assert len(ino) == 13
    for rel, n in ino.items():
        if rel not in changed:
            assert after.get(rel) == n, f"{rel} was rewritten"
    assert after["a.txt"] != ino["a.txt"] and after["run.sh"] != ino["run.sh"]
    assert os.path.samefile(peek, p / "run.sh") and stat.S_IMODE(peek.stat().st_mode) == 0o755
    assert ws.porcelain() == []
    ws.run("checkout", "main")
    assert ws.head() == s1
    assert state_diff(tree_state(p), second) == []
    assert inodes(p)["other/deep/o3"] == ino["other/deep/o3"]


def test_checkout_refuses_uncommitted_changes_then_discards(make_plain: PlainFactory) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    s0 = ws.head()
    (p / "a.txt").write_text("alpha 2\n")
    ws.commit("second")
    (p / "a.txt").write_text("alpha 3\n")  # differs between HEAD and s0: a clash
    (p / "b.txt").write_text("uncommitted\n")
    (p / "extra").write_text("extra\n")
    keep = inodes(p)["other/o1"]
    r = ws.run("checkout", s0, check=False)
    assert r.returncode == 5, r.stderr
    assert "uncommitted changes touch paths that differ" in r.stderr and ": a.txt" in r.stderr
    assert (p / "b.txt").read_text() == "uncommitted\n"  # nothing changed
    ws.run("checkout", "--discard", s0)
    assert (p / "a.txt").read_text() == "alpha\n"
    assert (p / "b.txt").read_text() == "bravo\n"
    assert stat.S_IMODE(os.lstat(p / "b.txt").st_mode) == 0o600
    assert os.getxattr(p / "b.txt", "user.tag") == b"b"
    assert not (p / "extra").exists()
    assert inodes(p)["other/o1"] == keep
    assert ws.porcelain() == []


def test_reset_keep_and_hard(make_plain: PlainFactory) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    s0 = ws.head()
    (p / "a.txt").write_text("alpha 2\n")
    s1 = ws.commit("second")
    (p / "other" / "o2").write_text("mine\n")  # untouched between s0 and s1: kept
    ws.run("reset", s0)
    assert ws.head() == s0 and (p / "a.txt").read_text() == "alpha\n"
    assert ws.porcelain() == [" M other/o2"]
    (p / "a.txt").write_text("clash\n")  # differs between s0 and s1: refused
    r = ws.run("reset", s1, check=False)
    assert r.returncode == 5 and "a.txt" in r.stderr, r.stderr
    assert ws.head() == s0
    ws.run("reset", "--hard", s1)
    assert ws.head() == s1 and ws.porcelain() == []
    assert (p / "a.txt").read_text() == "alpha 2\n" and (p / "other" / "o2").read_text() == "o2\n"
    log = ws.json("reflog")["entries"]
    assert [e["message"] for e in log[:2]] == [f"reset: moving to {s1}", f"reset: moving to {s0}"]


def test_restore(make_plain: PlainFactory) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    s0 = ws.head()
    (p / "a.txt").write_text("alpha 2\n")
    (p / "dir" / "sub" / "y").write_text("y 2\n")
    ws.commit("second")
    shutil.rmtree(p / "dir")
    (p / "b.txt").unlink()
    untouched = inodes(p)["other/o1"]
    ws.run("restore", "dir/sub/y", "b.txt")  # from HEAD; dir/ is made again for it
    assert (p / "dir" / "sub" / "y").read_text() == "y 2\n"
    assert os.getxattr(p / "b.txt", "user.tag") == b"b"
    assert ws.porcelain() == [" D dir/sub/z", " D dir/x"]
    ws.run("restore", "dir")
    assert ws.porcelain() == []
    ws.run("restore", "--source", s0, "a.txt", "dir")
    assert ws.porcelain() == [" M a.txt", " M dir/sub/y"]
    assert inodes(p)["other/o1"] == untouched
    r = ws.run("restore", "nope", check=False)
    assert r.returncode == 12 and "did not match any path in snapshot" in r.stderr


def test_read_only_directories_and_modes(make_plain: PlainFactory) -> None:
    ws = make_plain(spec={"ro": {"f": File("f\n", mode=0o444)}, "g": "g\n"})
    p = ws.path
    os.chmod(p / "ro", 0o555)
    s0 = ws.commit("read-only dir")
    os.chmod(p / "ro", 0o755)
    (p / "ro" / "f").unlink()
    (p / "ro" / "new").write_text("new\n")
    ws.commit("changed inside")
    ws.run("checkout", s0)
    assert stat.S_IMODE(os.lstat(p / "ro").st_mode) == 0o555
    assert (p / "ro" / "f").read_text() == "f\n" and not (p / "ro" / "new").exists()
    assert ws.porcelain() == []


def test_commit_with_nothing_to_commit_and_allow_empty(ws_plain: Workspace) -> None:
    r = ws_plain.run("commit", "-m", "nothing")
    assert r.stdout == "nothing to commit, working tree clean\n"
    sid = ws_plain.commit("empty", "--allow-empty")
    assert ws_plain.head() == sid and len(ws_plain.log_ids()) == 2


def test_every_snapshot_of_a_history_comes_back(make_plain: PlainFactory) -> None:
    ws = make_plain(spec=BASE)
    p = ws.path
    states = {ws.head(): tree_state(p)}

    def step1() -> None:
        shutil.rmtree(p / "dir")
        (p / "dir").write_text("dir is a file now\n")
        (p / "other" / "deep" / "o4").write_text("o4\n")

    def step2() -> None:
        (p / "dir").unlink()
        (p / "dir").mkdir()
        (p / "dir" / "again").write_text("again\n")
        shutil.rmtree(p / "other")
        os.symlink("a.txt", p / "other")

    def step3() -> None:
        (p / "other").unlink()
        (p / "other").mkdir(mode=0o700)
        (p / "other" / "o1").write_text("o1 back, changed\n")
        os.chmod(p / "a.txt", 0o640)
        os.setxattr(p / "a.txt", "user.k", b"v")

    for n, edit in enumerate((step1, step2, step3)):
        edit()
        states[ws.commit(f"step {n}")] = tree_state(p)
    for sid in [*reversed(states), *states, ws.log_ids()[2]]:
        ws.run("checkout", sid)
        assert state_diff(tree_state(p), states[sid]) == [], sid
        assert ws.porcelain() == []


def test_workspaces_says_when_a_workspace_s_directory_is_gone(make_plain: PlainFactory) -> None:
    from conftest import run_cli

    ws = make_plain(spec={"f": "f\n"})
    listed = run_cli("--store", ws.store, "workspaces", cwd=ws.outside).stdout
    assert listed.rstrip().endswith("[plain]"), listed
    shutil.rmtree(ws.path)
    listed = run_cli("--store", ws.store, "workspaces", cwd=ws.outside).stdout
    assert listed.rstrip().endswith("[plain, its directory is gone]"), listed
