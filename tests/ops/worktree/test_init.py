"""``snapws init``: a directory's content becomes the base layer of a mount."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import File, Symlink, gen, mounts_under, state_diff, tree_state

BASE = {
    "a.txt": "hello\n",
    "exec.sh": File("#!/bin/sh\necho hi\n", mode=0o755),
    "d": {"f": "x", "e": {}},
    "link": Symlink("a.txt"),
}


def overlay_at(path: Path) -> bool:
    return (str(path), "overlay") in mounts_under(path)


def test_existing_content_becomes_base(mount_guard: Path) -> None:
    tmp_path = mount_guard
    ws = tmp_path / "ws"
    gen(ws, BASE)
    before = tree_state(ws)
    r = run_cli("--store", tmp_path / "store", "init", ws, cwd=tmp_path)
    assert r.returncode == 0
    assert overlay_at(ws)
    assert r.stdout.startswith(f"Initialized workspace {ws} (branch main, snapshot ")
    assert r.stdout.endswith(f", store {tmp_path / 'store'})\n")
    # everything is kept exactly (tree_state ignores directory mtimes)
    assert state_diff(before, tree_state(ws)) == []
    assert (ws / "a.txt").read_text() == "hello\n"
    log = json.loads(run_cli("-C", ws, "log", "--json", cwd=tmp_path).stdout)["snapshots"]
    assert len(log) == 1
    assert log[0]["parents"] == []
    assert log[0]["message"] == "initial snapshot"
    assert log[0]["refs"] == ["main"]
    status = run_cli("-C", ws, "status", cwd=tmp_path)
    assert status.stdout == "On branch main\nnothing to commit, working tree clean\n"
    assert run_cli("-C", ws, "status", "--porcelain", cwd=tmp_path).stdout == ""


def test_init_content_listed_by_show(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec=BASE)
    names = ws.run("show", "--name-only").stdout.splitlines()
    assert names == ["a.txt", "d/", "d/e/", "d/f", "exec.sh", "link"]


def test_init_new_directory(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace("new/deep/ws")
    assert ws.path.is_dir()
    assert overlay_at(ws.path)
    assert list(ws.path.iterdir()) == []
    assert len(ws.log_ids()) == 1
    assert ws.porcelain() == []
    (ws.path / "first").write_text("1")
    assert ws.porcelain() == ["?? first"]


def test_init_empty_existing_directory(make_workspace: WorkspaceFactory, tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    ws = make_workspace()
    assert list(ws.path.iterdir()) == []
    assert ws.run("status").stdout.endswith("nothing to commit, working tree clean\n")


def test_init_json(mount_guard: Path) -> None:
    tmp_path = mount_guard
    r = run_cli("--store", tmp_path / "st", "init", "--json", tmp_path / "w", cwd=tmp_path)
    out = json.loads(r.stdout)
    assert out["workspace"] == str(tmp_path / "w")
    assert out["store"] == str(tmp_path / "st")
    assert out["branch"] == "main"
    assert len(out["id"]) == 32
    log = json.loads(run_cli("-C", tmp_path / "w", "log", "--json", cwd=tmp_path).stdout)[
        "snapshots"
    ]
    assert [e["id"] for e in log] == [out["id"]]


def data_env(root: Path) -> dict[str, str]:
    """An environment whose per-user store ($XDG_DATA_HOME/snapws) is below ``root``."""
    return {"XDG_DATA_HOME": str(root / "data")}


def test_default_store_is_the_users_store(mount_guard: Path) -> None:
    tmp_path = mount_guard
    env = data_env(tmp_path)
    store = tmp_path / "data" / "snapws"
    gen(tmp_path / "ws", {"f": "1"})
    r = run_cli("init", "ws", cwd=tmp_path, env=env)
    assert r.stdout.endswith(f", store {store})\n")
    assert (store / "snapws-store.json").is_file()
    assert os.stat(store).st_mode & 0o777 == 0o700  # made private, as the trash spec's
    assert not (tmp_path / ".snapws").exists()
    assert overlay_at(tmp_path / "ws")
    # found from the mount, without --store
    r = run_cli("-C", tmp_path / "ws", "status", "--porcelain", cwd=tmp_path, env=env)
    assert r.stdout == ""


def test_dir_is_a_file(mount_guard: Path) -> None:
    tmp_path = mount_guard
    (tmp_path / "plain").write_text("x")
    plain = tmp_path / "plain"
    r = run_cli("--store", tmp_path / "store", "init", plain, cwd=tmp_path, check=False)
    assert r.returncode == 12
    assert "snapws: error:" in r.stderr
    assert "is not a directory" in r.stderr
    assert "hint:" in r.stderr
    assert (tmp_path / "plain").read_text() == "x"
    assert not (tmp_path / "store").exists()


def test_already_a_workspace(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "1"})
    r = run_cli("--store", ws.store, "init", ws.path, cwd=ws.outside, check=False)
    assert r.returncode == 12
    assert "already a mounted workspace" in r.stderr
    assert "hint:" in r.stderr
    assert len(ws.log_ids()) == 1
    assert (ws.path / "f").read_text() == "1"


def test_already_a_workspace_even_unmounted(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"f": "1"})
    ws.run("umount")
    assert not overlay_at(ws.path)
    r = run_cli("--store", ws.store, "init", ws.path, cwd=ws.outside, check=False)
    assert r.returncode == 12
    assert "already a workspace" in r.stderr
    assert f"snapws -C {ws.path} mount" in r.stderr  # the hint says how to show it again
    # unmounted, the workspace is found through its store
    assert ws.run("status", check=False).returncode == 3
    ws.run("--store", ws.store, "mount")
    assert overlay_at(ws.path)
    assert (ws.path / "f").read_text() == "1"


def test_store_inside_workspace(mount_guard: Path) -> None:
    tmp_path = mount_guard
    gen(tmp_path / "ws", {"f": "1"})
    r = run_cli(
        "--store", tmp_path / "ws" / ".store", "init", tmp_path / "ws", cwd=tmp_path, check=False
    )
    assert r.returncode == 12
    assert "would be inside the workspace" in r.stderr
    assert "hint: put the store outside" in r.stderr
    assert not overlay_at(tmp_path / "ws")
    assert (tmp_path / "ws" / "f").read_text() == "1"


def test_workspace_inside_store(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace()
    r = run_cli("--store", ws.store, "init", ws.store / "sub", cwd=ws.outside, check=False)
    assert r.returncode == 12
    assert "inside the store" in r.stderr


def test_branch_option(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(branch="dev")
    assert ws.run("status").stdout.startswith("On branch dev\n")
    branches = ws.run("branch").stdout.splitlines()
    assert len(branches) == 1
    assert branches[0].startswith("* dev ")
    assert ws.json("log")["snapshots"][0]["refs"] == ["dev"]


def test_invalid_branch_option(mount_guard: Path) -> None:
    tmp_path = mount_guard
    gen(tmp_path / "ws", {"f": "1"})
    r = run_cli(
        "--store",
        tmp_path / "s",
        "init",
        "--branch",
        "a..b",
        tmp_path / "ws",
        cwd=tmp_path,
        check=False,
    )
    assert r.returncode == 8
    assert "invalid branch name 'a..b'" in r.stderr
    assert not overlay_at(tmp_path / "ws")
    assert (tmp_path / "ws" / "f").read_text() == "1"


def test_second_workspace_sharing_branches(mount_guard: Path) -> None:
    """``init --shared`` puts a workspace in the store's root namespace, as
    git worktrees share a repository's branches: a branch name is taken once."""
    tmp_path = mount_guard
    store = tmp_path / "store"
    gen(tmp_path / "one", {"f": "1"})
    run_cli("--store", store, "init", "--shared", tmp_path / "one", cwd=tmp_path)
    first = Workspace(tmp_path / "one", store, tmp_path)
    gen(tmp_path / "two", {"g": "2"})
    r = run_cli("--store", store, "init", "--shared", tmp_path / "two", cwd=tmp_path, check=False)
    assert r.returncode == 8
    assert "branch 'main' already exists" in r.stderr
    assert "hint: pass --branch NAME" in r.stderr
    assert not overlay_at(tmp_path / "two")
    assert (tmp_path / "two" / "g").read_text() == "2"
    run_cli("--store", store, "init", "--shared", "-b", "other", tmp_path / "two", cwd=tmp_path)
    second = Workspace(tmp_path / "two", store, tmp_path)
    assert (second.path / "g").read_text() == "2"
    assert second.run("status").stdout.startswith("On branch other\n")
    listed = first.run("workspaces").stdout.splitlines()
    assert len(listed) == 2
    assert any(line.startswith(f"{first.path}  main ") for line in listed)
    assert any(line.startswith(f"{second.path}  other ") for line in listed)
    names = {line[2:].split()[0] for line in first.run("branch").stdout.splitlines()}
    assert names == {"main", "other"}


def _venv_like(d: Path) -> None:
    (d / "bin").mkdir(parents=True)
    (d / "lib").mkdir()
    (d / "pyvenv.cfg").write_text("home = /usr/bin\n")


def test_init_refuses_a_store_dir_that_holds_something_else(mount_guard: Path) -> None:
    # the default store, here a venv, and --store
    tmp_path = mount_guard
    env = data_env(tmp_path)
    gen(tmp_path / "ws", {"a.txt": "a\n"})
    _venv_like(tmp_path / "data" / "snapws")
    r = run_cli("init", tmp_path / "ws", cwd=tmp_path, check=False, env=env)
    assert r.returncode == 12, r.stderr
    assert (
        f"the store directory {tmp_path / 'data' / 'snapws'} is not a snapws store and not "
        "empty; it holds bin, lib, pyvenv.cfg"
    ) in r.stderr
    assert "hint: give the workspace a store of its own" in r.stderr
    assert "--store PATH" in r.stderr
    other = tmp_path / "other"
    _venv_like(other)
    r = run_cli("--store", other, "init", tmp_path / "ws", cwd=tmp_path, check=False)
    assert r.returncode == 12 and str(other) in r.stderr, r.stderr
    # nothing changed: the files stay, no store was made in either
    assert (tmp_path / "ws" / "a.txt").read_text() == "a\n"
    assert sorted(os.listdir(tmp_path / "data" / "snapws")) == ["bin", "lib", "pyvenv.cfg"]
    assert sorted(os.listdir(other)) == ["bin", "lib", "pyvenv.cfg"]
    assert mounts_under(tmp_path / "ws") == []


def test_init_takes_an_existing_empty_or_half_made_store(mount_guard: Path) -> None:
    tmp_path = mount_guard
    (tmp_path / "empty").mkdir()
    run_cli("--store", tmp_path / "empty", "init", tmp_path / "w1", cwd=tmp_path)
    # a store in use takes a second workspace
    run_cli("--store", tmp_path / "empty", "init", "-b", "w2", tmp_path / "w2", cwd=tmp_path)
    # an interrupted Store.create left some of its directories, no marker
    (tmp_path / "half" / "layers").mkdir(parents=True)
    (tmp_path / "half" / "refs" / "heads").mkdir(parents=True)
    run_cli("--store", tmp_path / "half", "init", tmp_path / "w3", cwd=tmp_path)


def test_a_store_another_user_made_is_refused(mount_guard: Path) -> None:
    """Root's ``snapws init /tmp/x`` must not adopt a store directory that
    another user created first (in a world-writable parent): its owner could
    rename the layers and change what root's workspace shows. Nothing is made."""
    store = mount_guard / "data" / "snapws"
    store.mkdir(parents=True)
    os.chown(store, 4242, 4242)
    (mount_guard / "proj").mkdir()
    (mount_guard / "proj" / "f").write_text("mine\n")
    env = data_env(mount_guard)
    proc = run_cli("init", mount_guard / "proj", cwd=mount_guard, check=False, env=env)
    assert proc.returncode == 12, proc.stderr
    assert "belongs to uid 4242" in proc.stderr and "--store" in proc.stderr
    assert os.listdir(store) == [] and mounts_under(mount_guard / "proj") == []
    assert (mount_guard / "proj" / "f").read_text() == "mine\n"


def test_a_store_others_may_write_is_refused(mount_guard: Path) -> None:
    store = mount_guard / "data" / "snapws"
    store.mkdir(parents=True)
    os.chmod(store, 0o777)
    env = data_env(mount_guard)
    proc = run_cli("init", mount_guard / "proj", cwd=mount_guard, check=False, env=env)
    assert proc.returncode == 12, proc.stderr
    assert "writable by group or others" in proc.stderr and "chmod go-w" in proc.stderr
    os.chmod(store, 0o755)
    run_cli("init", mount_guard / "proj", cwd=mount_guard, env=env)
    assert mounts_under(mount_guard / "proj")


def test_init_from_inside_says_to_cd(mount_guard: Path) -> None:
    """A shell inside the directory sees what is under the new mount until
    ``cd .``: init says so (and only then)."""
    ws = mount_guard / "proj"
    (ws / "sub").mkdir(parents=True)
    env = data_env(mount_guard)
    inside = run_cli("init", ws, cwd=ws / "sub", env=env)
    assert "run `cd .` to see the workspace" in inside.stderr
    other = mount_guard / "other"
    other.mkdir()
    outside = run_cli("init", other, "-b", "b2", cwd=mount_guard, env=env)
    assert "cd ." not in outside.stderr


# ---- files with hardlinks outside the directory ------------------------------------

OLD_NS = 1_577_836_800 * 10**9  # 2020-01-01


def linked_project(root: Path) -> tuple[Path, Path]:
    """``src/`` and ``ws/`` as ``cp -al src ws`` makes them (a local ``git
    clone`` hardlinks .git/objects so), with a group of names linked both
    outside and twice inside (d/x, d/y), and one linked inside only."""
    src = root / "src"
    gen(src, {"a.txt": "original\n", "d": {"x": "x\n", "deep": {"z": "z\n"}}})
    os.chmod(src / "a.txt", 0o640)
    os.setxattr(src / "a.txt", "user.k", b"v")
    os.utime(src / "a.txt", ns=(OLD_NS, OLD_NS))
    ws = root / "ws"
    shutil.copytree(src, ws, copy_function=os.link)
    os.link(ws / "d" / "x", ws / "d" / "y")
    (ws / "in1").write_text("inside\n")
    os.link(ws / "in1", ws / "in2")
    return src, ws


def test_files_linked_outside_get_their_own_inode(mount_guard: Path) -> None:
    """A write, chmod or chown of a name outside never reaches the stored
    snapshot, and the store changes nothing of the outside name."""
    src, ws = linked_project(mount_guard)
    before = tree_state(ws)
    outside = {p: os.lstat(src / p) for p in ("a.txt", "d/x", "d/deep/z")}
    store = mount_guard / "store"
    run_cli("--store", store, "init", ws, cwd=mount_guard)
    assert state_diff(before, tree_state(ws)) == []  # content, modes, owners, mtimes, xattrs
    for p, st in outside.items():  # the outside names keep their inode, untouched
        now = os.lstat(src / p)
        assert (now.st_ino, now.st_mode, now.st_uid, now.st_gid, now.st_mtime_ns) == (
            st.st_ino,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
        ), p
        assert now.st_nlink == 1, p
    (tree,) = [p for p in store.glob("layers/*/tree") if (p / "a.txt").exists()]
    assert not (tree.parent / "outside-links").exists()
    assert os.lstat(tree / "d" / "x").st_ino == os.lstat(tree / "d" / "y").st_ino
    assert os.lstat(tree / "d" / "x").st_nlink == 2  # the group inside is kept
    assert os.lstat(tree / "in1").st_ino == os.lstat(tree / "in2").st_ino
    with open(src / "a.txt", "a") as fh:
        fh.write("changed outside\n")
    os.chmod(src / "d" / "x", 0o600)
    os.chown(src / "d" / "deep" / "z", 1234, 1234)
    assert (ws / "a.txt").read_text() == "original\n"
    assert stat.S_IMODE(os.lstat(ws / "d" / "y").st_mode) == 0o644
    assert os.lstat(ws / "d" / "deep" / "z").st_uid == 0
    assert run_cli("-C", ws, "status", "--porcelain", cwd=mount_guard).stdout == ""
    verify = run_cli("-C", ws, "verify", "HEAD", cwd=mount_guard, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_crash_while_copying_linked_files_gives_the_links_back(mount_guard: Path) -> None:
    """Killed after the first copy: the roll-back puts the original inodes
    back, so the directory is as it was, hardlinks to the outside included."""
    src, ws = linked_project(mount_guard)
    before = tree_state(ws)
    store = mount_guard / "store"
    crashed = run_cli(
        "--store",
        store,
        "init",
        ws,
        cwd=mount_guard,
        check=False,
        env={"SNAPWS_CRASH_AT": "init:unshared:1"},
    )
    assert crashed.returncode == -9, crashed.stderr
    assert list(store.glob("staging/*/outside-links/*")), "the crash came before any copy"
    proc = run_cli("--store", store, "-C", ws, "status", cwd=mount_guard, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # rolled back: not a workspace
    assert not mounts_under(ws)
    assert state_diff(before, tree_state(ws)) == []
    for p in ("a.txt", "d/x", "d/y", "d/deep/z"):
        assert os.path.samefile(ws / p, src / p.replace("d/y", "d/x")), p
    assert os.path.samefile(ws / "in1", ws / "in2")
    assert list(store.glob("staging/*")) == []
    run_cli("--store", store, "init", ws, cwd=mount_guard)
    assert (ws / "a.txt").read_text() == "original\n"


# ---- programs inside the directory ----------------------------------------------


def test_init_names_the_programs_left_behind(mount_guard: Path) -> None:
    """A program whose current directory (or an open file) is inside stays
    on the directory below the mount: init names it, with what to do, on
    stderr and in --json."""
    ws = mount_guard / "proj"
    gen(ws, {"a.txt": "a\n", "sub": {"b.txt": "b\n"}})
    other = mount_guard / "other"
    gen(other, {"held.txt": "held\n"})
    with open(other / "held.txt") as held:
        in_cwd = subprocess.Popen(["sleep", "300"], cwd=ws / "sub")
        with_file = subprocess.Popen(["sleep", "300"], cwd=mount_guard, stdin=held)
    try:
        r = run_cli("--store", mount_guard / "store", "init", ws, cwd=mount_guard)
        assert f"pid {in_cwd.pid} (sleep): working directory {ws / 'sub'}" in r.stderr
        assert str(with_file.pid) not in r.stderr
        assert "stay on the directory below the new mount" in r.stderr
        assert "run `cd .`" in r.stderr
        out = run_cli("--store", mount_guard / "store", "init", "--json", "-b", "o", other, cwd=ws)
        assert json.loads(out.stdout)["left_behind"] == [
            {
                "pid": with_file.pid,
                "command": "sleep",
                "how": "open",
                "path": str(other / "held.txt"),
            }
        ]
        assert f"pid {with_file.pid} (sleep): open file {other / 'held.txt'}" in out.stderr
    finally:
        for p in (in_cwd, with_file):
            p.kill()
            p.wait()
    alone = mount_guard / "alone"
    alone.mkdir()
    quiet = run_cli("--store", mount_guard / "store", "init", "-b", "a", alone, cwd=mount_guard)
    assert "warning" not in quiet.stderr


def _open_files(pid: int) -> set[str]:
    """What process ``pid`` has open (a descriptor closed while it is read,
    as one of Python's start-up, is left out)."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def test_a_file_open_for_writing_is_copied_not_moved(mount_guard: Path) -> None:
    """A program writing a file of the directory (a log) during init would
    write into the stored layer: the layer gets a copy; the program's
    writes go to the original, which it alone still holds."""
    ws = mount_guard / "proj"
    gen(ws, {"app.log": "line 1\n", "other.txt": "o\n"})
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'a'); sys.stdin.readline();"
            " f.write('line 2\\n'); f.close()",
            str(ws / "app.log"),
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(500):  # until it has the file open
            if str(ws / "app.log") in _open_files(writer.pid):
                break
            time.sleep(0.01)
        r = run_cli("--store", mount_guard / "store", "init", ws, cwd=mount_guard)
        assert f"pid {writer.pid} (python" in r.stderr
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
    assert (ws / "app.log").read_text() == "line 1\n"
    verify = run_cli("-C", ws, "verify", "HEAD", cwd=mount_guard, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
