"""What fuse-overlayfs writes into an upperdir, and how snapws reads it.

Checked with fuse-overlayfs 1.10 on Linux 6.18, as root (tests/backends):

* a deletion is a 0/0 character device, as the kernel writes it (a regular
  file ``.wh.NAME`` only where mknod of a whiteout is refused: never since
  Linux 5.8, which lets anyone make one);
* every directory it creates gets ``trusted.overlay.opaque=y``
  (``user.fuseoverlayfs.opaque=y`` where trusted.* is refused), whether or
  not it hides anything, and two entries inside: an empty regular file
  ``.wh..wh..opq`` and a whiteout ``.wh..opq``; a copied-up directory gets
  neither;
* a copied-up file gets ``user.fuseoverlayfs.origin`` (bookkeeping, see
  :data:`snapws.layers.entries.OVERLAY_PREFIXES`);
* through its mount it refuses names that begin with ``.wh.`` (EINVAL), so in
  its upperdir every such name is its own bookkeeping.

It reads lower layers in either xattr form (``trusted.overlay.opaque``,
``user.overlay.opaque``) and 0/0 whiteouts, so layers need no conversion.

Reading an upperdir of the ``fuse`` form: names beginning with ``.wh.`` are
not part of the tree (:func:`is_bookkeeping`); an opaque marker on a
directory that hides nothing is not recorded (:func:`canonical_opaque`), so
that a change committed through fuse-overlayfs gives the same layer, hence
the same snapshot id, as through the kernel. Before the upperdir becomes a
layer, :func:`canonicalise_upper` makes its tree say what its manifest says.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace

from snapws.errors import LayerRejectedError
from snapws.layers.entries import OPAQUE_XATTRS, Node, is_whiteout, parent_of
from snapws.model import ROOT, Entry, Kind, display_path

#: The upper form of fuse-overlayfs (see :data:`snapws.backends.base.UpperForm`).
FORM = "fuse"
WH_PREFIX = b".wh."
#: The two entries fuse-overlayfs puts in each directory it creates.
OPAQUE_FILE = b".wh..wh..opq"
OPAQUE_WHITEOUT = b".wh..opq"


def is_bookkeeping(name: bytes) -> bool:
    """True for a name fuse-overlayfs uses for itself (``.wh.`` prefix)."""
    return name.startswith(WH_PREFIX)


def check_bookkeeping(name: bytes, st: os.stat_result, path: bytes) -> None:
    """Refuse a ``.wh.`` entry of a fuse upperdir other than the two opaque
    markers: a deletion written as a ``.wh.NAME`` file, which snapws does not
    store. Raises LayerRejectedError."""
    if name == OPAQUE_FILE and stat.S_ISREG(st.st_mode):
        return
    if name == OPAQUE_WHITEOUT and is_whiteout(st):
        return
    raise LayerRejectedError(
        f"the upperdir holds {display_path(path)}, a deletion in fuse-overlayfs's "
        "'.wh.' file form, which snapws does not store",
        hint="fuse-overlayfs writes that form only where it cannot make 0/0 character "
        "devices (an upperdir on an overlay, Linux < 5.8); keep the store on a real "
        "filesystem, or use the plain backend there",
    )


def canonical_opaque(nodes: list[Node], shows: dict[bytes, bool]) -> list[Node]:
    """``nodes`` of an upperdir (parents first) with the opaque flag cleared
    where it hides nothing, as the kernel would have written it.

    The kernel marks a directory opaque when it is made where the merged view
    showed something (over a whiteout); fuse-overlayfs marks every directory
    it makes. So an opaque directory keeps its flag only when no ancestor in
    the upperdir is opaque (that one already hides all below) and the lower
    view shows something at its path: ``shows[path]``, computed by the caller
    for the opaque directories of ``nodes``."""
    out = []
    opaque_dirs: set[bytes] = set()
    for n in nodes:
        if n.opaque:
            above = n.path != ROOT and _has_ancestor_in(n.path, opaque_dirs)
            opaque_dirs.add(n.path)
            if above or not shows.get(n.path, False):
                n = replace(n, opaque=False)
        out.append(n)
    return out


def _has_ancestor_in(path: bytes, dirs: set[bytes]) -> bool:
    while path != ROOT:
        path = parent_of(path)
        if path in dirs:
            return True
    return False


def canonicalise_upper(upper: bytes, entries: list[Entry]) -> None:
    """Make a frozen, unmounted fuse upperdir say what its manifest
    ``entries`` say, in the kernel's form: remove fuse-overlayfs's
    ``.wh..wh..opq`` files and ``.wh..opq`` whiteouts, and the opaque
    markers of directories the manifest does not call opaque. Directory
    mtimes are left to the caller to restore. Idempotent (run again after a
    crash). Raises OSError, LayerRejectedError (see :func:`check_bookkeeping`)."""
    stack = [(ROOT, upper)]
    while stack:
        rel, abspath = stack.pop()
        with os.scandir(abspath) as it:
            ents = list(it)
        for de in ents:
            name = os.fsencode(de.name)
            path = name if rel == ROOT else rel + b"/" + name
            st = de.stat(follow_symlinks=False)
            if is_bookkeeping(name):
                check_bookkeeping(name, st, path)
                os.unlink(de.path)
            elif stat.S_ISDIR(st.st_mode):
                stack.append((path, os.fsencode(de.path)))
    for e in entries:
        if e.kind is not Kind.DIR or e.opaque:
            continue
        p = upper if e.path == ROOT else upper + b"/" + e.path
        try:
            xattrs = os.listxattr(p, follow_symlinks=False)
        except FileNotFoundError:
            continue
        for xattr in xattrs:
            if xattr in OPAQUE_XATTRS:
                os.removexattr(p, xattr, follow_symlinks=False)
