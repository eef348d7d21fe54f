"""snapws.store.lock: flock(2) store lock, shared or exclusive, with a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import ExitCode, StoreLockedError
from snapws.store.lock import StoreLock

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from snapws.store.lock import StoreLock
    lock = StoreLock(Path(sys.argv[1]), exclusive=sys.argv[2] == "ex", timeout=10)
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold until stdin closes (or we are killed)
    lock.release()
    """
)


class Holders:
    """Child processes holding the lock; all stopped at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def hold(self, path: Path, exclusive: bool) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), "ex" if exclusive else "sh"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        return proc

    def release(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def holders() -> Iterator[Holders]:
    h = Holders()
    try:
        yield h
    finally:
        h.stop_all()


@pytest.fixture
def lockfile(tmp_path: Path) -> Path:
    return tmp_path / "lock"


def test_lock_file_is_created(lockfile: Path) -> None:
    with StoreLock(lockfile, exclusive=True, timeout=1) as lock:
        assert lockfile.exists()
        assert lock._fd is not None
    assert lock._fd is None
    lock.release()  # releasing twice is harmless


def test_shared_locks_coexist(lockfile: Path, holders: Holders) -> None:
    holders.hold(lockfile, exclusive=False)
    holders.hold(lockfile, exclusive=False)
    with StoreLock(lockfile, exclusive=False, timeout=0.3), StoreLock(lockfile, False, 0.3):
        pass
    with pytest.raises(StoreLockedError):
        StoreLock(lockfile, exclusive=True, timeout=0.3).acquire()


def test_exclusive_excludes(lockfile: Path, holders: Holders) -> None:
    proc = holders.hold(lockfile, exclusive=True)
    for exclusive in (True, False):
        with pytest.raises(StoreLockedError) as info:
            StoreLock(lockfile, exclusive=exclusive, timeout=0.3).acquire()
        assert info.value.exit_code is ExitCode.LOCKED
        assert info.value.exit_code == 7
        assert str(lockfile) in str(info.value)
        assert "0.3 s" in str(info.value)
        assert info.value.hint
    holders.release(proc)
    with StoreLock(lockfile, exclusive=True, timeout=10):
        pass


def test_failed_acquire_leaks_no_descriptor(lockfile: Path, holders: Holders) -> None:
    holders.hold(lockfile, exclusive=True)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(StoreLockedError):
            StoreLock(lockfile, exclusive=True, timeout=0).acquire()
    assert len(os.listdir("/proc/self/fd")) == before


def test_exclusive_in_this_process_blocks_a_child(lockfile: Path) -> None:
    with StoreLock(lockfile, exclusive=True, timeout=1):
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from snapws.errors import StoreLockedError\n"
            "from snapws.store.lock import StoreLock\n"
            "try:\n"
            "    StoreLock(Path(sys.argv[1]), exclusive=False, timeout=0.3).acquire()\n"
            "except StoreLockedError as e:\n"
            "    sys.exit(int(e.exit_code))\n"
        )
        out = subprocess.run([sys.executable, "-c", code, str(lockfile)], check=False)
    assert out.returncode == 7


def test_lock_released_when_holder_is_killed(lockfile: Path, holders: Holders) -> None:
    proc = holders.hold(lockfile, exclusive=True)
    with pytest.raises(StoreLockedError):
        StoreLock(lockfile, exclusive=True, timeout=0.3).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # no stale lock: the kernel dropped it with the process
    with StoreLock(lockfile, exclusive=True, timeout=30):
        pass


def test_a_waiter_is_told_once_who_holds_the_lock(
    lockfile: Path, holders: Holders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a second of waiting the notice names the exclusive holder
    (its pid and command, from the record it wrote in the lock file), and
    so does the error at the timeout."""
    from snapws.store import lock as lockmod

    proc = holders.hold(lockfile, exclusive=True)
    holder = lockmod.read_holder(lockfile)
    assert holder is not None and holder.pid == proc.pid
    assert holder.command == f"snapws {lockfile} ex"  # (the holder's argv after -c)
    told: list[str] = []
    monkeypatch.setattr(lockmod, "NOTICE_AFTER", 0.0)
    lockmod.set_wait_notice(told.append)
    try:
        with pytest.raises(StoreLockedError) as e:
            StoreLock(lockfile, exclusive=False, timeout=0.5).acquire()
    finally:
        lockmod.set_wait_notice(None)
    assert told == [f"waiting for the store lock (held by pid {proc.pid}: snapws {lockfile} ex)"]
    assert e.value.message.startswith(
        f"the store is locked by pid {proc.pid}: snapws {lockfile} ex ({lockfile})"
    )
    holders.release(proc)
    assert lockmod.read_holder(lockfile) is None  # cleared before it was let go
    assert lockfile.read_bytes().strip() == b""


def test_a_stale_or_damaged_holder_record_is_ignored(lockfile: Path) -> None:
    from snapws.store import lock as lockmod

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    lockfile.write_text(f'{{"pid": {pid}, "start": "1", "command": "snapws commit"}}\n')
    assert lockmod.read_holder(lockfile) is None
    lockfile.write_text('{"pid": 1, "sta')
    assert lockmod.read_holder(lockfile) is None
    with pytest.raises(StoreLockedError) as e, StoreLock(lockfile, True, 1):
        StoreLock(lockfile, exclusive=True, timeout=0.05).acquire()  # (same process: own record)
    assert "locked by another snapws command" in e.value.message
