"""The /proc scan that names the processes keeping a directory busy."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from snapws.errors import MountError, WorkspaceBusyError
from snapws.mounts.busy import Holder, busy_error, find_cwd_users, find_writers
from snapws.mounts.mounter import (
    MountBusyError,
    detach,
    mount_at,
    mount_overlay,
    remount_readonly,
    unmount,
)
from snapws.mounts.plan import MountPlan

# Python's mmap keeps a dup of the descriptor: map through libc so that only the
# mapping remains once the descriptor is closed.
MMAP_SHARED = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.mmap.restype = ctypes.c_void_p\n"
    "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,\n"
    "                      ctypes.c_int, ctypes.c_long]\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "os.write(fd, b'x' * 4096)\n"
    "addr = libc.mmap(None, 4096, 3, 1, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED\n"
    "assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()\n"
    "os.close(fd)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
DELETED_OPEN = (
    "import os, sys\n"
    "f = open(sys.argv[1], 'w'); f.close()\n"
    "f = open(sys.argv[1], 'r')\n"
    "os.unlink(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
WAIT = "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"


class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.targets: list[Path] = []

    def spawn(self, code: str, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def teardown(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        for target in reversed(self.targets):
            for _ in range(10):
                info = mount_at(target)
                if info is None or info.mountpoint != Path(os.path.realpath(target)):
                    break
                try:
                    unmount(target)
                except MountError:
                    detach(target)


@pytest.fixture
def kids() -> Iterator[Children]:
    it = Children()
    try:
        yield it
    finally:
        it.teardown()


def mine(holders: list[Holder], pid: int) -> list[tuple[str, str]]:
    return [(h.how, h.path.name) for h in holders if h.pid == pid]


def test_own_write_descriptor_is_found(tmp_path: Path) -> None:
    with open(tmp_path / "w.txt", "w"), open(tmp_path / "r.txt", "w"):
        pass
    with open(tmp_path / "w.txt", "a"), open(tmp_path / "r.txt"):
        holders = find_writers(tmp_path)
    assert mine(holders, os.getpid()) == [("write", "w.txt")]
    me = next(h for h in holders if h.pid == os.getpid())
    assert me.path == tmp_path / "w.txt"
    assert me.command == Path("/proc/self/comm").read_text().strip()
    assert find_writers(tmp_path) == []


def test_rdwr_counts_and_prefix_is_by_component(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    (tmp_path / "abc").mkdir()
    fd = os.open(tmp_path / "abc" / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert find_writers(tmp_path / "ab") == []
        assert mine(find_writers(tmp_path / "abc"), os.getpid()) == [("write", "f")]
        assert mine(find_writers(tmp_path), os.getpid()) == [("write", "f")]
    finally:
        os.close(fd)


def test_odd_names_and_symlinked_root(tmp_path: Path) -> None:
    odd = tmp_path / "a dir\nwith newline"
    odd.mkdir()
    link = tmp_path / "link"
    link.symlink_to(odd)
    with open(odd / "file name\n2", "w"):
        holders = find_writers(link)
    assert [(h.how, h.path) for h in holders if h.pid == os.getpid()] == [
        ("write", odd / "file name\n2")
    ]


def test_shared_writable_mapping(tmp_path: Path, kids: Children) -> None:
    proc = kids.spawn(MMAP_SHARED, str(tmp_path / "mapped"))
    assert mine(find_writers(tmp_path), proc.pid) == [("mmap-write", "mapped")]
    # a private mapping is no writer
    fd = os.open(tmp_path / "mapped", os.O_RDONLY)
    try:
        private = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    try:
        assert mine(find_writers(tmp_path), os.getpid()) == []
    finally:
        private.close()


def test_deleted_open_file(tmp_path: Path, kids: Children) -> None:
    proc = kids.spawn(DELETED_OPEN, str(tmp_path / "gone"))
    holders = find_writers(tmp_path)
    assert [(h.how, h.path) for h in holders if h.pid == proc.pid] == [
        ("deleted-open", tmp_path / "gone")
    ]


def test_cwd_users_sorted(tmp_path: Path, kids: Children) -> None:
    (tmp_path / "sub").mkdir()
    procs = [kids.spawn(WAIT, cwd=tmp_path / "sub") for _ in range(3)]
    outside = kids.spawn(WAIT, cwd=Path("/"))
    users = find_cwd_users(tmp_path)
    pids = [h.pid for h in users]
    assert pids == sorted(pids)
    assert outside.pid not in pids
    for proc in procs:
        assert [(h.how, h.path) for h in users if h.pid == proc.pid] == [("cwd", tmp_path / "sub")]
    assert find_writers(tmp_path) == []


def test_busy_error_lists_holders(tmp_path: Path, kids: Children) -> None:
    proc = kids.spawn(MMAP_SHARED, str(tmp_path / "mapped"))
    err = busy_error(tmp_path, "commit")
    assert isinstance(err, WorkspaceBusyError)
    assert (proc.pid, err.holders[0][1], str(tmp_path / "mapped")) in err.holders
    assert f"pid {proc.pid}" in err.message
    assert "cannot commit" in err.message


def test_vanished_process_is_ignored(tmp_path: Path, kids: Children) -> None:
    proc = kids.spawn(MMAP_SHARED, str(tmp_path / "mapped"))
    kids.stop(proc)
    assert find_writers(tmp_path) == []


@pytest.mark.root
@pytest.mark.parametrize("script", [MMAP_SHARED, DELETED_OPEN], ids=["mmap", "deleted"])
def test_overlay_busy_and_named(tmp_path: Path, kids: Children, script: str) -> None:
    dirs = [tmp_path / n for n in ("lower", "upper", "work", "mnt")]
    for d in dirs:
        d.mkdir()
    lower, upper, work, target = dirs
    kids.targets.append(target)
    mount_overlay(MountPlan(target, (lower,), upper, work))
    proc = kids.spawn(script, str(target / "held"))
    with pytest.raises(MountBusyError):
        remount_readonly(target)
    how = "mmap-write" if script is MMAP_SHARED else "deleted-open"
    assert mine(find_writers(target), proc.pid) == [(how, "held")]
    kids.stop(proc)
    remount_readonly(target)


HOLD = """\
import mmap, os, sys
how, path = sys.argv[1], sys.argv[2]
if how == "cwd":
    os.chdir(path)
elif how == "open":
    f = open(path, "rb")
elif how == "map":
    f = open(path, "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    f.close()
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("how", ["cwd", "open", "map"])
def test_is_held_by_a_cwd_an_open_file_or_a_mapping(tmp_path: Path, how: str) -> None:
    from snapws.mounts.busy import is_held

    root = tmp_path / "ws"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    assert not is_held(root)  # this process's own cwd/files never count either
    with _holding(how, root, outside):
        assert is_held(root)
        assert not is_held(tmp_path / "elsewhere")
    assert not is_held(root)


@contextmanager
def _holding(how: str, root: Path, cwd: Path) -> Iterator[None]:
    """A process (its cwd elsewhere) that holds ``root/d`` as its cwd
    (``how`` "cwd"), or ``root/d/f`` open ("open") or mapped ("map")."""
    target = root / "d" if how == "cwd" else root / "d" / "f"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, how, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.root
@pytest.mark.parametrize("how", ["cwd", "open", "map"])
def test_the_kernel_says_whether_a_mount_is_in_use(tmp_path: Path, how: str) -> None:
    """mounter.in_use (umount2 MNT_EXPIRE) sees a cwd, an open file and a
    mapping, and never unmounts: not on repeated calls, not when a killed
    caller left the mount marked expired."""
    import ctypes

    from snapws.mounts.mounter import in_use

    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "snapws-test", str(mnt)], check=True)
    try:
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_bytes(b"data")
        for _ in range(3):
            assert in_use(mnt) is False
        libc = ctypes.CDLL(None, use_errno=True)
        # MNT_EXPIRE: the mount is left marked, as a killed caller leaves it
        assert libc.umount2(os.fsencode(mnt), 4) != 0
        assert in_use(mnt) is False
        assert mount_at(mnt) is not None and mount_at(mnt).mountpoint == mnt  # type: ignore[union-attr]
        with _holding(how, mnt, tmp_path):
            assert in_use(mnt) is True
        assert in_use(mnt) is False
        assert in_use(tmp_path) is None  # not a mount point: the kernel cannot say
        assert mount_at(mnt) is not None and mount_at(mnt).mountpoint == mnt  # type: ignore[union-attr]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_the_client_of_a_served_command_counts_as_this_process(
    tmp_path: Path, kids: Children, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command server's worker runs for a client that waits for it (see
    snapws.cli.server): the client's cwd in the workspace holds it no more
    than the worker's own; any other process still does."""
    from snapws.mounts import busy

    monkeypatch.setattr(busy, "_SAME_COMMAND", set())
    root = tmp_path / "ws"
    root.mkdir()
    client = kids.spawn(WAIT, cwd=root)
    other = kids.spawn(WAIT, cwd=root)
    busy.count_as_this_command(client.pid)
    assert busy.is_held(root)  # the other one
    assert [h.pid for h in busy.find_users(root)] == [other.pid]
    kids.stop(other)
    assert not busy.is_held(root)
    assert busy.find_users(root) == []
