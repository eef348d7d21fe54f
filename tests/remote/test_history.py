"""Full history travels (issue 14): a push carries the records of every
ancestor in a history layer; fetch brings them back (``--depth`` limits
it), log, diff and checkout work on old fetched snapshots, forged records
are not taken, and the image stays valid for skopeo and umoci."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory
from helpers import tree_state
from registry import REGISTRY_BIN, Registry

from snapws.ids import BlobDigest, SnapshotId
from snapws.model import SnapshotRecord
from snapws.oci.blobcache import put_blob_bytes
from snapws.oci.history import (
    EMPTY_TAR,
    HistoryEntry,
    history_descriptor,
    history_descriptors,
    read_history,
    with_history,
)
from snapws.oci.image import Blob, Descriptor, Image, canonical_json
from snapws.ops.transfer.push import plan_push, send_image
from snapws.ops.transfer.remotes import get_remote
from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url
from snapws.store.store import Store

REPO = "team/history"


@pytest.fixture
def alice(make_workspace: WorkspaceFactory, registry: Registry) -> Workspace:
    """Five snapshots on main, pushed."""
    ws = make_workspace("alice", {"f": "0\n"})
    for i in range(1, 5):
        (ws.path / "f").write_text(f"{i}\n")
        (ws.path / f"file{i}").write_text(f"added in {i}\n")
        ws.commit(f"step {i}")
    ws.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    ws.run("push")
    return ws


def teammate(make_workspace: WorkspaceFactory, registry: Registry, alice: Workspace) -> Workspace:
    bob = make_workspace("bob", store=alice.store.parent / "bob-store")
    bob.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    return bob


def test_pull_brings_the_whole_history(
    alice: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull")
    assert bob.log_ids() == alice.log_ids() and len(bob.log_ids()) == 5
    old = alice.log_ids()[3]  # "step 1"
    assert bob.run("diff", old, "HEAD~2").stdout == "M  f\nA  file2\n"
    bob.run("checkout", old)
    assert (bob.path / "f").read_text() == "1\n" and not (bob.path / "file2").exists()
    bob.run("checkout", "main")
    assert tree_state(bob.path) == tree_state(alice.path)
    assert bob.run("verify").returncode == 0


def test_depth_limits_and_a_later_fetch_deepens(
    alice: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull", "--depth", "2")
    assert bob.log_ids() == alice.log_ids()[:2]
    bob.run("fetch")
    assert bob.log_ids() == alice.log_ids()


def test_a_second_push_carries_the_new_history(
    alice: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull", "--depth", "1")
    (bob.path / "f").write_text("bob\n")
    bob.commit("bob")
    bob.run("push")  # his store knows one ancestor: it carries that one
    carol = make_workspace("carol", store=alice.store.parent / "carol-store")
    carol.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    carol.run("pull")
    assert carol.log_ids() == bob.log_ids()[:2]  # history ends where bob's did


def history_layers(registry: Registry) -> list[set[str]]:
    """The snapshot ids each history layer of ``main`` holds, in order."""
    remote = RegistryRemote(parse_remote_url(f"{registry.url}/{REPO}", insecure=True))
    tagged = remote.get_manifest("main")
    assert tagged is not None
    out = []
    for desc in history_descriptors(tagged.data):
        history = read_history(lambda d: remote.open_blob(d.digest, d.size), desc)
        out.append({sid.hex for sid in history.entries})
    remote.close()
    return out


def test_each_push_adds_only_the_records_the_remote_lacks(
    alice: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    first = alice.log_ids()
    assert history_layers(registry) == [set(first[1:])]
    for i in range(2):
        (alice.path / "f").write_text(f"more {i}\n")
        alice.commit(f"more {i}")
    alice.run("push")
    ids = alice.log_ids()
    # the first layer is kept as it was; one more holds the two records it lacks
    assert history_layers(registry) == [set(first[1:]), {ids[1], ids[2]}]
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull")
    assert bob.log_ids() == ids
    # a forced push starts over: one layer with everything
    alice.run("reset", "--hard", "HEAD~1")
    alice.run("push", "--force")
    assert history_layers(registry) == [set(ids[2:])]


def test_forged_history_records_are_not_taken(
    alice: Workspace, make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    """A history layer whose record of HEAD~1 was altered (its message): it
    no longer hashes to the id HEAD names, so history ends at HEAD."""
    ids = alice.log_ids()
    store = Store.open(alice.store)
    with store.lock(True, 10):
        plan = plan_push(store, get_remote(store, "origin"), SnapshotId(ids[0]), "main")
        assert plan.history is not None
        image = with_history(plan.image, plan.history, None, tmp_path)
        desc = history_descriptor(image.manifest)
        assert desc is not None
        entries = read_history(lambda d: blob_of(image, d).open("rb"), desc).entries
        forged = []
        for sid in snapshot_ids(ids[1:]):
            e = entries[sid]
            rec = e.record
            if sid.hex == ids[1]:
                rec = SnapshotRecord(rec.parents, rec.layer, "forged", rec.author, rec.time_ns)
            forged.append(HistoryEntry(rec, e.chain, e.proof))
        plan = type(plan)(
            plan.remote, plan.snapshot, plan.tag, replace_history(store, image, forged)
        )
        send_image(store, plan, force=True)
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull")
    assert bob.log_ids() == alice.log_ids()[:1]
    assert "forged" not in bob.run("log", "--all").stdout


@pytest.mark.parametrize("forged_at", [-1, 2], ids=["first-snapshot", "middle"])
def test_a_history_chain_showing_other_content_is_not_taken(
    alice: Workspace,
    make_workspace: WorkspaceFactory,
    registry: Registry,
    tmp_path: Path,
    forged_at: int,
) -> None:
    """A genuine record whose chain is forged to stack a later layer under
    its own: its tree would show files it never had. It is not taken, and
    the pull still succeeds: history ends above it."""
    ids = alice.log_ids()
    store = Store.open(alice.store)
    with store.lock(True, 10):
        plan = plan_push(store, get_remote(store, "origin"), SnapshotId(ids[0]), "main")
        assert plan.history is not None
        image = with_history(plan.image, plan.history, None, tmp_path)
        desc = history_descriptor(image.manifest)
        assert desc is not None
        entries = read_history(lambda d: blob_of(image, d).open("rb"), desc).entries
        forged = []
        for sid in snapshot_ids(ids[1:]):
            e = entries[sid]
            chain = e.chain
            if sid.hex == ids[forged_at]:
                chain = [entries[SnapshotId(ids[1])].chain[-1], *e.chain]  # a later layer below
            forged.append(HistoryEntry(e.record, chain, e.proof))
        plan = type(plan)(
            plan.remote, plan.snapshot, plan.tag, replace_history(store, image, forged)
        )
        send_image(store, plan, force=True)
    bob = teammate(make_workspace, registry, alice)
    bob.run("pull")
    assert bob.log_ids() == ids[: forged_at if forged_at > 0 else len(ids) - 1]
    assert bob.run("verify").returncode == 0


def snapshot_ids(ids: list[str]) -> list[SnapshotId]:
    return [SnapshotId(x) for x in ids]


def blob_of(image: Image, d: Descriptor) -> Path:
    return next(b.path for b in [*image.layers, image.config] if b.descriptor.digest == d.digest)


def replace_history(store: Store, image: Image, entries: list[HistoryEntry]) -> Image:
    """``image`` with its history layer's document replaced by ``entries``."""
    doc = canonical_json(
        {
            "mediaType": "application/vnd.snapws.history.v1+json",
            "snapshots": [e.to_json() for e in entries],
        }
    )
    raw = EMPTY_TAR + doc
    blob = gzip.compress(raw, mtime=0)
    digest, path = put_blob_bytes(store, blob)
    config = json.loads(image.config.path.read_bytes())
    config["config"]["Labels"]["org.snapws.history"] = str(digest)
    config["rootfs"]["diff_ids"][-1] = str(BlobDigest.of(raw))
    cbytes = canonical_json(config)
    cdigest, cpath = put_blob_bytes(store, cbytes)
    manifest = json.loads(image.manifest)
    manifest["config"]["digest"], manifest["config"]["size"] = str(cdigest), len(cbytes)
    manifest["layers"][-1]["digest"], manifest["layers"][-1]["size"] = str(digest), len(blob)
    data = canonical_json(manifest)
    last = Blob(Descriptor.from_json(manifest["layers"][-1]), path)
    config_blob = Blob(Descriptor.from_json(manifest["config"]), cpath)
    return Image(data, BlobDigest.of(data), config_blob, [*image.layers[:-1], last])


def test_old_snapshots_of_a_compacted_chain_bring_their_layers(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path
) -> None:
    """max_depth = 3: commits compact the chain, so old snapshots mount
    layers the tip's image does not carry; the push sends them beside it,
    and a fresh store checks every old snapshot out as it was committed."""
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("max_depth = 3\n")
    env = {"SNAPWS_CONFIG": str(cfg)}
    ws = make_workspace("deep", {"f": "0\n"})
    states = {}
    for i in range(1, 8):
        (ws.path / "f").write_text(f"{i}\n")
        (ws.path / f"g{i}").write_text(f"{i}\n")
        if i > 2:
            (ws.path / f"g{i - 2}").unlink()
        sid = json.loads(ws.run("commit", "-m", f"c{i}", "--json", env=env).stdout)["id"]
        states[sid] = tree_state(ws.path)
    ws.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    first = json.loads(ws.run("push", "--json").stdout)
    remote = RegistryRemote(parse_remote_url(f"{registry.url}/{REPO}", insecure=True))
    tagged = remote.get_manifest("main")
    assert tagged is not None
    in_image = len(json.loads(tagged.data)["layers"]) + 1  # and the config
    assert first["blobs_sent"] > in_image  # older layers went beside the image
    bob = teammate(make_workspace, registry, ws)
    bob.run("pull")
    assert bob.log_ids() == ws.log_ids()
    for sid, state in states.items():
        bob.run("checkout", "--detach", sid)
        assert tree_state(bob.path) == state, sid
    assert bob.run("verify").returncode == 0
    # the next push asks only about what is new
    bob.run("checkout", "main")
    (bob.path / "h").write_text("new\n")
    bob.commit("bob")
    second = json.loads(bob.run("push", "--json").stdout)
    tagged = remote.get_manifest("main")
    assert tagged is not None
    asked = second["blobs_skipped"] + second["blobs_sent"]
    assert asked == len(json.loads(tagged.data)["layers"]) + 1  # no older layer asked about


@pytest.mark.parametrize("untagged", [False, True], ids=["gc", "gc-delete-untagged"])
def test_registry_garbage_collection_keeps_the_history_layer(
    make_workspace: WorkspaceFactory, registry: Registry, tmp_path: Path, untagged: bool
) -> None:
    """The history layer is part of the tagged manifest: gc keeps it. Older
    layers sent beside the image are referenced by no manifest: gc drops
    them, and a fetch then takes the history down to the first snapshot
    whose layers are gone (a shallow end, not an error)."""
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("max_depth = 3\n")
    env = {"SNAPWS_CONFIG": str(cfg)}
    ws = make_workspace("deep", {"f": "0\n"})
    for i in range(1, 8):
        (ws.path / f"g{i}").write_text(f"{i}\n")
        ws.run("commit", "-m", f"c{i}", env=env)
    ws.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    ws.run("push")
    registry.stop()
    gc = [REGISTRY_BIN, "garbage-collect", str(registry.config_path)]
    subprocess.run(
        gc + (["--delete-untagged"] if untagged else []), check=True, capture_output=True
    )
    registry.start()
    bob = teammate(make_workspace, registry, ws)
    bob.run("pull")
    ids = ws.log_ids()
    got = bob.log_ids()
    assert 2 <= len(got) < len(ids) and got == ids[: len(got)]
    bob.run("checkout", "--detach", got[-1])
    assert bob.run("verify").returncode == 0


def test_skopeo_and_umoci_accept_the_history_layer(
    alice: Workspace, registry: Registry, tmp_path: Path
) -> None:
    layout = tmp_path / "copied"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            f"docker://{registry.url}/{REPO}:main",
            f"oci:{layout}:main",
        ],
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:main", str(bundle)],
        check=True,
        capture_output=True,
    )
    names = sorted(p.name for p in (bundle / "rootfs").iterdir())
    assert names == ["f", "file1", "file2", "file3", "file4"]
    assert (bundle / "rootfs" / "f").read_text() == "4\n"
