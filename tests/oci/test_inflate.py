"""Reading gzip layers with either inflater (:mod:`snapws.oci.inflate`):
ISA-L's where the ``isal`` package is installed (a dependency where
wheels exist), zlib's otherwise; the same bytes and the same refusals."""

from __future__ import annotations

import gzip
import hashlib
import platform
from collections.abc import Iterator

import pytest

from snapws.errors import BadImageError
from snapws.ids import BlobDigest
from snapws.oci import inflate
from snapws.oci.blobstream import LayerBlobStream

from .test_compress import _Chunks, content, gzip_of

#: where snapws depends on isal (pyproject.toml): its wheels exist
ISAL_REQUIRED = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each inflater in turn (zlib's: as on a machine without isal)."""
    if request.param == "zlib":
        monkeypatch.setattr(inflate, "_isal", None)
    elif inflate.backend() != "isal":
        if ISAL_REQUIRED:
            pytest.fail("isal is a dependency on this machine but cannot be imported")
        pytest.skip("isal is not installed (no wheel for this machine)")
    else:  # counted: the layer reader must use it
        monkeypatch.setattr(inflate, "_isal", _Counted(inflate._isal))
    assert inflate.backend() == request.param
    yield request.param
    if request.param == "isal":
        assert inflate._isal.made > 0  # type: ignore[union-attr]


class _Counted:
    """A module's ``decompressobj``, counting the decompressors made."""

    def __init__(self, module: object) -> None:
        self.module, self.made = module, 0

    def decompressobj(self, wbits: int) -> object:
        self.made += 1
        return self.module.decompressobj(wbits)  # type: ignore[attr-defined]


def _read(blob: bytes, step: int = 4096) -> tuple[bytes, BlobDigest | None, BlobDigest]:
    s = LayerBlobStream(_Chunks(blob, step), "test", len(blob))
    try:
        out = []
        while data := s.read(100_000):
            out.append(data)
        raw, diff = s.finish()
        return b"".join(out), raw, diff
    finally:
        s.close()


def test_isal_is_used_where_it_is_a_dependency() -> None:
    if not ISAL_REQUIRED:
        pytest.skip("no isal wheel for this machine")
    assert inflate.backend() == "isal"
    assert type(inflate.gzip_inflater()).__module__ != "zlib"


def test_either_inflater_reads_the_same_bytes(backend: str) -> None:
    data = content()
    blob = gzip_of(data, 2, 1 << 20)
    out, raw, diff = _read(blob)
    assert out == data
    assert raw == BlobDigest(hashlib.sha256(blob).hexdigest())
    assert diff == BlobDigest(hashlib.sha256(data).hexdigest())
    two = gzip.compress(b"first member ", mtime=0, compresslevel=9) + gzip.compress(b"second")
    assert _read(two + bytes(700), step=5)[0] == b"first member second"


def test_either_inflater_refuses_damage(backend: str) -> None:
    blob = gzip_of(content(), 2, 1 << 20)
    with pytest.raises(BadImageError, match="truncated gzip"):
        _read(blob[:-9])
    with pytest.raises(BadImageError, match="corrupt gzip"):
        _read(blob[:-8] + b"\0\0\0\0" + blob[-4:])  # a wrong CRC-32
    with pytest.raises(BadImageError, match="corrupt gzip"):
        _read(blob[:-4] + b"\1\0\0\0")  # a wrong size
    with pytest.raises(BadImageError, match="corrupt gzip"):
        _read(blob[:5000] + bytes([blob[5000] ^ 0x55]) + blob[5001:])  # damaged deflate
    with pytest.raises(BadImageError, match="corrupt gzip"):
        _read(gzip.compress(b"x") + b"trailing garbage")
