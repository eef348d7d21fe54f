"""``snapws commit``: freeze the changes into a snapshot, remount."""

from __future__ import annotations

import os
import shutil

from conftest import Workspace, WorkspaceFactory
from helpers import Symlink, mounts_under, state_diff, tree_files, tree_state


def test_nothing_to_commit(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "1"})
    r = ws.run("commit", "-m", "nothing")
    assert r.returncode == 0
    assert r.stdout == "nothing to commit, working tree clean\n"
    assert len(ws.log_ids()) == 1
    out = ws.json("commit", "-m", "nothing")
    assert out == {"version": 1, "id": None, "layer": None, "branch": "main", "changes": []}
    assert len(ws.log_ids()) == 1
    # the workspace is still mounted read-write
    (ws.path / "g").write_text("2")
    assert ws.porcelain() == ["?? g"]


def test_allow_empty(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "1"})
    before = ws.log_ids()
    r = ws.run("commit", "--allow-empty", "-m", "empty one")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[main ")
    assert lines[0].endswith("] empty one")
    assert lines[1] == " 0 changes"
    after = ws.log_ids()
    assert len(after) == 2
    assert after[1:] == before
    assert lines[0] == f"[main {after[0][:12]}] empty one"
    assert ws.run("show", "--name-only").stdout == ""
    assert (ws.path / "f").read_text() == "1"
    assert ws.porcelain() == []


def test_commit_output_and_log(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"a": "1", "b": {"c": "2"}})
    r = ws.run("commit", "-m", "first line\n\nbody text")
    sid = ws.log_ids()[0]
    assert r.stdout.splitlines() == [f"[main {sid[:12]}] first line", " 3 changes (3 added)"]
    rec = ws.json("show")
    assert rec["message"] == "first line\n\nbody text"
    assert rec["author"] == "Test Author <test@example.org>"
    assert [(c["path"], c["status"]) for c in rec["changes"]] == [
        ("a", "A"),
        ("b", "A"),
        ("b/c", "A"),
    ]
    assert ws.porcelain() == []
    assert tree_files(ws.path) == {"a": "1", "b/": None, "b/c": "2"}
    mount = [t for p, t in mounts_under(ws.path) if p == str(ws.path)]
    assert mount == ["overlay"]


def test_commit_json(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a": "1", "b": "2"})
    (ws.path / "a").write_text("changed")
    (ws.path / "b").unlink()
    (ws.path / "c").write_text("3")
    out = ws.json("commit", "-m", "j")
    assert out["branch"] == "main"
    assert len(out["id"]) == 32
    assert len(out["layer"]) == 32
    assert [(c["path"], c["status"], c["what"]) for c in out["changes"]] == [
        ("a", "M", ["content"]),
        ("b", "D", []),
        ("c", "A", []),
    ]
    assert ws.log_ids()[0] == out["id"]
    assert ws.json("show")["layer"] == out["layer"]


def test_commit_requires_message(workspace: Workspace) -> None:
    r = workspace.run("commit", check=False)
    assert r.returncode == 2
    assert "Missing option '-m'" in r.stderr


def test_deletions_and_replacements_round_trip(make_workspace: WorkspaceFactory) -> None:
    """Deleting files and whole directories, replacing a directory by a file
    and back: every snapshot checks out to exactly the tree it recorded."""
    ws = make_workspace(
        spec={
            "top.txt": "top\n",
            "gone.txt": "gone\n",
            "d": {"a": "a\n", "sub": {"b": "b\n", "deep": {"c": "c\n"}}},
            "tree": {"x": "x\n", "y": {"z": "z\n"}},
            "link": Symlink("d/a"),
        }
    )
    p = ws.path
    states = {ws.head(): tree_state(p)}

    # 1: delete a file and a whole directory tree
    (p / "gone.txt").unlink()
    shutil.rmtree(p / "tree")
    assert ws.porcelain() == [
        " D gone.txt",
        " D tree/",
        " D tree/x",
        " D tree/y/",
        " D tree/y/z",
    ]
    states[ws.commit("delete")] = tree_state(p)
    assert not (p / "tree").exists()

    # 2: a directory replaced by a file (rm -r d; echo > d)
    shutil.rmtree(p / "d")
    (p / "d").write_text("now a file\n")
    assert ws.porcelain()[:2] == [" T d", " D d/a"]
    states[ws.commit("dir to file")] = tree_state(p)
    assert (p / "d").read_text() == "now a file\n"

    # 3: and back (rm d; mkdir d): the new directory must not show old children
    (p / "d").unlink()
    (p / "d").mkdir()
    (p / "d" / "new").write_text("new\n")
    assert ws.porcelain() == [" T d/", "?? d/new"]
    states[ws.commit("file to dir")] = tree_state(p)
    assert sorted(os.listdir(p / "d")) == ["new"]

    # 4: a directory recreated in one step (rm -r; mkdir): old children hidden
    (p / "e").mkdir()
    (p / "e" / "old1").write_text("1")
    (p / "e" / "old2").write_text("2")
    states[ws.commit("add e")] = tree_state(p)
    shutil.rmtree(p / "e")
    (p / "e").mkdir()
    (p / "e" / "fresh").write_text("f")
    assert ws.porcelain() == [" D e/old1", " D e/old2", "?? e/fresh"]
    states[ws.commit("recreate e")] = tree_state(p)
    assert sorted(os.listdir(p / "e")) == ["fresh"]

    ids = ws.log_ids()
    assert len(ids) == 6
    assert set(ids) == set(states)
    for sid in reversed(ids):
        ws.run("checkout", sid)
        assert state_diff(states[sid], tree_state(p)) == [], f"snapshot {sid[:12]}"
        assert ws.porcelain() == []
    ws.run("checkout", "main")
    assert state_diff(states[ids[0]], tree_state(p)) == []


def test_commit_on_top_of_many_layers(workspace: Workspace) -> None:
    """Each commit adds a layer; files from every layer stay visible."""
    ws = workspace
    for i in range(5):
        (ws.path / f"f{i}").write_text(str(i))
        (ws.path / "counter").write_text(str(i))
        ws.commit(f"c{i}")
    assert tree_files(ws.path) == {
        "counter": "4",
        "f0": "0",
        "f1": "1",
        "f2": "2",
        "f3": "3",
        "f4": "4",
    }
    assert ws.run("diff", "HEAD~5", "HEAD", "--name-only").stdout.splitlines() == [
        "counter",
        "f0",
        "f1",
        "f2",
        "f3",
        "f4",
    ]
    assert ws.run("diff", "HEAD~2", "HEAD~1").stdout.splitlines() == ["M  counter", "A  f3"]


def test_commit_refuses_an_empty_message(workspace: Workspace) -> None:
    (workspace.path / "f").write_text("x\n")
    r = workspace.run("commit", "-m", "  ", check=False)
    assert r.returncode == 2
    assert "empty snapshot message" in r.stderr
    assert workspace.porcelain() == ["?? f"]
    assert len(workspace.log_ids()) == 1
