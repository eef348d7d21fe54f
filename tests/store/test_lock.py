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
