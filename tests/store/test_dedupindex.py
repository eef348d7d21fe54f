"""snapws.store.dedupindex: the dedup index on its own (tests/store/test_dedup.py
drives it through dedup_tree): entries are checked when read, one run is one
transaction, a damaged database is moved aside."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from snapws.ids import ContentHash, Digest, LayerId
from snapws.model import Entry, Kind
from snapws.store.dedupindex import (
    CORRUPT_DB,
    INDEX_DB,
    DedupIndex,
    canonical,
    material,
    parse_entry,
)

LAYER = LayerId("ab" * 16)


def a_file(path: bytes = b"d/f", mode: int = 0o644) -> Entry:
    return Entry(
        path, Kind.FILE, mode=mode, uid=0, gid=0, mtime_ns=7, size=3, hash=ContentHash.of(b"abc")
    )


def key_and_meta(e: Entry) -> tuple[str, bytes]:
    meta = canonical(material(e))
    return Digest.of(meta).hex, meta


def test_material_leaves_out_path_and_link() -> None:
    assert material(a_file(b"x")) == material(a_file(b"y/z"))
    assert material(a_file(mode=0o600)) != material(a_file())


def test_a_run_commits_its_entries_and_the_next_run_reads_them(tmp_path: Path) -> None:
    key, meta = key_and_meta(a_file())
    index = DedupIndex.open(tmp_path)
    assert index.get(key) is None
    assert index.put(key, LAYER, b"d/f", meta)
    assert index.get(key) is not None  # pending writes are seen by the run
    assert index.close(commit=True)
    again = DedupIndex.open(tmp_path)
    rec = again.get(key)
    assert rec is not None and (rec.layer, rec.path, rec.key) == (LAYER, b"d/f", key)
    again.drop(key)
    assert again.close(commit=False) is False  # rolled back: the entry stays
    assert DedupIndex.open(tmp_path).get(key) is not None


def test_entries_that_do_not_name_their_key_or_a_safe_path_are_no_entries() -> None:
    key, meta = key_and_meta(a_file())
    good = b'{"key":"%s","layer":"%s","meta":%s,"path":"d/f","v":1}' % (
        key.encode(),
        LAYER.hex.encode(),
        meta,
    )
    assert parse_entry(good, key) is not None
    assert parse_entry(good, "0" * 32) is None  # another key
    assert parse_entry(good.replace(b'"v":1', b'"v":2'), key) is None
    for path in (b"../x", b"/etc/passwd", b".", b""):
        assert parse_entry(good.replace(b'"d/f"', b'"%s"' % path), key) is None
    assert parse_entry(good[:-3], key) is None  # torn
    assert parse_entry("not bytes", key) is None


def test_a_database_of_another_schema_is_moved_aside(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / INDEX_DB)) as db, db:
        db.execute("CREATE TABLE other (x)")
        db.execute("PRAGMA user_version = 9")
    index = DedupIndex.open(tmp_path)
    assert index.db is None and index.get("0" * 32) is None
    assert (tmp_path / CORRUPT_DB).is_file() and not (tmp_path / INDEX_DB).exists()
    fresh = DedupIndex.open(tmp_path)
    assert fresh.db is not None and fresh.close(commit=True)
