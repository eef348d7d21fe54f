"""Every backend finds the default store from anywhere inside the workspace
(issue 10): as root (kernel, fuse, plain) and as an ordinary user (plain,
the default for her, and rootless), with no --store and no SNAPWS_STORE.
The default store is the user's ($XDG_DATA_HOME/snapws, ~/.local/share/snapws),
never ``.snapws`` beside the workspace."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, unmount_all_under
from helpers import gen

from backends.conftest import ROOT_BACKENDS, require_backend
from backends.users import UserArea, require_rootless

SPEC = {"top.txt": "top\n", "sub": {"deeper": {"f.txt": "f\n"}}}


@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_found_from_a_subdirectory_as_root(mount_guard: Path, backend: str) -> None:
    require_backend(backend)
    env = {"XDG_DATA_HOME": str(mount_guard / "data")}
    store = mount_guard / "data" / "snapws"
    ws = mount_guard / "proj"
    gen(ws, SPEC)
    run_cli("init", "--backend", backend, ws, cwd=mount_guard, env=env)
    assert (store / "snapws-store.json").is_file() and not (mount_guard / ".snapws").exists()
    deep = ws / "sub" / "deeper"
    (deep / "new.txt").write_text("new\n")
    assert run_cli("status", "--porcelain", cwd=deep, env=env).stdout == "?? sub/deeper/new.txt\n"
    run_cli("commit", "-m", "from deep inside", cwd=deep, env=env)
    out = json.loads(run_cli("log", "--json", cwd=ws / "sub", env=env).stdout)
    assert [e["message"] for e in out["snapshots"]] == ["from deep inside", "initial snapshot"]
    # -C from outside finds it as well
    assert run_cli("-C", deep, "branch", cwd=mount_guard, env=env).stdout.startswith("* main ")


@pytest.fixture
def area() -> Iterator[UserArea]:
    a = UserArea()
    try:
        yield a
    finally:
        a.cleanup_processes()
        unmount_all_under(a.root)
        a.cleanup()


def make_tree(area: UserArea, name: str) -> Path:
    """``SPEC`` in ``area.root/name``, made by the user."""
    ws = area.root / name
    area.run("mkdir", "-p", ws / "sub" / "deeper")
    area.run("sh", "-c", "echo top > top.txt && echo f > sub/deeper/f.txt", cwd=ws)
    return ws


def test_found_from_a_subdirectory_as_a_user_plain(area: UserArea) -> None:
    ws = make_tree(area, "proj")
    out = json.loads(area.snapws("init", "--json", ws).stdout)
    store = area.root / ".local" / "share" / "snapws"  # her $HOME is the area
    assert (out["backend"], out["store"], out["namespace"]) == ("plain", str(store), "")
    assert os.stat(store).st_uid == area.uid and os.stat(store).st_mode & 0o777 == 0o700
    deep = ws / "sub" / "deeper"
    area.run("sh", "-c", "echo new > new.txt", cwd=deep)
    assert area.snapws("status", "--porcelain", cwd=deep).stdout == "?? sub/deeper/new.txt\n"
    area.snapws("commit", "-m", "from deep inside", cwd=deep)
    assert area.snapws("log", "--oneline", cwd=ws / "sub").stdout.count("\n") == 2
    # a second, unrelated workspace of hers: the same store, its own branches
    other = make_tree(area, "other")
    area.snapws("init", other)
    listed = json.loads(area.snapws("branch", "--json", cwd=other / "sub").stdout)
    assert listed["namespace"] == "other" and [b["name"] for b in listed["branches"]] == ["main"]
    assert area.snapws("log", "--oneline", cwd=other).stdout.count("\n") == 1


def test_found_from_a_subdirectory_as_a_user_rootless(area: UserArea) -> None:
    require_rootless(area)
    ws = make_tree(area, "proj")
    out = json.loads(area.snapws("init", "--backend", "rootless", "--json", ws).stdout)
    assert out["store"] == str(area.root / ".local" / "share" / "snapws")
    # inside the workspace's namespace, from a subdirectory, no --store
    script = f"cd sub/deeper && echo new > new.txt && {sys.executable} -m snapws status --porcelain"
    inside = area.snapws("run", "-C", ws, "--", "sh", "-c", script).stdout
    assert inside == "?? sub/deeper/new.txt\n"
    # from outside the namespace, -C names the (empty-looking) directory
    area.snapws("-C", ws, "commit", "-m", "made inside")
    assert "made inside" in area.snapws("-C", ws, "log", "--oneline").stdout
