"""``snapws checkout`` and ``snapws reset``."""

from __future__ import annotations

import os

import pytest
from conftest import Workspace, WorkspaceFactory
from helpers import tree_files

History = tuple[Workspace, list[str]]


@pytest.fixture
def hist(make_workspace: WorkspaceFactory) -> History:
    """c0: a=a0 b=b0; c1: a=a1; c2: c=c2. Returns (ws, [c0, c1, c2])."""
    ws = make_workspace(spec={"a": "a0", "b": "b0"})
    ids = [ws.head()]
    (ws.path / "a").write_text("a1")
    ids.append(ws.commit("c1"))
    (ws.path / "c").write_text("c2")
    ids.append(ws.commit("c2"))
    return ws, ids


def branch_target(ws: Workspace, name: str) -> str:
    for b in ws.json("branch")["branches"]:
        if b["name"] == name:
            return str(b["id"])
    raise AssertionError(f"no branch {name}")


# ---- checkout ---------------------------------------------------------------


def test_checkout_refuses_uncommitted_changes_that_clash(hist: History) -> None:
    ws, ids = hist
    (ws.path / "a").write_text("dirty")  # a differs between HEAD and ids[0]
    (ws.path / "new").write_text("n")
    r = ws.run("checkout", ids[0], check=False)
    assert r.returncode == 5
    assert r.stdout == ""
    assert "snapws: error: cannot check out: uncommitted changes touch paths that differ" in (
        r.stderr
    )
    assert ": a\n" in r.stderr
    assert "hint: commit them" in r.stderr
    assert "--discard" in r.stderr
    # nothing moved, nothing lost
    assert ws.head() == ids[2]
    assert ws.porcelain() == [" M a", "?? new"]
    assert (ws.path / "a").read_text() == "dirty"


def test_checkout_carries_uncommitted_changes_over_as_git_does(hist: History) -> None:
    ws, ids = hist
    (ws.path / "new").write_text("n")  # untouched by the switch
    r = ws.run("checkout", "-b", "topic")  # at HEAD: nothing differs
    assert r.returncode == 0, r.stderr
    assert ws.porcelain() == ["?? new"]
    r = ws.run("checkout", ids[0])
    assert r.returncode == 0, r.stderr
    assert ws.head() == ids[0]
    assert ws.porcelain() == ["?? new"]
    assert (ws.path / "new").read_text() == "n"
    assert tree_files(ws.path) == {"a": "a0", "b": "b0", "new": "n"}


def test_checkout_discard(hist: History) -> None:
    ws, ids = hist
    (ws.path / "a").write_text("dirty")
    (ws.path / "b").unlink()
    r = ws.run("checkout", "--discard", ids[0])
    assert r.stdout == f"HEAD is now at {ids[0][:12]} (detached)\n"
    assert "discarded 2 uncommitted change(s)" in r.stderr
    assert tree_files(ws.path) == {"a": "a0", "b": "b0"}
    assert ws.porcelain() == []
    # the discarded changes do not come back on the branch either
    ws.run("checkout", "main")
    assert tree_files(ws.path) == {"a": "a1", "b": "b0", "c": "c2"}
    assert ws.porcelain() == []


def test_checkout_new_branch(hist: History) -> None:
    ws, ids = hist
    r = ws.run("checkout", "-b", "feat", "HEAD~1")
    assert r.stdout == f"Switched to a new branch 'feat' at {ids[1][:12]}\n"
    assert ws.run("status").stdout.startswith("On branch feat\n")
    assert tree_files(ws.path) == {"a": "a1", "b": "b0"}
    assert branch_target(ws, "feat") == ids[1]
    assert branch_target(ws, "main") == ids[2]
    lines = ws.run("branch").stdout.splitlines()
    assert [line[:2] for line in lines] == ["* ", "  "]
    assert lines[0].split()[1:] == ["feat", ids[1][:12]]
    # committing moves feat, not main
    (ws.path / "f").write_text("f")
    sid = ws.commit("on feat")
    assert branch_target(ws, "feat") == sid
    assert branch_target(ws, "main") == ids[2]
    # -b without a revision branches at HEAD
    r = ws.run("checkout", "-b", "feat2")
    assert r.stdout == f"Switched to a new branch 'feat2' at {sid[:12]}\n"
    assert tree_files(ws.path)["f"] == "f"
    r = ws.run("checkout", "-b", "feat", check=False)
    assert r.returncode == 8
    assert "already exists" in r.stderr


def test_checkout_snapshot_detaches(hist: History) -> None:
    ws, ids = hist
    r = ws.run("checkout", ids[1][:10])
    assert r.stdout == f"HEAD is now at {ids[1][:12]} (detached)\n"
    assert ws.run("status").stdout == (
        f"HEAD detached at {ids[1][:12]}\nnothing to commit, working tree clean\n"
    )
    st = ws.json("status")
    assert st["branch"] is None
    assert st["id"] == ids[1]
    assert tree_files(ws.path) == {"a": "a1", "b": "b0"}
    # a commit on a detached HEAD moves no branch
    (ws.path / "d").write_text("d")
    r = ws.run("commit", "-m", "detached work")
    sid = ws.head()
    assert r.stdout.splitlines()[0] == f"[detached HEAD {sid[:12]}] detached work"
    assert branch_target(ws, "main") == ids[2]
    assert ws.json("log")["snapshots"][0]["parents"] == [ids[1]]
    # checking out a branch reattaches
    r = ws.run("checkout", "main")
    assert r.stdout == f"Switched to branch 'main' ({ids[2][:12]})\n"
    assert ws.run("status").stdout.startswith("On branch main\n")
    assert tree_files(ws.path) == {"a": "a1", "b": "b0", "c": "c2"}
    # --detach detaches even at a branch
    r = ws.run("checkout", "--detach", "main")
    assert r.stdout == f"HEAD is now at {ids[2][:12]} (detached)\n"
    assert ws.json("status")["branch"] is None


def test_checkout_tag_and_relative_revs_detach(hist: History) -> None:
    ws, ids = hist
    ws.run("tag", "v1", ids[0])
    ws.run("checkout", "v1")
    assert ws.json("status") == {
        "version": 1,
        "id": ids[0],
        "branch": None,
        "clean": True,
        "changes": [],
    }
    assert tree_files(ws.path) == {"a": "a0", "b": "b0"}
    ws.run("checkout", "main~1")
    assert ws.json("status")["id"] == ids[1]
    assert ws.json("status")["branch"] is None


def test_checkout_json(hist: History) -> None:
    ws, ids = hist
    out = ws.json("checkout", "HEAD~2")
    assert out == {
        "version": 1,
        "id": ids[0],
        "branch": None,
        "previous": ids[2],
        "discarded": 0,
    }


def test_checkout_unknown_revision(hist: History) -> None:
    ws, ids = hist
    for rev in ("nope", "HEAD~9", "0000000000"):
        r = ws.run("checkout", rev, check=False)
        assert r.returncode == 4, rev
        assert r.stderr.startswith("snapws: error: "), rev
        assert "hint: " in r.stderr
    assert ws.head() == ids[2]
    r = ws.run("checkout", check=False)
    assert r.returncode == 2


def test_checkout_ambiguous_prefix(hist: History) -> None:
    """Craft snapshots until one shares HEAD's first 4 hex digits (the store
    writer keeps them valid: their parent and chain are HEAD's)."""
    from snapws.ids import SnapshotId
    from snapws.model import SnapshotRecord
    from snapws.store.store import Store

    ws, ids = hist
    store = Store.open(ws.store)
    head = SnapshotId(ids[2])
    base = store.read_snapshot(head)
    prefix = ids[2][:4]
    twin = None
    for n in range(2_000_000):
        rec = SnapshotRecord(
            parents=(head,),
            layer=base.layer,
            message=f"twin {n}",
            author="test",
            time_ns=base.time_ns + 1,
        )
        if rec.id.hex.startswith(prefix):
            twin = rec
            break
    assert twin is not None
    store.write_snapshot(twin, store.chain(head))
    tid = twin.id.hex
    r = ws.run("checkout", prefix, check=False)
    assert r.returncode == 4
    assert f"ambiguous revision '{prefix}': 2 snapshots start with '{prefix}'" in r.stderr
    # both candidates are listed, abbreviated just enough to tell them apart
    common = next(i for i, (x, y) in enumerate(zip(tid, ids[2], strict=True)) if x != y)
    shown = max(12, common + 1)
    assert tid[:shown] in r.stderr
    assert ids[2][:shown] in r.stderr
    assert "hint: type more characters of the id" in r.stderr
    assert ws.head() == ids[2]
    # a longer prefix resolves
    ws.run("checkout", tid[: common + 1])
    assert ws.head() == tid
    assert tree_files(ws.path) == {"a": "a1", "b": "b0", "c": "c2"}


# ---- reset ------------------------------------------------------------------


def test_reset_hard_rolls_back(hist: History) -> None:
    ws, ids = hist
    (ws.path / "a").write_text("dirty")
    (ws.path / "z").write_text("z")
    r = ws.run("reset", "--hard", "HEAD~1")
    assert r.stdout == f"HEAD is now at {ids[1][:12]} c1\n"
    assert tree_files(ws.path) == {"a": "a1", "b": "b0"}
    assert ws.porcelain() == []
    assert branch_target(ws, "main") == ids[1]
    assert ws.json("status")["branch"] == "main"
    assert ws.log_ids() == [ids[1], ids[0]]
    # the reflog keeps the way back
    assert ws.run("reflog", "main").stdout.splitlines()[0] == (
        f"{ids[1][:12]} main@{{0}}: reset: moving to HEAD~1"
    )
    ws.run("reset", "--hard", ids[2])
    assert tree_files(ws.path) == {"a": "a1", "b": "b0", "c": "c2"}
    assert branch_target(ws, "main") == ids[2]


def test_reset_json(hist: History) -> None:
    ws, ids = hist
    (ws.path / "x").write_text("x")
    out = ws.json("reset", "--hard", "HEAD~2")
    assert out == {
        "version": 1,
        "id": ids[0],
        "branch": "main",
        "previous": ids[2],
        "discarded": 1,
    }


def test_reset_keeps_unrelated_changes(hist: History) -> None:
    ws, ids = hist
    (ws.path / "b").write_text("b dirty")  # b did not change between c1 and c2
    (ws.path / "new").write_text("n")
    r = ws.run("reset", "HEAD~1")
    assert r.stdout == f"HEAD is now at {ids[1][:12]} c1\n"
    assert branch_target(ws, "main") == ids[1]
    assert tree_files(ws.path) == {"a": "a1", "b": "b dirty", "new": "n"}
    assert ws.porcelain() == [" M b", "?? new"]


def test_reset_refuses_conflicting_changes(hist: History) -> None:
    ws, ids = hist
    (ws.path / "a").write_text("a dirty")  # a changed between c0 and c1
    r = ws.run("reset", "HEAD~2", check=False)
    assert r.returncode == 5
    assert "cannot reset" in r.stderr
    assert ": a\n" in r.stderr
    assert "hint: commit them first, or use `snapws reset --hard`" in r.stderr
    assert ws.head() == ids[2]
    assert branch_target(ws, "main") == ids[2]
    assert (ws.path / "a").read_text() == "a dirty"


def test_reset_after_noop_copy_up(hist: History) -> None:
    """A file that was only touched (a copy-up that changed nothing) must show
    the target's content after a plain reset, not the old HEAD's."""
    ws, ids = hist
    os.utime(ws.path / "a")  # copy-up of a (a1), no change
    with open(ws.path / "c", "r+b"):  # opened for writing: copy-up too
        pass
    assert ws.porcelain() == []
    ws.run("reset", "HEAD~2")
    assert ws.head() == ids[0]
    assert tree_files(ws.path) == {"a": "a0", "b": "b0"}
    assert ws.porcelain() == []


def test_reset_unknown_revision(hist: History) -> None:
    ws, ids = hist
    r = ws.run("reset", "--hard", "nope", check=False)
    assert r.returncode == 4
    assert "unknown revision 'nope'" in r.stderr
    assert ws.head() == ids[2]


def test_reset_refuses_a_replaced_directory_that_the_target_changes(
    make_workspace: WorkspaceFactory,
) -> None:
    import shutil

    ws = make_workspace(spec={"d": {"x": "1\n"}})
    (ws.path / "d" / "new").write_text("added later\n")
    ws.commit("adds d/new")
    ws.run("checkout", "-b", "old", "HEAD~1")
    shutil.rmtree(ws.path / "d")  # uncommitted: d replaced by an empty directory
    (ws.path / "d").mkdir()
    head = ws.head()
    r = ws.run("reset", "main", check=False)
    assert r.returncode == 5, r.stderr
    assert "d" in r.stderr
    assert ws.head() == head
    assert os.listdir(ws.path / "d") == []
