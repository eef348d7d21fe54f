"""The unpacking side of the helper process that writes small files
(:mod:`snapws.oci.filewriter`): which files go to it, and its results
taken back into the extractor's tables as they come.

:class:`~snapws.oci.tarextractor.LayerExtractor` writes its first
:attr:`~snapws.oci.tarextractor.LayerExtractor.HELPER_AFTER` small files
itself (a small layer is not worth a process), then hands small plain
files (at most :data:`~snapws.oci.filewriter.SMALL` bytes, no xattrs) to
the helper while it is not behind; if the helper cannot start, everything
is written by the extractor.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from snapws.ids import ContentHash
from snapws.layers.entries import host_ids
from snapws.model import Entry, Kind, encode_manifest
from snapws.oci import filewriter
from snapws.oci import tarformat as tf


@dataclass(slots=True)
class FileTables:
    """What unpacking learns of each regular file it makes, by path."""

    #: the XXH3-128 of its content (every file)
    hashes: dict[bytes, ContentHash] = field(default_factory=dict)
    #: its fstat taken when it was complete (files without xattrs or hardlinks)
    stats: dict[bytes, os.stat_result] = field(default_factory=dict)
    #: its manifest entry, made from that fstat
    entries: dict[bytes, Entry] = field(default_factory=dict)
    #: its dedup key (:func:`snapws.store.dedup.dedup_material`), when asked
    keys: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    #: its manifest line (:func:`~snapws.model.encode_manifest` of the
    #: entry alone), made with the entry: while the tar is still read, not
    #: after its last byte
    lines: dict[bytes, bytes] = field(default_factory=dict)
    #: what makes the dedup keys (None: no dedup)
    material: Callable[[Entry], tuple[str, bytes]] | None = None

    def add(self, rel: bytes, ch: ContentHash, st: os.stat_result | None, e: Entry | None) -> None:
        """Record file ``rel``: its hash, and its fstat, entry and manifest
        line if known."""
        self.hashes[rel] = ch
        if st is not None and e is not None:
            self.stats[rel] = st
            self.entries[rel] = e
            self.lines[rel] = encode_manifest((e,))
            if self.material is not None and e.size:
                self.keys[rel] = self.material(e)

    def forget(self, rel: bytes) -> None:
        """Drop what was recorded of file ``rel`` but its hash (it got a
        hardlink: its link count changed, it is read again at the end)."""
        self.stats.pop(rel, None)
        self.entries.pop(rel, None)
        self.lines.pop(rel, None)
        self.keys.pop(rel, None)

    def manifest(self, entries: list[Entry]) -> bytes:
        """:func:`~snapws.model.encode_manifest` of ``entries`` (sorted by
        path), with the lines made already."""
        lines, known = self.lines, self.entries
        return b"".join(
            [lines[e.path] if known.get(e.path) is e else encode_manifest((e,)) for e in entries]
        )


def _failed(e: filewriter.ChildFailed) -> OSError:
    return OSError(errno.EIO, f"the helper process writing files failed: {e}")


class HelperFeed:
    """Small files sent to the helper process, started after ``after``
    small files were written without it (None: never). ``perm`` turns an
    error of the helper's into the extractor's (a permission error into
    UnsupportedError). :meth:`close` (idempotent) stops the helper."""

    def __init__(
        self,
        root: bytes,
        after: int | None,
        tables: FileTables,
        perm: Callable[[bytes, OSError, str], Exception],
    ) -> None:
        self.root = root
        self.after = after
        self.tables = tables
        self.perm = perm
        self.helper: filewriter.FileWriterChild | None = None
        self.failed = False  # the helper could not start: write everything in the extractor
        self.small_files = 0  # written by the extractor, while no helper runs
        self.pending: set[bytes] = set()  # files sent, results not back yet

    def helper_for(self, h: tf.Header) -> filewriter.FileWriterChild | None:
        """The helper to write this file, if it is small and plain (started
        after ``after`` such files) and the helper is not behind (None:
        the extractor writes it). Raises OSError (the helper died)."""
        if h.size > filewriter.SMALL or h.xattrs or self.failed:
            return None
        if self.helper is not None:
            try:
                return None if self.helper.busy(h.size) else self.helper
            except filewriter.ChildFailed as e:
                raise _failed(e) from e
        if self.after is None or self.small_files < self.after:
            self.small_files += 1
            return None
        try:
            self.helper = filewriter.FileWriterChild(self.root)
        except filewriter.ChildFailed:
            self.failed = True
            return None
        return self.helper

    def send(
        self,
        helper: filewriter.FileWriterChild,
        rel: bytes,
        data: bytes,
        mode: int,
        create_mode: int,
        ids: tuple[int, int],
        mtime_ns: int,
        flags: int,
    ) -> None:
        """Queue file ``rel`` (see :meth:`FileWriterChild.add
        <snapws.oci.filewriter.FileWriterChild.add>`) and take the results
        come back so far (their entries made now, not at the end). Raises
        OSError (the helper died)."""
        self.pending.add(rel)
        try:
            helper.add(rel, data, mode, create_mode, *ids, mtime_ns, flags)
            self._take(helper.collect())
        except filewriter.ChildFailed as e:
            raise _failed(e) from e

    def _take(self, results: list[filewriter.Record]) -> None:
        tables, pending = self.tables, self.pending
        for rel, digest, has_stat, mode, uid, gid, size, mtime_ns, ino, nlink, blocks in results:
            pending.discard(rel)
            ch = ContentHash(digest.hex())
            if has_stat and nlink == 1 and stat.S_ISREG(mode):
                # (as FileWriterChild.result makes it, without the call)
                st = os.stat_result(
                    (mode, ino, 0, nlink, uid, gid, size, 0, mtime_ns // 1_000_000_000, 0),
                    {"st_mtime_ns": mtime_ns, "st_blocks": blocks},
                )
                uid, gid = host_ids(uid, gid)
                e = Entry(rel, Kind.FILE, stat.S_IMODE(mode), uid, gid, mtime_ns, size, ch)
                tables.add(rel, ch, st, e)
            else:
                tables.hashes[rel] = ch

    def sync(self) -> None:
        """Wait until the helper wrote every file sent so far. Raises what
        writing them raised (through ``perm``), OSError (the helper died)."""
        if self.helper is None:
            return
        try:
            self._take(self.helper.sync())
        except OSError as e:
            rel = os.fsencode(e.filename) if e.filename else b"?"
            raise self.perm(rel, e, getattr(e, "failed_step", "create")) from e
        except filewriter.ChildFailed as e:
            raise _failed(e) from e

    def close(self) -> None:
        """Stop the helper (idempotent)."""
        if self.helper is not None:
            self.helper.close()
            self.helper = None
