"""The fuse backend, for real, as root: what fuse-overlayfs writes (the facts
snapws.layers.fuseform relies on), mounting, naming and recognising its
mounts, freezing, dead servers, and snapshot ids equal to the kernel's.

Skipped only where fuse-overlayfs is not installed; where it is installed but
cannot mount, these tests fail."""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from helpers import gen, tree_state

from backends.conftest import BackendFactory, mount_kind
from snapws.backends import get_backend
from snapws.backends.fuse import FuseBackend, mount_name
from snapws.errors import WorkspaceBusyError
from snapws.layers.entries import list_xattrs
from snapws.mounts import fuse, mounter
from snapws.mounts.plan import MountPlan
from snapws.store.store import Store

pytestmark = pytest.mark.skipif(
    fuse.find_program() is None, reason="fuse-overlayfs is not installed (CI installs it)"
)


def plan_in(tmp: Path, name: str = "snapws-test") -> MountPlan:
    """lower/{d/x, f}, empty upper and work, target m."""
    for sub in ("lower/d", "upper", "work", "m"):
        (tmp / sub).mkdir(parents=True)
    (tmp / "lower" / "d" / "x").write_text("x\n")
    (tmp / "lower" / "f").write_text("f\n")
    return MountPlan(
        target=tmp / "m",
        lowers=(tmp / "lower",),
        upper=tmp / "upper",
        work=tmp / "work",
        source=name,
    )


def test_fuse_overlayfs_writes_what_fuseform_expects(mount_guard: Path) -> None:
    plan = plan_in(mount_guard)
    fuse.mount_fuse_overlay(plan)
    m, u = mount_guard / "m", mount_guard / "upper"
    try:
        info = mounter.mount_at(m)
        assert info is not None
        assert (info.fstype, info.source) == ("fuse.snapws-test", "snapws-test")
        os.unlink(m / "f")
        with open(m / "d" / "x", "a") as fh:
            fh.write("more\n")  # a copy-up
        (m / "new").mkdir()
        for bad in (".wh.x", ".wh..wh..opq"):
            with pytest.raises(OSError) as info_err:
                (m / bad).write_text("")
            assert info_err.value.errno == errno.EINVAL
    finally:
        fuse.unmount(m)
    # a deletion: a 0/0 character device, as the kernel's
    st = os.lstat(u / "f")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    # a directory it made: opaque, with two bookkeeping entries inside
    assert list_xattrs(os.fsencode(u / "new")).get("trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(u / "new")) == [".wh..opq", ".wh..wh..opq"]
    assert stat.S_ISREG(os.lstat(u / "new" / ".wh..wh..opq").st_mode)
    assert os.lstat(u / "new" / ".wh..opq").st_rdev == 0
    # a copied-up directory and file: not opaque; the file names its origin
    assert "trusted.overlay.opaque" not in list_xattrs(os.fsencode(u / "d"))
    assert "user.fuseoverlayfs.origin" in list_xattrs(os.fsencode(u / "d" / "x"))


def test_freeze_thaw_and_writers(mount_guard: Path) -> None:
    backend = get_backend("fuse")
    plan = plan_in(mount_guard)
    backend.mount(plan)  # named after the upperdir: snapws-<parent>-upper
    m = plan.target
    info = mounter.mount_at(m)
    assert info is not None and info.fstype == f"fuse.{mount_name(plan.upper or m, plan.work)}"
    backend.freeze(m, "commit")
    with pytest.raises(OSError) as err:
        (m / "g").write_text("g")
    assert err.value.errno == errno.EROFS
    backend.thaw(m)
    with open(m / "g", "w") as held:
        with pytest.raises(WorkspaceBusyError) as busy:
            backend.freeze(m, "commit")
        assert busy.value.holders[0][0] == os.getpid()
        held.write("still writable")
    assert (m / "g").read_text() == "still writable"
    backend.unmount(m)
    assert mount_kind(m) == []


def fuse_server(path: Path) -> int:
    info = mounter.mount_at(path)
    assert info is not None and info.fstype.startswith("fuse.")
    (server,) = fuse.servers(info.fstype[len("fuse.") :])
    return server.pid


def test_mount_state_and_owner_of_a_fuse_workspace(
    make_backend_workspace: BackendFactory,
) -> None:
    ws = make_backend_workspace("fuse", spec={"f": "1\n"})
    store = Store.open(ws.store)
    (state,) = store.workspaces()
    backend = get_backend("fuse")
    assert isinstance(backend, FuseBackend)
    assert backend.mount_state(store, state) == "mounted"
    assert backend.owner_of(ws.path) == (store.root, state.id)
    # the server holds the layer and the upperdir open, by absolute path
    (server,) = fuse.servers(
        mount_name(
            store.workspace_dir(state.id) / state.upper, store.workspace_dir(state.id) / state.work
        )
    )
    assert store.workspace_dir(state.id) / state.upper in server.dirs
    # from inside, without --store: the mount names its store
    (ws.path / "g").write_text("g\n")
    out = ws.run("status", "--porcelain").stdout
    assert out.splitlines() == ["?? g"]
    backend.freeze(ws.path, "test")
    assert backend.mount_state(store, state) == "frozen"
    backend.thaw(ws.path)
    # a server that died leaves a dead mount: stale, and the next command remounts
    os.kill(fuse_server(ws.path), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while fuse.server_alive(ws.path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.mount_state(store, state) == "stale"
    assert ws.porcelain() == ["?? g"]  # read from the upperdir, as always
    ws.run("mount")  # (any command that changes something remounts, too)
    assert backend.mount_state(store, state) == "mounted"
    assert (ws.path / "g").read_text() == "g\n"


def test_a_commit_detaches_the_old_mount_under_a_shell(
    make_backend_workspace: BackendFactory,
) -> None:
    ws = make_backend_workspace("fuse", spec={"f": "1\n"})
    old_server = fuse_server(ws.path)
    fd = os.open(ws.path, os.O_RDONLY | os.O_DIRECTORY)  # like a shell's cwd
    try:
        (ws.path / "g").write_text("g\n")
        ws.commit("g")
        # the old server still serves the old (frozen) view to that "shell"
        assert os.path.exists(f"/proc/{old_server}")
        assert sorted(os.listdir(fd)) == ["f", "g"]
        with pytest.raises(OSError) as err:
            os.open("h", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        assert err.value.errno == errno.EROFS
        assert fuse_server(ws.path) != old_server
    finally:
        os.close(fd)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{old_server}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{old_server}"), "the old server outlived its mount"


T = 1_600_000_000_000_000_000


def set_times(root: Path) -> None:
    """mtime T on every node below ``root`` and on ``root`` (children first)."""
    for p in sorted(root.rglob("*"), key=lambda q: -len(q.parts)):
        os.utime(p, ns=(T, T), follow_symlinks=False)
    os.utime(root, ns=(T, T))


def edit(root: Path) -> None:
    """Changes of every kind, directories made and remade included."""
    os.unlink(root / "gone")
    (root / "a").write_text("changed\n")
    (root / "d" / "sub" / "y").unlink()
    (root / "d" / "sub").rmdir()
    (root / "d" / "sub").mkdir()  # remade: opaque under both backends
    (root / "d" / "sub" / "z").write_text("z\n")
    (root / "fresh" / "deeper").mkdir(parents=True)  # new: marked opaque only by fuse
    (root / "fresh" / "deeper" / "n").write_text("n\n")
    os.setxattr(root / "a", "user.note", b"kept")


SPEC = {"a": "a\n", "gone": "g\n", "d": {"sub": {"y": "y\n"}, "keep": "k\n"}}


def test_the_same_changes_make_the_same_layers_as_the_kernel(
    mount_guard: Path, make_backend_workspace: BackendFactory
) -> None:
    layers = {}
    trees = {}
    for backend in ("kernel", "fuse"):
        gen(mount_guard / backend, SPEC)
        set_times(mount_guard / backend)
        ws = make_backend_workspace(backend, name=backend, store=mount_guard / f"{backend}.store")
        edit(ws.path)
        set_times(ws.path)
        layers[backend] = ws.json("commit", "-m", "same change")["layer"]
        trees[backend] = tree_state(ws.path)
        ws.run("verify")
    assert trees["kernel"] == trees["fuse"]
    assert layers["kernel"] == layers["fuse"], "the same change through fuse got another layer"


def test_gc_keeps_the_layers_a_detached_fuse_mount_still_serves(
    make_backend_workspace: BackendFactory,
) -> None:
    ws = make_backend_workspace("fuse", spec={"f": "1\n"})
    for n in range(2):
        (ws.path / f"g{n}").write_text(f"{n}\n")
        ws.commit(f"g{n}")
    # a merged layer (no snapshot's own layer: gc keeps those anyway) in the chain
    ws.run("flatten")
    (ws.path / "g2").write_text("2\n")
    ws.commit("g2")
    old_server = fuse_server(ws.path)
    fd = os.open(ws.path, os.O_RDONLY | os.O_DIRECTORY)  # a shell in the old view
    try:
        ws.run("flatten")  # rewrites the chain: its old layers are no snapshot's now
        plan = ws.json("gc", "--dry-run", "--grace", "0")
        held = {k: v for k, v in plan["kept"].items() if "fuse-overlayfs" in v}
        assert held, plan
        assert all(v == f"used by fuse-overlayfs (pid {old_server})" for v in held.values())
        assert not set(held) & {d["name"] for d in plan["removed"]}
        assert sorted(os.listdir(fd)) == ["f", "g0", "g1", "g2"]
    finally:
        os.close(fd)
