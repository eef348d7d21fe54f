"""Two teammates (two workspaces, two stores) and one real registry: a push
that is not a fast-forward is refused, the loser fetches, re-applies by hand
and pushes again, --force and --force-with-lease; no pushed snapshot is
ever lost without --force."""

from __future__ import annotations

import json

import pytest
from conftest import Workspace, WorkspaceFactory
from registry import Registry

from snapws.errors import PushRejectedError
from snapws.ids import SnapshotId
from snapws.ops.history.fastforward import read_tip
from snapws.ops.transfer.push import plan_push, send_image
from snapws.ops.transfer.remotes import get_remote, open_remote
from snapws.store.store import Store

REPO = "team/app"


def line(flag: str, summary: str, src: str, dst: str, suffix: str = "") -> str:
    """A line of git's push/fetch summary, as snapws prints it."""
    return f" {flag} {summary:<27} {src:<10} -> {dst}{suffix}"


def moved(old: str, new: str, sep: str = "..") -> str:
    return f"{old[:12]}{sep}{new[:12]}"


def tag_names(registry: Registry) -> SnapshotId | None:
    """The snapshot the registry's ``main`` tag names now."""
    from snapws.ops.transfer.remotes import RemoteEntry

    entry = RemoteEntry("x", f"{registry.url}/{REPO}", insecure=True)
    remote = open_remote(None, entry, push=False)
    try:
        return read_tip(remote, "main").snapshot
    finally:
        remote.close()


@pytest.fixture
def team(make_workspace: WorkspaceFactory, registry: Registry) -> tuple[Workspace, Workspace]:
    """alice pushed ``main`` (one snapshot); bob pulled it into his own store."""
    alice = make_workspace("alice", {"app.c": "v1\n", "README": "team\n"})
    alice.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    out = alice.run("push")
    assert line("*", "[new tag]", "main", "main") in out.stdout
    bob = make_workspace("bob", store=alice.store.parent / "bob-store")
    bob.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    bob.run("pull")
    assert bob.head() == alice.head()
    return alice, bob


def test_a_push_that_is_not_a_fast_forward_is_refused(
    team: tuple[Workspace, Workspace], registry: Registry
) -> None:
    alice, bob = team
    base = alice.head()
    (alice.path / "app.c").write_text("v2 by alice\n")
    a2 = alice.commit("alice: v2")
    out = alice.run("push")
    assert line(" ", moved(base, a2), "main", "main") in out.stdout  # git's line
    (bob.path / "notes").write_text("bob's notes\n")
    b2 = bob.commit("bob: notes")

    refused = bob.run("push", check=False)
    assert refused.returncode == PushRejectedError.exit_code == 8
    assert "does not have (fetch first)" in refused.stderr  # git: "fetch first"
    assert "hint: `snapws fetch`" in refused.stderr
    assert tag_names(registry) == SnapshotId(a2)  # alice's work is still there

    # bob fetches (git's line shows how origin/main moved), then re-applies
    # his change on top of alice's snapshot by hand and pushes again
    fetched = bob.run("fetch")
    assert fetched.stdout.splitlines()[0] == f"From {registry.url}/{REPO}"
    assert line(" ", moved(base, a2), "main", "origin/main") in fetched.stdout
    notes = (bob.path / "notes").read_text()
    bob.run("reset", "--hard", "origin/main")
    (bob.path / "notes").write_text(notes)
    b3 = bob.commit("bob: notes, on top of alice's v2")
    pushed = json.loads(bob.run("push", "--json").stdout)
    assert pushed["update"] == "fast-forward" and pushed["previous"] == a2
    assert tag_names(registry) == SnapshotId(b3)
    assert bob.log_ids()[:3] == [b3, a2, base]
    assert b2 not in bob.log_ids()  # his first try was never pushed: nothing lost

    # alice's next pull fast-forwards to bob's snapshot, which contains hers
    pulled = alice.run("pull")
    assert line(" ", moved(a2, b3), "main", "origin/main") in pulled.stdout
    assert alice.head() == b3 and (alice.path / "notes").read_text() == notes
    assert (alice.path / "app.c").read_text() == "v2 by alice\n"


def test_force_with_lease_refuses_when_the_remote_moved(
    team: tuple[Workspace, Workspace], registry: Registry
) -> None:
    alice, bob = team
    base = alice.head()
    (bob.path / "app.c").write_text("bob's v2\n")
    b2 = bob.commit("bob: v2")
    bob.run("push")
    # alice has not seen b2: her lease (origin/main = base) is stale
    (alice.path / "app.c").write_text("alice's v2\n")
    a2 = alice.commit("alice: v2")
    stale = alice.run("push", "--force-with-lease", check=False)
    assert stale.returncode == 8 and "stale info" in stale.stderr
    assert tag_names(registry) == SnapshotId(b2)
    explicit = alice.run("push", f"--force-with-lease={base}", check=False)
    assert explicit.returncode == 8 and tag_names(registry) == SnapshotId(b2)
    # once she has seen it, the lease holds and the forced push goes through
    alice.run("fetch")
    out = alice.run("push", "--force-with-lease", "origin")  # (git's form: a remote after it)
    assert line("+", moved(b2, a2, "..."), "main", "main", "  (forced update)") in out.stdout
    assert tag_names(registry) == SnapshotId(a2)
    # a lease naming what the tag now holds works as well
    bob.run("fetch")
    bob.run("reset", "--hard", "origin/main")
    (bob.path / "app.c").write_text("bob's v3\n")
    b3 = bob.commit("bob: v3")
    assert bob.run("push", f"--force-with-lease={a2}").returncode == 0
    assert tag_names(registry) == SnapshotId(b3)


def test_force_replaces_and_an_unknown_remote_snapshot_needs_a_fetch(
    team: tuple[Workspace, Workspace], make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    alice, _bob = team
    carol = make_workspace("carol", {"other": "x\n"}, store=alice.store.parent / "carol-store")
    carol.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    refused = carol.run("push", check=False)
    assert refused.returncode == 8
    assert "does not have (fetch first)" in refused.stderr
    assert tag_names(registry) == SnapshotId(alice.head())
    # after a fetch her snapshot is known, and still not a fast-forward
    carol.run("fetch")
    again = carol.run("push", check=False)
    assert again.returncode == 8 and "non-fast-forward" in again.stderr
    forced = json.loads(carol.run("push", "--force", "--json").stdout)
    assert forced["update"] == "forced" and forced["previous"] == alice.head()
    assert tag_names(registry) == SnapshotId(carol.head())
    seen = alice.run("fetch").stdout
    forced_line = line("+", moved(alice.head(), carol.head(), "..."), "main", "origin/main")
    assert forced_line + "  (forced update)" in seen
    # pushing the same snapshot again is "up to date"
    assert line("=", "[up to date]", "main", "main") in carol.run("push").stdout


def test_a_push_racing_another_is_refused_before_its_manifest(
    team: tuple[Workspace, Workspace], registry: Registry
) -> None:
    """Both pushes start from the same remote snapshot; alice's lands while
    bob's is uploading its blobs: bob's check before the manifest refuses,
    and the tag keeps alice's snapshot."""
    alice, bob = team
    (alice.path / "app.c").write_text("alice wins\n")
    a2 = alice.commit("alice")
    (bob.path / "big").write_bytes(bytes(range(256)) * 4096)
    bob.commit("bob")

    store = Store.open(bob.store)
    with store.lock(False, 10):
        entry = get_remote(store, "origin")
        sid = SnapshotId(bob.head())
        plan = plan_push(store, entry, sid, "main")
    raced = []

    def progress(phase: str, _done: int, _total: int | None) -> None:
        if phase == "sending" and not raced:
            raced.append(alice.run("push").returncode)  # lands mid-way

    with pytest.raises(PushRejectedError, match="fetch first"):
        send_image(store, plan, progress=progress)
    assert raced == [0]
    assert tag_names(registry) == SnapshotId(a2)


def test_fetch_shows_new_tags_and_unmoved_ones(team: tuple[Workspace, Workspace]) -> None:
    alice, bob = team
    (alice.path / "app.c").write_text("released\n")
    alice.commit("alice: release")
    alice.run("push", "--tag", "release")
    out = bob.run("fetch").stdout
    assert line("*", "[new tag]", "release", "origin/release") in out
    assert line("=", "[up to date]", "main", "origin/main") in out
