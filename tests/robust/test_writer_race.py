"""A program that writes into the workspace while commit, checkout, reset or
flatten runs loses nothing (issue 13, item 1).

A writer process creates small files in a loop (open, write, close: it never
holds a file open long, so the freeze is not refused) by absolute path, in
the workspace's root and in a subdirectory, and logs each file whose close
returned success. Meanwhile the operations run again and again. Afterwards:

* every file the writer wrote successfully is in the working tree, with its
  content (the operations here keep uncommitted work: commit, checkout -b of
  HEAD, reset to HEAD keeping changes, flatten);
* the directory under the mount holds nothing (no write ever landed there);
* the writer never saw ENOENT (the path always showed a mount); EROFS is
  allowed, during the freeze only.

The fallback for kernels without MOVE_MOUNT_BENEATH (detach, mount, move
what was written below into the new mount) is raced the same way, through
the backend directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli
from helpers import mounts_under

from snapws.backends import get_backend
from snapws.backends.upperdir import make_upper, new_dir_names, plan_mount, top_root
from snapws.errors import ExitCode, WorkspaceBusyError
from snapws.mounts import fuse
from snapws.mounts.mounter import BeneathUnsupportedError
from snapws.mounts.plan import MountPlan
from snapws.store.store import Store

pytestmark = pytest.mark.root

#: rounds of (commit, checkout -b, reset, flatten) per backend; more with SNAPWS_RACE_ROUNDS
ROUNDS = int(os.environ.get("SNAPWS_RACE_ROUNDS", "4"))

#: the writer's bounds: it never outlives its test and never fills a disk
WRITER_MAX_FILES = 20_000
WRITER_PAUSE = 0.0005  # seconds between files: at most ~2,000 files a second

WRITER = r"""
import errno, json, os, select, sys, time
root, log, most, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
parent = os.getppid()
seen = {}
n = 0
with open(log, "w") as out:
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        if os.getppid() != parent:
            break  # the test is gone: never write on as an orphan
        if n >= most:
            time.sleep(0.05)
            continue
        rel = ("d/" if n % 2 else "") + f"w{n:06d}"
        n += 1
        try:
            fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, rel.encode())
            finally:
                os.close(fd)
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            seen[name] = seen.get(name, 0) + 1
            time.sleep(pause)  # (a refused write counts too: no burst burns the budget)
            continue
        out.write(f"{time.monotonic()} {rel}\n")
        out.flush()
        time.sleep(pause)
print(json.dumps(seen), flush=True)
"""


@contextmanager
def writer(root: Path, log: Path) -> Iterator[dict[str, int]]:
    """Run the writer on ``root`` for the ``with`` block; yields the errno
    counts it reports when stopped."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(root),
            str(log),
            str(WRITER_MAX_FILES),
            str(WRITER_PAUSE),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    errors: dict[str, int] = {}
    try:
        yield errors
    finally:
        proc.stdin.write("stop\n")
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(timeout=30)
        errors.update(json.loads(out.strip().splitlines()[-1]))


@contextmanager
def underlying(path: Path) -> Iterator[Path]:
    """The directory under the mount on ``path``, seen through a
    non-recursive bind mount of its parent (which carries no submounts)."""
    view = Path(tempfile.mkdtemp(prefix="snapws-below-"))
    subprocess.run(["mount", "--bind", str(path.parent), str(view)], check=True)
    try:
        yield view / path.name
    finally:
        subprocess.run(["umount", "-l", str(view)], check=True)
        view.rmdir()


def written_files(log: Path, after: float = 0.0) -> list[str]:
    """The files the writer logged as written, those finished after ``after``
    (a time.monotonic() value, the same clock in every process)."""
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    return [rel for when, rel in lines if float(when) > after]


def assert_below_empty(ws: Path) -> None:
    with underlying(ws) as below:
        assert os.listdir(below) == [], "writes landed in the directory under the mount"


def assert_nothing_lost(ws: Path, log: Path, after: float = 0.0) -> int:
    written = written_files(log, after)
    assert written, "the writer wrote nothing: the race did not happen"
    missing = [rel for rel in written if not (ws / rel).is_file()]
    assert not missing, f"{len(missing)} of {len(written)} written files lost: {missing[:10]}"
    wrong = [rel for rel in written if (ws / rel).read_text() != rel]
    assert not wrong, f"files with other content: {wrong[:10]}"
    assert_below_empty(ws)
    return len(written)


def run_until(ws: Path, outside: Path, *args: str, retry_on: tuple[int, ...]) -> None:
    """``snapws -C ws ARGS``, retried while it exits with one of ``retry_on``
    (busy: the writer had a file open at the freeze; uncommitted changes: it
    wrote before a checkout, which must then refuse)."""
    for _ in range(50):
        proc = run_cli("-C", ws, *args, cwd=outside, check=False)
        if proc.returncode == 0:
            return
        assert proc.returncode in retry_on, proc.stderr
        if proc.returncode == ExitCode.UNCOMMITTED_CHANGES:
            run_until(ws, outside, "commit", "-m", "catch up", retry_on=(ExitCode.BUSY,))
        time.sleep(0.01)
    raise AssertionError(f"snapws {' '.join(args)} never got through")


def make_workspace(root: Path, backend: str) -> tuple[Path, Path]:
    if backend == "fuse" and fuse.find_program() is None:
        pytest.skip("fuse-overlayfs is not installed (CI installs it)")
    ws, outside = root / "ws", root / "outside"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "base").write_text("base\n")
    outside.mkdir()
    run_cli("init", "--backend", backend, ws, cwd=outside)
    return ws, outside


BUSY = (ExitCode.BUSY,)


@pytest.mark.parametrize("backend", ["kernel", "fuse"])
def test_writer_during_commit_reset_flatten_loses_nothing(mount_guard: Path, backend: str) -> None:
    ws, outside = make_workspace(mount_guard, backend)
    log = mount_guard / "written"
    with writer(ws, log) as errors:
        for n in range(ROUNDS):
            run_until(ws, outside, "commit", "-m", f"round {n}", retry_on=BUSY)
            run_until(ws, outside, "reset", "HEAD", retry_on=BUSY)
            run_until(ws, outside, "commit", "-m", f"again {n}", retry_on=BUSY)
            run_until(ws, outside, "flatten", retry_on=BUSY)
    count = assert_nothing_lost(ws, log)
    assert errors.get("ENOENT", 0) == 0, errors
    assert set(errors) <= {"EROFS"}, errors
    # what was written is really there: one more commit leaves a clean tree
    run_until(ws, outside, "commit", "-m", "rest", retry_on=BUSY)
    assert run_cli("-C", ws, "status", "--porcelain", cwd=outside).stdout == ""
    assert count > 0 and [t for p, t in mounts_under(ws) if p == str(ws)]


@pytest.mark.parametrize("backend", ["kernel", "fuse"])
def test_writer_during_checkout_never_writes_below_the_mount(
    mount_guard: Path, backend: str
) -> None:
    """checkout --discard throws uncommitted files away by design; what must
    hold: nothing lands under the mount, no ENOENT, and every file written
    after a checkout returned is in the working tree."""
    ws, outside = make_workspace(mount_guard, backend)
    run_cli("-C", ws, "branch", "other", cwd=outside)
    log = mount_guard / "written"
    ended = 0.0
    with writer(ws, log) as errors:
        for _ in range(ROUNDS):
            for branch in ("other", "main"):
                run_until(ws, outside, "checkout", "--discard", branch, retry_on=BUSY)
                ended = time.monotonic()
                assert_below_empty(ws)
        time.sleep(0.2)
    assert_nothing_lost(ws, log, after=ended)
    assert errors.get("ENOENT", 0) == 0, errors
    assert set(errors) <= {"EROFS"}, errors


def test_fallback_without_mount_beneath_moves_what_was_written_below(
    mount_guard: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel cannot mount beneath, ``replace`` detaches, mounts,
    and moves into the new mount what a writer put in the bare directory
    in between: nothing is lost or hidden."""
    ws, outside = mount_guard / "ws", mount_guard / "outside"
    (ws / "d").mkdir(parents=True)
    outside.mkdir()
    run_cli("--store", mount_guard / ".snapws", "init", "--backend", "kernel", ws, cwd=outside)
    store = Store.open(mount_guard / ".snapws")
    (state,) = store.workspaces()
    backend = get_backend("kernel")

    def refuse(plan: MountPlan) -> None:
        raise BeneathUnsupportedError("refused for the test")

    monkeypatch.setattr(backend, "mount_beneath", refuse)
    log = mount_guard / "written"
    moved = 0
    with writer(ws, log) as errors:
        for _ in range(30):
            # a remount onto the same chain with a new work dir, as flatten does
            state = replace(state, work=new_dir_names()[1])
            make_upper(store, state, top_root(store, state.head))
            store.write_workspace(state)
            with suppress(WorkspaceBusyError):  # the writer had a file open throughout
                moved += backend.replace(plan_mount(store, state), "test")
    assert_nothing_lost(ws, log)
    assert moved > 0, "the writer never wrote into the bare directory: no race happened"
    assert set(errors) <= {"EROFS", "ENOENT"}, errors
