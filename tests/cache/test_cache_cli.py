"""``snapws cache`` end to end: real registry on 127.0.0.1, real mounts,
run from outside the workspaces as a CI job would. Each "machine" is a
directory with its own store (``<machine>/.snapws``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from helpers import File, gen, tree_state
from registry import REGISTRY_BIN, Registry, running_registry

from snapws.remote.registry import RegistryRemote
from snapws.remote.url import parse_remote_url

USER = "ci-user"
PASSWORD = "s3cret-cache-Pa55word"
REPO = "ci/build-cache"


class Cache:
    """``snapws cache ...`` against ``registry``'s REPO, run in ``cwd``
    (a directory outside the workspaces) with SNAPWS_CACHE_REMOTE set."""

    def __init__(self, registry: Registry, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.registry = registry
        self.cwd = cwd
        self.env = {
            "SNAPWS_CACHE_REMOTE": f"{registry.url}/{REPO}",
            "SNAPWS_CACHE_INSECURE": "1",
            **(env or {}),
        }

    def run(
        self, *args: str | Path, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli("cache", *args, cwd=self.cwd, check=check, env={**self.env, **(env or {})})

    def json(self, *args: str | Path, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.run(*args, "--json", env=env).stdout)

    def keys(self) -> list[str]:
        return [e["key"] for e in self.json("list")["entries"]]


@pytest.fixture
def make_registry(mount_guard: Path) -> Iterator[Callable[..., Registry]]:
    """``make(htpasswd=None)``: a registry storing under tmp_path, stopped
    after the test (before the mounts are detached)."""
    with ExitStack() as stack:
        count = 0

        def make(htpasswd: tuple[str, str] | None = None) -> Registry:
            nonlocal count
            count += 1
            return stack.enter_context(
                running_registry(mount_guard / f"registry-{count}", htpasswd)
            )

        yield make


@pytest.fixture
def cache(make_registry: Callable[..., Registry], mount_guard: Path) -> Cache:
    """A registry without auth and the runner for ``snapws cache``."""
    outside = mount_guard / "outside"
    outside.mkdir(exist_ok=True)
    return Cache(make_registry(), outside)


DAY = 86400


def noise(n: int, seed: int) -> bytes:
    """Incompressible bytes, so blob sizes follow file sizes."""
    return random.Random(seed).randbytes(n)


TREE = {
    "obj": {"a.o": noise(120_000, 1), "b.o": "small object\n"},
    "bin": {"tool": File("#!/bin/sh\necho hi\n", mode=0o755)},
    "deps": {"lib": {"x.a": noise(30_000, 2)}},
}


def machine(cache: Cache, name: str) -> Path:
    """A fresh "runner": an empty directory whose build/ the cache fills."""
    root = cache.cwd.parent / name
    root.mkdir()
    return root / "build"


def at(seconds: float) -> dict[str, str]:
    """SNAPWS_NOW: the clock of save and prune."""
    return {"SNAPWS_NOW": str(int(seconds))}


def test_miss_save_then_exact_restore_on_another_machine(cache: Cache) -> None:
    key = "Linux/x64 build@v1"  # not a valid tag: stored under a sanitised tag + hash
    first = machine(cache, "m1")
    miss = cache.json("restore", key, "--path", first, "--restore-key", "Linux/")
    assert (miss["hit"], miss["cache_hit"], miss["matched_key"]) == ("miss", False, None)
    assert not first.exists(), "a miss changes nothing"
    assert cache.run("restore", key, "--path", first).stdout.startswith("Cache miss: ")
    failed = cache.run("restore", key, "--path", first, "--fail-on-cache-miss", check=False)
    assert failed.returncode == 1 and "no cache entry matches" in failed.stderr

    nothing = cache.run("save", key, "--path", first, check=False)
    assert nothing.returncode == 12 and "does not exist" in nothing.stderr
    gen(first, TREE)
    saved = cache.json("save", key, "--path", first)
    assert saved["key"] == key and saved["initialized"] is True
    assert saved["blobs_skipped"] == 0 and saved["bytes_sent"] == saved["image_bytes"]
    assert saved["tag"] != key and saved["tag"].startswith("Linux-x64-build-v1-")
    assert cache.registry.tags(REPO) == [saved["tag"]]
    assert cache.keys() == [key]

    second = machine(cache, "m2")
    m2 = {"XDG_DATA_HOME": str(second.parent / "data")}  # its user's default store
    out = cache.run("restore", key, "--path", second, env=m2)
    assert out.stdout.startswith(f"Cache hit: {key}\n")
    assert tree_state(second) == tree_state(first)
    assert (second.parent / "data" / "snapws").is_dir(), "a store of its own"
    again = cache.json("restore", key, "--path", second, env=m2)
    assert again["cache_hit"] is True and again["matched_key"] == key
    assert again["action"] == "up-to-date" and again["layers_fetched"] == 0


def test_prefix_restore_takes_the_newest_entry_of_the_first_matching_prefix(
    cache: Cache,
) -> None:
    now = time.time()
    src = machine(cache, "src")
    gen(src, {"f": "a"})
    cache.run("save", "deps-a", "--path", src, env=at(now - 3 * DAY))
    gen(src, {"f": "b"})
    cache.run("save", "deps-b", "--path", src, env=at(now - 2 * DAY))
    gen(src, {"f": "old"})
    cache.run("save", "deps-0-old", "--path", src, env=at(now - 5 * DAY))
    gen(src, {"f": "z"})
    cache.run("save", "other-z", "--path", src, env=at(now - DAY))

    dest = machine(cache, "dest")
    out = cache.json(
        "restore",
        "deps-new",
        "--path",
        dest,
        "--restore-key",
        "none-",
        "--restore-key",
        "deps-",
        "--restore-key",
        "other-",
    )
    assert (out["hit"], out["cache_hit"]) == ("prefix", False)
    assert (out["matched_key"], out["restore_key"]) == ("deps-b", "deps-")
    assert (dest / "f").read_text() == "b"
    text = cache.run("restore", "x", "--path", dest, "--restore-key", "other-").stdout
    assert text.startswith("Cache hit on restore key other-: other-z\n")
    assert (dest / "f").read_text() == "z", "a clean workspace switches to the entry"


def test_save_after_restore_uploads_only_the_new_layer(cache: Cache) -> None:
    first = machine(cache, "m1")
    gen(first, TREE)
    base = cache.json("save", "build-1", "--path", first)
    assert base["blobs_sent"] == 2  # one layer and the config

    second = machine(cache, "m2")
    cache.run("restore", "build-2", "--path", second, "--restore-key", "build-")
    gen(second, {"obj": {"c.o": noise(5_000, 3)}})
    (second / "obj" / "b.o").unlink()
    saved = cache.json("save", "build-2", "--path", second)
    assert saved["committed"] is True and saved["initialized"] is False
    # the restored layer is on the registry: only the new top layer and the config move
    assert (saved["blobs_sent"], saved["blobs_skipped"]) == (2, 1)
    assert saved["bytes_sent"] < 10_000 < base["bytes_sent"]
    entries = {e["key"]: e for e in cache.json("list")["entries"]}
    assert entries["build-2"]["layers"] == 2 and entries["build-1"]["layers"] == 1

    third = machine(cache, "m3")
    cache.run("restore", "build-2", "--path", third)
    assert tree_state(third) == tree_state(second)


def test_saving_an_existing_key_replaces_the_entry(cache: Cache) -> None:
    ws = machine(cache, "m1")
    gen(ws, {"f": "one"})
    first = cache.json("save", "k", "--path", ws)
    gen(ws, {"f": "two"})
    second = cache.json("save", "k", "--path", ws)
    assert second["replaced"] == first["manifest"] and second["manifest"] != first["manifest"]
    assert cache.keys() == ["k"]
    remote = RegistryRemote(parse_remote_url(f"{cache.registry.url}/{REPO}", insecure=True))
    assert remote.get_manifest(first["manifest"]) is None, "the old manifest is deleted"
    dest = machine(cache, "m2")
    cache.run("restore", "k", "--path", dest)
    assert (dest / "f").read_text() == "two"
    # nothing changed: the same snapshot is saved again (no new snapshot, no blob sent)
    same = cache.json("save", "k", "--path", ws)
    assert same["committed"] is False and same["blobs_sent"] == 0


def test_a_tag_that_is_no_cache_entry_is_not_overwritten(cache: Cache) -> None:
    ws = machine(cache, "m1")
    gen(ws, {"f": "one"})
    cache.run("save", "k", "--path", ws)
    url = f"{cache.registry.url}/{REPO}"
    run_cli("-C", ws, "remote", "add", "origin", url, "--insecure", cwd=cache.cwd)
    run_cli("-C", ws, "push", "origin", "--tag", "main", cwd=cache.cwd)
    refused = cache.run("save", "main", "--path", ws, check=False)
    assert refused.returncode == 8 and "not an entry of cache key 'main'" in refused.stderr
    assert cache.keys() == ["k"], "list shows cache entries only"


def test_prune_removes_entries_older_than_the_duration(cache: Cache) -> None:
    now = time.time()
    ws = machine(cache, "m1")
    for key, age in [("old-1", 10 * DAY), ("old-2", 8 * DAY), ("new", DAY)]:
        gen(ws, {"f": key})
        cache.run("save", key, "--path", ws, env=at(now - age))
    dry = cache.json("prune", "--older-than", "7d", "--dry-run", env=at(now))
    assert [e["key"] for e in dry["removed"]] == ["old-1", "old-2"]
    assert cache.keys() == ["new", "old-1", "old-2"], "a dry run deletes nothing"
    out = cache.run("prune", "--older-than", "7d", env=at(now)).stdout
    assert "removed old-1 " in out and "removed 2 entries" in out
    assert cache.keys() == ["new"]
    assert cache.json("restore", "old-1", "--path", machine(cache, "m2"))["hit"] == "miss"
    # "new" was saved a day ago: older than 30 minutes (the real clock this time)
    layers = layer_digests(cache, cache.json("list")["entries"][0]["manifest"])
    assert all(cache.registry.has_blob_data(d) for d in layers)
    assert [e["key"] for e in cache.json("prune", "--older-than", "30m")["removed"]] == ["new"]
    assert cache.keys() == []
    # deleting manifests frees no space; the registry's garbage collection does
    assert all(cache.registry.has_blob_data(d) for d in layers)
    subprocess.run(
        [REGISTRY_BIN, "garbage-collect", str(cache.registry.config_path)],
        check=True,
        capture_output=True,
    )
    assert not any(cache.registry.has_blob_data(d) for d in layers)
    bad = cache.run("prune", "--older-than", "soon", check=False)
    assert bad.returncode == 2 and "bad duration" in bad.stderr


def layer_digests(cache: Cache, manifest: str) -> list[str]:
    remote = RegistryRemote(parse_remote_url(f"{cache.registry.url}/{REPO}", insecure=True))
    m = remote.get_manifest(manifest)
    assert m is not None
    return [d["digest"] for d in json.loads(m.data)["layers"]]


def test_key_from_changes_the_key_with_the_file(cache: Cache) -> None:
    lock = cache.cwd / "Cargo.lock"
    lock.write_text("serde = 1.0.1\n")
    ws = machine(cache, "m1")
    gen(ws, {"target": {"x": "built with 1.0.1"}})
    k1 = cache.json("save", "cargo", "--key-from", "Cargo.lock", "--path", ws)["key"]
    lock.write_text("serde = 1.0.2\n")
    gen(ws, {"target": {"x": "built with 1.0.2"}})
    k2 = cache.json("save", "cargo", "--key-from", "Cargo.lock", "--path", ws)["key"]
    assert k1 != k2 and k1.startswith("cargo-") and k2.startswith("cargo-")
    assert cache.keys() == sorted([k1, k2])
    dest = machine(cache, "m2")
    hit = cache.json("restore", "cargo", "--key-from", "*.lock", "--path", dest)
    assert (hit["hit"], hit["matched_key"]) == ("exact", k2)
    assert (dest / "target" / "x").read_text() == "built with 1.0.2"


def test_restore_refuses_uncommitted_changes(cache: Cache) -> None:
    ws = machine(cache, "m1")
    gen(ws, {"f": "one"})
    cache.run("save", "k", "--path", ws)
    (ws / "scratch").write_text("not saved")
    refused = cache.run("restore", "k", "--path", ws, check=False)
    assert refused.returncode == 5 and "A scratch" in refused.stderr
    assert (ws / "scratch").read_text() == "not saved"
    full = machine(cache, "m2")
    gen(full, {"mine": "x"})
    refused = cache.run("restore", "k", "--path", full, check=False)
    assert refused.returncode == 12 and "not empty and not a workspace" in refused.stderr


def test_htpasswd_registry_with_credentials_from_the_environment(
    make_registry: Callable[..., Registry], mount_guard: Path
) -> None:
    registry = make_registry((USER, PASSWORD))
    outside = mount_guard / "outside"
    outside.mkdir(exist_ok=True)
    creds = {"SNAPWS_REGISTRY_USERNAME": USER, "SNAPWS_REGISTRY_PASSWORD": PASSWORD}
    cache = Cache(registry, outside, creds)
    anonymous = Cache(registry, outside)
    ws = machine(cache, "m1")
    gen(ws, TREE)
    denied = anonymous.run("save", "k", "--path", ws, check=False)
    assert denied.returncode == 14, denied.stderr
    wrong = anonymous.run(
        "list",
        check=False,
        env={"SNAPWS_REGISTRY_USERNAME": USER, "SNAPWS_REGISTRY_PASSWORD": "wrong-Pa55"},
    )
    assert wrong.returncode == 14 and "wrong-Pa55" not in wrong.stdout + wrong.stderr
    saved = cache.json("save", "k", "--path", ws)
    assert saved["blobs_sent"] == 2
    dest = machine(cache, "m2")
    assert cache.json("restore", "k", "--path", dest)["cache_hit"] is True
    assert tree_state(dest) == tree_state(ws)
    assert PASSWORD not in cache.run("list").stdout


def test_named_remote_and_the_current_workspace(cache: Cache) -> None:
    ws = machine(cache, "m1")
    gen(ws, {"f": "one"})
    run_cli("init", ws, cwd=cache.cwd)
    url = f"{cache.registry.url}/{REPO}"
    no_env = {"SNAPWS_CACHE_REMOTE": "", "SNAPWS_CACHE_INSECURE": ""}
    missing = run_cli("-C", ws, "cache", "save", "k", cwd=cache.cwd, check=False, env=no_env)
    assert missing.returncode == 4 and "no cache remote" in missing.stderr
    run_cli("-C", ws, "remote", "add", "cache", url, "--insecure", cwd=cache.cwd)
    gen(ws, {"g": "two"})
    out = run_cli("-C", ws, "cache", "save", "k", "--json", cwd=cache.cwd, env=no_env).stdout
    saved = json.loads(out)
    assert (saved["remote"], saved["committed"]) == ("cache", True)
    log = run_cli("-C", ws, "log", "--json", cwd=cache.cwd).stdout
    assert json.loads(log)["snapshots"][0]["message"] == "cache: k"
    outside = run_cli("cache", "save", "k", cwd=cache.cwd, check=False, env=no_env)
    assert outside.returncode == 3 and "--path DIR" in outside.stderr
    dest = machine(cache, "m2")
    cache.run("restore", "k", "--path", dest)
    assert sorted(os.listdir(dest)) == ["f", "g"]


@pytest.mark.parametrize("backend", ["fuse", "plain"])
def test_restore_and_save_on_other_backends(cache: Cache, backend: str) -> None:
    """A runner whose workspaces use another backend (SNAPWS_BACKEND, as
    auto would choose inside a container or as a plain user) restores the
    entry, and its next save sends only the new layer."""
    first = machine(cache, "m1")
    gen(first, TREE)
    cache.json("save", "build-1", "--path", first)
    second = machine(cache, "m2")
    env = {"SNAPWS_BACKEND": backend, "XDG_DATA_HOME": str(second.parent / "data")}
    restored = cache.json("restore", "build-1", "--path", second, env=env)
    assert restored["cache_hit"] is True and restored["action"] == "created"
    assert tree_state(second) == tree_state(first)
    store = ["--store", str(second.parent / "data" / "snapws")]  # its user's default store
    status = run_cli(*store, "-C", second, "status", "--json", cwd=cache.cwd)
    assert json.loads(status.stdout)["changes"] == []
    workspaces = json.loads(run_cli(*store, "workspaces", "--json", cwd=cache.cwd).stdout)
    assert [w["backend"] for w in workspaces["workspaces"]] == [backend]
    head = run_cli(*store, "-C", second, "log", "--json", cwd=cache.cwd).stdout
    assert json.loads(head)["snapshots"][0]["id"] == restored["id"]
    gen(second, {"obj": {"c.o": noise(5_000, 3)}})
    saved = cache.json("save", "build-2", "--path", second, env=env)
    assert (saved["blobs_sent"], saved["blobs_skipped"]) == (2, 1)


def test_cache_remote_setting_between_environment_and_store_remotes(cache: Cache) -> None:
    """--remote, then SNAPWS_CACHE_REMOTE, then cache_remote in snapws.toml."""
    url = cache.registry.url
    config = cache.cwd / "snapws.toml"
    config.write_text(f'cache_remote = "{url}/from/config"\n')
    env = {"SNAPWS_CONFIG": str(config), "SNAPWS_CACHE_REMOTE": ""}
    ws = machine(cache, "m1")
    gen(ws, {"f": "one"})
    assert cache.json("save", "k1", "--path", ws, env=env)["remote"].endswith("/from/config")
    env_wins = {**env, "SNAPWS_CACHE_REMOTE": f"{url}/from/env"}
    gen(ws, {"g": "two"})
    assert cache.json("save", "k2", "--path", ws, env=env_wins)["remote"].endswith("/from/env")
    gen(ws, {"h": "three"})
    option = cache.json("save", "k3", "--path", ws, "--remote", f"{url}/from/option", env=env_wins)
    assert option["remote"].endswith("/from/option")
    assert [cache.registry.tags(r) for r in ("from/config", "from/env", "from/option")] == [
        ["k1"],
        ["k2"],
        ["k3"],
    ]
