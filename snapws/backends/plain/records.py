"""The compact forms the plain backend's stat cache keeps
(:mod:`snapws.backends.plain.index`): entries as marshal-able tuples, the
five recorded stat fields of a child packed as signed 64-bit integers, a
directory's names NUL-separated, one directory's :class:`ScanRecord`, and a
list of changes as marshal data (a scan record's replayable changes, and
what a forked walk sends back).
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any

from snapws.ids import ContentHash
from snapws.model import ROOT, Change, ChangeType, Entry, Kind

VIRTUAL = b""  # the parent of the root: its only child is b"."
NFIELDS = 5
ZERO_STAT = (0,) * NFIELDS
RECORD_SIZE = 8 * NFIELDS  # bytes of one child's packed stats
ZERO_RECORD = bytes(RECORD_SIZE)
_M64 = 1 << 64
_H63 = 1 << 63

EntryTuple = tuple[Any, ...]
StatKey = tuple[int, ...]
#: Bulk data of the index: bytes, or a zero-copy view of the mapped file.
Blob = bytes | memoryview


# ---- entries and stats in compact form ---------------------------------------


def entry_tuple(e: Entry) -> EntryTuple:
    """The compact, marshal-able form of an entry (path, ``opaque`` and
    ``link`` are not kept: they do not make two trees differ)."""
    return (
        e.kind.value,
        e.mode,
        e.uid,
        e.gid,
        e.mtime_ns,
        e.size,
        e.hash.hex if e.hash is not None else None,
        e.target,
        e.rdev,
        tuple(sorted(e.xattrs.items())),
    )


def tuple_entry(path: bytes, t: EntryTuple) -> Entry:
    """Inverse of :func:`entry_tuple` for the entry at ``path``."""
    kind, mode, uid, gid, mtime_ns, size, digest, target, rdev, xattrs = t
    return Entry(
        path=path,
        kind=Kind(kind),
        mode=mode,
        uid=uid,
        gid=gid,
        mtime_ns=mtime_ns,
        size=size,
        hash=ContentHash(digest) if digest is not None else None,
        target=target,
        rdev=tuple(rdev) if rdev is not None else None,
        xattrs=dict(xattrs),
    )


def _signed(v: int) -> int:
    return ((v + _H63) % _M64) - _H63


def stat_key(st: os.stat_result) -> StatKey:
    """The five recorded stat fields of ``st`` (as :func:`unpack_stats` gives them back)."""
    return (
        _signed(st.st_size),
        _signed(st.st_mtime_ns),
        _signed(st.st_ctime_ns),
        _signed(st.st_ino),
        _signed(st.st_mode),
    )


def pack_stats(vals: list[int]) -> bytes:
    """Pack raw stat values (five per child) as signed 64-bit integers;
    values outside that range (huge inode numbers) wrap around."""
    try:
        return struct.pack(f"{len(vals)}q", *vals)
    except (struct.error, OverflowError):
        return struct.pack(f"{len(vals)}Q", *(v % _M64 for v in vals))


def unpack_stats(blob: Blob) -> list[StatKey]:
    """Inverse of :func:`pack_stats`: one 5-tuple per child."""
    flat = struct.unpack(f"{len(blob) // 8}q", blob)
    return [flat[i : i + NFIELDS] for i in range(0, len(flat), NFIELDS)]


def _plain(t: tuple[Any, ...]) -> tuple[Any, ...]:
    """Blobs as bytes (comparing views item by item is slow)."""
    return tuple(bytes(x) if isinstance(x, memoryview) else x for x in t)


def join_names(names: list[bytes]) -> bytes:
    """The recorded form of a directory's names (see the module docstring)."""
    return b"\0".join(names)


def split_names(blob: Blob) -> list[bytes]:
    """Inverse of :func:`join_names`."""
    return bytes(blob).split(b"\0") if blob else []


def child_path(parent: bytes, name: bytes) -> bytes:
    """Path of ``name`` in directory ``parent`` (``b""`` is the root's parent)."""
    if parent in (VIRTUAL, ROOT):
        return name
    return parent + b"/" + name


def split_path(path: bytes) -> tuple[bytes, bytes]:
    """(parent directory, name) of ``path``; the root's parent is ``b""``."""
    if path == ROOT:
        return VIRTUAL, ROOT
    i = path.rfind(b"/")
    return (ROOT, path) if i < 0 else (path[:i], path[i + 1 :])


# ---- scan records --------------------------------------------------------------


class ScanRecord:
    """What the last scan saw in one directory (see the module docstring).

    ``changes``, when set, holds the directory's changes against HEAD as
    that scan found them (its children's, and the subtrees of children
    that are gone): a scan that finds the directory as recorded replays
    them instead of comparing child by child. Anything that moves HEAD's
    entries drops it (:meth:`~snapws.backends.plain.index.Index.drop_replays`).

    ``full`` says that ``names`` is the directory's whole listing (no
    entry was left out as ignored): only then may a scan that finds the
    directory's own stat unchanged take ``names`` for its listing instead
    of reading the directory (git's untracked cache).

    ``recreated`` names the children that are directories deleted and made
    again since HEAD (their inode moved): a commit writes them opaque. The
    scan that saw the inode move records the new stat, so the names are
    kept until HEAD's entries of the directory change (a record rebuilt by
    :meth:`build` has none)."""

    __slots__ = ("changed", "changes", "dirty", "full", "maxtime", "names", "recreated", "stats")

    def __init__(
        self,
        names: Blob,
        stats: Blob,
        maxtime: int,
        dirty: Blob | None,
        changed: bool,
        changes: Blob | None = None,
        full: bool = False,
        recreated: Blob | None = None,
    ) -> None:
        self.names = names
        self.stats = stats
        self.maxtime = maxtime
        self.dirty = dirty  # marshal blob of {name: work entry tuple}, or None
        self.changed = changed  # some child differs from HEAD (dirty or deleted)
        self.changes = changes  # marshal blob of change tuples (changes_blob), or None
        self.full = full  # names is the whole listing (nothing ignored left out)
        self.recreated = recreated  # NUL-separated names of children made again, or None

    def to_tuple(
        self,
    ) -> tuple[Blob, Blob, int, Blob | None, bool, Blob | None, bool, Blob | None]:
        return (
            self.names,
            self.stats,
            self.maxtime,
            self.dirty,
            self.changed,
            self.changes,
            self.full,
            self.recreated,
        )

    def same(self, other: ScanRecord | None) -> bool:
        return other is not None and _plain(self.to_tuple()) == _plain(other.to_tuple())

    def matches(self, names: bytes, stats: bytes) -> bool:
        """True if the directory lists exactly ``names`` with ``stats``."""
        return bytes(self.stats) == stats and bytes(self.names) == names

    def dirty_map(self) -> dict[bytes, EntryTuple]:
        return marshal.loads(self.dirty) if self.dirty else {}

    @classmethod
    def build(
        cls,
        names: list[bytes],
        keys: list[StatKey],
        dirty: dict[bytes, EntryTuple],
        changed: bool,
        full: bool,
    ) -> ScanRecord:
        """A record from per-child stat keys (``ZERO_STAT``: unverified),
        with no replayable changes."""
        flat = [v for k in keys for v in k]
        maxtime = max((max(k[1], k[2]) for k in keys if k != ZERO_STAT), default=0)
        return cls(
            join_names(names),
            pack_stats(flat),
            maxtime,
            marshal.dumps(dirty) if dirty else None,
            changed or bool(dirty),
            None,
            full,
        )


# ---- changes --------------------------------------------------------------------


def changes_blob(changes: list[Change]) -> bytes:
    """Changes as marshal data (recorded in the index, sent between processes)."""
    return marshal.dumps(
        [
            (
                c.path,
                c.type.value,
                entry_tuple(c.old) if c.old is not None else None,
                entry_tuple(c.new) if c.new is not None else None,
                c.what,
            )
            for c in changes
        ]
    )


def changes_from(blob: bytes | memoryview) -> list[Change]:
    """Inverse of :func:`changes_blob`."""
    return [
        Change(
            path,
            ChangeType(kind),
            tuple_entry(path, old) if old is not None else None,
            tuple_entry(path, new) if new is not None else None,
            tuple(what),
        )
        for path, kind, old, new, what in marshal.loads(blob)
    ]
