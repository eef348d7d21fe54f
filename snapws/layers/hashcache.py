"""Content hashes of files, remembered by path for one process and by inode
across processes, as git's index remembers what it hashed.

Within a process a path hashed once is not hashed again (layer trees never
change once published; an upperdir is hashed while frozen when it matters).
Across processes (a workspace's ``hashes`` file, :meth:`HashCache.load` and
:meth:`HashCache.save`) a hash is trusted for a file whose device, inode,
size, mtime and ctime are those it had when it was hashed: a write changes
the ctime, and a file replaced by another has another inode. A hash is kept
only for a file whose ctime was at least :data:`RACY_NS` old when it was
hashed, so that a write within the same timestamp tick as the previous one
cannot go unseen (git's "racy clean" entries). The file is a cache: when it
is missing, torn, or from another version, everything is hashed again.

Status and diff in a held workspace compare the same changed files at every
call; with this, they read each of them once, not once per command.

Only commands that change nothing trust a stamp (``trust``): a write
through a shared writable mapping can change a file without moving its
ctime until writeback, and a commit or checkout that took such a file for
unchanged would prune or overwrite it. They still record what they hash.
"""

from __future__ import annotations

import os
import struct
import time
from contextlib import suppress
from pathlib import Path

from snapws.deeppath import lstat
from snapws.ids import ContentHash
from snapws.layers.hashing import hash_file

#: A hash is remembered across processes only for a file last changed this
#: long (ns) before it was hashed.
RACY_NS = 2_000_000_000
#: The most entries the file keeps (those used last first).
MAX_ENTRIES = 50_000
_MAGIC = b"snapws-hashes-1\n"
_RECORD = struct.Struct("<QQqqq16s")  # dev, inode, size, mtime_ns, ctime_ns, XXH3-128

Stamp = tuple[int, int, int, bytes]  # size, mtime_ns, ctime_ns, the hash's 16 bytes


class HashCache:
    """Content hashes of files, keyed by absolute path for this process and
    by (device, inode) with the file's stamp across processes."""

    def __init__(self, trust: bool = False) -> None:
        self._trust = trust  # use the stamps of earlier processes (read-only commands)
        self._cache: dict[bytes, ContentHash] = {}
        self._known: dict[tuple[int, int], Stamp] = {}  # loaded or learnt
        self._used: dict[tuple[int, int], Stamp] = {}  # this process's, kept first
        self._learnt = False

    @property
    def trusted(self) -> bool:
        """Whether this process trusts stamps of earlier ones (it changes
        nothing; see the module's docstring)."""
        return self._trust

    def peek(self, abspath: bytes) -> ContentHash | None:
        """The cached hash, or None if the file was not hashed yet."""
        return self._cache.get(abspath)

    def put(self, abspath: bytes, digest: ContentHash) -> None:
        """Record a known hash (from a trusted manifest)."""
        self._cache[abspath] = digest

    def get(self, abspath: bytes) -> ContentHash:
        """The hash of the file at ``abspath``: remembered, or read and hashed.
        Raises OSError."""
        h = self._cache.get(abspath)
        if h is not None:
            return h
        st = lstat(abspath)
        h = self.known_for(abspath, st)
        if h is None:
            hashed_at = time.time_ns()
            h = hash_file(abspath)
            self.learn(abspath, st, h, hashed_at)
        return h

    def known_for(self, abspath: bytes, st: os.stat_result) -> ContentHash | None:
        """The hash of the file at ``abspath`` whose ``lstat`` is ``st``, if
        this process hashed it or an earlier one hashed the same inode with
        the same size, mtime and ctime; else None."""
        h = self._cache.get(abspath)
        if h is not None:
            return h
        key = (st.st_dev, st.st_ino)
        stamp = self._known.get(key) if self._trust else None
        if stamp is None or stamp[:3] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return None
        self._used[key] = stamp
        h = self._cache[abspath] = ContentHash(stamp[3].hex())
        return h

    def learn(
        self, abspath: bytes, st: os.stat_result, digest: ContentHash, hashed_at: int
    ) -> None:
        """Remember that the file at ``abspath``, of ``lstat`` ``st`` (taken
        before it was read), hashed to ``digest``, read from ``hashed_at``
        (``time.time_ns()``) on; across processes only if it had not changed
        for :data:`RACY_NS` by then."""
        self._cache[abspath] = digest
        if max(st.st_ctime_ns, st.st_mtime_ns) < hashed_at - RACY_NS:
            key = (st.st_dev, st.st_ino)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, bytes.fromhex(digest.hex))
            self._known[key] = self._used[key] = stamp
            self._learnt = True

    # ---- across processes --------------------------------------------------------

    @classmethod
    def load(cls, path: Path, trust: bool = True) -> HashCache:
        """The cache saved at ``path``; an empty one if there is none or it
        is unreadable (never raises). ``trust``: its stamps may stand for a
        file's hash (read-only commands only, see the module docstring)."""
        cache = cls(trust)
        drop_old_copies(path)
        try:
            data = path.read_bytes()
        except OSError:
            return cache
        body = data[len(_MAGIC) :]
        if not data.startswith(_MAGIC) or len(body) % _RECORD.size:
            return cache
        for dev, ino, size, mtime, ctime, digest in _RECORD.iter_unpack(body):
            cache._known[(dev, ino)] = (size, mtime, ctime, digest)
        return cache

    def save(self, path: Path) -> None:
        """Write the cache to ``path`` (atomically, not synced: it is a cache)
        if this process learnt anything; the entries it used first, at most
        :data:`MAX_ENTRIES`. Never raises (a read-only store keeps none)."""
        if not self._learnt:
            return
        entries = dict(self._used)
        for key, stamp in self._known.items():
            if len(entries) >= MAX_ENTRIES:
                break
            entries.setdefault(key, stamp)
        body = b"".join(
            _RECORD.pack(dev, ino, size, mtime, ctime, digest)
            for (dev, ino), (size, mtime, ctime, digest) in entries.items()
        )
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(_MAGIC + body)
            os.replace(tmp, path)
        except OSError:
            with suppress(OSError):
                tmp.unlink()
        drop_old_copies(path)


def drop_old_copies(path: Path) -> None:
    """Remove temporary copies that a killed :meth:`HashCache.save` left
    beside ``path``: those of a process that is gone, or a minute old (not
    one another process is writing)."""
    prefix = f".{path.name}.tmp-"
    with suppress(OSError):
        for entry in os.scandir(path.parent):
            if not entry.name.startswith(prefix):
                continue
            pid = entry.name[len(prefix) :]
            with suppress(OSError):
                gone = not pid.isdigit() or not os.path.exists(f"/proc/{pid}")
                if gone or entry.stat(follow_symlinks=False).st_mtime < time.time() - 60:
                    os.unlink(entry.path)
