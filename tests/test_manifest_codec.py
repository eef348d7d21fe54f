"""snapws.model's manifest codec: the fast writer (_manifest_line) and reader
(decode_manifest's one-array read) give the bytes and entries of the
canonical json.dumps / json.loads forms, which layer ids hash."""

from __future__ import annotations

import json
import random

import pytest

from snapws.ids import ContentHash
from snapws.model import Entry, Kind, _manifest_line, decode_manifest, encode_manifest


def reference_encode(entries: list[Entry]) -> bytes:
    """The canonical form as first written: json.dumps of to_json, a line each."""
    lines = [
        json.dumps(e.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        for e in sorted(entries, key=lambda e: e.path)
    ]
    return ("\n".join(lines) + "\n").encode("ascii") if lines else b""


def reference_decode(data: bytes) -> list[Entry]:
    return [Entry.from_json(json.loads(line)) for line in data.splitlines() if line.strip()]


_PIECES = [b"a", b"Z", b"0", b"-", b".", b" ", b'"', b"\\", b"\n", b"\t", b"\x00", b"\x01", b"\x7f"]
_PIECES += [b"\xff", b"\x80", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xed\xa0\x80"]


def random_name(rng: random.Random) -> bytes:
    return b"".join(rng.choice(_PIECES) for _ in range(rng.randrange(1, 6)))


def random_entry(rng: random.Random, path: bytes) -> Entry:
    kind = rng.choice(list(Kind))
    if kind is Kind.WHITEOUT:
        return Entry(path, kind)
    big = rng.choice([0, 1, 7, 2**31, 2**63 - 1, 2**64 + 5, -1, -(2**40)])
    xattrs = {}
    for _ in range(rng.choice([0, 0, 1, 3])):
        name = "user." + rng.choice(["a", "é", "\u20ac", "\U0001f600", 'q"\\', "\x01", "z"])
        xattrs[name] = rng.randbytes(rng.randrange(0, 5))
    return Entry(
        path=path,
        kind=kind,
        mode=rng.choice([0, 0o644, 0o4755, 0o7777]),
        uid=rng.choice([0, 1000, 65534, big]),
        gid=rng.choice([0, 100, big]),
        mtime_ns=rng.choice([0, 1_765_000_000_123_456_789, big]),
        size=rng.choice([0, 3, big]) if kind is Kind.FILE else 0,
        hash=rng.choice([None, ContentHash.of(path)]) if kind is Kind.FILE else None,
        target=random_name(rng) if kind is Kind.SYMLINK or rng.random() < 0.05 else None,
        rdev=(rng.randrange(300), rng.randrange(2**20))
        if kind in (Kind.CHARDEV, Kind.BLOCKDEV) or rng.random() < 0.05
        else None,
        xattrs=xattrs,
        opaque=kind is Kind.DIR and rng.random() < 0.3,
        link=random_name(rng) if rng.random() < 0.2 else None,
    )


@pytest.mark.parametrize("seed", range(20))
def test_fast_codec_gives_the_canonical_bytes(seed: int) -> None:
    rng = random.Random(seed)
    paths = {random_name(rng) + b"/" + random_name(rng) for _ in range(200)}
    entries = [random_entry(rng, p) for p in paths]
    data = encode_manifest(entries)
    assert data == reference_encode(entries)
    back = decode_manifest(data)
    assert back == reference_decode(data) == sorted(entries, key=lambda e: e.path)


def test_each_line_is_the_canonical_json_of_its_entry() -> None:
    rng = random.Random(99)
    for n in range(2000):
        e = random_entry(rng, random_name(rng) + b"%d" % n)
        obj = e.to_json()
        assert _manifest_line(e) == json.dumps(obj, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b'{"k":"w","p":"a"}\n\n{"k":"w","p":"b"}\n', None),  # a blank line is skipped
        (b'{"k":"w","p":"a"}\n{"k":"w","p":"b"}{"k":"w","p":"c"}\n', 2),  # two on a line
        (b'{"k":"w","p":"a"}\n{"k":"w","p":"b"},{"k":"w","p":"c"}\n', 2),
        (b'{"k":"w","p":"a"}\n{"k":"f","p":"b","m":1,"u":0,"g":0,"t":0,"x":null}\n', 2),
        (b'{"k":"w","p":"a"}\n{"k":"w","p":"b"}\n[]\n', 3),
        (b'{"k":"w","p":"a"}\n"text"\n', 2),
        (b'{"k":"w","p":"a"}\n{"k":["f"],"p":"b"}\n', 2),
    ],
)
def test_odd_manifests_read_as_line_by_line(data: bytes, line: int | None) -> None:
    if line is None:
        assert [e.path for e in decode_manifest(data)] == [b"a", b"b"]
    else:
        with pytest.raises(ValueError, match=f"line {line}:"):
            decode_manifest(data)


def test_no_final_newline_and_empty() -> None:
    assert decode_manifest(b'{"k":"w","p":"a"}') == [Entry(b"a", Kind.WHITEOUT)]
    assert decode_manifest(b"\n") == []
    assert decode_manifest(b"") == []
