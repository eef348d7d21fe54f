"""What the last status of a held workspace found unchanged, so that the
next one compares only what moved since (git's index does the same for its
working tree).

A held workspace's upperdir U keeps every change since its mount, and its
status compares each node of U with HEAD (:mod:`snapws.layers.upperdiff`):
a cost that grows through a day of commits, though most of those nodes are
committed and unchanged. This memo, kept in the workspace's directory of the
store, records for one (HEAD, mounted chain, upperdir, ignore settings):

- each node of U found equal to HEAD, with its stamp (inode, size, mode,
  mtime, ctime): while its stamp is the same, it is equal still;
- every path U had, so that a node gone since is looked at again, and
  which of them hid what lies below them (a whiteout, a non-directory, an
  opaque directory): if one hides no more, what it hid is looked at again;
- the changes at paths U did not have, which are looked at again too.

A node is remembered as clean only if its ctime was :data:`RACY_NS` old when
the status began (a write in the same timestamp tick as the one before could
leave the stamp as it was: git's "racy clean"). A write through a shared
mapping can change a file without moving its ctime until writeback; so, as
the content-hash cache (:mod:`snapws.layers.hashcache`), only commands that
change nothing use the memo. It is a cache: missing, torn, or for another
key, it is not used (and every node of U is compared).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from snapws.layers.entries import Node, kind_of
from snapws.layers.hashcache import RACY_NS, drop_old_copies
from snapws.layers.upperdiff import hides
from snapws.model import Change, Kind

NAME = "held-clean"
_MAGIC = b"snapws-held-clean-2\n"
_STAMP = struct.Struct("<QqqqI")  # inode, size, mtime_ns, ctime_ns, mode
_LEN = struct.Struct("<I")
_CLEAN, _NODE, _EXTRA = b"c", b"n", b"x"
_HIDES = 1

Stamp = tuple[int, int, int, int, int]


def stamp(node: Node) -> Stamp:
    st = node.st
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@dataclass
class HeldClean:
    """The memo of one key (see the module's docstring)."""

    key: bytes
    clean: dict[bytes, Stamp] = field(default_factory=dict)
    nodes: set[bytes] = field(default_factory=set)
    hiding: set[bytes] = field(default_factory=set)
    extra: set[bytes] = field(default_factory=set)

    def focus(self, nodes: list[Node]) -> tuple[set[bytes], set[bytes]]:
        """The paths to compare now (nodes of U new or changed since the
        memo, those gone since, the changes U did not hold), and among them
        those below which everything is to be compared too (the nodes that
        hid what lies below them then, or do now)."""
        now = {n.path: n for n in nodes}
        moved = {p for p, n in now.items() if self.clean.get(p) != stamp(n)}
        gone = self.nodes - now.keys()
        hides_now = {p for p in moved if hides(now[p])}
        return moved | gone | self.extra, (self.hiding & (moved | gone)) | hides_now

    def known(self, path: bytes, abspath: bytes, st: os.stat_result) -> Node | None:
        """U's node at ``path`` as a partial node (:func:`read_tree`'s
        ``known``: no attribute read) if it is remembered clean with this
        stamp: an attribute set or removed since would have moved its ctime."""
        now = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        if self.clean.get(path) != now:
            return None
        kind = kind_of(st)
        opaque = kind is Kind.DIR and path in self.hiding  # a directory that hid: opaque
        return Node(path, abspath, st, kind, {}, opaque, (), None, (), partial=True)

    def after(
        self,
        nodes: list[Node],
        focus: set[bytes] | None,
        changes: list[Change],
        skipped: Callable[[bytes], bool],
        began_ns: int,
    ) -> HeldClean:
        """The memo once a status that began at ``began_ns`` compared
        ``focus`` (None: every node) and found ``changes``; ``skipped``
        paths (ignored) were not compared and are never remembered clean."""
        changed = {c.path for c in changes}
        compared = focus
        old_enough = began_ns - RACY_NS
        clean: dict[bytes, Stamp] = {}
        for n in nodes:
            if n.path in changed or skipped(n.path):
                continue
            s = stamp(n)
            if compared is not None and n.path not in compared:
                if self.clean.get(n.path) == s:
                    clean[n.path] = s  # unchanged since it was found clean
            elif n.st.st_ctime_ns < old_enough:
                clean[n.path] = s
        paths = {n.path for n in nodes}
        hiding = {n.path for n in nodes if hides(n)}
        return HeldClean(self.key, clean, paths, hiding, changed - paths)


def memo_key(head: str, mounted: str, upper: str, ignore: Sequence[str]) -> bytes:
    """What the comparison depends on besides U: HEAD, the chain below U,
    which upperdir, the ignore patterns of the settings."""
    return "\0".join([head, mounted, upper, *ignore]).encode("utf-8", "surrogateescape")


def load(wsdir: Path, key: bytes) -> HeldClean:
    """The memo of ``key`` in ``wsdir``; an empty one if there is none for
    that key, or it is unreadable."""
    empty = HeldClean(key)
    drop_old_copies(wsdir / NAME)  # a copy a killed save left
    try:
        data = (wsdir / NAME).read_bytes()
    except OSError:
        return empty
    head = _MAGIC + _LEN.pack(len(key)) + key
    if not data.startswith(head):
        return empty
    memo = HeldClean(key)
    i = len(head)
    try:
        while i < len(data):
            kind, flags = data[i : i + 1], data[i + 1 : i + 2]
            i += 2
            s: Stamp | None = None
            if kind == _CLEAN:
                s = _STAMP.unpack_from(data, i)
                i += _STAMP.size
            (size,) = _LEN.unpack_from(data, i)
            i += _LEN.size
            path = data[i : i + size]
            i += size
            if len(path) != size:
                return empty
            if flags == bytes([_HIDES]):
                memo.hiding.add(path)
            if kind == _CLEAN and s is not None:
                memo.clean[path] = s
                memo.nodes.add(path)
            elif kind == _NODE:
                memo.nodes.add(path)
            elif kind == _EXTRA:
                memo.extra.add(path)
            else:
                return empty
    except struct.error:
        return empty
    return memo


def save(wsdir: Path, memo: HeldClean) -> None:
    """Write ``memo`` (atomically, not synced: a cache). Never raises: a
    read-only store keeps none."""
    out = [_MAGIC, _LEN.pack(len(memo.key)), memo.key]
    for path in sorted(memo.nodes | memo.extra):
        s = memo.clean.get(path)
        flags = bytes([_HIDES if path in memo.hiding else 0])
        if s is not None:
            out += [_CLEAN, flags, _STAMP.pack(*s)]
        else:
            out += [_NODE if path in memo.nodes else _EXTRA, flags]
        out += [_LEN.pack(len(path)), path]
    tmp = wsdir / f".{NAME}.tmp-{os.getpid()}"
    try:
        tmp.write_bytes(b"".join(out))
        os.replace(tmp, wsdir / NAME)
    except OSError:
        with suppress(OSError):
            tmp.unlink()
    drop_old_copies(wsdir / NAME)
