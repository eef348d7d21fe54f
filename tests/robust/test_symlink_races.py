"""Symlink races against every writer, as root: another process flips a
directory the writer works in between a real directory and a symlink to a
directory outside, which holds a victim file, while the writer runs again
and again. Whatever the writer does (succeed, or refuse), the victim keeps
its content, mode, owner and mtime, and nothing appears next to it.

Writers: restore (kernel and plain workspaces), checkout and reset of a
plain workspace (which cache restore and ``init --from`` use too), and the
import extractor (a layer tar whose directory is swapped in the staging
tree). Without :mod:`snapws.beneath` these runs deleted, replaced, chmodded
and chowned the victim (issue 15)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backends.conftest import backend_factory
from conftest import Workspace, WorkspaceFactory
from helpers import File
from oci.ocitools import d, f, tar_of

from snapws.config import Config
from snapws.ids import SnapshotId
from snapws.store.store import Store

pytestmark = pytest.mark.root

RUNS = 100
BUDGET_S = 20.0  # per writer: stop early on a slow machine
VICTIM_MTIME_NS = 1_111_111_111_000_000_000

#: Flips each path matching argv[1] (a glob) between a directory and a
#: symlink to argv[2] until argv[3] exists; prints the number of flips.
SWAPPER = r"""
import glob, os, random, shutil, sys, time
pattern, outside, stop = sys.argv[1:4]
flips = 0
while not os.path.exists(stop):
    for target in glob.glob(pattern):
        try:
            if os.path.islink(target):
                os.unlink(target)
                os.mkdir(target)
            else:
                if os.path.isdir(target):
                    shutil.rmtree(target)  # fd-based: never follows a link
                else:
                    os.unlink(target)
                os.symlink(outside, target)
            flips += 1
            if flips == 1:
                print("ready", flush=True)
        except OSError:
            pass
        time.sleep(random.random() * 0.001)  # hold each state a little
if not flips:
    print("ready")
print(flips)
"""

SNAPSHOT_SPEC = {
    "conf": {
        "app.txt": File("from the snapshot\n", mode=0o6777, owner=(4242, 4242)),
        "other.txt": File("other\n", mode=0o4755, owner=(4242, 4242)),
    },
    "top.txt": "top\n",
}


def config() -> Config:
    return Config(author="race <race@example.test>", lock_timeout=30)


def make_victim(tmp_path: Path) -> Path:
    outside = tmp_path / "victim-dir"
    outside.mkdir()
    victim = outside / "app.txt"
    victim.write_text("victim\n")
    os.chown(victim, 1234, 1234)
    os.chmod(victim, 0o644)
    os.utime(victim, ns=(VICTIM_MTIME_NS, VICTIM_MTIME_NS))
    return outside


def assert_victim_intact(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["app.txt"], "something was created outside"
    victim = outside / "app.txt"
    st = os.lstat(victim)
    assert stat.S_ISREG(st.st_mode)
    assert victim.read_text() == "victim\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 1234, 1234)
    assert st.st_mtime_ns == VICTIM_MTIME_NS
    assert os.listxattr(victim) == []


def race(pattern: Path, outside: Path, writer: Callable[[int], None]) -> tuple[int, int, int]:
    """Run ``writer(n)`` up to RUNS times while a process flips ``pattern``;
    returns (runs, refusals or errors, flips)."""
    stop = outside.parent / f".stop-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(pattern), str(outside), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    runs = failed = 0
    try:
        assert proc.stdout is not None
        if "*" not in str(pattern):  # a glob may match only once the writer runs
            assert proc.stdout.readline() == "ready\n"  # flipping already
        start = time.monotonic()
        for n in range(RUNS):
            runs += 1
            try:
                writer(n)
            except Exception as e:  # refused (UnsafePathError) or lost the race
                failed += 1
                if os.environ.get("RACE_DEBUG"):
                    print(f"run {n}: {type(e).__name__}: {e}", file=sys.stderr)
            if time.monotonic() - start > BUDGET_S:
                break
    finally:
        stop.touch()
        out, _ = proc.communicate(timeout=60)
        stop.unlink()
    return runs, failed, int(out.split()[-1])


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    out = make_victim(tmp_path)
    yield out
    assert_victim_intact(out)


def _kernel(make_workspace: WorkspaceFactory) -> Workspace:
    return make_workspace(spec=SNAPSHOT_SPEC)


def _plain(mount_guard: Path) -> Workspace:
    return backend_factory(mount_guard)("plain", spec=SNAPSHOT_SPEC)


def _fix_conf(ws: Workspace) -> None:
    """After the race: ``conf`` a directory again (never through a link)."""
    conf = ws.path / "conf"
    if conf.is_symlink():
        conf.unlink()


@pytest.mark.parametrize("backend", ["kernel", "plain"])
def test_restore_never_writes_through_a_swapped_symlink(
    backend: str, make_workspace: WorkspaceFactory, mount_guard: Path, outside: Path
) -> None:
    from snapws.ops.session import open_session
    from snapws.ops.worktree.restore import restore

    ws = _kernel(make_workspace) if backend == "kernel" else _plain(mount_guard)
    sid = SnapshotId(ws.head())

    def write(_n: int) -> None:
        with open_session(ws.path, config(), ws.store) as s:
            restore(s, sid, [b"conf/app.txt"])

    runs, _failed, flips = race(ws.path / "conf", outside, write)
    assert runs >= 5 and flips >= 10, (runs, flips)
    _fix_conf(ws)
    write(0)  # without the race it works
    assert (ws.path / "conf" / "app.txt").read_text() == "from the snapshot\n"
    assert_victim_intact(outside)


@pytest.mark.parametrize("verb", ["checkout", "reset"])
def test_plain_checkout_and_reset_never_write_through_a_swapped_symlink(
    verb: str, mount_guard: Path, outside: Path
) -> None:
    from snapws.ops.session import open_session
    from snapws.ops.worktree.checkout import checkout, reset

    ws = _plain(mount_guard)
    c0 = ws.head()
    (ws.path / "conf" / "app.txt").write_text("second\n")
    (ws.path / "conf" / "new.txt").write_text("new\n")
    c1 = ws.commit("c1")
    targets = [SnapshotId(c0), SnapshotId(c1)]

    def write(n: int) -> None:
        with open_session(ws.path, config(), ws.store) as s:
            if verb == "checkout":
                checkout(s, targets[n % 2], None, discard=True)
            else:
                reset(s, targets[n % 2], hard=True)

    runs, _failed, flips = race(ws.path / "conf", outside, write)
    assert runs >= 5 and flips >= 10, (runs, flips)
    _fix_conf(ws)
    write(0)
    assert (ws.path / "conf" / "app.txt").read_text() == "from the snapshot\n"
    assert_victim_intact(outside)


def test_import_extraction_never_writes_through_a_swapped_symlink(
    tmp_path: Path, outside: Path
) -> None:
    from snapws.oci import tarformat as tf
    from snapws.oci.extractedlayer import extract_layer

    store = Store.create(tmp_path / "store")
    members = [d("conf/", mode=0o755)]
    members += [f(f"conf/f{i:03}", b"x" * 100, mode=0o6777, uid=4242) for i in range(150)]
    members += [f("conf/app.txt", b"from the image\n", mode=0o6777, uid=4242, gid=4242)]
    data = tar_of(members)

    def write(_n: int) -> None:
        layer = extract_layer(store, tf.TarReader(io.BytesIO(data).read, "race"), [])
        store.discard(layer.staging)

    pattern = tmp_path / "store" / "staging" / "import-*" / "tree" / "conf"
    runs, _failed, flips = race(pattern, outside, write)
    assert runs >= 5, runs
    assert flips > 0
    write(0)
    assert_victim_intact(outside)
