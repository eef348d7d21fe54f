"""snapws.model: manifest encoding, change classification, records."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from snapws.ids import ContentHash, Digest, LayerId, SnapshotId, WorkspaceId
from snapws.model import (
    Change,
    ChangeType,
    Entry,
    Kind,
    ReflogEntry,
    SnapshotRecord,
    WorkspaceState,
    classify,
    decode_manifest,
    display_path,
    encode_manifest,
    manifest_id,
    path_to_text,
    text_to_path,
)

H1 = ContentHash.of(b"one")
H2 = ContentHash.of(b"two")


def f(path: bytes, h: ContentHash = H1, **kw: object) -> Entry:
    base = dict(mode=0o644, uid=1000, gid=100, mtime_ns=1_700_000_000_123_456_789, size=3)
    base.update(kw)
    return Entry(path=path, kind=Kind.FILE, hash=h, **base)  # type: ignore[arg-type]


def one_of_each() -> list[Entry]:
    """An entry of every kind, using every field somewhere."""
    return [
        Entry(b".", Kind.DIR, mode=0o755, uid=0, gid=0, mtime_ns=1),
        Entry(b"dir", Kind.DIR, mode=0o1777, uid=5, gid=6, mtime_ns=2, opaque=True),
        f(b"dir/file", xattrs={"user.bin": bytes(range(256)), "user.empty": b""}),
        f(b"dir/hard", link=b"dir/file"),
        f(b"setuid", mode=0o4755, size=0, h=ContentHash.of(b"")),
        Entry(b"link", Kind.SYMLINK, mode=0o777, mtime_ns=3, target=b"dir/\xff\nfile"),
        Entry(b"fifo", Kind.FIFO, mode=0o600, uid=1, gid=2, mtime_ns=4),
        Entry(b"tty", Kind.CHARDEV, mode=0o620, mtime_ns=5, rdev=(4, 1)),
        Entry(b"sda", Kind.BLOCKDEV, mode=0o660, mtime_ns=6, rdev=(8, 0)),
        Entry(b"sock", Kind.SOCKET, mode=0o755, mtime_ns=7),
        Entry(b"gone", Kind.WHITEOUT),
        f(b"caf\xc3\xa9", h=H2),  # UTF-8
        f(b"bad\xff\xfename"),  # not UTF-8
        f(b'new\nline\tand "quote" \\'),
        Entry(b"x\x01\x7f", Kind.SYMLINK, mode=0o777, target=b"\x80"),
    ]


# --------------------------------------------------------------------------- manifest


def test_every_kind_covered() -> None:
    assert {e.kind for e in one_of_each()} == set(Kind)


@pytest.mark.parametrize("entry", one_of_each(), ids=lambda e: repr(e.path))
def test_entry_json_round_trip(entry: Entry) -> None:
    obj = entry.to_json()
    assert Entry.from_json(json.loads(json.dumps(obj))) == entry


def test_manifest_round_trip() -> None:
    entries = one_of_each()
    data = encode_manifest(entries)
    assert data.isascii()
    assert data.endswith(b"\n")
    # one line per entry, even for names with newlines
    assert data.count(b"\n") == len(entries)
    back = decode_manifest(data)
    assert back == sorted(entries, key=lambda e: e.path)
    assert encode_manifest(back) == data


def test_round_trip_keeps_binary_paths_and_xattrs() -> None:
    (e,) = decode_manifest(encode_manifest([f(b"\xff\n", xattrs={"user.k": b"\x00\xff"})]))
    assert e.path == b"\xff\n"
    assert e.xattrs == {"user.k": b"\x00\xff"}


def test_whiteout_records_nothing_else() -> None:
    obj = Entry(b"gone", Kind.WHITEOUT, mode=0o644, uid=3).to_json()
    assert obj == {"p": "gone", "k": "w"}


def test_empty_manifest() -> None:
    assert encode_manifest([]) == b""
    assert decode_manifest(b"") == []
    assert manifest_id(b"") == LayerId(Digest.of(b"").hex)


def test_canonical_order_is_bytewise() -> None:
    paths = [b"a/b", b"a-b", b"a", b".", b"\xff", b"z", b"B", b"a/b/c", b"a0"]
    data = encode_manifest([f(p) for p in paths])
    assert [e.path for e in decode_manifest(data)] == sorted(paths)
    # bytewise: "-" (0x2d) < "/" (0x2f) < "0" (0x30); uppercase before lowercase
    assert sorted(paths) == [b".", b"B", b"a", b"a-b", b"a/b", b"a/b/c", b"a0", b"z", b"\xff"]


def test_manifest_lines_are_canonical_json() -> None:
    line = encode_manifest([f(b"x", xattrs={"user.b": b"2", "user.a": b"1"})]).rstrip(b"\n")
    obj = json.loads(line)
    assert line == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert list(obj["x"]) == ["user.a", "user.b"]


def test_manifest_id_ignores_input_order() -> None:
    entries = one_of_each()
    ids = set()
    rng = random.Random(7)
    for _ in range(10):
        shuffled = entries[:]
        rng.shuffle(shuffled)
        ids.add(manifest_id(encode_manifest(shuffled)))
    assert len(ids) == 1
    # xattr insertion order does not matter either
    a = f(b"x", xattrs={"user.a": b"1", "user.b": b"2"})
    b = f(b"x", xattrs={"user.b": b"2", "user.a": b"1"})
    assert encode_manifest([a]) == encode_manifest([b])


@pytest.mark.parametrize(
    "change",
    [
        {"mode": 0o600},
        {"uid": 0},
        {"gid": 0},
        {"mtime_ns": 1},
        {"size": 4},
        {"hash": H2},
        {"xattrs": {"user.new": b"v"}},
        {"link": b"other"},
        {"path": b"renamed"},
    ],
    ids=str,
)
def test_manifest_id_changes_with_any_field(change: dict[str, object]) -> None:
    base = [f(b"x"), Entry(b"d", Kind.DIR, mode=0o755)]
    changed = [replace(base[0], **change), base[1]]  # type: ignore[arg-type]
    assert manifest_id(encode_manifest(base)) != manifest_id(encode_manifest(changed))


@pytest.mark.parametrize(
    ("entry", "change"),
    [
        (Entry(b"l", Kind.SYMLINK, target=b"a"), {"target": b"b"}),
        (Entry(b"c", Kind.CHARDEV, rdev=(1, 3)), {"rdev": (1, 5)}),
        (Entry(b"d", Kind.DIR), {"opaque": True}),
        (Entry(b"d", Kind.DIR), {"kind": Kind.FIFO}),
    ],
    ids=str,
)
def test_manifest_id_changes_with_kind_fields(entry: Entry, change: dict[str, object]) -> None:
    changed = replace(entry, **change)  # type: ignore[arg-type]
    assert manifest_id(encode_manifest([entry])) != manifest_id(encode_manifest([changed]))


@pytest.mark.parametrize(
    "data",
    [
        b"not json\n",
        b'{"p":"x"}\n',  # no kind
        b'{"p":"x","k":"?"}\n',  # unknown kind
        b'{"p":"x","k":"f"}\n',  # no mode
        b'{"p":"x","k":"f","m":1,"u":0,"g":0,"t":0,"h":"zz"}\n',  # bad hash
        b'{"p":"x","k":"f","m":1,"u":0,"g":0,"t":0,"x":{"user.a":"q"}}\n',  # bad hex
        b"[1,2]\n",
    ],
)
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError, match="line 1"):
        decode_manifest(data)


def test_path_text_round_trip() -> None:
    for p in (b"plain", b"caf\xc3\xa9", b"\xff\xfe", b"a\nb", b"\x80/\xc3"):
        assert text_to_path(path_to_text(p)) == p


# --------------------------------------------------------------------------- classify


def test_classify_absent_both() -> None:
    assert classify(b"x", None, None) is None


def test_classify_added_and_deleted() -> None:
    a = classify(b"x", None, f(b"x"))
    assert a is not None
    assert a.type is ChangeType.ADDED
    assert (a.old, a.new) == (None, f(b"x"))
    d = classify(b"x", f(b"x"), None)
    assert d is not None
    assert d.type is ChangeType.DELETED
    assert d.new is None


def test_classify_type_change() -> None:
    c = classify(b"x", f(b"x"), Entry(b"x", Kind.SYMLINK, target=b"y"))
    assert c is not None
    assert c.type is ChangeType.TYPE_CHANGED
    assert c.what == ("type",)
    c2 = classify(b"x", Entry(b"x", Kind.DIR), Entry(b"x", Kind.FIFO))
    assert c2 is not None
    assert c2.type is ChangeType.TYPE_CHANGED
    c3 = classify(
        b"x", Entry(b"x", Kind.CHARDEV, rdev=(1, 3)), Entry(b"x", Kind.BLOCKDEV, rdev=(1, 3))
    )
    assert c3 is not None
    assert c3.type is ChangeType.TYPE_CHANGED


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        (f(b"x"), f(b"x", h=H2), ("content",)),
        (f(b"x"), f(b"x", size=4), ("content",)),
        (f(b"x"), f(b"x", mode=0o755), ("mode",)),
        (f(b"x"), f(b"x", uid=0), ("owner",)),
        (f(b"x"), f(b"x", gid=0), ("owner",)),
        (f(b"x"), f(b"x", xattrs={"user.a": b"1"}), ("xattrs",)),
        (f(b"x", xattrs={"user.a": b"1"}), f(b"x", xattrs={"user.a": b"2"}), ("xattrs",)),
        (f(b"x"), f(b"x", h=H2, mode=0o600, uid=1), ("content", "mode", "owner")),
        (
            Entry(b"x", Kind.SYMLINK, mode=0o777, target=b"a"),
            Entry(b"x", Kind.SYMLINK, mode=0o777, target=b"b"),
            ("target",),
        ),
        (
            Entry(b"x", Kind.CHARDEV, rdev=(1, 3)),
            Entry(b"x", Kind.CHARDEV, rdev=(1, 5)),
            ("rdev",),
        ),
        (
            Entry(b"x", Kind.BLOCKDEV, rdev=(8, 0)),
            Entry(b"x", Kind.BLOCKDEV, rdev=(8, 1), mode=0o600),
            ("rdev", "mode"),
        ),
        (Entry(b"x", Kind.DIR, mode=0o755), Entry(b"x", Kind.DIR, mode=0o700), ("mode",)),
        (Entry(b"x", Kind.FIFO, uid=1), Entry(b"x", Kind.FIFO, uid=2), ("owner",)),
    ],
    ids=lambda v: repr(v) if isinstance(v, tuple) else "",
)
def test_classify_modified(old: Entry, new: Entry, what: tuple[str, ...]) -> None:
    c = classify(b"x", old, new)
    assert c is not None
    assert c.type is ChangeType.MODIFIED
    assert c.what == what
    assert (c.old, c.new) == (old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (f(b"x"), f(b"x", mtime_ns=5)),
        (f(b"x"), f(b"x", link=b"y")),  # hardlink grouping is not a user-visible change
        (Entry(b"x", Kind.DIR, mtime_ns=1), Entry(b"x", Kind.DIR, mtime_ns=2)),
        (
            Entry(b"x", Kind.SYMLINK, target=b"t", mtime_ns=1),
            Entry(b"x", Kind.SYMLINK, target=b"t", mtime_ns=9),
        ),
        (
            f(b"x", xattrs={"user.a": b"1", "user.b": b"2"}),
            f(b"x", xattrs={"user.b": b"2", "user.a": b"1"}),
        ),
    ],
)
def test_mtime_only_is_not_a_change(old: Entry, new: Entry) -> None:
    assert classify(b"x", old, new) is None
    assert old.same_state(new)


def test_change_to_json() -> None:
    c = classify(b"d/\xff", f(b"d/\xff"), f(b"d/\xff", h=H2, mode=0o600))
    assert c is not None
    obj = c.to_json()
    assert obj["path"] == path_to_text(b"d/\xff")
    assert obj["status"] == "M"
    assert obj["what"] == ["content", "mode"]
    assert obj["old"]["kind"] == "file"
    assert obj["new"]["mode"] == "0600"
    assert obj["new"]["hash"] == H2.hex
    json.dumps(obj)  # serialisable
    added = Change(b"l", ChangeType.ADDED, None, Entry(b"l", Kind.SYMLINK, target=b"t"))
    assert added.to_json()["old"] is None
    assert added.to_json()["new"]["target"] == "t"


# --------------------------------------------------------------------------- display_path


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (b"src/app.py", "src/app.py"),
        (b"with space", "with space"),
        ("café".encode(), "café"),
        (b"a\nb", '"a\\nb"'),
        (b"a\tb", '"a\\tb"'),
        (b'say "hi"', '"say \\"hi\\""'),
        (b"back\\slash", '"back\\\\slash"'),
        (b"\xff", '"\\377"'),
        (b"bad\xc3", '"bad\\303"'),
        (b"bell\x07", '"bell\\007"'),
        (b"del\x7f", '"del\\177"'),
        ("é\n".encode(), '"\\303\\251\\n"'),
    ],
)
def test_display_path(path: bytes, shown: str) -> None:
    assert display_path(path) == shown


# --------------------------------------------------------------------------- records


def record(**kw: object) -> SnapshotRecord:
    base: dict[str, object] = dict(
        parents=(SnapshotId("1" * 32), SnapshotId("2" * 32)),
        layer=LayerId("3" * 32),
        message="second version\n\nwith a body and \u00fcn\u00efcode \u2603",
        author="Ada <ada@example.org>",
        time_ns=1_700_000_000_000_000_001,
        tz_offset_min=-330,
    )
    base.update(kw)
    return SnapshotRecord(**base)  # type: ignore[arg-type]


def test_snapshot_id_is_stable() -> None:
    rec = record()
    assert rec.id == record().id
    assert rec.id == SnapshotId(Digest.of(rec.canonical()).hex)
    assert isinstance(rec.id, SnapshotId)
    # canonical form is sorted, compact JSON
    obj = json.loads(rec.canonical())
    assert rec.canonical() == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj["version"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"parents": ()},
        {"parents": (SnapshotId("2" * 32), SnapshotId("1" * 32))},
        {"layer": LayerId("4" * 32)},
        {"message": "other"},
        {"author": "someone"},
        {"time_ns": 1},
        {"tz_offset_min": 60},
    ],
    ids=str,
)
def test_snapshot_id_covers_every_field(change: dict[str, object]) -> None:
    assert record(**change).id != record().id


def test_snapshot_from_canonical_round_trip() -> None:
    for rec in (record(), record(parents=()), record(message="")):
        back = SnapshotRecord.from_canonical(rec.canonical())
        assert back == rec
        assert back.id == rec.id


def test_workspace_state_round_trip() -> None:
    st = WorkspaceState(
        id=WorkspaceId("a" * 32),
        path="/srv/ws",
        head=SnapshotId("b" * 32),
        branch="feature/x",
        upper="upper-2",
        work="work-2",
    )
    assert WorkspaceState.from_json(json.loads(json.dumps(st.to_json()))) == st
    detached = replace(st, branch=None)
    assert WorkspaceState.from_json(detached.to_json()) == detached


def test_reflog_entry_round_trip() -> None:
    for old, new in ((None, SnapshotId("c" * 32)), (SnapshotId("c" * 32), None)):
        e = ReflogEntry("refs/heads/main", old, new, 123, "me", "commit: x")
        assert ReflogEntry.from_json(json.loads(json.dumps(e.to_json()))) == e
