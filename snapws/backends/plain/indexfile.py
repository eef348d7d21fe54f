"""The plain backend's index file, ``<store>/workspaces/<id>/index``:
loading it (mapped, not read), writing it atomically through a temp file
whose timestamp is the reference time of the stats a scan records, and
sweeping the temp files a crash left. The file holds
:meth:`snapws.backends.plain.index.Index.encode`'s output.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from pathlib import Path

from snapws.backends.plain.index import Index
from snapws.ids import SnapshotId
from snapws.store.lock import owned_here

INDEX_NAME = "index"
TMP_PREFIX = ".index.tmp-"
#: Added to racy checks when the workspace is on another filesystem than the
#: store (another timestamp granularity): covers up to 2 s granularity.
FOREIGN_SLACK_NS = 2_000_000_000


def index_path(wsdir: Path) -> Path:
    return wsdir / INDEX_NAME


def load_index(wsdir: Path, head: SnapshotId) -> Index | None:
    """The workspace's index if it is readable and describes ``head``. The
    file is mapped, not read: a status touches only the pages it compares.
    One of an earlier form, read by a user who is not root, has its working
    entries forgotten (:meth:`Index.forget_dirty`)."""
    try:
        with open(index_path(wsdir), "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    index = Index.decode(data)
    if index is None or index.head != head:
        return None
    if index.older_form and os.geteuid() != 0:
        index.forget_dirty()  # read before owners were mapped (see owners.py)
    return index


class IndexWriter:
    """One write of the index: the temp file is created first, so that its
    timestamp (the store filesystem's clock, before any stat is read) is the
    reference time of the stats the coming scan records."""

    def __init__(self, wsdir: Path, fd: int, tmp: Path, ref_ns: int, slack_ns: int) -> None:
        self.wsdir = wsdir
        self.fd = fd
        self.tmp = tmp
        self.ref_ns = ref_ns
        self.slack_ns = slack_ns

    @classmethod
    def begin(cls, wsdir: Path, workspace: Path) -> IndexWriter | None:
        """Create the temp file and take the reference time. None when the
        store is not writable here (a read-only status: no refresh), or is
        another user's (root's status in a user's store leaves no file of
        root's there)."""
        if not owned_here(wsdir):
            return None
        tmp = wsdir / f"{TMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        st = os.fstat(fd)
        try:
            same_fs = os.stat(workspace).st_dev == st.st_dev
        except OSError:
            same_fs = False
        ref = max(st.st_mtime_ns, st.st_ctime_ns)
        return cls(wsdir, fd, tmp, ref, 0 if same_fs else FOREIGN_SLACK_NS)

    def commit(self, index: Index, durable: bool = False) -> None:
        """Write ``index`` and rename it into place (fsync'd if ``durable``)."""
        try:
            view = memoryview(index.encode())
            while view:
                view = view[os.write(self.fd, view) :]
            if durable:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
        os.rename(self.tmp, index_path(self.wsdir))
        if durable:
            dfd = os.open(self.wsdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        index.modified = False
        sweep_tmp(self.wsdir)

    def abort(self) -> None:
        """Drop the temp file (nothing is written)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def save_index(
    wsdir: Path, index: Index, writer: IndexWriter | None = None, durable: bool = False
) -> None:
    """Write ``index`` (atomically; fsync'd only if ``durable``: an index
    lost to a power failure, or older than the workspace's HEAD, is rebuilt
    from the manifests, so it is a cache), through ``writer`` if the caller
    scanned (opened before the scan), else keeping the index's own
    reference time. Raises OSError (PermissionError where the store is not
    writable)."""
    if writer is None:
        wsdir.mkdir(parents=True, exist_ok=True)
        writer = IndexWriter.begin(wsdir, wsdir)
        if writer is None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(wsdir))
    writer.commit(index, durable)


def sweep_tmp(wsdir: Path, age_s: float = 600.0) -> None:
    """Remove temp files of index writes that a crash left (older than ``age_s``)."""
    now = time.time()
    try:
        names = os.listdir(wsdir)
    except OSError:
        return
    for name in names:
        if name.startswith(TMP_PREFIX):
            p = wsdir / name
            try:
                if now - p.stat().st_mtime > age_s:
                    p.unlink()
            except OSError:
                continue
