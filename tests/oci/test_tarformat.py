"""The tar writer is reproducible and standard (GNU tar and Python's tarfile
read it as written); the reader reads what it writes and what tarfile
writes, and refuses bad checksums."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from snapws.errors import BadImageError
from snapws.oci import tarformat as tf

from .ocitools import f, tar_of

HEADERS = [
    tf.Header(b"./", tf.DIRECTORY, 0o755, mtime_ns=1_500_000_000_000_000_000),
    tf.Header(
        b"plain", tf.REGULAR, 0o4755, uid=1, gid=2, size=5, mtime_ns=1_500_000_000_123_456_789
    ),
    tf.Header(b"d/" + b"long" * 60, tf.REGULAR, 0o600, size=0, mtime_ns=7),
    tf.Header(b"bad-\xff\xfe-name", tf.REGULAR, 0o644, uid=3_000_000, gid=4_000_000),
    tf.Header(b"link", tf.SYMLINK, 0o777, linkname=b"t" * 150),
    tf.Header(b"hard", tf.HARDLINK, 0o644, linkname=b"plain"),
    tf.Header(b"dev", tf.BLOCKDEV, 0o660, devmajor=7, devminor=42),
    tf.Header(b"x", tf.REGULAR, 0o644, xattrs={"user.bin": b"\x00\xff", "user.t": b"text"}),
    tf.Header(b"old", tf.REGULAR, 0o644, mtime_ns=-1_500_000_000),
]


def _archive(headers: list[tf.Header]) -> bytes:
    out = bytearray()
    for h in headers:
        out += tf.encode_header(h)
        if h.size:
            out += b"a" * h.size + tf.padding(h.size)
    return bytes(out + tf.END_OF_ARCHIVE)


def test_writer_output_reads_back_exactly() -> None:
    data = _archive(HEADERS)
    assert data == _archive(HEADERS)  # reproducible
    reader = tf.TarReader(io.BytesIO(data).read, "test")
    got = []
    for h in reader.entries():
        got.append(h)
        assert b"".join(reader.data()) == b"a" * h.size
    assert got == HEADERS


def test_python_tarfile_and_gnu_tar_read_it(tmp_path: Path) -> None:
    data = _archive(HEADERS)
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as t:
        members = {m.name: m for m in t.getmembers()}
    assert members["plain"].mode == 0o4755 and members["plain"].mtime == 1_500_000_000.123456789
    assert members["bad-\udcff\udcfe-name"].uid == 3_000_000
    assert members["link"].linkname == "t" * 150
    assert members["d/" + "long" * 60].size == 0
    assert members["x"].pax_headers["SCHILY.xattr.user.t"] == "text"
    assert (members["dev"].devmajor, members["dev"].devminor) == (7, 42)
    (tmp_path / "a.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "--quoting-style=literal", "-tvf", str(tmp_path / "a.tar")],
        capture_output=True,
        check=True,
    ).stdout
    assert b"bad-\xff\xfe-name" in listing and b"long" * 60 in listing


def test_reader_reads_tarfile_gnu_and_pax_output() -> None:
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        name = "n" * 90 + "/" + "m" * 90
        data = tar_of([f(name, b"content")], fmt)
        reader = tf.TarReader(io.BytesIO(data).read, "test")
        (h,) = list(reader.entries())
        assert h.name == name.encode() and h.size == 7


def test_bad_checksum_is_refused() -> None:
    data = bytearray(tar_of([f("a", b"x")], tarfile.USTAR_FORMAT))
    data[0] ^= 1
    with pytest.raises(BadImageError, match="checksum"):
        list(tf.TarReader(io.BytesIO(bytes(data)).read, "test").entries())


def test_too_many_extended_headers_in_a_row() -> None:
    pax = tf.encode_header(tf.Header(b"x" * 200, tf.REGULAR))[:-512]  # the PAX part alone
    data = pax * (tf.MAX_META_HEADERS + 2) + tf.encode_header(tf.Header(b"a", tf.REGULAR))
    with pytest.raises(BadImageError, match="extended headers in a row"):
        list(tf.TarReader(io.BytesIO(data + tf.END_OF_ARCHIVE).read, "test").entries())


def test_reader_asks_for_padding_and_the_next_header_at_once() -> None:
    """Four reads an entry (PAX header with its padding before it, PAX
    records with theirs, ustar header, data): each is a call into the
    decompressing stream, the unpacking thread's largest cost after the
    headers themselves. The offsets stay exact."""
    headers = [
        tf.Header(b"f%d" % i, tf.REGULAR, 0o644, size=100 + i, mtime_ns=1_000_000_007 + i)
        for i in range(50)
    ]
    data = _archive(headers)
    calls = 0
    stream = io.BytesIO(data)

    def read(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return stream.read(n)

    reader = tf.TarReader(read, "test")
    got = []
    for h in reader.entries():
        assert data[reader.offset : reader.offset + h.size] == b"a" * h.size
        got.append(h)
        assert b"".join(reader.data()) == b"a" * h.size
    assert got == headers
    assert reader.offset == len(data)
    assert calls <= 4 * len(headers) + 3
