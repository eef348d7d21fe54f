"""The dedup index key's JSON written out directly (dedupindex.material_json)
is byte for byte the canonical JSON of the entry's material."""

from __future__ import annotations

import pytest

from snapws.ids import ContentHash
from snapws.model import Entry, Kind
from snapws.store.dedupindex import canonical, material, material_json

H = ContentHash("0123456789abcdef0123456789abcdef")

ENTRIES = [
    Entry(b"a", Kind.FILE, 0o644, 0, 0, 0, 0, H),
    Entry(b"dir/b c\xff", Kind.FILE, 0o4755, 1234, 5678, -1_500_000_000, 1 << 40, H),
    Entry(b"x", Kind.FILE, 0o600, 1, 2, 1_700_000_000_123_456_789, 3, H, link=b"a"),
    Entry(b"x", Kind.FILE, 0o600, 1, 2, 3, 4, H, xattrs={"user.a": b"\x00\xff"}),
    Entry(b"x", Kind.FILE, 0o600, 1, 2, 3, 0, None),
    Entry(b"l", Kind.SYMLINK, 0o777, 0, 0, 5, target=b"a"),
    Entry(b"d", Kind.DIR, 0o755, 0, 0, 5, opaque=True),
]


@pytest.mark.parametrize("e", ENTRIES)
def test_material_json_is_the_canonical_json(e: Entry) -> None:
    assert material_json(e) == canonical(material(e))
