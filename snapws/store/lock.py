"""The store lock: flock(2) on ``<store>/lock``, shared for readers,
exclusive for writers, with a timeout. Released by the kernel if the process
dies, so a crash never leaves a stale lock.

A reader needs no write access: on a read-only store (a read-only bind
mount, a store the user cannot write) the shared lock is taken on a
read-only descriptor, and flock(2) works on it. It still excludes writers
working through another, writable path to the same store (one inode)."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from snapws.errors import StoreLockedError, permission_denied


class StoreLock:
    """Context manager: ``with StoreLock(path, exclusive=True, timeout=60):``."""

    def __init__(self, path: Path, exclusive: bool, timeout: float) -> None:
        self.path = path
        self.exclusive = exclusive
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds. Raises
        StoreLockedError on timeout; StorePermissionError when this user may
        not open the lock file; OSError when it cannot be opened otherwise (a
        writer on a read-only store). A reader on a read-only store
        whose lock file was never made (no snapws command ever wrote it)
        proceeds without a lock: nothing writes that store."""
        fd = self._open()
        if fd is None:
            return
        op = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreLockedError(
                        f"the store is locked by another snapws command ({self.path}); "
                        f"gave up after {self.timeout:g} s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        self._fd = fd

    def _open(self) -> int | None:
        """The lock file's descriptor. Raises StorePermissionError when this
        user may not open it (another user's store)."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and self.exclusive:
                raise permission_denied(e, self.path.parent) from e
            if self.exclusive or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise permission_denied(e, self.path.parent) from e

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
