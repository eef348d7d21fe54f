"""Ctrl-C (SIGINT), SIGTERM and SIGHUP during init, commit, checkout and
reset, through the real CLI: before the journal, the command aborts with
nothing changed and the workspace writable; once the journal is written
(the point of no return), the signal waits for the operation to be
finished, then the command exits 128+signal saying so, leaving the
workspace writable and no journal behind.

The signal is sent by the snapws process to itself at a named crash step
(:mod:`snapws.crash`): a launcher replaces ``crashpoint`` before snapws's
modules are imported, so the moment is exact, not a race."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from .conftest import Workspace, is_mounted_rw, mount_flags
from .verify import assert_store_ok

pytestmark = pytest.mark.root

#: python -c: send signal argv[2] to this process when step argv[1] is
#: reached, then run snapws with the rest of argv.
LAUNCHER = """
import os, signal, sys
import snapws.crash as crash

step, signum = sys.argv[1], int(sys.argv[2])
real = crash.crashpoint

def signal_at(name, count=None):
    if name == step:
        os.kill(os.getpid(), signum)
    real(name, count)

crash.crashpoint = signal_at
sys.argv = ["snapws", *sys.argv[3:]]
from snapws.cli.main import main
main()
"""

#: Files changed before the commit: enough that finishing takes a while.
CHANGED = 600


def signalled(
    ws: Workspace, step: str, *args: str, signum: int = signal.SIGINT
) -> subprocess.CompletedProcess[str]:
    """Run ``snapws -C WS ARGS``, which signals itself at ``step``."""
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, step, str(int(signum)), "-C", str(ws.path), *args],
        env=ws.env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ws.root,
    )


def many_changes(ws: Workspace) -> None:
    for i in range(CHANGED):
        (ws.path / "many" / f"f{i:04d}.txt").write_text(f"file {i}\n")
    (ws.path / "a.txt").write_text("changed\n")


@pytest.fixture
def started(ws: Workspace) -> Workspace:
    ws.init({"a.txt": "alpha\n", "many": {}, "d": {"b.txt": "bravo\n"}})
    many_changes(ws)
    return ws


def assert_left_clean(ws: Workspace) -> None:
    """No journal, the store verifies, the workspace mounted read-write."""
    assert not (ws.store_path / "journal.json").exists(), "a journal was left pending"
    assert is_mounted_rw(ws.path), f"not mounted read-write: {mount_flags(ws.path)}"
    assert_store_ok(ws.store_path)


@pytest.mark.parametrize("step", ["commit:journaled", "commit:layer-published", "commit:ref-moved"])
def test_sigint_after_the_journal_finishes_the_commit(started: Workspace, step: str) -> None:
    ws = started
    before = ws.state().head
    proc = signalled(ws, step, "commit", "-m", "many")
    assert proc.returncode == 130, proc.stderr
    assert "snapws: interrupted (the commit was finished first)" in proc.stderr
    assert_left_clean(ws)  # read before any other command could finish it
    state = ws.state()
    assert state.head != before
    assert ws.store().read_snapshot(state.head).message == "many"
    assert ws.status() == []
    (ws.path / "after.txt").write_text("writable\n")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_after_the_journal_wait_too(started: Workspace, signum: int) -> None:
    ws = started
    before = ws.state().head
    proc = signalled(ws, "commit:journaled", "commit", "-m", "many", signum=signum)
    assert proc.returncode == 128 + signum, proc.stderr
    assert "the commit was finished first" in proc.stderr
    assert_left_clean(ws)
    assert ws.state().head != before


@pytest.mark.parametrize("step", ["commit:frozen", "commit:staged"])
def test_sigint_before_the_journal_commits_nothing(started: Workspace, step: str) -> None:
    ws = started
    before = ws.state().head
    proc = signalled(ws, step, "commit", "-m", "many")
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "snapws: interrupted"
    assert_left_clean(ws)
    assert ws.state().head == before
    assert len(ws.status()) == CHANGED + 1
    (ws.path / "after.txt").write_text("writable\n")


@pytest.mark.parametrize("kind", ["checkout", "reset"])
def test_sigint_after_the_journal_finishes_the_switch(started: Workspace, kind: str) -> None:
    ws = started
    first = ws.state().head
    second = ws.commit("many")
    args = ["checkout", first.hex] if kind == "checkout" else ["reset", "--hard", first.hex]
    proc = signalled(ws, "checkout:journaled", *args)
    assert proc.returncode == 130, proc.stderr
    assert f"snapws: interrupted (the {kind} was finished first)" in proc.stderr
    assert_left_clean(ws)
    assert ws.state().head == first != second
    assert not (ws.path / "many" / "f0000.txt").exists()
    assert (ws.path / "a.txt").read_text() == "alpha\n"


def test_sigint_after_the_journal_finishes_init(ws: Workspace) -> None:
    ws.gen({"a.txt": "alpha\n", "many": {f"f{i}": f"{i}\n" for i in range(CHANGED)}})
    proc = signalled(ws, "init:layer-published", "init")
    assert proc.returncode == 130, proc.stderr
    assert "snapws: interrupted (the init was finished first)" in proc.stderr
    assert_left_clean(ws)
    assert (ws.path / "many" / "f7").read_text() == "7\n"
    assert ws.status() == []
