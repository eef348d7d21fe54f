"""How a node of the working tree becomes a manifest-style entry in a plain
workspace (:func:`work_entry`), under the rules of the process reading it
(:class:`WorkRules`: not root, no extended attributes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace

from snapws.backends.plain.records import EntryTuple, tuple_entry
from snapws.ids import ContentHash
from snapws.layers.entries import Node, list_xattrs, node_entry, read_node, user_xattrs
from snapws.model import Entry, Kind


@dataclass(frozen=True, slots=True)
class WorkRules:
    """How this process reads the working tree.

    Not root, a file that the user owns takes HEAD's owner (it could not be
    given any other on checkout), and HEAD's ``trusted.*`` attributes (which
    only root can read or write) count as present. On a filesystem without
    extended attributes, HEAD's attributes count as present."""

    as_root: bool
    euid: int
    xattrs_supported: bool

    @classmethod
    def for_workspace(cls, root: bytes) -> WorkRules:
        euid = os.geteuid()
        return cls(euid == 0, euid, _xattrs_supported(root))


def _xattrs_supported(path: bytes) -> bool:
    try:
        os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        import errno

        return e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def work_entry(
    path: bytes,
    abspath: bytes,
    st: os.stat_result,
    head: EntryTuple | None,
    digest: ContentHash | None,
    rules: WorkRules,
) -> Entry:
    """The manifest-style entry of a working-tree node (``digest``: its
    content hash, for regular files), under ``rules``. Raises OSError."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        # a 0/0 device in a workspace is just a device (commit refuses it)
        xattrs = user_xattrs(list_xattrs(abspath))
        node = Node(path, abspath, st, Kind.CHARDEV, xattrs, False, (), None)
    else:
        node = read_node(path, abspath, st)
    e = node_entry(node, digest)
    if e.opaque:
        e = replace(e, opaque=False)
    if head is not None:
        h = tuple_entry(path, head)
        if not rules.as_root:
            if (e.uid, e.gid) != (h.uid, h.gid) and e.uid == rules.euid:
                e = replace(e, uid=h.uid, gid=h.gid)
            hidden = {k: v for k, v in h.xattrs.items() if k.startswith("trusted.")}
            if hidden:
                e = replace(e, xattrs={**hidden, **e.xattrs})
        if not rules.xattrs_supported:
            e = replace(e, xattrs=h.xattrs)
    return e
