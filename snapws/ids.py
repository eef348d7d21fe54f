"""Typed content ids: XXH3-128 digests printed as 32 lowercase hex digits,
and the sha256 digests OCI images and registries name blobs by.

Imports nothing from the package (layering rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Self

HEX_LEN = 32
SHORT_LEN = 12
_HEX_RE = re.compile(r"^[0-9a-f]{32}$")
_SHA256_RE = re.compile(r"^sha256:([0-9a-f]{64})$")


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


@dataclass(frozen=True, order=True, slots=True)
class BlobDigest:
    """An OCI content digest: the sha256 of a blob (a layer tar, a config, a
    manifest), written ``sha256:<64 lowercase hex digits>`` as descriptors
    and registries write it. :meth:`parse` reads that form exactly (it comes
    from foreign input: no case folding, no other algorithm); :meth:`of`
    hashes bytes. This is snapws's only sha256 digest helper."""

    hex: str

    ALGORITHM = "sha256"

    def __post_init__(self) -> None:
        if not _SHA256_RE.match(f"sha256:{self.hex}"):
            raise ValueError(f"not 64 lowercase hex digits: {self.hex[:80]!r}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``sha256:<64 lowercase hex>``; raises ValueError otherwise
        (callers reading foreign input turn it into their BadImageError or
        RemoteError)."""
        m = _SHA256_RE.match(text)
        if m is None:
            raise ValueError(f"not a sha256 digest: {text[:80]!r}")
        return cls(m.group(1))

    @classmethod
    def of(cls, data: bytes) -> Self:
        """The digest of ``data``."""
        import hashlib  # here: status, diff and checkout never hash with it (start-up)

        return cls(hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: Path) -> Self:
        """The digest of the file ``path``'s content. Raises OSError."""
        import hashlib

        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return cls(h.hexdigest())

    @property
    def algorithm(self) -> str:
        return self.ALGORITHM

    def short(self) -> str:
        """The abbreviated form shown to people: 12 hex digits (docker's
        IMAGE ID for a config digest)."""
        return self.hex[:SHORT_LEN]

    def __str__(self) -> str:
        return f"{self.ALGORITHM}:{self.hex}"


def is_blob_digest(text: str) -> bool:
    """True for ``sha256:`` followed by 64 lowercase hex digits."""
    return _SHA256_RE.match(text) is not None
