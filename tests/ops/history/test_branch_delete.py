"""``snapws branch -d``: only a merged branch, as git's; ``-D`` forces."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory

from snapws.ids import LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.ops.history.refs import merged_into
from snapws.store.store import Store

History = tuple[Workspace, dict[str, str]]


@pytest.fixture
def hist(make_workspace: WorkspaceFactory) -> History:
    """main: c0 - c1 - c2; feat: c1 - f1 (only on feat); HEAD on main.
    Branches: old at c0, here at c2 (HEAD)."""
    ws = make_workspace(spec={"a": "0"})
    ids = {"c0": ws.head()}
    (ws.path / "a").write_text("1")
    ids["c1"] = ws.commit("c1")
    ws.run("checkout", "-b", "feat")
    (ws.path / "f").write_text("f")
    ids["f1"] = ws.commit("f1")
    ws.run("checkout", "main")
    (ws.path / "a").write_text("2")
    ids["c2"] = ws.commit("c2")
    ws.run("branch", "old", ids["c0"])
    ws.run("branch", "here")
    return ws, ids


def branches(ws: Workspace) -> dict[str, str]:
    return {b["name"]: b["id"] for b in ws.json("branch")["branches"]}


def test_unmerged_branch_is_refused_and_left_intact(hist: History) -> None:
    ws, ids = hist
    r = ws.run("branch", "-d", "feat", check=False)
    assert r.returncode == 8
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"snapws: error: the branch 'feat' is not fully merged: its snapshot "
        f"{ids['f1'][:12]} is not in HEAD's history",
        "hint: if you are sure you want to delete it, run `snapws branch -D feat`",
    ]
    assert branches(ws)["feat"] == ids["f1"]
    assert ws.run("log", "--oneline", "-n", "1", "feat").stdout.startswith(ids["f1"][:12])
    r = ws.run("branch", "--delete", "feat", "--json", check=False)
    assert (r.returncode, r.stdout) == (8, "")  # errors are not JSON
    assert "feat" in branches(ws)


def test_merged_branches_are_deleted(hist: History) -> None:
    ws, ids = hist
    r = ws.run("branch", "-d", "old")  # an ancestor of HEAD
    assert r.stdout == f"Deleted branch old (was {ids['c0'][:12]}).\n"
    assert r.stderr == ""
    doc = ws.json("branch", "-d", "here")  # HEAD itself
    one = {"branch": "here", "previous": ids["c2"], "forced": False}
    assert doc == {"version": 1, **one, "deleted": [one]}
    assert sorted(branches(ws)) == ["feat", "main"]


def test_merged_means_into_this_workspace_head(hist: History) -> None:
    """A detached HEAD counts as git's does: feat is merged into it there."""
    ws, _ = hist
    ws.run("checkout", "--detach", "feat")
    r = ws.run("branch", "-d", "main", check=False)  # main's c2 is not in f1's history
    assert r.returncode == 8 and "the branch 'main' is not fully merged" in r.stderr
    ws.run("branch", "-d", "feat")
    assert sorted(branches(ws)) == ["here", "main", "old"]


@pytest.mark.parametrize(
    "how", [("-D",), ("-d", "--force"), ("--delete", "--force"), ("-d", "-f"), ("-D", "-d")]
)
def test_force_deletes_an_unmerged_branch(hist: History, how: tuple[str, ...]) -> None:
    ws, ids = hist
    r = ws.run("branch", *how, "feat")
    assert r.stdout == f"Deleted branch feat (was {ids['f1'][:12]}).\n"
    assert "feat" not in branches(ws)
    assert ws.json("show", ids["f1"])["id"] == ids["f1"]  # its snapshots stay in the store


def test_forced_json(hist: History) -> None:
    ws, ids = hist
    doc = ws.json("branch", "-D", "feat")
    one = {"branch": "feat", "previous": ids["f1"], "forced": True}
    assert doc == {"version": 1, **one, "deleted": [one]}
    doc = ws.json("branch", "-D", "old")  # forced: the check is skipped, merged or not
    one = {"branch": "old", "previous": ids["c0"], "forced": True}
    assert doc == {"version": 1, **one, "deleted": [one]}


@pytest.mark.parametrize("how", [("-d",), ("-D",), ("-d", "--force")])
def test_current_branch_is_still_refused(hist: History, how: tuple[str, ...]) -> None:
    ws, _ = hist
    r = ws.run("branch", *how, "main", check=False)
    assert r.returncode == 8
    assert "snapws: error: cannot delete branch 'main': it is checked out in" in r.stderr
    assert "hint: check out another branch first" in r.stderr
    assert "main" in branches(ws)


def test_missing_branch_and_missing_name(hist: History) -> None:
    ws, _ = hist
    r = ws.run("branch", "-D", "nosuch", check=False)
    assert r.returncode == 4 and "no branch named 'nosuch'" in r.stderr
    r = ws.run("branch", "-d", check=False)
    assert r.returncode == 2 and "snapws: error: branch name required" in r.stderr


def test_tags_are_deleted_freely(hist: History) -> None:
    ws, ids = hist
    ws.run("tag", "t", ids["f1"])  # not in HEAD's history: a tag does not care
    one = {"tag": "t", "previous": ids["f1"]}
    assert ws.json("tag", "-d", "t") == {"version": 1, **one, "deleted": [one]}
    assert ws.run("tag", "-D", "x", check=False).returncode == 2  # no -D, as git's tag


def test_merged_into_its_upstream(hist: History, tmp_path: Path) -> None:
    """A branch whose snapshot a remote-tracking ref named like it holds
    (pushed there) is deleted with git's warning; once it moves on, not."""
    ws, ids = hist
    ws.run("remote", "add", "origin", f"dir:{tmp_path / 'layout'}")
    ws.run("push", "feat")  # the remote tag feat, tracked as origin/feat
    r = ws.run("branch", "-d", "feat")
    assert r.stdout == f"Deleted branch feat (was {ids['f1'][:12]}).\n"
    assert r.stderr == (
        "warning: deleting branch 'feat' that has been merged to 'origin/feat', "
        "but not yet merged to HEAD\n"
    )
    ws.run("checkout", "-b", "feat", ids["f1"])
    (ws.path / "g").write_text("g")
    f2 = ws.commit("f2")
    ws.run("checkout", "main")
    r = ws.run("branch", "-d", "feat", check=False)
    assert r.returncode == 8
    assert f"its snapshot {f2[:12]} is not in HEAD's history nor in origin/feat's" in r.stderr, (
        r.stderr
    )
    assert branches(ws)["feat"] == f2


def append_history(store: Store, base: SnapshotId, count: int) -> list[SnapshotId]:
    """``count`` snapshots on top of ``base``, each the child of the last,
    sharing ``base``'s chain (what they hold does not matter here)."""
    chain = store.chain(base)
    sids = [base]
    for n in range(count):
        rec = SnapshotRecord((sids[-1],), chain[-1], f"s{n}", "t", n + 1)
        sids.append(store.write_snapshot(rec, chain))
    return sids[1:]


def test_a_long_history(hist: History) -> None:
    """300 snapshots above c1: a branch deep in HEAD's history is merged, one
    beside it is not, and the walk covers all of it either way."""
    ws, ids = hist
    long = append_history(Store.open(ws.store), SnapshotId(ids["c1"]), 300)
    store = Store.open(ws.store)
    store.write_ref("heads", "long", long[-1], "t", "test")
    ws.run("checkout", "long")
    ws.run("branch", "deep", ids["c0"])
    ws.run("branch", "mid", long[150].hex)
    assert ws.json("branch", "-d", "deep")["forced"] is False
    assert ws.json("branch", "-d", "mid")["previous"] == long[150].hex
    r = ws.run("branch", "-d", "feat", check=False)
    assert r.returncode == 8 and "not fully merged" in r.stderr
    assert ws.run("branch", "-d", "main", check=False).returncode == 8
    assert ws.json("branch", "-D", "feat")["forced"] is True


def test_the_walk_stops_at_the_branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch near HEAD reads the few snapshots between; only an unmerged
    one reads HEAD's whole history (there is nothing to stop it earlier)."""
    store = Store.create(tmp_path / "store")
    sids: list[SnapshotId] = []
    for n in range(300):
        lid = LayerId(secrets.token_hex(16))
        parents = tuple(sids[-1:])
        sids.append(store.write_snapshot(SnapshotRecord(parents, lid, f"s{n}", "t", n), [lid]))
    aside = LayerId(secrets.token_hex(16))
    other = store.write_snapshot(SnapshotRecord((sids[0],), aside, "aside", "t", 1), [aside])
    reads: list[SnapshotId] = []
    real_read = Store.read_snapshot

    def counting_read(self: Store, sid: SnapshotId) -> SnapshotRecord:
        reads.append(sid)
        return real_read(self, sid)

    monkeypatch.setattr(Store, "read_snapshot", counting_read)
    assert merged_into(store, sids[-1], sids[-1], "b") == "HEAD"
    assert reads == []
    assert merged_into(store, sids[-3], sids[-1], "b") == "HEAD"
    assert len(reads) == 2
    reads.clear()
    assert merged_into(store, sids[0], sids[-1], "b") == "HEAD"
    assert len(reads) == 299
    reads.clear()
    assert merged_into(store, other, sids[-1], "b") is None
    assert len(reads) == 300
    reads.clear()
    store.write_ref("remotes", "origin/b", other, "t", "test")
    store.write_ref("remotes", "origin/c", other, "t", "test")  # another branch's
    assert merged_into(store, other, sids[-1], "b") == "origin/b"
    assert merged_into(store, other, sids[-1], "c") == "origin/c"
    assert merged_into(store, other, sids[-1], "d") is None


def test_json_document_is_one_object(hist: History) -> None:
    ws, _ = hist
    out = ws.run("branch", "-D", "feat", "--json").stdout
    assert list(json.loads(out)) == ["version", "branch", "previous", "forced", "deleted"]
