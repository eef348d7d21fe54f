"""How a node of the working tree becomes a manifest-style entry in a plain
workspace (:func:`work_entry`), under the rules of the process reading it
(:class:`WorkRules`: not root, no extended attributes).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace

from snapws.backends.plain.owners import Owners
from snapws.backends.plain.records import EntryTuple, tuple_entry
from snapws.ids import ContentHash
from snapws.layers.entries import Node, list_xattrs, node_entry, read_node, user_xattrs
from snapws.model import Entry, Kind, classify


@dataclass(frozen=True, slots=True)
class WorkRules:
    """How this process reads the working tree.

    Not root, a node has the owner a commit by this user would record
    (:meth:`Owners.settable`: her uid, and its group if she is in it, else
    her primary gid), or HEAD's owner where the two differ only as no
    commit or checkout of hers can change (see :func:`as_recorded`); and
    HEAD's ``trusted.*`` attributes (which only root can read or write)
    count as present. On a filesystem without extended attributes, HEAD's
    attributes count as present."""

    as_root: bool
    euid: int
    xattrs_supported: bool
    owners: Owners = field(default_factory=Owners.of_process)

    @classmethod
    def for_workspace(cls, root: bytes) -> WorkRules:
        euid = os.geteuid()
        return cls(euid == 0, euid, _xattrs_supported(root), Owners.of_process())


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
    return as_recorded(e, tuple_entry(path, head) if head is not None else None, rules)


def as_recorded(e: Entry, h: Entry | None, rules: WorkRules) -> Entry:
    """The working-tree entry ``e`` (as read from disk) as a commit by this
    process would record it, HEAD's entry of its path being ``h``.

    Not root, the owner is what the store's copy gets
    (:meth:`Owners.settable`), unless the node differs from ``h`` in
    nothing else and ``h``'s owner maps to the same one: then it is ``h``'s
    (a checkout by this user could not have written it, and a commit would
    not copy the node), so status shows exactly what a commit records."""
    if h is not None:
        if not rules.as_root:
            hidden = {k: v for k, v in h.xattrs.items() if k.startswith("trusted.")}
            if hidden:
                e = replace(e, xattrs={**hidden, **e.xattrs})
        if not rules.xattrs_supported:
            e = replace(e, xattrs=h.xattrs)
    if rules.as_root:
        return e
    settable = rules.owners.settable
    owner = settable(e.uid, e.gid)
    if h is not None and (h.uid, h.gid) != owner and settable(h.uid, h.gid) == owner:
        kept = replace(e, uid=h.uid, gid=h.gid)
        if classify(e.path, h, kept) is None:
            return kept
    return e if (e.uid, e.gid) == owner else replace(e, uid=owner[0], gid=owner[1])
