"""What a push sends where (snapws.ops.transfer.push.choose_target) and the three
phases of :func:`snapws.ops.transfer.push.push`, against an OCI layout directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.errors import ExitCode, MissingArgumentError
from snapws.ids import SnapshotId
from snapws.ops.history.fastforward import Lease
from snapws.ops.transfer.push import PushRequest, choose_target, split_remote_arg
from snapws.store.store import Store


@pytest.fixture
def ws(make_workspace: WorkspaceFactory, tmp_path: Path) -> Workspace:
    w = make_workspace(spec={"a": "a"})
    w.run("remote", "add", "origin", f"dir:{tmp_path / 'layout'}")
    w.run("remote", "add", "backup", f"dir:{tmp_path / 'backup'}")
    w.run("checkout", "-b", "feature/x")
    w.run("tag", "v1")
    return w


def test_choose_target(ws: Workspace) -> None:
    store = Store.open(ws.store)
    (state,) = store.workspaces()
    head = state.head
    t = choose_target(store, state, PushRequest())
    assert (t.remote.name, t.snapshot, t.tag, t.lease) == ("origin", head, "feature-x", None)
    t = choose_target(store, state, PushRequest("v1"))  # a lone non-remote is the revision
    assert (t.remote.name, t.tag) == ("origin", "v1")
    t = choose_target(store, state, PushRequest("backup", "HEAD", tag="t"))
    assert (t.remote.name, t.tag) == ("backup", "t")
    t = choose_target(store, None, PushRequest(rev=head.hex))
    assert t.tag == f"snap-{head.hex}"
    # --force-with-lease backup: the remote's name after the bare option is REMOTE
    t = choose_target(store, state, PushRequest(lease="backup"))
    assert (t.remote.name, t.lease) == ("backup", Lease(None))
    t = choose_target(store, state, PushRequest(lease="v1"))
    assert t.lease == Lease(SnapshotId.parse(head.hex))
    with pytest.raises(MissingArgumentError) as err:
        choose_target(store, None, PushRequest())
    assert err.value.exit_code == ExitCode.USAGE
    assert split_remote_arg(store, "backup", None) == ("backup", None)
    assert split_remote_arg(store, "main", None) == ("origin", "main")


def test_push_records_the_remote_tracking_ref(ws: Workspace) -> None:
    out = ws.run("push").stdout
    assert out.splitlines()[1].split() == ["*", "[new", "tag]", "feature-x", "->", "feature-x"]
    refs = ws.json("remote", "list")["remotes"]
    tracking = {r["name"]: r["tracking"] for r in refs}
    assert tracking == {"origin": {"feature-x": ws.head()}, "backup": {}}


def test_outside_a_workspace_the_revision_is_needed(ws: Workspace, tmp_path: Path) -> None:
    r = run_cli("--store", ws.store, "push", cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert r.stderr == (
        "snapws: error: outside a workspace, name the revision to push\n"
        "hint: see `snapws push --help`\n"
    )
    ok = run_cli("--store", ws.store, "push", "v1", cwd=tmp_path)
    assert ":v1 (" in ok.stdout
