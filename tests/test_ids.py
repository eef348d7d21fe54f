"""snapws.ids: typed XXH3-128 digests."""

from __future__ import annotations

import pytest
import xxhash

from snapws.ids import (
    HEX_LEN,
    SHORT_LEN,
    ContentHash,
    Digest,
    LayerId,
    SnapshotId,
    WorkspaceId,
    is_hex_prefix,
)

HEX = "0123456789abcdef0123456789abcdef"


def test_parse_and_str_round_trip() -> None:
    d = Digest.parse(HEX)
    assert d.hex == HEX
    assert str(d) == HEX
    assert Digest.parse(str(d)) == d


def test_parse_strips_and_lowercases() -> None:
    assert Digest.parse(f"  {HEX.upper()}\n") == Digest(HEX)


def test_of_is_xxh3_128() -> None:
    for data in (b"", b"hello", bytes(range(256)) * 100):
        d = Digest.of(data)
        assert d.hex == xxhash.xxh3_128_hexdigest(data)
        assert len(d.hex) == HEX_LEN
    assert Digest.of(b"a") != Digest.of(b"b")


def test_short() -> None:
    d = Digest(HEX)
    assert d.short() == HEX[:SHORT_LEN]
    assert len(d.short()) == 12


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        HEX[:-1],
        HEX + "0",
        "g" * 32,
        HEX[:-1] + " ",
        "0x" + HEX[:30],
        "-" + HEX[1:],
    ],
)
def test_parse_rejects_bad_text(bad: str) -> None:
    with pytest.raises(ValueError):
        Digest.parse(bad)


def test_constructor_rejects_uppercase() -> None:
    # only parse() normalises; the constructor takes the canonical form only
    with pytest.raises(ValueError):
        Digest(HEX.upper())


def test_subclasses_parse_to_their_own_type() -> None:
    for cls in (ContentHash, LayerId, SnapshotId, WorkspaceId):
        d = cls.parse(HEX)
        assert type(d) is cls
        assert type(cls.of(b"x")) is cls
        assert isinstance(d, Digest)


def test_subclasses_are_distinct_types() -> None:
    lid, sid = LayerId(HEX), SnapshotId(HEX)
    assert lid != sid
    assert lid == LayerId(HEX)
    assert len({lid, sid, ContentHash(HEX), WorkspaceId(HEX)}) == 4
    with pytest.raises(TypeError):
        _ = lid < sid  # type: ignore[operator]


def test_ordering_and_hashing_within_a_type() -> None:
    a, b = SnapshotId("0" * 32), SnapshotId("f" * 32)
    assert a < b
    assert sorted([b, a]) == [a, b]
    assert {a: 1}[SnapshotId("0" * 32)] == 1


def test_frozen() -> None:
    d = Digest(HEX)
    with pytest.raises(AttributeError):
        d.hex = "0" * 32  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("abcd", True),
        (HEX, True),
        ("abc", False),
        (HEX + "0", False),
        ("ABCD", False),
        ("abcg", False),
        ("main", False),
    ],
)
def test_is_hex_prefix(text: str, ok: bool) -> None:
    assert is_hex_prefix(text) is ok
