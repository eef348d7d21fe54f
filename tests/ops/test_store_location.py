"""Where the default store is, and branch namespaces in one store (issue 10).

The default store is the user's ($XDG_DATA_HOME/snapws here, below the
test's directory), not ``.snapws`` beside the workspace: siblings, a venv of
that name and ``git clean`` of an enclosing work tree cannot touch it. The
first workspace of a store keeps its branches in the store's root namespace
(where stores of earlier versions keep theirs); every later one gets a
namespace of its own unless told to share.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, run_cli, unmount_all_under
from helpers import gen, mounts_under


@pytest.fixture
def area(mount_guard: Path) -> Path:
    (mount_guard / "home").mkdir()
    return mount_guard


def env_of(root: Path) -> dict[str, str]:
    return {"XDG_DATA_HOME": str(root / "data")}


def init(root: Path, path: Path, *args: str) -> Workspace:
    """``snapws init ARGS PATH`` with the default store, from ``root``."""
    run_cli("init", *args, path, cwd=root, env=env_of(root))
    return Workspace(path, root / "data" / "snapws", root)


def cli(ws: Workspace, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``snapws ARGS`` run inside the workspace, the store found by itself."""
    return run_cli(*args, cwd=ws.path, env=env_of(ws.outside), check=check)


def log_messages(ws: Workspace, *revs: str) -> list[str]:
    out = json.loads(cli(ws, "log", "--json", *revs).stdout)
    return [e["message"] for e in out["snapshots"]]


def branches(ws: Workspace) -> list[str]:
    return [b["name"] for b in json.loads(cli(ws, "branch", "--json").stdout)["branches"]]


def state_of(ws: Workspace) -> dict[str, object]:
    (rec,) = [
        json.loads((d / "state.json").read_text())
        for d in (ws.store / "workspaces").iterdir()
        if json.loads((d / "state.json").read_text())["path"] == str(ws.path)
    ]
    return rec


def test_sibling_inits_have_their_own_branches_and_share_content(area: Path) -> None:
    same = {"big.bin": "x" * 100_000, "src": {"a.py": "print(1)\n"}}
    gen(area / "app", same)
    gen(area / "lib", same)
    for tree in ("app", "lib"):  # metadata counts in deduplication: the same mtime
        os.utime(area / tree / "big.bin", ns=(1_700_000_000 * 10**9,) * 2)
    app = init(area, area / "app")
    lib = init(area, area / "lib")  # the second init with default options succeeds
    assert app.store == lib.store and not (area / ".snapws").exists()
    assert "namespace" not in state_of(app)  # the store's first: its root namespace
    assert state_of(lib)["namespace"] == "lib"
    (app.path / "only-app.txt").write_text("a\n")
    cli(app, "commit", "-m", "app work")
    cli(app, "branch", "feature")
    (lib.path / "only-lib.txt").write_text("l\n")
    cli(lib, "commit", "-m", "lib work")
    assert log_messages(app) == ["app work", "initial snapshot"]
    assert log_messages(lib) == ["lib work", "initial snapshot"]
    assert log_messages(lib, "--all") == ["lib work", "initial snapshot"]
    assert branches(app) == ["feature", "main"] and branches(lib) == ["main"]
    r = cli(lib, "log", "feature", check=False)
    assert r.returncode == 4, r.stderr  # another namespace's branch is not a revision here
    # the refs live apart; identical content is stored once
    assert (app.store / "refs" / "heads" / "feature").is_file()
    assert os.listdir(app.store / "refs" / "ns") == ["lib"]
    assert os.listdir(app.store / "refs" / "ns" / "lib" / "heads") == ["main"]
    copies = [
        t / "big.bin" for t in (app.store / "layers").glob("*/tree") if (t / "big.bin").exists()
    ]
    assert len(copies) == 2  # each base layer (their roots' times differ) ...
    assert len({os.stat(p).st_ino for p in copies}) == 1  # ... holds one file, deduplicated
    # a branch checked out by a workspace of another namespace is another branch
    cli(lib, "checkout", "-b", "feature")
    assert cli(lib, "status").stdout.startswith("On branch feature\n")
    cli(app, "branch", "-d", "feature")
    assert branches(app) == ["main"] and branches(lib) == ["feature", "main"]
    assert json.loads(cli(app, "verify", "--json").stdout)["ok"]


def test_namespaces_are_named_once(area: Path) -> None:
    for parent in ("one", "two", "three"):
        gen(area / parent / "ws", {"f": parent})
    first = init(area, area / "one" / "ws")
    second = init(area, area / "two" / "ws")
    third = init(area, area / "three" / "ws")
    assert "namespace" not in state_of(first)
    assert state_of(second)["namespace"] == "ws"
    assert state_of(third)["namespace"] == "ws-2"
    odd = area / ".My dir..lock"
    gen(odd, {"f": "x"})
    assert state_of(init(area, odd))["namespace"] == "My-dir-lock"


def test_the_refs_of_an_ejected_workspace_keep_their_namespace(area: Path) -> None:
    gen(area / "app", {"f": "1"})
    app = init(area, area / "app")
    run_cli("-C", app.path, "eject", cwd=area, env=env_of(area))
    gen(area / "lib", {"g": "1"})
    lib = init(area, area / "lib")  # main of app is still in the root namespace
    assert state_of(lib)["namespace"] == "lib"
    assert log_messages(lib) == ["initial snapshot"]


def test_init_joins_a_namespace_on_purpose(area: Path) -> None:
    first = init(area, area / "first")  # the store's first: its root namespace
    gen(area / "app", {"f": "1"})
    app = init(area, area / "app")
    cli(app, "branch", "release")
    gen(area / "app-tree2", {"g": "2"})
    r = run_cli(
        "init", "--namespace", "app", area / "app-tree2", cwd=area, env=env_of(area), check=False
    )
    assert r.returncode == 8 and "branch 'main' already exists" in r.stderr, r.stderr
    second = init(area, area / "app-tree2", "--namespace", "app", "-b", "second")
    assert branches(second) == ["main", "release", "second"]
    r = cli(second, "branch", "-d", "main", check=False)  # app's, in the namespace they share
    assert r.returncode != 0 and str(app.path) in r.stderr, r.stderr
    shared = init(area, area / "shared-one", "--shared", "-b", "shared")
    assert "namespace" not in state_of(shared)  # the root namespace: recorded as before
    assert sorted(os.listdir(shared.store / "refs" / "heads")) == ["main", "shared"]
    assert branches(first) == ["main", "shared"]
    r = run_cli("init", "--namespace", "a/b", area / "x", cwd=area, env=env_of(area), check=False)
    assert r.returncode == 8 and "not a namespace name" in r.stderr, r.stderr
    assert not (area / "x").exists()


def test_gc_and_prune_keep_every_namespaces_refs(area: Path) -> None:
    gen(area / "app", {"f": "1"})
    app = init(area, area / "app")
    cli(app, "checkout", "-b", "feature")
    (app.path / "f").write_text("feature\n")
    feature = json.loads(cli(app, "commit", "-m", "feature work", "--json").stdout)["id"]
    cli(app, "checkout", "main")
    gen(area / "lib", {"g": "1"})
    lib = init(area, area / "lib")
    cli(lib, "prune", "--keep-last", "1")
    cli(lib, "gc", "--grace", "0")
    assert (app.store / "snapshots" / f"{feature}.json").is_file()
    cli(app, "checkout", "feature")
    assert (app.path / "f").read_text() == "feature\n"


def test_git_clean_of_an_enclosing_work_tree_loses_nothing(area: Path) -> None:
    repo = area / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    gen(repo / "build" / "ws", {"data.txt": "v1\n"})
    ws = init(area, repo / "build" / "ws")
    (ws.path / "data.txt").write_text("v2\n")
    cli(ws, "commit", "-m", "v2")
    clean = subprocess.run(
        ["git", "-C", str(repo), "clean", "-ffdxq"], capture_output=True, text=True
    )
    # the workspace's files were untracked: git clean deleted them through
    # the mount (and failed to remove the mount point, which is busy); the
    # store, the workspace's state and its history are all still there
    assert clean.returncode in (0, 1), clean.stderr
    assert log_messages(ws) == ["v2", "initial snapshot"]
    assert cli(ws, "status", "--porcelain").stdout == " D data.txt\n"
    cli(ws, "reset", "--hard")
    assert (ws.path / "data.txt").read_text() == "v2\n"
    assert cli(ws, "status", "--porcelain").stdout == ""


def test_a_venv_where_the_old_default_store_was_loses_nothing(area: Path) -> None:
    gen(area / "project", {"app.py": "print(1)\n"})
    ws = init(area, area / "project")
    (ws.path / "app.py").write_text("print(2)\n")  # uncommitted
    venv = area / ".snapws"
    for _ in range(2):  # make the venv, then recreate it
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert cli(ws, "status", "--porcelain").stdout == " M app.py\n"
    cli(ws, "commit", "-m", "two")
    assert log_messages(ws) == ["two", "initial snapshot"]


def test_an_old_store_beside_the_workspace_keeps_working(area: Path) -> None:
    """Stores made before per-user stores: ``.snapws`` beside the
    workspace, the branches in the root namespace, records without one."""
    gen(area / "old", {"f": "1", "sub": {"g": "2"}})
    run_cli("--store", area / ".snapws", "init", "--shared", area / "old", cwd=area)
    rec_dir = next((area / ".snapws" / "workspaces").iterdir())
    rec = json.loads((rec_dir / "state.json").read_text())
    assert "namespace" not in rec  # as an old record
    ws = Workspace(area / "old", area / ".snapws", area)
    (ws.path / "sub" / "h").write_text("3\n")
    run_cli("commit", "-m", "from sub", cwd=ws.path / "sub", env=env_of(area))
    assert log_messages(ws) == ["from sub", "initial snapshot"]
    assert branches(ws) == ["main"]
    assert not (area / "data").exists()  # nothing made in the per-user store


@pytest.fixture
def other_fs(area: Path) -> Iterator[Path]:
    """A tmpfs below ``area``: a filesystem the per-user store is not on."""
    top = area / "fs"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "snapws-test", str(top)], check=True)
    try:
        yield top
    finally:
        unmount_all_under(top)
        subprocess.run(["umount", str(top)], check=True)


def test_on_another_filesystem_the_store_is_at_its_top(area: Path, other_fs: Path) -> None:
    os.chmod(other_fs, 0o755)
    gen(other_fs / "deep" / "ws", {"f": "1", "sub": {"g": "2"}})
    ws = init(area, other_fs / "deep" / "ws")
    store = other_fs / f".snapws-{os.geteuid()}"
    assert (store / "snapws-store.json").is_file()
    assert os.stat(store).st_mode & 0o777 == 0o700
    assert mounts_under(ws.path)
    r = run_cli("status", "--porcelain", cwd=ws.path / "sub", env=env_of(area))
    assert r.stdout == ""
    assert not (area / "data").exists()


@pytest.mark.parametrize("bad", ["symlink", "other-owner", "writable"])
def test_an_unsafe_store_at_the_top_is_refused(area: Path, other_fs: Path, bad: str) -> None:
    store = other_fs / f".snapws-{os.geteuid()}"
    if bad == "symlink":
        (other_fs / "elsewhere").mkdir(mode=0o700)
        store.symlink_to(other_fs / "elsewhere")
    else:
        store.mkdir(mode=0o700)
        if bad == "other-owner":
            os.chown(store, 4242, 4242)
        else:
            os.chmod(store, 0o777)
    gen(other_fs / "ws", {"f": "1"})
    r = run_cli("init", other_fs / "ws", cwd=area, env=env_of(area), check=False)
    assert r.returncode == 12, r.stderr
    assert f"the default store {store}" in r.stderr and "--store PATH" in r.stderr
    assert mounts_under(other_fs / "ws") == []
    assert (other_fs / "ws" / "f").read_text() == "1"


@pytest.mark.parametrize("step", ["commit:snapshot-written", "commit:ref-moved"])
def test_a_crashed_commit_is_finished_in_its_own_namespace(area: Path, step: str) -> None:
    """Recovery moves the branch of the journal's workspace, whichever
    workspace of the store runs the next command."""
    gen(area / "app", {"f": "1"})
    gen(area / "lib", {"g": "1"})
    app = init(area, area / "app")
    lib = init(area, area / "lib")
    (app.path / "f").write_text("2\n")
    env = {**env_of(area), "SNAPWS_CRASH_AT": step}
    r = run_cli("commit", "-m", "crashed", cwd=app.path, env=env, check=False)
    assert r.returncode != 0, r.stdout
    assert (app.store / "journal.json").is_file()
    cli(lib, "status")  # another namespace's command finishes it
    assert not (app.store / "journal.json").exists()
    assert log_messages(app, "main") == ["crashed", "initial snapshot"]  # app's main moved
    assert log_messages(lib, "main") == ["initial snapshot"]  # lib's did not
    for ws in (app, lib):
        head = json.loads(cli(ws, "status", "--json").stdout)["id"]
        listed = json.loads(cli(ws, "branch", "--json").stdout)["branches"]
        assert [(b["name"], b["id"]) for b in listed] == [("main", head)]
    assert json.loads(cli(app, "verify", "--json").stdout)["ok"]
