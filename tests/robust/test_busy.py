"""A workspace in use: a process holding a file open for writing makes
commit and checkout refuse (exit 6, naming the process) and change nothing;
a process whose working directory is inside does not block them, and sees
the new tree where it is (the change goes through the live mount)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from snapws.errors import ExitCode

from .conftest import Workspace, is_mounted_rw
from .verify import assert_store_ok

pytestmark = pytest.mark.root

BUSY = int(ExitCode.BUSY)
BASE = {"a.txt": "alpha\n", "log.txt": "line 1\n", "docs": {"readme.md": "readme\n"}}

HOLD_OPEN = """\
import sys
f = open(sys.argv[1], sys.argv[2])
f.write(sys.argv[3])
f.flush()
print('ready', flush=True)
sys.stdin.read()
f.close()
"""

SIT_INSIDE = """\
import json, os, sys
print('ready', flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(' ')
    if cmd == 'ls':
        print(json.dumps(sorted(os.listdir('.'))), flush=True)
    elif cmd == 'cat':
        with open(arg) as f:
            print(json.dumps(f.read()), flush=True)
    elif cmd == 'write':
        try:
            with open(arg, 'w') as f:
                f.write('x')
            print(json.dumps('written'), flush=True)
        except OSError as e:
            print(json.dumps(e.strerror), flush=True)
    elif cmd == 'cd':
        os.chdir(arg)
        print(json.dumps('ok'), flush=True)
"""


def ask(proc: subprocess.Popen[str], line: str) -> object:
    """Send one command to a SIT_INSIDE child; its JSON answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def snapshot_of_state(ws: Workspace) -> tuple[list[str], list[str], object, object]:
    """What must not change when a command is refused: status, log, the
    workspace record and the tree."""
    return ws.status(), ws.log_ids(), ws.state(), ws.tree()


def assert_refused_cleanly(
    ws: Workspace,
    proc: subprocess.CompletedProcess[str],
    pid: int,
    verb: str,
    before: tuple[list[str], list[str], object, object],
) -> None:
    assert proc.returncode == BUSY, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert str(pid) in err, err
    assert comm(pid) in err, err
    assert f"cannot {verb}" in err, err
    assert is_mounted_rw(ws.path), "the refused command left the workspace read-only"
    assert snapshot_of_state(ws) == before
    assert_store_ok(ws.store_path)


# --------------------------------------------------------------------------- writers


APPENDER = """\
import sys
f = open(sys.argv[1], 'a')
print('ready', flush=True)
for line in sys.stdin:
    f.write(line)
    f.flush()
    print('written', flush=True)
f.close()
"""


def append(proc: subprocess.Popen[str], line: str) -> None:
    """Make an APPENDER child write ``line`` (and a newline) and flush it."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "written\n"


def test_commit_goes_through_the_live_mount_while_a_file_is_open_for_writing(
    ws: Workspace,
) -> None:
    """A server's log open for writing does not block a commit: it copies
    the changes through the live mount (held), the log as it was then; the
    writer goes on writing where it was, and nothing it wrote is lost."""
    ws.init(BASE)
    first = ws.state().head.hex
    (ws.path / "b.txt").write_text("bravo\n")
    writer = ws.spawn(APPENDER, str(ws.path / "log.txt"))
    append(writer, "line 2")

    sid = ws.commit("while writing")
    state = ws.state()
    assert state.head.hex == sid and state.base is not None and state.base.hex == first
    assert is_mounted_rw(ws.path), "a live commit left the workspace read-only"
    recorded = ws.run("diff", "-p", first, sid).stdout
    assert "+bravo" in recorded and "+line 2" in recorded, recorded
    assert ws.status() == []

    append(writer, "line 3")  # the same open file, after the commit
    ws.stop(writer)
    assert (ws.path / "log.txt").read_text() == "line 1\nline 2\nline 3\n"
    assert ws.status() == [" M log.txt"]
    ws.commit("the rest of the log")
    assert ws.status() == []
    assert_store_ok(ws.store_path)


def test_checkout_refused_while_a_file_is_open_for_writing(ws: Workspace) -> None:
    ws.init(BASE)
    first = ws.state().head.hex
    (ws.path / "a.txt").write_text("alpha 2\n")
    ws.commit("second")
    # opened for appending, nothing written: a copy-up that is not a change,
    # so checkout gets past its uncommitted-changes check and must find the writer
    child = ws.spawn(HOLD_OPEN, str(ws.path / "log.txt"), "a", "")
    before = snapshot_of_state(ws)
    assert before[0] == []

    proc = ws.run("checkout", first, check=False)
    assert_refused_cleanly(ws, proc, child.pid, "switch", before)
    proc = ws.run("reset", "--hard", first, check=False)
    assert_refused_cleanly(ws, proc, child.pid, "switch", before)

    ws.stop(child)
    ws.run("checkout", first)
    assert ws.state().head.hex == first
    assert (ws.path / "a.txt").read_text() == "alpha\n"
    assert_store_ok(ws.store_path)


def test_checkout_discard_refused_while_a_file_is_open_for_writing(ws: Workspace) -> None:
    ws.init(BASE)
    ws.run("branch", "other")
    child = ws.spawn(HOLD_OPEN, str(ws.path / "new.txt"), "w", "unsaved\n")
    before = snapshot_of_state(ws)
    assert before[0] == ["?? new.txt"]

    proc = ws.run("checkout", "--discard", "other", check=False)
    assert_refused_cleanly(ws, proc, child.pid, "switch", before)
    assert (ws.path / "new.txt").read_text() == "unsaved\n"

    ws.stop(child)
    ws.run("checkout", "--discard", "other")
    assert ws.status() == []
    assert not (ws.path / "new.txt").exists()
    assert_store_ok(ws.store_path)


# --------------------------------------------------------------------------- cwd inside


def test_commit_not_blocked_by_a_cwd_inside(ws: Workspace) -> None:
    ws.init(BASE)
    child = ws.spawn(SIT_INSIDE, cwd=ws.path / "docs")
    (ws.path / "docs" / "new.md").write_text("new\n")
    assert ask(child, "ls") == ["new.md", "readme.md"]

    sid = ws.commit("with a shell inside")
    assert ws.status() == []
    assert ws.log_ids()[0] == sid
    assert is_mounted_rw(ws.path)
    assert_store_ok(ws.store_path)

    # the child is not stranded: the mount it sits in is the workspace's,
    # writable, showing what a new process sees (the commit went through it)
    (ws.path / "docs" / "later.md").write_text("later\n")
    assert ask(child, "ls") == ["later.md", "new.md", "readme.md"]
    assert ask(child, "write mine.md") == "written"
    assert ws.status() == ["?? docs/later.md", "?? docs/mine.md"]
    ws.stop(child)


def test_checkout_not_blocked_by_a_cwd_inside(ws: Workspace) -> None:
    ws.init(BASE)
    first = ws.state().head.hex
    (ws.path / "docs" / "readme.md").write_text("readme 2\n")
    ws.commit("second")
    child = ws.spawn(SIT_INSIDE, cwd=ws.path / "docs")
    assert ask(child, "cat readme.md") == "readme 2\n"

    ws.run("checkout", first)
    assert ws.state().head.hex == first
    assert (ws.path / "docs" / "readme.md").read_text() == "readme\n"
    assert is_mounted_rw(ws.path)
    assert_store_ok(ws.store_path)
    # the child sees the checked-out tree where it is, without `cd`
    assert ask(child, "cat readme.md") == "readme\n"
    assert ws.status() == []

    # and back, with the child inside again
    ws.run("checkout", "main")
    assert ask(child, "cat readme.md") == "readme 2\n"
    assert ask(child, "write mine.md") == "written"
    assert ws.status() == ["?? docs/mine.md"]
    ws.stop(child)
