"""Tar headers: a reproducible writer and a reader for hostile input.

The writer emits POSIX ustar headers, preceded by a PAX extended header when
a value does not fit ustar (long or non-ASCII names, nanosecond mtimes, large
ids or sizes, xattrs as ``SCHILY.xattr.NAME``). Owner names are left empty and
the PAX header's own fields are fixed, so equal input gives equal bytes.

The reader parses ustar, PAX (``x``; ``g`` is read and ignored) and GNU long
names (``L``/``K``), checks every header checksum, and caps what it keeps in
memory (PAX headers, names, xattrs) and the sizes it accepts. Everything it
refuses raises :class:`~snapws.errors.BadImageError`.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from snapws.errors import BadImageError

BLOCK = 512
#: caps on what one header may make us hold or create
MAX_PAX_SIZE = 1 << 20  # one PAX header (records of one entry)
#: A GNU long name, and any path or hardlink target: 64 KiB, 32,768 levels of
#: one-letter names (paths beyond PATH_MAX are reached from a directory
#: descriptor, see snapws.deeppath; the tar's byte budget bounds their sum).
MAX_LONGNAME = 1 << 16
MAX_SYMLINK_TARGET = 4095  # the kernel's limit on a symlink's target (PATH_MAX less the NUL)
MAX_COMPONENT = 255  # one path component (NAME_MAX)
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 65536  # XATTR_SIZE_MAX
MAX_ENTRY_SIZE = 1 << 40  # 1 TiB: larger "files" are taken for an attack
MAX_META_HEADERS = 16  # PAX/GNU headers in a row before one entry
MAX_ID = (1 << 32) - 2  # uid/gid: 32 bits, and (uid_t)-1 means "no change"
MAX_DEV_MAJOR = (1 << 12) - 1
MAX_DEV_MINOR = (1 << 20) - 1
MAX_MTIME_S = (1 << 63) // 1_000_000_000 - 1  # nanoseconds fit a signed 64-bit integer
MAX_MTIME_NS = MAX_MTIME_S * 1_000_000_000
#: What one import may unpack, over all its layers (a gzip or zstd bomb stops
#: at whichever comes first; sizes are counted from headers, before data is read).
MAX_IMPORT_ENTRIES = 1 << 23  # 8,388,608 tar entries
MAX_IMPORT_BYTES = 1 << 40  # 1 TiB of uncompressed tar

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
_CONTIGUOUS = b"7"
_PAX = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"
ENTRY_TYPES = (REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO)

_PAX_NAME = b"././@PaxHeader"
_ZERO_BLOCK = bytes(BLOCK)
#: PAX keys that need no look at every key (no xattrs, nothing sparse)
_PLAIN_PAX_KEYS = frozenset(
    b"path linkpath size uid gid mtime atime ctime uname gname hdrcharset comment".split()
)
#: the fields of a header block the reader takes: name, mode, uid, gid,
#: mtime, linkname, magic, devmajor, devminor, prefix (size, checksum and
#: type are read apart, first)
_USTAR = struct.Struct("100s8s8s8s12x12s8x1x100s6s66x8s8s155s12x")
#: header fields read before and their values (a cache: octal parsing costs
#: more than a look-up, and modes, ids, small sizes and checksums repeat)
_NUMBERS: dict[bytes, int] = {}
#: PAX header blocks read before (checksum checked) and their data's size:
#: a writer's are the same for equal sizes
_META_HEADS: dict[bytes, int] = {}
_MTIME_RE = re.compile(rb"^(-?)([0-9]{1,19})(?:\.([0-9]+))?$")
_INT_RE = re.compile(rb"^[0-9]{1,20}$")


@dataclass(slots=True)
class Header:
    """One tar entry. ``name`` and ``linkname`` are raw bytes (no trailing
    slash for directories when read); ``mode`` holds permission bits only."""

    name: bytes
    type: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


# ---- writing ------------------------------------------------------------------------


def _octal(n: int, width: int) -> bytes | None:
    """``n`` as a NUL-terminated octal field of ``width`` bytes (None: too big)."""
    if n < 0 or n >= 8 ** (width - 1):
        return None
    return b"%0*o" % (width - 1, n) + b"\0"


_OCTAL_ZERO = b"0000000\0"


def _numeric(n: int, width: int) -> bytes:
    """Octal, or GNU base-256 when ``n`` does not fit (read by Go, GNU tar)."""
    out = _octal(n, width)
    if out is not None:
        return out
    if n < 0 or n >= 256 ** (width - 1):
        raise ValueError(f"{n} does not fit a {width}-byte tar field")
    return b"\x80" + n.to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + len(str(len(body)))
    if len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _pax_mtime(ns: int) -> bytes:
    sign = b"-" if ns < 0 else b""
    sec, frac = divmod(abs(ns), 1_000_000_000)
    return sign + b"%d.%09d" % (sec, frac) if frac else sign + b"%d" % sec


_NOT_PLAIN = re.compile(rb"[^\x20-\x7e]")


def _fits_name(name: bytes) -> bool:
    return len(name) <= 100 and _NOT_PLAIN.search(name) is None


_NO_DEVICE = b"\0" * 16
_OWNER_NAMES = b"\0" * 64  # uname, gname: left empty
_TAIL = b"\0" * 167  # prefix (unused: long names go in PAX) and padding


def _ustar(h: Header, name: bytes, linkname: bytes, size: int, mtime: int) -> bytes:
    """One ustar header block (ids too large for octal are left 0: the PAX
    header carries them)."""
    uid = _octal(h.uid, 8) or _OCTAL_ZERO
    gid = _octal(h.gid, 8) or _OCTAL_ZERO
    if h.type in (CHARDEV, BLOCKDEV):
        dev = _numeric(h.devmajor, 8) + _numeric(h.devminor, 8)
    else:
        dev = _NO_DEVICE
    block = b"".join(
        (
            name[:100].ljust(100, b"\0"),
            _numeric(h.mode & 0o7777, 8),
            uid,
            gid,
            _numeric(size, 12),
            _numeric(mtime, 12),
            b"        ",  # the checksum counts as spaces
            h.type,
            linkname[:100].ljust(100, b"\0"),
            b"ustar\x0000",
            _OWNER_NAMES,
            dev,
            _TAIL,
        )
    )
    return block[:148] + b"%06o\0 " % byte_sum(block) + block[156:]


def byte_sum(data: bytes) -> int:
    """The sum of the bytes of ``data`` (at most 512: a header block), from
    Adler-32's first half (1 + the sum, exact while under 65,521: so two
    halves of 256 bytes each), far faster than ``sum``."""
    if len(data) > 2 * 256:
        return sum(data)
    return (zlib.adler32(data[:256]) & 0xFFFF) + (zlib.adler32(data[256:]) & 0xFFFF) - 2


def encode_header(h: Header) -> bytes:
    """The header block(s) of ``h``: a PAX header when needed, then ustar.
    The data (``h.size`` bytes, padded to 512) follows, written by the caller."""
    records: list[tuple[bytes, bytes]] = []
    name, linkname = h.name, h.linkname
    if not _fits_name(name):
        records.append((b"path", name))
    if not _fits_name(linkname):
        records.append((b"linkpath", linkname))
    sec, frac = divmod(h.mtime_ns, 1_000_000_000)
    mtime = sec if frac == 0 and _octal(sec, 12) is not None else 0
    if frac or _octal(sec, 12) is None:
        records.append((b"mtime", _pax_mtime(h.mtime_ns)))
    if _octal(h.uid, 8) is None:
        records.append((b"uid", b"%d" % h.uid))
    if _octal(h.gid, 8) is None:
        records.append((b"gid", b"%d" % h.gid))
    size = h.size
    if _octal(size, 12) is None:
        records.append((b"size", b"%d" % size))
        size = 0
    for key in sorted(h.xattrs):
        records.append((b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape"), h.xattrs[key]))
    if not records:
        return _ustar(h, name, linkname, size, mtime)
    binary = any(_not_utf8(v) for _k, v in records)
    data = (_pax_record(b"hdrcharset", b"BINARY") if binary else b"") + b"".join(
        _pax_record(k, v) for k, v in records
    )
    return (
        _pax_block(len(data))
        + data
        + padding(len(data))
        + _ustar(h, name if _fits_name(name) else name[:100], linkname, size, mtime)
    )


_PAX_BLOCKS: dict[int, bytes] = {}


def _pax_block(size: int) -> bytes:
    """The ustar block of a PAX header of ``size`` bytes (the same for
    every entry with that size: kept)."""
    block = _PAX_BLOCKS.get(size)
    if block is None:
        block = _ustar(Header(name=_PAX_NAME, type=_PAX, mode=0o644), _PAX_NAME, b"", size, 0)
        if len(_PAX_BLOCKS) < 4096:
            _PAX_BLOCKS[size] = block
    return block


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def padding(size: int) -> bytes:
    """Zero bytes that pad ``size`` bytes of data to a whole block."""
    return b"\0" * (-size % BLOCK)


END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


# ---- reading ------------------------------------------------------------------------


class ImportBudget:
    """Entries and uncompressed bytes an import may still read; one budget is
    shared by every tar of an import. :meth:`spend` raises BadImageError once
    either runs out."""

    def __init__(self, entries: int | None = None, nbytes: int | None = None) -> None:
        self.entries = MAX_IMPORT_ENTRIES if entries is None else entries
        self.nbytes = MAX_IMPORT_BYTES if nbytes is None else nbytes
        self.max_entries = self.entries
        self.max_bytes = self.nbytes

    def spend(self, what: str, entries: int, nbytes: int) -> None:
        self.entries -= entries
        self.nbytes -= nbytes
        if self.entries < 0:
            raise BadImageError(
                f"{what}: more than {self.max_entries} entries in one import "
                "(a decompression bomb?)"
            )
        if self.nbytes < 0:
            raise BadImageError(
                f"{what}: more than {self.max_bytes} bytes of uncompressed tar in one import "
                "(a decompression bomb?)"
            )


class TarReader:
    """Reads entries from a stream, one header at a time.

    ``read(n)`` must return ``n`` bytes, fewer only at the end of the stream.
    Use :meth:`entries`; for each entry, read its data with :meth:`data`
    (or leave it: the next step skips it). ``offset`` is the stream position
    of the next byte (for indexes of uncompressed tars)."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        what: str,
        skip: Callable[[int], None] | None = None,
        budget: ImportBudget | None = None,
    ) -> None:
        self._read = read
        self.budget = budget if budget is not None else ImportBudget()
        self._skip = skip  # a seek forward, for indexing a file without reading data
        self.what = what
        self.offset = 0
        self._left = 0  # data bytes of the current entry not read yet
        self._pad = 0
        self.unterminated = False  # the stream ended without the end-of-archive marker

    def _bad(self, why: str) -> BadImageError:
        return BadImageError(f"{self.what}: {why}")

    def _exact(self, n: int) -> bytes:
        out = self._read(n)
        if len(out) < n:
            while len(out) < n:
                more = self._read(n - len(out))
                if not more:
                    raise self._bad("truncated (the tar ends in the middle of an entry)")
                out += more
        self.offset += n
        return out

    def entries(self) -> Iterator[Header]:
        """Every entry up to the end-of-archive marker. Raises BadImageError."""
        while True:
            h = self._next()
            if h is None:
                return
            yield h

    def data(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The current entry's data, in chunks (each at most ``chunk`` bytes)."""
        while self._left:
            n = min(chunk, self._left)
            buf = self._exact(n)
            self._left -= n
            yield buf

    def read_data(self) -> bytes:
        """The current entry's data not read yet, in one piece (for small
        files: :meth:`data` reads large ones in chunks)."""
        n, self._left = self._left, 0
        return self._exact(n) if n else b""

    def _skip_data(self) -> None:
        """Pass the current entry's data not read yet (its padding is read
        with the next header, :meth:`_block`, unless ``skip`` seeks)."""
        if self._skip is not None and self._left + self._pad:
            self._skip(self._left + self._pad)
            self.offset += self._left + self._pad
            self._left = self._pad = 0
            return
        for _ in self.data():
            pass

    def _block(self) -> bytes | None:
        """The next header block, read with the padding before it in one
        call (None: the stream ends there; umoci omits the last padding)."""
        pad = self._pad
        self._pad = 0
        want = pad + BLOCK
        got = self._read(want)
        if len(got) < want:
            if len(got) > pad:
                got += self._read(want - len(got))
            if len(got) <= pad:
                self.offset += len(got)
                return None
            if len(got) < want:
                raise self._bad("truncated (a header is cut short)")
        self.offset += want
        return got[pad:] if pad else got

    def _meta_data(self, size: int, cap: int, kind: str) -> bytes:
        if size > cap:
            raise self._bad(f"a {kind} header of {size} bytes (more than {cap} allowed)")
        pad = -size % BLOCK
        if not size + pad:
            return b""
        data = self._exact(size + pad)  # (with its padding: one call)
        return data[:size] if pad else data

    def _next(self) -> Header | None:
        if self._left:
            self._skip_data()
        pax: dict[bytes, bytes] = {}
        longname: bytes | None = None
        longlink: bytes | None = None
        for _ in range(MAX_META_HEADERS + 1):
            block = self._block()
            if block is None:
                # no end-of-archive marker (umoci's layers, umoci#436): the
                # end, if the tar's digest proves it whole (the caller checks)
                if pax or longname is not None or longlink is not None:
                    raise self._bad("truncated (an extended header ends the stream)")
                self.unterminated = True
                return None
            size = _META_HEADS.get(block)  # a PAX header seen (and checked) before
            if size is not None:
                pax.update(self._parse_pax(self._meta_data(size, MAX_PAX_SIZE, "PAX")))
                continue
            if block == _ZERO_BLOCK:
                if pax or longname is not None or longlink is not None:
                    raise self._bad("an extended header is followed by the end of the archive")
                self._block()  # the second zero block (some writers omit it)
                return None
            self._check_sum(block)
            typ = block[156:157]
            size = self._field_int(block[124:136], "size")
            if typ == _PAX:
                data = self._meta_data(size, MAX_PAX_SIZE, "PAX")
                if len(_META_HEADS) < 256:  # (writers use a few: one a size)
                    _META_HEADS[block] = size
                pax.update(self._parse_pax(data))
            elif typ == _PAX_GLOBAL:
                self._parse_pax(self._meta_data(size, MAX_PAX_SIZE, "PAX global"))
            elif typ == _GNU_LONGNAME:
                longname = _cstr(self._meta_data(size, MAX_LONGNAME + 1, "GNU long name"))
            elif typ == _GNU_LONGLINK:
                longlink = _cstr(self._meta_data(size, MAX_LONGNAME + 1, "GNU long link"))
            else:
                return self._entry(block, typ, size, pax, longname, longlink)
        raise self._bad(f"more than {MAX_META_HEADERS} extended headers in a row")

    def _entry(
        self,
        block: bytes,
        typ: bytes,
        size: int,
        pax: dict[bytes, bytes],
        longname: bytes | None,
        longlink: bytes | None,
    ) -> Header:
        if typ in (b"\0", _CONTIGUOUS):
            typ = REGULAR
        plain = pax.keys() <= _PLAIN_PAX_KEYS  # (no xattrs, nothing sparse)
        if typ == b"S" or (not plain and any(k.startswith(b"GNU.sparse.") for k in pax)):
            raise self._bad("GNU sparse entries are not supported")
        if typ not in ENTRY_TYPES:
            raise self._bad(f"entry type {typ!r} is not supported")
        (raw_name, raw_mode, raw_uid, raw_gid, raw_mtime, raw_link, magic, raw_major, raw_minor,
         raw_prefix) = _USTAR.unpack(block)  # fmt: skip
        name = _cstr(raw_name)
        if magic == b"ustar\x00" and raw_prefix[:1] != b"\0":
            prefix = _cstr(raw_prefix)
            if prefix:
                name = prefix + b"/" + name
        if longname is not None:
            name = longname
        linkname = _cstr(raw_link)
        if longlink is not None:
            linkname = longlink
        if pax:
            name = pax.get(b"path", name)
            linkname = pax.get(b"linkpath", linkname)
            if b"size" in pax:
                size = self._pax_int(pax[b"size"], "size")
        if size > MAX_ENTRY_SIZE:
            raise self._bad(f"entry {name!r} claims {size} bytes (more than 1 TiB)")
        if size and typ != REGULAR:
            raise self._bad(f"entry {name!r} of type {typ.decode()} carries {size} data bytes")
        self.budget.spend(self.what, 1, BLOCK + size + -size % BLOCK)
        field_int = self._field_int
        mtime_ns = field_int(raw_mtime, "mtime") * 1_000_000_000
        mode = field_int(raw_mode, "mode") & 0o7777
        if pax:
            if b"mtime" in pax:
                mtime_ns = self._pax_mtime(pax[b"mtime"])
            uid = self._pax_int(pax[b"uid"], "uid") if b"uid" in pax else field_int(raw_uid, "uid")
            gid = self._pax_int(pax[b"gid"], "gid") if b"gid" in pax else field_int(raw_gid, "gid")
        else:
            uid = field_int(raw_uid, "uid")
            gid = field_int(raw_gid, "gid")
        h = Header(name, typ, mode, uid, gid, size, mtime_ns, linkname)
        if uid > MAX_ID or gid > MAX_ID:
            id_name, id_value = ("uid", uid) if uid > MAX_ID else ("gid", gid)
            raise self._bad(f"entry {name!r} has {id_name} {id_value} (at most {MAX_ID})")
        if not -MAX_MTIME_NS <= mtime_ns <= MAX_MTIME_NS:
            raise self._bad(f"entry {name!r} has an mtime out of range")
        if typ in (CHARDEV, BLOCKDEV):
            h.devmajor = field_int(raw_major, "devmajor")
            h.devminor = field_int(raw_minor, "devminor")
            if h.devmajor > MAX_DEV_MAJOR or h.devminor > MAX_DEV_MINOR:
                raise self._bad(f"entry {name!r} has a device number out of range")
        if not plain:
            for key, value in pax.items():
                if key.startswith(b"SCHILY.xattr."):
                    xname = key[len(b"SCHILY.xattr.") :]
                    if not xname or len(xname) > MAX_XATTR_NAME or b"\0" in xname:
                        raise self._bad(f"entry {name!r} has a malformed xattr name {xname!r}")
                    if len(value) > MAX_XATTR_VALUE:
                        raise self._bad(f"entry {name!r} has an xattr value of {len(value)} bytes")
                    h.xattrs[xname.decode("utf-8", "surrogateescape")] = value
        if len(name) > MAX_LONGNAME or len(linkname) > MAX_LONGNAME:
            raise self._bad(f"a name longer than {MAX_LONGNAME} bytes: {name[:80]!r}...")
        if typ == SYMLINK and len(linkname) > MAX_SYMLINK_TARGET:
            raise self._bad(
                f"entry {name[:80]!r}... is a symlink to a target longer than "
                f"{MAX_SYMLINK_TARGET} bytes (PATH_MAX), which no filesystem stores"
            )
        if b"\0" in name or b"\0" in linkname:
            raise self._bad(f"a name holds a NUL byte: {name!r}")
        self._left = size
        self._pad = -size % BLOCK
        return h

    def _check_sum(self, block: bytes) -> None:
        field = block[148:156]
        want = self._field_int(field, "checksum")
        unsigned = byte_sum(block) - sum(field) + 8 * 0x20
        if want == unsigned:
            return
        signed = sum((b - 256 if b > 127 else b) for b in block[:148] + block[156:]) + 256
        if want != signed:  # (some old writers summed signed bytes)
            raise self._bad(f"a header checksum does not match (corrupt tar at byte {self.offset})")

    def _field_int(self, raw: bytes, what: str) -> int:
        n = _NUMBERS.get(raw)  # modes, ids, sizes and checksums repeat
        if n is None:
            n = self._parse_field(raw, what)
            if len(_NUMBERS) >= 16384:
                _NUMBERS.clear()
            _NUMBERS[raw] = n
        return n

    def _parse_field(self, raw: bytes, what: str) -> int:
        try:  # the common case: octal digits, then NULs (the same value as below)
            return int(raw.rstrip(b"\0"), 8)
        except ValueError:
            pass
        if raw[:1] == b"\x80":
            return int.from_bytes(raw[1:], "big")
        if raw[:1] == b"\xff":
            raise self._bad(f"a negative {what} field")
        text = raw.split(b"\0", 1)[0].strip(b" ")
        if not text:
            return 0
        try:
            return int(text, 8)
        except ValueError:
            raise self._bad(f"a malformed {what} field (header at byte {self.offset})") from None

    def _pax_int(self, value: bytes, what: str) -> int:
        if not _INT_RE.match(value):
            raise self._bad(f"a malformed PAX {what} (before byte {self.offset})")
        return int(value)

    def _pax_mtime(self, value: bytes) -> int:
        m = _MTIME_RE.match(value)
        if m is None:
            raise self._bad(f"a malformed PAX mtime (before byte {self.offset})")
        frac = (m.group(3) or b"")[:9].ljust(9, b"0")
        ns = int(m.group(2)) * 1_000_000_000 + int(frac)
        return -ns if m.group(1) else ns

    def _parse_pax(self, data: bytes) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        pos = 0
        while pos < len(data):
            sp = data.find(b" ", pos, pos + 12)
            if sp < 0 or not data[pos:sp].isdigit():
                raise self._bad("a malformed PAX record")
            length = int(data[pos:sp])
            end = pos + length
            if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
                raise self._bad("a malformed PAX record length")
            key, eq, value = data[sp + 1 : end - 1].partition(b"=")
            if not eq or not key:
                raise self._bad("a PAX record without a key")
            out[key] = value
            pos = end
        return out


def _cstr(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]
