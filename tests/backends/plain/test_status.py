"""``snapws status``/``diff`` of plain workspaces: the stat cache never
misses a change, and reports what the kernel backend reports for the same
edits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Workspace
from helpers import File, Symlink

from backends.conftest import BackendFactory
from snapws.model import Kind, decode_manifest

from .conftest import PlainFactory

BASE = {
    "keep.txt": "keep\n",
    "mod.txt": "one\n",
    "del.txt": "bye\n",
    "run.sh": File("#!/bin/sh\n", mode=0o644),
    "own.txt": "owned\n",
    "link": Symlink("keep.txt"),
    "d": {"x": "1\n", "sub": {"y": "2\n"}},
    "t": "file that becomes a dir\n",
    "dd": {"inner": {"z": "3\n"}},
}


@pytest.fixture
def ws(make_plain: PlainFactory) -> Workspace:
    return make_plain(spec=BASE)


def same_size_same_mtime(path: Path, content: bytes) -> None:
    """Rewrite ``path`` with other bytes of the same length, keeping its mtime."""
    st = os.stat(path)
    assert len(content) == st.st_size and path.read_bytes() != content
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_edit_within_the_same_second_after_a_commit(ws: Workspace) -> None:
    p = ws.path / "mod.txt"
    p.write_text("two\n")
    ws.commit("two")
    assert ws.porcelain() == []
    same_size_same_mtime(p, b"six\n")
    assert ws.porcelain() == [" M mod.txt"]
    assert ws.porcelain() == [" M mod.txt"]  # and again, from the refreshed index


def test_content_changed_with_size_and_mtime_kept(ws: Workspace) -> None:
    assert ws.porcelain() == []  # the index has seen every file
    same_size_same_mtime(ws.path / "keep.txt", b"KEEP\n")
    (st,) = ws.json("status")["changes"]
    assert (st["path"], st["status"], st["what"]) == ("keep.txt", "M", ["content"])
    # back to the original bytes (and mtime): clean again
    same_size_same_mtime(ws.path / "keep.txt", b"keep\n")
    assert ws.porcelain() == []


def test_many_rewrites_in_a_row_are_all_seen(ws: Workspace) -> None:
    p = ws.path / "mod.txt"
    for n in range(5):
        text = f"v{n}\n"
        p.write_text(text)
        assert ws.porcelain() == [" M mod.txt"], n
        assert ws.run("diff", "-p").stdout.endswith(f"+{text}")


def test_touch_and_same_mode_are_not_changes(ws: Workspace) -> None:
    p = ws.path
    os.utime(p / "keep.txt")
    (p / "own.txt").write_text("owned\n")  # the same bytes again
    os.chmod(p / "run.sh", 0o644)
    os.utime(p / "d" / "sub")
    assert ws.porcelain() == []
    r = ws.run("commit", "-m", "noop")
    assert r.stdout == "nothing to commit, working tree clean\n"


def test_modes_owner_xattrs(ws: Workspace) -> None:
    os.chmod(ws.path / "run.sh", 0o755)
    os.chown(ws.path / "own.txt", 1234, 5678)
    os.setxattr(ws.path / "keep.txt", "user.color", b"red")
    os.chmod(ws.path / "d", 0o700)
    assert ws.run("status").stdout.splitlines()[1:] == [
        "  M  d/  (mode)",
        "  M  keep.txt  (xattrs)",
        "  M  own.txt  (owner)",
        "  M  run.sh  (mode)",
    ]
    os.chmod(ws.path / "run.sh", 0o644)  # back: clean again
    assert "run.sh" not in ws.run("status", "--porcelain").stdout


def test_deletions_and_type_changes(ws: Workspace) -> None:
    p = ws.path
    (p / "del.txt").unlink()
    shutil.rmtree(p / "dd")
    (p / "t").unlink()
    (p / "t").mkdir()
    (p / "t" / "inner").write_text("i\n")
    shutil.rmtree(p / "d" / "sub")
    (p / "d" / "sub").write_text("now a file\n")
    assert ws.porcelain() == [
        " T d/sub",
        " D d/sub/y",
        " D dd/",
        " D dd/inner/",
        " D dd/inner/z",
        " D del.txt",
        " T t/",
        "?? t/inner",
    ]
    # and back: file -> directory -> file, directory -> file -> directory
    (p / "d" / "sub").unlink()
    (p / "d" / "sub").mkdir()
    (p / "d" / "sub" / "y").write_text("2\n")
    shutil.rmtree(p / "t")
    (p / "t").write_text("file that becomes a dir\n")
    assert ws.porcelain() == [" D dd/", " D dd/inner/", " D dd/inner/z", " D del.txt"]


def test_symlinks(ws: Workspace) -> None:
    p = ws.path
    (p / "link").unlink()
    (p / "link").symlink_to("mod.txt")
    (p / "dangling").symlink_to("nowhere")
    (p / "keep.txt").unlink()
    (p / "keep.txt").symlink_to("own.txt")  # a file replaced by a symlink
    assert ws.run("status").stdout.splitlines()[1:] == [
        "  A  dangling",
        "  T  keep.txt  (file -> symlink)",
        "  M  link  (target)",
    ]
    sid = ws.commit("links")
    assert ws.porcelain() == []
    ws.run("checkout", "HEAD~1")
    assert os.readlink(p / "link") == "keep.txt" and (p / "keep.txt").is_file()
    assert not os.path.lexists(p / "dangling")
    ws.run("checkout", sid)
    assert os.readlink(p / "keep.txt") == "own.txt" and os.readlink(p / "dangling") == "nowhere"


def test_diff_against_another_snapshot_and_paths(ws: Workspace) -> None:
    (ws.path / "mod.txt").write_text("two\n")
    ws.commit("two")
    (ws.path / "keep.txt").write_text("changed\n")
    (ws.path / "d" / "x").unlink()
    # working tree against HEAD~1: the committed and the uncommitted changes
    assert ws.run("diff", "--name-status", "HEAD~1").stdout.splitlines() == [
        "D\td/x",
        "M\tkeep.txt",
        "M\tmod.txt",
    ]
    assert ws.run("diff", "--name-status", "HEAD~1", "--", "mod.txt").stdout == "M\tmod.txt\n"
    patch = ws.run("diff", "-p", "HEAD~1", "--", "keep.txt").stdout
    assert "-keep\n" in patch and "+changed\n" in patch
    # the working tree's mod.txt equals HEAD's: no difference against HEAD
    assert ws.run("diff", "--name-only").stdout.splitlines() == ["d/x", "keep.txt"]


def test_a_lost_index_is_rebuilt(ws: Workspace) -> None:
    (ws.path / "mod.txt").write_text("two\n")
    (index,) = ws.store.glob("workspaces/*/index")
    index.unlink()
    assert ws.porcelain() == [" M mod.txt"]
    assert index.exists()
    index.write_bytes(b"garbage")
    assert ws.porcelain() == [" M mod.txt"]
    assert ws.porcelain() == [" M mod.txt"]


def test_parallel_scan_sees_the_same(make_plain: PlainFactory) -> None:
    spec = {
        f"d{i}": {f"s{j}": {f"f{k}": f"{i}{j}{k}\n" for k in range(4)} for j in range(5)}
        for i in range(6)
    }
    ws = make_plain(spec=spec)
    p = ws.path
    (p / "d1" / "s1" / "f1").write_text("changed\n")
    (p / "d2" / "s0" / "f3").unlink()
    shutil.rmtree(p / "d3" / "s4")
    (p / "d5" / "new").mkdir()
    (p / "d5" / "new" / "n").write_text("n\n")
    one = ws.run("status", "--json", env={"SNAPWS_PLAIN_SCAN_PROCS": "1"}).stdout
    for procs in ("3", "2"):  # forked walkers, first with a stale index, then a fresh one
        many = ws.run("status", "--json", env={"SNAPWS_PLAIN_SCAN_PROCS": procs}).stdout
        assert many == one
    assert '"path": "d5/new/n"' in one and '"path": "d3/s4/f0"' in one


# ---- the same Change lists as the kernel backend --------------------------------


def _edits(p: Path) -> None:
    (p / "keep.txt").write_text("kept, but changed\n")
    os.utime(p / "mod.txt")  # a touch: no change
    os.chmod(p / "run.sh", 0o755)
    os.chown(p / "own.txt", 1234, 5678)
    os.setxattr(p / "d" / "x", "user.k", b"v")
    (p / "del.txt").unlink()
    shutil.rmtree(p / "dd")
    (p / "t").unlink()
    (p / "t").mkdir()
    (p / "t" / "inner").write_text("i\n")
    (p / "link").unlink()
    (p / "link").symlink_to("own.txt")
    (p / "new").mkdir()
    (p / "new" / "f").write_text("new\n")
    os.chmod(p / "d" / "sub", 0o711)


@pytest.mark.parametrize("edits", [_edits])
def test_same_changes_as_the_kernel_backend(
    make_backend_workspace: BackendFactory, edits: Callable[[Path], None]
) -> None:
    kernel = make_backend_workspace("kernel", name="k", spec=BASE, branch="k")
    plain = make_backend_workspace("plain", name="p", spec=BASE, branch="p")
    for w in (kernel, plain):
        edits(w.path)
    expect = kernel.json("status")["changes"]
    assert len(expect) == 14, [(c["path"], c["status"]) for c in expect]
    assert plain.json("status")["changes"] == expect
    assert plain.json("diff")["changes"] == kernel.json("diff")["changes"]
    # committed, the two layers hold the same entries in the same form
    # (whiteouts, opaque directories, copied-up parents), mtimes aside
    k, p = kernel.json("commit", "-m", "same"), plain.json("commit", "-m", "same")
    assert p["changes"] == k["changes"]
    kernel_layer, plain_layer = (
        [
            replace(e, mtime_ns=0)
            for e in decode_manifest(
                (kernel.store / "layers" / out["layer"] / "manifest").read_bytes()
            )
        ]
        for out in (k, p)
    )
    assert plain_layer == kernel_layer
    assert any(e.opaque for e in plain_layer) and any(e.kind is Kind.WHITEOUT for e in plain_layer)
