"""The plain backend's stat cache: git's racy-timestamp rule, the on-disk
form, and HEAD updates by overlay rules."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace

from snapws.backends.plain.index import MAGIC, Index
from snapws.backends.plain.indexfile import load_index
from snapws.backends.plain.records import (
    ZERO_STAT,
    ScanRecord,
    split_names,
    stat_key,
    unpack_stats,
)
from snapws.ids import ContentHash, SnapshotId
from snapws.layers import hashing
from snapws.model import Entry, Kind

from .conftest import PlainFactory
from .test_untracked_cache import scan_now, settled

SID = SnapshotId("0" * 32)
SID2 = SnapshotId("1" * 32)


def _index_of(ws: Workspace) -> tuple[Path, Index]:
    (path,) = ws.store.glob("workspaces/*/index")
    head = SnapshotId(ws.head())
    index = load_index(path.parent, head)
    assert index is not None
    return path, index


def _record_as_seen_now(index: Index, name: bytes, st: os.stat_result) -> None:
    """Make the root's record say: ``name`` has stat ``st`` and equals HEAD
    (what a scan would record if the file changed after it was hashed, in
    the same clock tick)."""
    rec = index.scan_record(b".")
    assert rec is not None
    names = split_names(rec.names)
    keys = unpack_stats(rec.stats)
    keys[names.index(name)] = stat_key(st)
    index.set_scan(b".", ScanRecord.build(names, keys, {}, False, True))


def test_a_racy_entry_is_hashed_again(make_plain: PlainFactory) -> None:
    ws = make_plain(spec={"f": "aaaa\n", "g": "gggg\n"})
    assert ws.porcelain() == []
    f = ws.path / "f"
    f.write_text("bbbb\n")  # same size
    st = os.lstat(f)
    path, index = _index_of(ws)
    # the scan "saw" this stat and hashed the old content: its reference
    # time is not after the file's timestamps, so the entry is racy
    _record_as_seen_now(index, b"f", st)
    index.ref_ns, index.slack_ns = max(st.st_mtime_ns, st.st_ctime_ns), 0
    path.write_bytes(index.encode())
    assert ws.porcelain() == [" M f"]
    # the control: with a reference after the edit the record would be
    # trusted, so it is the racy rule that finds the change
    path, index = _index_of(ws)
    _record_as_seen_now(index, b"f", st)
    index.ref_ns = max(st.st_mtime_ns, st.st_ctime_ns) + 1
    path.write_bytes(index.encode())
    assert ws.porcelain() == []


def test_status_refreshes_the_index_after_a_touch(make_plain: PlainFactory) -> None:
    ws = make_plain(spec={"f": "x\n", "d": {"g": "y\n"}})
    path, _ = _index_of(ws)
    before = path.stat().st_mtime_ns
    os.utime(ws.path / "d" / "g", ns=(1, 1))
    assert ws.porcelain() == []
    _, index = _index_of(ws)
    rec = index.scan_record(b"d")
    assert rec is not None
    assert unpack_stats(rec.stats) == [stat_key(os.lstat(ws.path / "d" / "g"))]
    assert path.stat().st_mtime_ns >= before
    # nothing new: the index is not written again
    again = path.stat()
    assert ws.porcelain() == []
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (again.st_ino, again.st_mtime_ns)


def _file(path: bytes, text: bytes = b"x") -> Entry:
    return Entry(path, Kind.FILE, 0o644, 0, 0, 1, len(text), ContentHash("a" * 32))


def _dir(path: bytes, opaque: bool = False) -> Entry:
    return Entry(path, Kind.DIR, 0o755, 0, 0, 1, opaque=opaque)


def test_apply_layer_by_overlay_rules() -> None:
    index = Index.from_entries(
        SID,
        [
            _dir(b"."),
            _dir(b"a"),
            _file(b"a/f"),
            _dir(b"a/sub"),
            _file(b"a/sub/g"),
            _dir(b"b"),
            _file(b"b/h"),
            _file(b"c"),
        ],
    )
    index.apply_layer(
        [
            _dir(b"."),
            _dir(b"a"),
            Entry(b"a/sub", Kind.WHITEOUT),
            _dir(b"b", opaque=True),
            _file(b"b/new"),
            _dir(b"c"),
            _file(b"c/in"),
        ]
    )
    heads = {p: t[0] for p, t in index.head_subtree(b".")}
    assert heads == {b"a": "d", b"a/f": "f", b"b": "d", b"b/new": "f", b"c": "d", b"c/in": "f"}
    assert index.head_entry(b"a/sub/g") is None and index.head_entry(b"b/h") is None


def test_encode_decode_and_invalidate() -> None:
    index = Index.from_entries(SID, [_dir(b"."), _file(b"f"), _file(b"g")])
    keys = [(1, 2, 3, 4, 5), (8, 9, 10, 11, 12)]
    index.set_scan(b".", ScanRecord.build([b"f", b"g"], keys, {}, False, True))
    index.ref_ns, index.slack_ns = 99, 1
    back = Index.decode(index.encode())
    assert back is not None
    assert (back.head, back.ref_ns, back.slack_ns) == (SID, 99, 1)
    assert back.head_entry(b"f") == _file(b"f")
    back.invalidate([b"g"])
    rec = back.scan_record(b".")
    assert rec is not None and unpack_stats(rec.stats) == [keys[0], ZERO_STAT]
    assert rec.changed
    # damage is detected (then the index is rebuilt from manifests)
    data = bytearray(index.encode())
    data[-3] ^= 0xFF
    assert Index.decode(bytes(data)) is None
    assert Index.decode(b"something else") is None
    # an index of another HEAD is not used
    other = Index.from_entries(SID2, [_dir(b".")])
    assert Index.decode(other.encode()) is not None


def test_after_a_commit_the_index_needs_no_refresh(make_plain: PlainFactory) -> None:
    ws = make_plain(spec={"a": "a\n", "d": {"b": "b\n", "c": "c\n"}, "gone": {"g": "g\n"}})
    (ws.path / "a").write_text("a 2\n")
    (ws.path / "d" / "new").write_text("new\n")
    (ws.path / "d" / "c").unlink()
    os.chmod(ws.path / "d", 0o700)
    (ws.path / "gone" / "g").unlink()
    (ws.path / "gone").rmdir()
    assert len(ws.porcelain()) == 6
    ws.commit("four kinds")
    path, index = _index_of(ws)
    written = path.stat()
    for d in (b"", b".", b"d"):
        rec = index.scan_record(d)
        assert rec is not None and not rec.changed and ZERO_STAT not in unpack_stats(rec.stats)
    assert ws.porcelain() == []
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    (ws.path / "d" / "b").write_text("b 2\n")  # and changes are still seen
    assert ws.porcelain() == [" M d/b"]


def _older_form(data: bytes, magic: bytes, fields: int) -> bytes:
    """The index ``data`` as an earlier snapws wrote it: ``magic``, scan
    records of ``fields`` fields."""
    import marshal
    import struct

    import xxhash

    start = len(MAGIC) + 16 + 17
    nrec, _ = struct.unpack("<QQ", data[len(MAGIC) : len(MAGIC) + 16])
    head, ref, slack, dirs = marshal.loads(data[start : start + nrec])
    dirs = {d: (h, None if s is None else s[:fields]) for d, (h, s) in dirs.items()}
    records = marshal.dumps((head, ref, slack, dirs))
    blobs = data[start + nrec :]
    h = xxhash.xxh3_64(records)
    h.update(blobs)
    header = struct.pack("<QQ", len(records), len(blobs)) + h.hexdigest().encode() + b"\n"
    return magic + header + records + blobs


@pytest.mark.parametrize("form", [4, 5, 6])
def test_an_index_of_an_earlier_form_is_read_not_rebuilt(
    make_plain: PlainFactory, monkeypatch: pytest.MonkeyPatch, form: int
) -> None:
    """An upgrade keeps the stats its index holds: nothing is hashed again."""
    ws = make_plain(spec={"a": "a\n", "d": {"b": "b\n", "sub": {"c": "c\n"}}})
    settled(ws)
    (path,) = ws.store.glob("workspaces/*/index")
    old = _older_form(path.read_bytes(), f"snapws-plain-index {form}\n".encode(), form + 2)
    index = Index.decode(old)
    assert index is not None
    rec = index.scan_record(b"d")
    assert rec is not None and rec.recreated is None
    assert rec.full is (form >= 5)  # form 4 did not say: taken as not whole
    path.write_bytes(old)
    hashed: list[bytes] = []
    real = hashing.hash_files

    def counting(paths: Sequence[bytes], *args: Any, **kw: Any) -> Any:
        hashed.extend(paths)
        return real(paths, *args, **kw)

    monkeypatch.setattr(hashing, "hash_files", counting)
    got = scan_now(ws)
    assert (got.changes, hashed) == ([], [])
    assert got.reused == (3 if form >= 5 else 0)
    (ws.path / "d" / "sub" / "c").write_text("c 2\n")
    assert ws.porcelain() == [" M d/sub/c"]
    assert path.read_bytes().startswith(MAGIC)  # written back in the current form
