"""``snapws status`` and ``snapws diff``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory
from helpers import File, Symlink

BASE = {
    "keep.txt": "keep\n",
    "mod.txt": "one\n",
    "del.txt": "bye\n",
    "run.sh": File("#!/bin/sh\n", mode=0o644),
    "own.txt": "owned\n",
    "link": Symlink("keep.txt"),
    "d": {"x": "1\n", "sub": {"y": "2\n"}},
    "t": "file that becomes a dir\n",
}


@pytest.fixture
def ws(make_workspace: WorkspaceFactory) -> Workspace:
    return make_workspace(spec=BASE)


# ---- status -----------------------------------------------------------------


def test_status_add_modify_delete_typechange(ws: Workspace) -> None:
    p = ws.path
    (p / "new.txt").write_text("new\n")
    (p / "mod.txt").write_text("two\n")
    (p / "del.txt").unlink()
    (p / "t").unlink()
    (p / "t").mkdir()
    (p / "t" / "inner").write_text("i\n")
    shutil.rmtree(p / "d" / "sub")
    assert ws.porcelain() == [
        " D d/sub/",
        " D d/sub/y",
        " D del.txt",
        " M mod.txt",
        " T t/",
        "?? new.txt",
        "?? t/inner",
    ]
    r = ws.run("status")
    assert r.stdout.splitlines() == [
        "On branch main",
        "  D  d/sub/",
        "  D  d/sub/y",
        "  D  del.txt",
        "  M  mod.txt",
        "  A  new.txt",
        "  T  t/  (file -> dir)",
        "  A  t/inner",
    ]


def test_noop_copy_ups_are_not_changes(ws: Workspace) -> None:
    p = ws.path
    os.utime(p / "keep.txt")  # touch
    with open(p / "mod.txt", "r+b"):  # opened for writing, nothing written
        pass
    (p / "own.txt").write_text("owned\n")  # rewritten with the same bytes
    os.chmod(p / "run.sh", 0o644)  # chmod to the mode it has
    os.chown(p / "d" / "x", 0, 0)  # chown to the owner it has
    os.utime(p / "d" / "sub")  # touch a directory
    r = ws.run("status", "--exit-code")
    assert r.returncode == 0
    assert r.stdout == "On branch main\nnothing to commit, working tree clean\n"
    assert ws.porcelain() == []
    # and a commit has nothing to record
    r = ws.run("commit", "-m", "noop")
    assert r.stdout == "nothing to commit, working tree clean\n"
    assert len(ws.log_ids()) == 1


def test_chmod_shows_mode(ws: Workspace) -> None:
    os.chmod(ws.path / "run.sh", 0o755)
    assert ws.run("status").stdout.splitlines()[1:] == ["  M  run.sh  (mode)"]
    assert ws.porcelain() == [" M run.sh"]
    (st,) = ws.json("status")["changes"]
    assert st["what"] == ["mode"]
    assert (st["old"]["mode"], st["new"]["mode"]) == ("0644", "0755")


def test_chown_shows_owner(ws: Workspace) -> None:
    os.chown(ws.path / "own.txt", 1234, 5678)
    assert ws.run("status").stdout.splitlines()[1:] == ["  M  own.txt  (owner)"]
    (st,) = ws.json("status")["changes"]
    assert st["what"] == ["owner"]
    assert (st["new"]["uid"], st["new"]["gid"]) == (1234, 5678)
    assert (st["old"]["uid"], st["old"]["gid"]) == (0, 0)


def test_content_and_mode_together(ws: Workspace) -> None:
    (ws.path / "run.sh").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(ws.path / "run.sh", 0o700)
    assert ws.run("status").stdout.splitlines()[1:] == ["  M  run.sh  (content, mode)"]


def test_xattr_change(ws: Workspace) -> None:
    os.setxattr(ws.path / "keep.txt", "user.color", b"red")
    assert ws.run("status").stdout.splitlines()[1:] == ["  M  keep.txt  (xattrs)"]


def test_symlink_retarget(ws: Workspace) -> None:
    (ws.path / "link").unlink()
    (ws.path / "link").symlink_to("mod.txt")
    assert ws.run("status").stdout.splitlines()[1:] == ["  M  link  (target)"]
    (st,) = ws.json("status")["changes"]
    assert st["old"]["target"] == "keep.txt"
    assert st["new"]["target"] == "mod.txt"


def test_status_json(ws: Workspace) -> None:
    head = ws.log_ids()[0]
    clean = ws.json("status")
    assert clean == {
        "version": 1,
        "id": head,
        "branch": "main",
        "clean": True,
        "changes": [],
    }
    (ws.path / "new.txt").write_text("abc")
    (ws.path / "del.txt").unlink()
    out = ws.json("status")
    assert out["branch"] == "main"
    assert out["id"] == head
    assert out["clean"] is False
    assert [(c["path"], c["status"]) for c in out["changes"]] == [
        ("del.txt", "D"),
        ("new.txt", "A"),
    ]
    deleted, added = out["changes"]
    assert deleted["new"] is None
    assert deleted["old"]["kind"] == "file"
    assert deleted["old"]["size"] == 4
    assert added["old"] is None
    assert added["new"]["kind"] == "file"
    assert added["new"]["size"] == 3
    assert len(added["new"]["hash"]) == 32


def test_status_exit_code(ws: Workspace) -> None:
    r = ws.run("status", "--exit-code", check=False)
    assert r.returncode == 0
    (ws.path / "mod.txt").write_text("changed\n")
    r = ws.run("status", "--exit-code", check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["On branch main", "  M  mod.txt"]
    r = ws.run("status", "--porcelain", "--exit-code", check=False)
    assert (r.returncode, r.stdout) == (1, " M mod.txt\n")
    assert r.stderr == ""


def test_status_after_commit_is_clean(ws: Workspace) -> None:
    (ws.path / "mod.txt").write_text("two\n")
    ws.commit("two")
    assert ws.porcelain() == []
    r = ws.run("status", "--exit-code", check=False)
    assert r.returncode == 0


def test_status_odd_names(ws: Workspace) -> None:
    root = os.fsencode(ws.path)
    with open(root + b"/bad\xff\xfename", "w") as f:
        f.write("x")
    with open(root + b"/new\nline", "w") as f:
        f.write("y")
    assert ws.porcelain() == ['?? "bad\\377\\376name"', '?? "new\\nline"']
    out = ws.json("status")
    paths = sorted(os.fsencode(c["path"]) for c in out["changes"])
    assert paths == [b"bad\xff\xfename", b"new\nline"]


# ---- diff -------------------------------------------------------------------


History = tuple[Workspace, list[str]]


def build_history(make: WorkspaceFactory) -> History:
    """Four snapshots: c0 base, c1 modifies a.txt, c2 adds c.txt and bin,
    c3 deletes b.txt and changes bin. Returns (ws, [c0, c1, c2, c3])."""
    ws = make(spec={"a.txt": "1\n2\n3\n4\n5\n", "b.txt": "b\n", "keep": "k\n"})
    ids = [ws.head()]
    (ws.path / "a.txt").write_text("1\ntwo\n3\n4\n5\n")
    ids.append(ws.commit("c1"))
    (ws.path / "c.txt").write_text("c1\nc2\n")
    (ws.path / "bin").write_bytes(b"\x00\x01\x02")
    ids.append(ws.commit("c2"))
    (ws.path / "b.txt").unlink()
    (ws.path / "bin").write_bytes(b"\x00\x01\x03\x04")
    ids.append(ws.commit("c3"))
    return ws, ids


@pytest.fixture(scope="module")
def shared(make_module_workspace: WorkspaceFactory) -> History:
    """The history, shared by the tests that only read it."""
    return build_history(make_module_workspace)


@pytest.fixture
def hist(make_workspace: WorkspaceFactory) -> History:
    """The history, for a test that changes the working tree or refs."""
    return build_history(make_workspace)


def test_diff_working_tree_against_head(hist: History) -> None:
    ws, _ = hist
    r = ws.run("diff", "--exit-code", check=False)
    assert (r.returncode, r.stdout) == (0, "")
    (ws.path / "c.txt").write_text("c1\nc2\nc3\n")
    os.chmod(ws.path / "keep", 0o600)
    r = ws.run("diff")
    assert r.stdout.splitlines() == ["M  c.txt", "M  keep  (mode)"]
    r = ws.run("diff", "--exit-code", check=False)
    assert r.returncode == 1


def test_diff_working_tree_against_rev(hist: History) -> None:
    ws, ids = hist
    (ws.path / "new").write_text("n")
    r = ws.run("diff", "HEAD~2")
    assert r.stdout.splitlines() == ["D  b.txt", "A  bin", "A  c.txt", "A  new"]
    r = ws.run("diff", ids[0][:8])
    assert r.stdout.splitlines() == ["M  a.txt", "D  b.txt", "A  bin", "A  c.txt", "A  new"]


def test_diff_between_non_adjacent_snapshots(shared: History) -> None:
    ws, ids = shared
    r = ws.run("diff", ids[0], ids[3])
    assert r.stdout.splitlines() == ["M  a.txt", "D  b.txt", "A  bin", "A  c.txt"]
    r = ws.run("diff", "HEAD~3", "HEAD~1", "--name-status")
    assert r.stdout.splitlines() == ["M\ta.txt", "A\tbin", "A\tc.txt"]
    # reversed order reverses the changes
    r = ws.run("diff", "HEAD", "HEAD~3")
    assert r.stdout.splitlines() == ["M  a.txt", "A  b.txt", "D  bin", "D  c.txt"]
    r = ws.run("diff", "HEAD", "HEAD", "--exit-code", check=False)
    assert (r.returncode, r.stdout) == (0, "")
    r = ws.run("diff", "HEAD~3", "HEAD", "--name-only")
    assert r.stdout.splitlines() == ["a.txt", "b.txt", "bin", "c.txt"]


def test_diff_across_branches(hist: History) -> None:
    ws, ids = hist
    ws.run("checkout", "-b", "feature", ids[1])
    (ws.path / "feat.txt").write_text("f\n")
    (ws.path / "b.txt").write_text("b changed\n")
    ws.commit("feature work")
    # main (c3) deleted b.txt; feature (from c1) changed it
    r = ws.run("diff", "main", "feature")
    assert r.stdout.splitlines() == ["A  b.txt", "D  bin", "D  c.txt", "A  feat.txt"]
    r = ws.run("diff", "feature", "main", "--name-status")
    assert r.stdout.splitlines() == ["D\tb.txt", "A\tbin", "A\tc.txt", "D\tfeat.txt"]
    r = ws.run("diff", ids[1], "feature")
    assert r.stdout.splitlines() == ["M  b.txt", "A  feat.txt"]
    # the working tree (on feature) against main
    r = ws.run("diff", "main")
    assert r.stdout.splitlines() == ["A  b.txt", "D  bin", "D  c.txt", "A  feat.txt"]


def test_diff_path_restriction(shared: History) -> None:
    ws, _ = shared
    r = ws.run("diff", "HEAD~3", "HEAD", "--", "a.txt")
    assert r.stdout.splitlines() == ["M  a.txt"]
    r = ws.run("diff", "HEAD~3", "HEAD", "--", "c.txt", "b.txt")
    assert r.stdout.splitlines() == ["D  b.txt", "A  c.txt"]
    r = ws.run("diff", "HEAD~3", "HEAD", "--exit-code", "--", "keep", check=False)
    assert (r.returncode, r.stdout) == (0, "")


def test_diff_working_tree_path_restriction(hist: History) -> None:
    ws, _ = hist
    (ws.path / "dir").mkdir()
    (ws.path / "dir" / "f").write_text("f")
    (ws.path / "a.txt").write_text("changed")
    r = ws.run("diff", "--", "dir")
    assert r.stdout.splitlines() == ["A  dir/", "A  dir/f"]


def test_diff_stat(shared: History) -> None:
    ws, _ = shared
    r = ws.run("diff", "--stat", "HEAD~3", "HEAD")
    assert r.stdout.splitlines() == [
        # counts are aligned with "Bin", as git does
        " a.txt |   2 +-",
        " b.txt |   1 -",
        " bin   | Bin 0 -> 4 bytes",
        " c.txt |   2 ++",
        " 4 files changed, 3 insertions(+), 2 deletions(-)",
    ]
    r = ws.run("diff", "--stat", "HEAD~1", "HEAD")
    assert r.stdout.splitlines() == [
        " b.txt |   1 -",
        " bin   | Bin 3 -> 4 bytes",
        " 2 files changed, 1 deletion(-)",
    ]


def test_diff_stat_counts_a_file_that_replaced_a_directory(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(spec={"d": {"x": "1\n"}, "f": "f\n"})
    shutil.rmtree(ws.path / "d")
    (ws.path / "d").write_text("a\nb\n")
    (ws.path / "f").unlink()
    (ws.path / "f").mkdir()
    assert ws.run("diff", "--stat").stdout.splitlines() == [
        " d   | 2 ++",
        " d/x | 1 -",
        " f   | 1 -",  # the file f, now a directory (named as git does)
        " 3 files changed, 2 insertions(+), 2 deletions(-)",
    ]


def test_diff_patch(shared: History) -> None:
    ws, _ = shared
    r = ws.run("diff", "-p", "HEAD~3", "HEAD~2")
    assert r.stdout.splitlines() == [
        "diff --git a/a.txt b/a.txt",
        "--- a/a.txt",
        "+++ b/a.txt",
        "@@ -1,5 +1,5 @@",
        " 1",
        "-2",
        "+two",
        " 3",
        " 4",
        " 5",
    ]
    r = ws.run("diff", "-p", "HEAD~1", "HEAD")
    out = r.stdout.splitlines()
    assert out == [
        "diff --git a/b.txt b/b.txt",
        "deleted file mode 100644",
        "--- a/b.txt",
        "+++ /dev/null",
        "@@ -1 +0,0 @@",
        "-b",
        "diff --git a/bin b/bin",
        "Binary files a/bin and b/bin differ",
    ]


def test_diff_patch_working_tree_new_file_and_mode(hist: History) -> None:
    ws, _ = hist
    (ws.path / "n.txt").write_text("hello\n")
    os.chmod(ws.path / "keep", 0o755)
    r = ws.run("diff", "-p")
    assert r.stdout.splitlines() == [
        "diff --git a/keep b/keep",
        "old mode 100644",
        "new mode 100755",
        "diff --git a/n.txt b/n.txt",
        "new file mode 100644",
        "--- /dev/null",
        "+++ b/n.txt",
        "@@ -0,0 +1 @@",
        "+hello",
    ]


def test_diff_json(shared: History) -> None:
    ws, ids = shared
    out = ws.json("diff", "HEAD~1", "HEAD")
    assert out["old"] == ids[2]
    assert out["new"] == ids[3]
    assert [(c["path"], c["status"], c["what"]) for c in out["changes"]] == [
        ("b.txt", "D", []),
        ("bin", "M", ["content"]),
    ]
    wt = ws.json("diff")
    assert wt == {"version": 1, "old": ids[3], "new": None, "changes": []}


def test_diff_exit_code_between_snapshots(shared: History) -> None:
    ws, _ = shared
    r = ws.run("diff", "--exit-code", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["D  b.txt", "M  bin"]


def test_diff_bad_revision(shared: History) -> None:
    ws, _ = shared
    r = ws.run("diff", "nosuchrev", check=False)
    assert r.returncode == 4
    assert "unknown revision 'nosuchrev'" in r.stderr
    r = ws.run("diff", "HEAD~4", check=False)
    assert r.returncode == 4
    assert "'HEAD' has only 3 ancestors" in r.stderr
    r = ws.run("diff", "HEAD~3^", check=False)
    assert r.returncode == 4
    assert "no parents (it is a root snapshot)" in r.stderr


def test_diff_patch_shows_files_not_directories(workspace: Workspace) -> None:
    (workspace.path / "newdir" / "sub").mkdir(parents=True)
    (workspace.path / "newdir" / "sub" / "f").write_text("x\n")
    out = workspace.run("diff", "-p").stdout
    assert "diff --git a/newdir/sub/f b/newdir/sub/f" in out
    assert "040" not in out  # no directory mode headers
    assert out.count("diff --git") == 1


def test_diff_between_snapshots_names_a_damaged_manifest(hist: History) -> None:
    # The layer only c3 has: its manifest is read whole while the diff runs.
    ws, ids = hist
    top = ws.json("show", ids[3])["layer"]
    manifest = ws.store / "layers" / top / "manifest"
    manifest.chmod(0o644)
    manifest.write_bytes(b'{"p":"b.txt","k":\n')
    r = ws.run("diff", "--stat", ids[2], ids[3], check=False)
    assert r.returncode == 11, r.stderr
    assert "damaged manifest" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture
def remove_tree_after(tmp_path: Path) -> Iterator[None]:
    """Remove ``tmp_path`` with ``rm -rf`` once its workspace is unmounted
    (asked for first, so torn down last): pytest's own clean-up recurses,
    and a tree deeper than the recursion limit stops it."""
    yield
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


def _write_deep(root: Path, depth: int, data: bytes, flags: int) -> None:
    """Write ``data`` into ``root``/d/.../d/f (``depth`` levels), walking
    from directory descriptors; none stays open (an open one holds a workspace)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            if flags & os.O_CREAT:
                os.mkdir("d", dir_fd=fd)
            fd, parent = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        out = os.open("f", os.O_WRONLY | flags, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)


def test_diff_stat_and_patch_read_files_beyond_path_max(
    remove_tree_after: None, make_workspace: WorkspaceFactory
) -> None:
    # d/d/.../f, 2,100 levels: its path in a layer tree is longer than PATH_MAX
    ws = make_workspace(spec={"top.txt": "top\n"})
    depth = 2100
    _write_deep(ws.path, depth, b"one\n", os.O_CREAT)
    ws.commit("deep")
    _write_deep(ws.path, depth, b"two\n", os.O_APPEND)
    name = "d/" * depth + "f"
    stat_line = " 1 file changed, 1 insertion(+)"
    assert ws.run("diff", "--stat").stdout.splitlines()[-1] == stat_line  # the working tree
    ws.commit("two")
    assert ws.run("diff", "--stat", "HEAD~1", "HEAD").stdout.splitlines()[-1] == stat_line
    patch = ws.run("diff", "-p", "HEAD~1", "HEAD").stdout.splitlines()
    assert patch[0] == f"diff --git a/{name} b/{name}"
    assert patch[-2:] == [" one", "+two"]
