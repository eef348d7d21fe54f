"""push, fetch and pull through the CLI against a real registry (and real
mounts): round trips, incremental pushes, interrupted pushes, refusals."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import File, tree_state
from registry import Registry

from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url

REPO = "team/cache"


def noise(n: int, seed: int) -> bytes:
    """Incompressible bytes (so blob sizes follow file sizes)."""
    return random.Random(seed).randbytes(n)


TREE = {
    "src": {"main.c": "int main(void) { return 0; }\n", "big.bin": noise(200_000, 1)},
    "build": {"out.o": noise(50_000, 2), "link": "x"},
    "exe": File("#!/bin/sh\necho hi\n", mode=0o755),
}


def push(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = ws.run("push", *args, "--json", env=env)
    return dict(json.loads(out.stdout))


def manifest_of(registry: Registry, tag: str, repo: str = REPO) -> dict[str, Any]:
    r = RegistryRemote(parse_remote_url(f"{registry.url}/{repo}", insecure=True))
    m = r.get_manifest(tag)
    assert m is not None, f"{repo}:{tag} is not on the registry"
    return dict(json.loads(m.data))


@pytest.fixture
def origin(make_workspace: WorkspaceFactory, registry: Registry) -> Workspace:
    """A workspace with TREE committed and `origin` = the registry's team/cache."""
    ws = make_workspace("ws", TREE)
    ws.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    return ws


def test_push_then_pull_into_a_fresh_store(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    head = origin.head()
    out = push(origin)
    assert out["id"] == head and out["tag"] == "main"
    assert out["blobs_skipped"] == 0 and out["blobs_sent"] == out["blobs"]
    assert out["bytes_sent"] == out["image_bytes"]
    assert registry.tags(REPO) == ["main"]
    assert origin.json("remote", "list")["remotes"][0]["tracking"] == {"main": head}

    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    pulled = json.loads(other.run("pull", "--json").stdout)
    assert pulled["id"] == head and pulled["action"] == "fast-forward"
    assert pulled["bytes_received"] == out["image_bytes"]
    assert other.head() == head
    assert tree_state(other.path) == tree_state(origin.path)
    # history ends where the store's knowledge ends (a shallow boundary)
    log = other.json("log")["snapshots"]
    assert [e["id"] for e in log] == [head]
    assert other.run("status", "--porcelain").stdout == ""


def test_second_push_sends_only_the_new_layer(origin: Workspace, registry: Registry) -> None:
    first = push(origin)
    origin.gen({"src": {"new.txt": noise(30_000, 3).hex()}})
    origin.commit("one more file")
    second = push(origin)
    m2 = manifest_of(registry, "main")
    old_layers = {d["digest"] for d in first_layers(registry, first)}
    new = [d for d in m2["layers"] if d["digest"] not in old_layers]
    history = [d for d in new if "org.snapws.history" in d.get("annotations", {})]
    assert len(new) == 2 and len(history) == 1, "one new layer, and the history layer"
    assert second["blobs_sent"] == 3  # the new layer, the history layer and the config
    assert second["blobs_skipped"] == len(m2["layers"]) - 2
    assert second["bytes_sent"] == sum(d["size"] for d in new) + m2["config"]["size"]
    assert second["bytes_sent"] < 30_000 * 2 + 5_000 < first["bytes_sent"]
    # a push of the same snapshot again sends nothing but the manifest
    again = push(origin)
    assert again["blobs_sent"] == 0 and again["bytes_sent"] == 0


def layer_blobs_kept(store: Path, manifest: dict[str, Any]) -> list[str]:
    """The layer blobs of ``manifest`` that the store's blob cache holds."""
    blobs = store / "oci" / "blobs" / "sha256"
    return [d["digest"] for d in manifest["layers"] if (blobs / d["digest"][7:]).exists()]


def test_a_pulled_store_keeps_no_layer_blob_yet_pushes_what_a_registry_lacks(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry, make_registry: Any
) -> None:
    """A pull unpacks the layers and keeps no copy of their blobs (it
    records their digests). Pushing back to the registry that has them
    skips them (nothing is compressed: no blob appears in the store); a
    push to another registry, which lacks them, makes them again from the
    layers, and what it sends pulls back into the same tree."""
    push(origin)
    image = manifest_of(registry, "main")
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    other.run("pull")
    assert layer_blobs_kept(other.store, image) == []

    back = push(other, "origin", "main", "--tag", "again")
    assert back["blobs_skipped"] == back["blobs"] and back["blobs_sent"] == 0
    assert manifest_of(registry, "again")["layers"][: len(image["layers"])] == image["layers"]
    assert layer_blobs_kept(other.store, image) == []

    elsewhere = make_registry()
    other.run("remote", "add", "mirror", f"{elsewhere.url}/{REPO}", "--insecure")
    sent = push(other, "mirror", "main")
    assert sent["blobs_skipped"] == 0 and sent["blobs_sent"] == sent["blobs"]
    copied = manifest_of(elsewhere, "main")
    assert len(layer_blobs_kept(other.store, copied)) == len(copied["layers"])
    third = make_workspace("third", store=origin.store.parent / "store3")
    third.run("remote", "add", "origin", f"{elsewhere.url}/{REPO}", "--insecure")
    third.run("pull")
    assert third.head() == origin.head()
    assert tree_state(third.path) == tree_state(origin.path)


def test_a_push_planned_on_a_blob_the_remote_then_lost_fails_and_sends_no_tag(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry, make_registry: Any
) -> None:
    """A layer not kept in the store is planned as held by the remote (its
    HEAD said so); if the remote no longer has it when the blobs are sent,
    the push fails with a RemoteError that says to push again, and the tag
    is not written; pushing again compresses the layer and sends it."""
    from snapws.errors import RemoteError
    from snapws.ids import SnapshotId
    from snapws.ops.transfer.push import plan_push, send_image
    from snapws.ops.transfer.remotes import get_remote
    from snapws.store.store import Store

    push(origin)
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    other.run("pull")
    elsewhere = make_registry()
    other.run("remote", "add", "mirror", f"{elsewhere.url}/{REPO}", "--insecure")
    store = Store.open(other.store)
    with store.lock(False, 10):
        mirror = get_remote(store, "mirror")
        plan = plan_push(store, mirror, SnapshotId(other.head()), "main", have=lambda d: True)
    with pytest.raises(RemoteError, match="no longer has blob") as e:
        send_image(store, plan)
    assert "push again" in (e.value.hint or "")
    assert elsewhere.tags(REPO) == []
    assert push(other, "mirror", "main")["blobs_sent"] == len(plan.image.layers) + 1


def first_layers(registry: Registry, first: dict[str, Any]) -> list[dict[str, Any]]:
    r = RegistryRemote(parse_remote_url(f"{registry.url}/{REPO}", insecure=True))
    m = r.get_manifest(first["manifest"])
    assert m is not None
    return list(json.loads(m.data)["layers"])


def test_push_a_revision_with_an_explicit_tag_and_remote(
    origin: Workspace, registry: Registry
) -> None:
    base = origin.head()
    origin.gen({"x": "y"})
    origin.commit("x")
    out = push(origin, "origin", "HEAD~1", "--tag", "v1.0")
    assert (out["tag"], out["id"]) == ("v1.0", base)
    detached = push(origin, "HEAD~1")  # a lone argument that is no remote: a revision
    assert detached["tag"] == f"snap-{base}"
    assert registry.tags(REPO) == sorted(["v1.0", f"snap-{base}"])
    bad = origin.run("push", "--tag", "-bad", check=False)
    assert bad.returncode == 8 and "invalid tag '-bad'" in bad.stderr
    origin.run("checkout", "-b", "feature/login")
    assert push(origin)["tag"] == "feature-login"  # '/' is not allowed in tags
    assert "feature-login" in registry.tags(REPO)


def test_fetch_records_remote_tracking_refs(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    push(origin)
    origin.gen({"more": "data"})
    second = origin.commit("more")
    push(origin, "--tag", "next")
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    before = other.head()
    out = json.loads(other.run("fetch", "--json").stdout)
    assert sorted(t["tag"] for t in out["tags"]) == ["main", "next"]
    assert other.head() == before  # fetch leaves the workspace alone
    assert other.log_ids("origin/next")[0] == second
    assert other.json("remote", "list")["remotes"][0]["tracking"]["next"] == second
    # a snapshot the store has is not downloaded again, not even its config
    again = json.loads(other.run("fetch", "origin", "next", "--json").stdout)
    assert again["blobs_received"] == 0 and again["tags"][0]["previous"] == second
    other.run("checkout", "-b", "look", "origin/next")
    assert tree_state(other.path) == tree_state(origin.path)
    # removing the remote removes its remote-tracking refs
    other.run("remote", "remove", "origin")
    assert other.run("log", "origin/main", check=False).returncode == 4


def test_pull_fast_forwards_and_fetches_only_new_layers(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    push(origin)
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    other.run("pull")
    origin.gen({"a.txt": "a"})
    origin.commit("not pushed on its own")
    origin.gen({"b.txt": noise(10_000, 4).hex()})
    tip = origin.commit("b")
    pushed = push(origin)
    out = json.loads(other.run("pull", "origin", "--json").stdout)
    assert (out["action"], out["id"]) == ("fast-forward", tip)
    new_bytes = pushed["bytes_sent"]  # what the push sent is what the pull needs
    assert out["bytes_received"] == new_bytes
    assert tree_state(other.path) == tree_state(origin.path)
    again = json.loads(other.run("pull", "--json").stdout)
    assert again["action"] == "up-to-date" and again["blobs_received"] == 0


def test_pull_refuses_uncommitted_changes(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    push(origin)
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    other.gen({"mine.txt": "work in progress"})
    head = other.head()
    res = other.run("pull", check=False)
    assert res.returncode == 5, res.stderr
    assert "uncommitted change" in res.stderr and "mine.txt" in res.stderr
    assert other.head() == head and (other.path / "mine.txt").read_text() == "work in progress"


def test_pull_refuses_a_diverged_branch(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    push(origin)
    other = make_workspace("other", {"own": "tree"}, store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    head = other.head()
    res = other.run("pull", check=False)
    assert res.returncode == 8, res.stderr
    assert "have diverged" in res.stderr and "snapws reset --hard origin/main" in res.stderr
    assert other.head() == head
    # what was fetched is there to look at
    assert other.log_ids("origin/main")[0] == origin.head()


def test_pull_a_new_branch(
    origin: Workspace, make_workspace: WorkspaceFactory, registry: Registry
) -> None:
    origin.run("checkout", "-b", "topic")
    origin.gen({"t": "topic"})
    tip = origin.commit("topic")
    push(origin)
    other = make_workspace("other", store=origin.store.parent / "store2")
    other.run("remote", "add", "origin", f"{registry.url}/{REPO}", "--insecure")
    out = json.loads(other.run("pull", "origin", "topic", "--json").stdout)
    assert (out["action"], out["branch"], out["id"]) == ("created", "topic", tip)
    assert other.json("status")["branch"] == "topic"
    assert tree_state(other.path) == tree_state(origin.path)


def test_missing_tag_and_unknown_remote(origin: Workspace) -> None:
    res = origin.run("fetch", "origin", "nope", check=False)
    assert res.returncode == 4 and "has no tag 'nope'" in res.stderr
    res = origin.run("push", "elsewhere", "main", check=False)
    assert res.returncode == 4 and "no remote named 'elsewhere'" in res.stderr


def test_remote_commands(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.run("remote", "add", "origin", "127.0.0.1:5000/team/cache", "--insecure")
    ws.run("remote", "add", "backup", f"dir:{tmp_path}/layout")
    listed = ws.json("remote", "list")["remotes"]
    assert listed == [
        {
            "name": "backup",
            "url": f"oci:{tmp_path}/layout",
            "kind": "dir",
            "insecure": False,
            "tracking": {},
        },
        {
            "name": "origin",
            "url": "127.0.0.1:5000/team/cache",
            "kind": "registry",
            "insecure": True,
            "tracking": {},
        },
    ]
    text = ws.run("remote").stdout
    assert text == (
        f"backup\toci:{tmp_path}/layout\norigin\t127.0.0.1:5000/team/cache  (plain HTTP)\n"
    )
    dup = ws.run("remote", "add", "origin", "h/r", check=False)
    assert dup.returncode == 8 and "already exists" in dup.stderr
    bad = ws.run("remote", "add", "x y", "h/r", check=False)
    assert bad.returncode == 8 and "invalid remote name" in bad.stderr
    url = ws.run("remote", "add", "third", "https://h/r", check=False)
    assert url.returncode == 2 and "unsupported URL scheme" in url.stderr
    # outside any workspace, --store names the store
    bare = run_cli("--store", ws.store, "remote", "list", "--json", cwd=tmp_path)
    assert [r["name"] for r in json.loads(bare.stdout)["remotes"]] == ["backup", "origin"]
    ws.run("remote", "remove", "backup")
    assert [r["name"] for r in ws.json("remote", "list")["remotes"]] == ["origin"]
    gone = ws.run("remote", "remove", "backup", check=False)
    assert gone.returncode == 4 and "no remote named 'backup'" in gone.stderr


def killed_tmp(ws: Workspace) -> dict[str, str]:
    """TMPDIR for a push that is killed: its temporary directory is then
    left in the test's own directory, not in /tmp."""
    return {"TMPDIR": str(ws.path.parent)}


def test_push_killed_mid_way_resumes(origin: Workspace, registry: Registry) -> None:
    """SIGKILL after the first blob: no tag on the registry; the next push
    sends only the blobs still missing, and the tag names complete content."""
    origin.gen({"second": noise(40_000, 5)})
    origin.commit("second layer")
    killed = origin.run(
        "push", env={"SNAPWS_CRASH_AT": "push:blob-sent", **killed_tmp(origin)}, check=False
    )
    assert killed.returncode == -9
    assert registry.tags(REPO) == []
    out = push(origin)
    assert out["blobs_skipped"] == 1 and out["blobs_sent"] == out["blobs"] - 1
    m = manifest_of(registry, "main")
    for d in [*m["layers"], m["config"]]:
        assert registry.has_blob_data(d["digest"])
        assert d["digest"] in registry.linked_layers(REPO)


def test_push_killed_after_the_manifest(origin: Workspace, registry: Registry) -> None:
    """SIGKILL once the tag is written, before the remote-tracking ref: the
    image is complete; the next push sends no blob and records the ref."""
    killed = origin.run(
        "push", env={"SNAPWS_CRASH_AT": "push:manifest-sent", **killed_tmp(origin)}, check=False
    )
    assert killed.returncode == -9
    assert registry.tags(REPO) == ["main"]
    assert origin.json("remote", "list")["remotes"][0]["tracking"] == {}
    out = push(origin)
    assert out["blobs_sent"] == 0 and out["blobs_skipped"] == out["blobs"]
    assert origin.json("remote", "list")["remotes"][0]["tracking"] == {"main": origin.head()}


def test_push_with_the_registry_stopped_mid_upload(origin: Workspace, registry: Registry) -> None:
    """The registry dies while the second layer uploads: push fails (exit
    15) without a tag; once it is back, the push sends what is missing."""
    from snapws.ops.transfer.push import plan_push, send_image
    from snapws.ops.transfer.remotes import TransferSettings, get_remote
    from snapws.store.store import Store

    from .conftest import FAST_RETRY

    origin.gen({"second": noise(300_000, 6)})
    sid = origin.commit("second layer")
    store = Store.open(origin.store)
    from snapws.ids import SnapshotId

    with store.lock(False, 10):
        plan = plan_push(store, get_remote(store, "origin"), SnapshotId(sid), "main")
    sizes = [b.descriptor.size for b in plan.image.layers]
    settings = TransferSettings(chunk_size=32 * 1024, retry=FAST_RETRY)

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == "sending" and done > sizes[0] + sizes[1] // 2:
            registry.stop()

    from snapws.errors import RemoteError

    with pytest.raises(RemoteError) as e:
        send_image(store, plan, settings, progress)
    assert "cannot" in e.value.message
    registry.start()
    assert registry.tags(REPO) == []
    first_blob = plan.image.layers[0].descriptor.digest
    assert registry.has_blob_data(first_blob)
    result = send_image(store, plan, settings)
    assert result.stats.blobs_skipped == 1
    assert result.stats.blobs_sent == 3  # the second layer (again), the history and the config
    assert registry.tags(REPO) == ["main"]


def test_skopeo_and_umoci_read_a_pushed_image(
    origin: Workspace, registry: Registry, tmp_path: Path
) -> None:
    push(origin)
    ref = f"docker://{registry.url}/{REPO}:main"
    info = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", ref],
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(info.stdout)
    assert data["Labels"]["org.snapws.snapshot"] == origin.head()
    assert len(data["Layers"]) >= 1
    layout = tmp_path / "copied"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", ref, f"oci:{layout}:main"],
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:main", str(bundle)],
        check=True,
        capture_output=True,
    )
    unpacked = tree_state(bundle / "rootfs")
    mine = tree_state(origin.path)
    unpacked.pop(b"."), mine.pop(b".")
    assert unpacked == mine


def test_dir_remote_round_trip(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    ws = make_workspace("ws", TREE)
    layout = tmp_path / "usb" / "layout"
    ws.run("remote", "add", "usb", f"dir:{layout}")
    out = push(ws, "usb")
    assert out["blobs_sent"] == out["blobs"] and (layout / "oci-layout").is_file()
    index = json.loads((layout / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "main"
    ]
    ws.gen({"n": "new"})
    ws.commit("n")
    again = push(ws, "usb")
    assert again["blobs_skipped"] == again["blobs"] - 3  # new layer, history, config
    other = make_workspace("other", store=tmp_path / "store2")
    other.run("remote", "add", "usb", f"oci:{layout}")
    pulled = json.loads(other.run("pull", "usb", "--json").stdout)
    assert pulled["id"] == ws.head()
    assert tree_state(other.path) == tree_state(ws.path)
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:main", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert (bundle / "rootfs" / "n").read_text() == "new"
    assert os.listdir(layout / "blobs" / "sha256")  # no temporary files left
    assert not [n for n in os.listdir(layout / "blobs" / "sha256") if n.startswith(".")]


@pytest.mark.parametrize("command", ["remote", "cache"])
def test_help_with_the_credentials_paragraph(tmp_path: Path, command: str) -> None:
    """The group's docstring is dedented before the credentials paragraph is
    appended, so every paragraph renders at the same indent."""
    out = run_cli(command, "--help", cwd=tmp_path).stdout
    body = out.split("\n\n", 1)[1].split("Options:")[0]
    assert "Credentials are never taken from the command line" in body
    assert all(
        line.startswith("  ") and not line.startswith("   ") for line in body.splitlines() if line
    )
