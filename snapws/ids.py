"""Typed content ids: XXH3-128 digests printed as 32 lowercase hex digits.

Imports nothing from the package (layering rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

HEX_LEN = 32
SHORT_LEN = 12
_HEX_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, order=True, slots=True)
class Digest:
    """An XXH3-128 digest. Use :meth:`parse` for text, :meth:`of` for data."""

    hex: str

    def __post_init__(self) -> None:
        if not _HEX_RE.match(self.hex):
            raise ValueError(f"not a {HEX_LEN}-digit lowercase hex digest: {self.hex!r}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a full 32-digit hex id; raises ValueError otherwise."""
        return cls(text.strip().lower())

    @classmethod
    def of(cls, data: bytes) -> Self:
        """The digest of ``data``."""
        import xxhash  # lazily: most commands never hash

        return cls(xxhash.xxh3_128_hexdigest(data))

    def short(self) -> str:
        """The abbreviated form shown to people (12 digits)."""
        return self.hex[:SHORT_LEN]

    def __str__(self) -> str:
        return self.hex


class ContentHash(Digest):
    """Hash of a regular file's bytes."""


class LayerId(Digest):
    """Id of a layer: the hash of its canonical manifest."""


class SnapshotId(Digest):
    """Id of a snapshot: the hash of its canonical record (chain excluded)."""


class WorkspaceId(Digest):
    """Random id of a workspace inside a store."""


def is_hex_prefix(text: str) -> bool:
    """True if ``text`` could be an abbreviated id (4 to 32 hex digits)."""
    return 4 <= len(text) <= HEX_LEN and all(c in "0123456789abcdef" for c in text)
