"""The store's deduplication index, ``<store>/dedup/index.sqlite``: which
published file holds a given content and metadata (see
:mod:`snapws.store.dedup`, its only user, for the format and the rules).

SQLite, table ``entries(key TEXT PRIMARY KEY, data BLOB NOT NULL)``; a key
is the XXH3-128 of a file's manifest line without path and hardlink fields
(:func:`material`, :func:`canonical`); an entry is the canonical JSON
``{"key", "layer", "meta", "path", "v"}``. A cache, never trusted: an entry
that does not parse or name its own key is no entry (:func:`parse_entry`).
One run is one transaction (:class:`DedupIndex`), without fsync; a database
found damaged is renamed ``index.sqlite.corrupt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapws.crash import crashpoint
from snapws.ids import Digest, LayerId
from snapws.model import ROOT, Entry, Kind, path_to_text, text_to_path

INDEX_DB = "index.sqlite"
CORRUPT_DB = "index.sqlite.corrupt"  # a damaged index, moved aside
#: json.dumps of a str with ensure_ascii (what it calls), without its dispatch
_quote = json.encoder.encode_basestring_ascii
FORMAT = 1  # of an entry ("v"), and the database's user_version
#: an entry's canonical JSON, from its key, layer, meta's canonical JSON and
#: quoted path
_ENTRY = b'{"key":"%%s","layer":"%%s","meta":%%s,"path":%%s,"v":%d}' % FORMAT


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """A parsed index entry."""

    key: str
    layer: LayerId
    path: bytes
    meta: dict[str, Any]


class DedupIndex:
    """The index database during one run: one transaction, begun by
    :meth:`open` and ended by :meth:`close`. Writes are kept in memory and
    made at the end, in key order (much faster than one by one). Once the
    database is unusable (``db`` is None: it could not be opened, or an
    SQLite error happened) lookups miss and writes are skipped; what the
    transaction held is rolled back."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.db: sqlite3.Connection | None = None
        self.empty = False  # no entries: lookups need not ask
        self.pending: dict[str, bytes | None] = {}  # key -> data, or None: delete

    @classmethod
    def open(cls, base: Path) -> DedupIndex:
        """Open ``base/index.sqlite`` (created if missing) and begin the
        transaction. Never raises."""
        index = cls(base)
        try:
            # (check_same_thread off: commit_in_background ends it in another
            # thread, once this one is done with it)
            index.db = db = sqlite3.connect(
                base / INDEX_DB, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous = OFF")  # a cache: a crash loses entries
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                db.execute(
                    "CREATE TABLE entries (key TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID"
                )
                db.execute(f"PRAGMA user_version = {FORMAT}")
            elif version != FORMAT:
                index.fail(None, damaged=True)  # not our database
                return index
            try:
                probe = db.execute("SELECT key, data FROM entries LIMIT 1").fetchone()
            except sqlite3.OperationalError as e:
                # no such table or column: not our schema
                index.fail(e, damaged=getattr(e, "sqlite_errorcode", 0) == sqlite3.SQLITE_ERROR)
                return index
            index.empty = probe is None
        except sqlite3.Error as e:
            index.fail(e)
        return index

    def get(self, key: str) -> IndexRecord | None:
        if key in self.pending:
            data = self.pending[key]
        elif self.db is None or self.empty:
            return None
        else:
            try:
                row = self.db.execute("SELECT data FROM entries WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as e:
                self.fail(e)
                return None
            data = None if row is None else row[0]
        return None if data is None else parse_entry(data, key)

    def put(self, key: str, layer: LayerId, rel: bytes, meta: bytes) -> bool:
        """Record that ``rel`` of ``layer`` has the metadata ``meta`` (its
        canonical JSON, hashing to ``key``)."""
        if self.db is None:
            return False
        # the canonical JSON of {"key", "layer", "meta", "path", "v"}, built
        # from the canonical JSON of "meta"
        self.pending[key] = _ENTRY % (
            key.encode(),
            layer.hex.encode(),
            meta,
            _quote(path_to_text(rel)).encode(),
        )
        return True

    def drop(self, key: str) -> None:
        if self.db is not None:
            self.pending[key] = None

    def close(self, commit: bool) -> bool:
        """End the transaction: make the pending writes and commit
        (``commit``), or roll back. Returns whether it was committed."""
        db, self.db = self.db, None
        if db is None:
            return False
        try:
            if commit:
                pending = self.pending
                keys = sorted(pending)  # (the keys alone: 4x faster than the items)
                db.executemany(
                    "DELETE FROM entries WHERE key = ?", ((k,) for k in keys if pending[k] is None)
                )
                db.executemany(
                    "INSERT OR REPLACE INTO entries (key, data) VALUES (?, ?)",
                    ((k, v) for k in keys if (v := pending[k]) is not None),
                )
                crashpoint("dedup:commit", 1)
                db.execute("COMMIT")
            else:
                db.execute("ROLLBACK")
            db.close()
        except sqlite3.Error as e:
            self.db = db
            self.fail(e)
            return False
        finally:
            self.pending.clear()
        return commit

    def commit_in_background(self, fill: Callable[[], None] | None = None) -> IndexCommit:
        """:meth:`close` with ``commit``, in a thread of its own: SQLite
        writes without the GIL (100,000 entries: a quarter of a second)
        while the caller goes on (an import makes the layer durable).
        ``fill``, if given, runs first in that thread (it makes the run's
        writes; if it raises, the transaction is rolled back and
        :meth:`IndexCommit.wait` raises it). Nothing else may use the index
        after this call; wait for the commit (:meth:`IndexCommit.wait`)
        before the store lock is released."""
        return IndexCommit(self, fill)

    def fail(self, error: sqlite3.Error | None, damaged: bool = False) -> None:
        """Give the index up for this run (rolling back). A damaged database
        is renamed ``index.sqlite.corrupt``, its journals deleted: the next
        run starts a new one."""
        db, self.db = self.db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()  # rolls back what is pending
        if not (damaged or (error is not None and _is_damage(error))):
            return  # cannot open, disk full, locked...: the database may be fine
        for suffix in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(self.base / (INDEX_DB + suffix))
        with contextlib.suppress(OSError):
            os.replace(self.base / INDEX_DB, self.base / CORRUPT_DB)


class IndexCommit:
    """The commit of a :class:`DedupIndex` going on in a thread."""

    def __init__(self, index: DedupIndex, fill: Callable[[], None] | None = None) -> None:
        self._committed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(index, fill), name="dedup-index", daemon=True
        )
        self._thread.start()

    def _run(self, index: DedupIndex, fill: Callable[[], None] | None) -> None:
        try:
            if fill is not None:
                try:
                    fill()
                except BaseException:
                    index.close(commit=False)
                    raise
            self._committed = index.close(commit=True)
        except BaseException as e:  # handed to the waiting thread
            self._error = e

    def wait(self) -> bool:
        """Wait for the commit; whether it was committed. Raises what
        :meth:`DedupIndex.close` raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._committed


def material(e: Entry) -> dict[str, Any]:
    """What must be equal for two files to share an inode: the manifest
    line without the path and the hardlink leader."""
    obj = e.to_json()
    obj.pop("p", None)
    obj.pop("hl", None)
    return obj


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def material_json(e: Entry) -> bytes:
    """``canonical(material(e))``: written out directly for a regular file
    with nothing but content, mode, owner and mtime (most files: JSON's
    encoder costs more than the rest of a file's indexing)."""
    if (
        e.kind is Kind.FILE
        and e.hash is not None
        and not e.xattrs
        and e.target is None
        and e.rdev is None
        and not e.opaque
    ):
        return b'{"g":%d,"h":"%s","k":"f","m":%d,"s":%d,"t":%d,"u":%d}' % (
            e.gid,
            e.hash.hex.encode("ascii"),
            e.mode,
            e.size,
            e.mtime_ns,
            e.uid,
        )
    return canonical(material(e))


def parse_entry(data: object, key: str) -> IndexRecord | None:
    """The entry ``data`` (an index row's bytes) if it is well formed and
    names ``key``."""
    if not isinstance(data, bytes):
        return None
    try:
        obj = json.loads(data)
        meta = obj["meta"]
        if (
            obj.get("v") != FORMAT
            or obj["key"] != key
            or not isinstance(meta, dict)
            or Digest.of(canonical(meta)).hex != key
        ):
            return None
        rel = text_to_path(obj["path"])
        if not rel or rel == ROOT or rel.startswith(b"/") or b".." in rel.split(b"/"):
            return None
        return IndexRecord(key, LayerId(obj["layer"]), rel, meta)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _is_damage(error: sqlite3.Error) -> bool:
    """Whether ``error`` says the database file is damaged (or no database)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return type(error) is sqlite3.DatabaseError
