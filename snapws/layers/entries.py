"""Reading one on-disk node of a layer tree (overlay form) into an :class:`Entry`.

The overlay form: a deletion is a 0/0 character device (a whiteout), a
directory that hides older layers carries ``trusted.overlay.opaque=y``, or
``user.overlay.opaque=y`` in a store made for ``userxattr`` mounts (rootless;
the store records its form, see :data:`XATTR_FORMS`). Readers accept both
forms: every ``trusted.overlay.*`` and ``user.overlay.*`` attribute (and
fuse-overlayfs's ``user.fuseoverlayfs.*``) is overlay bookkeeping, never
recorded as a user attribute; ``redirect`` and ``metacopy`` mean U alone is
not a complete diff.

Owners: inside the user namespace of a rootless workspace the user is uid 0.
:func:`set_namespace_owner` makes entries record the user's real ids (the
view from outside), so one tree gets one manifest whichever backend reads it.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from snapws.deeppath import reach
from snapws.ids import ContentHash
from snapws.model import Entry, Kind

OVERLAY_NS = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"
#: The xattr namespace of overlay bookkeeping by store form: "trusted" (the
#: kernel's default, root only) or "user" (mounts with ``userxattr``).
XATTR_FORMS = {"trusted": "trusted.overlay.", "user": "user.overlay."}
#: Every prefix of overlay bookkeeping a reader meets (both kernel forms, and
#: fuse-overlayfs's unprivileged one).
OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")
#: Attributes that mark an opaque directory (value ``y``), in any form.
OPAQUE_XATTRS = tuple(prefix + "opaque" for prefix in OVERLAY_PREFIXES)
#: Attributes whose presence means the upperdir is not a self-contained diff
#: (``redirect``, ``metacopy``: a mount with those features on) or would hide
#: paths no whiteout records (``whiteout``, the marker of a regular file that
#: overlayfs 6.7+ reads as a whiteout). No snapws mount writes them.
FORBIDDEN_XATTRS = tuple(
    prefix + name
    for prefix in OVERLAY_PREFIXES[:2]
    for name in ("redirect", "metacopy", "whiteout")
)


def opaque_xattr(form: str) -> str:
    """The opaque marker written in a store of ``form`` ("trusted" or "user").
    Raises ValueError for another form."""
    try:
        return XATTR_FORMS[form] + "opaque"
    except KeyError:
        raise ValueError(f"unknown overlay xattr form {form!r}") from None


def is_overlay_xattr(name: str) -> bool:
    """True for overlay bookkeeping (any form): never a user attribute."""
    return name.startswith(OVERLAY_PREFIXES)


def has_opaque_marker(path: bytes | int) -> bool:
    """True if directory ``path`` (or the directory open as descriptor
    ``path``) carries an opaque marker (any form) set to ``y``."""
    if isinstance(path, int):
        return _opaque_marker(path, True)
    with reach(path) as short:
        return _opaque_marker(short, False)


def _opaque_marker(path: bytes | int, follow: bool) -> bool:
    try:
        names = os.listxattr(path, follow_symlinks=follow)  # one call for most dirs
    except OSError:
        return False
    for name in names:
        if name in OPAQUE_XATTRS:
            try:
                if os.getxattr(path, name, follow_symlinks=follow) == b"y":
                    return True
            except OSError:
                continue
    return False


# ---- owners seen from inside a rootless user namespace ---------------------

#: (uid, gid) that uid/gid 0 stand for: set inside a snapws user namespace.
_namespace_owner: tuple[int, int] | None = None


def set_namespace_owner(uid: int, gid: int) -> None:
    """Declare that this process runs in a user namespace that maps uid/gid 0
    to the real ``uid``/``gid`` (and nothing else). Entries then record the
    real ids, and :func:`ns_ids` maps them back for chown. Called once by
    :mod:`snapws.backends.userns` when it enters a namespace."""
    global _namespace_owner
    _namespace_owner = (uid, gid)


def host_ids(uid: int, gid: int) -> tuple[int, int]:
    """Owner ids as recorded in manifests (the real ids) for ids seen on disk
    by this process. Ids the namespace does not map (shown as 65534) stay."""
    owner = _namespace_owner
    if owner is None:
        return uid, gid
    return (owner[0] if uid == 0 else uid), (owner[1] if gid == 0 else gid)


def ns_ids(uid: int, gid: int) -> tuple[int, int]:
    """The inverse of :func:`host_ids`: the ids to pass to chown for recorded
    real ids. Ids the namespace does not map stay (chown then fails: a
    rootless workspace can only own files of its user)."""
    owner = _namespace_owner
    if owner is None:
        return uid, gid
    return (0 if uid == owner[0] else uid), (0 if gid == owner[1] else gid)


_KIND_BY_FMT = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFCHR: Kind.CHARDEV,
    stat.S_IFBLK: Kind.BLOCKDEV,
    stat.S_IFSOCK: Kind.SOCKET,
}


def is_whiteout(st: os.stat_result) -> bool:
    """A 0/0 character device: overlay's mark for a deleted path."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def kind_of(st: os.stat_result) -> Kind:
    if is_whiteout(st):
        return Kind.WHITEOUT
    return _KIND_BY_FMT[stat.S_IFMT(st.st_mode)]


def list_xattrs(path: bytes) -> dict[str, bytes]:
    """Every extended attribute of ``path`` (not following symlinks),
    overlay bookkeeping included. Filesystems without xattrs give {}."""
    with reach(path) as short:
        try:
            names = os.listxattr(short, follow_symlinks=False)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return {}
            raise
        out = {}
        for name in names:
            try:
                out[name] = os.getxattr(short, name, follow_symlinks=False)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise
    return out


def user_xattrs(all_xattrs: dict[str, bytes]) -> dict[str, bytes]:
    """The attributes a manifest records: everything but overlay bookkeeping."""
    return {k: v for k, v in all_xattrs.items() if not k.startswith(OVERLAY_PREFIXES)}


@dataclass(frozen=True, slots=True)
class Node:
    """A node read from disk, before content hashing."""

    path: bytes
    abspath: bytes
    st: os.stat_result
    kind: Kind
    xattrs: dict[str, bytes]
    opaque: bool
    forbidden: tuple[str, ...]
    target: bytes | None
    #: every overlay attribute of the node (any form), name and value, sorted
    overlay: tuple[tuple[str, bytes], ...] = ()
    #: only its stat is read (a node known unchanged, see
    #: :func:`snapws.layers.scan.read_tree`): its attributes, target and
    #: overlay attributes are not; :func:`complete` reads them
    partial: bool = False


def read_node(path: bytes, abspath: bytes, st: os.stat_result | None = None) -> Node:
    """lstat + xattrs + symlink target of one node (``abspath`` may be longer
    than PATH_MAX). Raises OSError."""
    with reach(abspath) as short:
        if st is None:
            st = os.lstat(short)
        kind = kind_of(st)
        if kind is Kind.WHITEOUT:
            return Node(path, abspath, st, kind, {}, False, (), None)
        allx = list_xattrs(short)
        target = os.readlink(short) if kind is Kind.SYMLINK else None
    opaque = kind is Kind.DIR and any(allx.get(name) == b"y" for name in OPAQUE_XATTRS)
    forbidden = tuple(k for k in FORBIDDEN_XATTRS if k in allx) + tuple(
        k for k in OPAQUE_XATTRS[:2] if k in allx and allx[k] != b"y"
    )  # "x": a directory overlayfs searches for such whiteouts
    overlay = tuple(sorted((k, v) for k, v in allx.items() if is_overlay_xattr(k)))
    return Node(path, abspath, st, kind, user_xattrs(allx), opaque, forbidden, target, overlay)


def complete(node: Node) -> Node:
    """``node`` read whole if it is :attr:`~Node.partial` (as it was if it is
    gone since). Raises OSError."""
    if not node.partial:
        return node
    try:
        return read_node(node.path, node.abspath)
    except FileNotFoundError:
        return node


def planted_overlay_xattrs(node: Node, form: str) -> tuple[str, ...]:
    """Names of the overlay attributes on ``node`` that no published layer of
    a store of ``form`` ("trusted" or "user") may carry: every
    ``trusted.overlay.*``, ``user.overlay.*`` and ``user.fuseoverlayfs.*``
    attribute except the one marker snapws writes itself, the store's opaque
    attribute set to ``y`` on a directory. Anything else (a ``redirect``, a
    ``metacopy``, an ``origin``, a ``whiteout``, an ``opaque`` of ``x`` or of
    the other form) was planted, or left by a mount snapws did not make, and
    can change what a mount of the layer shows. Raises ValueError for an
    unknown form."""
    keep = opaque_xattr(form)
    return tuple(
        name
        for name, value in node.overlay
        if not (name == keep and value == b"y" and node.kind is Kind.DIR)
    )


def node_entry(node: Node, digest: ContentHash | None) -> Entry:
    """The manifest entry for ``node``; ``digest`` is required for files."""
    st = node.st
    if node.kind is Kind.WHITEOUT:
        return Entry(path=node.path, kind=Kind.WHITEOUT)
    rdev = (
        (os.major(st.st_rdev), os.minor(st.st_rdev))
        if node.kind in (Kind.CHARDEV, Kind.BLOCKDEV)
        else None
    )
    uid, gid = host_ids(st.st_uid, st.st_gid)
    return Entry(
        path=node.path,
        kind=node.kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=uid,
        gid=gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if node.kind is Kind.FILE else 0,
        hash=digest if node.kind is Kind.FILE else None,
        target=node.target,
        rdev=rdev,
        xattrs=node.xattrs,
        opaque=node.opaque,
    )


def join(root: bytes, rel: bytes) -> bytes:
    """Absolute path of ``rel`` (``b"."`` is the root) under ``root``."""
    return root if rel == b"." else root + b"/" + rel


def child(parent: bytes, name: bytes) -> bytes:
    return name if parent == b"." else parent + b"/" + name


def parent_of(path: bytes) -> bytes:
    i = path.rfind(b"/")
    return b"." if i < 0 else path[:i]


def is_under(path: bytes, top: bytes) -> bool:
    """True if ``path`` is ``top`` or below it."""
    return top == b"." or path == top or path.startswith(top + b"/")


def in_or_below(path: bytes, tops: Collection[bytes]) -> bool:
    """True if ``path`` or one of its directories is in ``tops``."""
    return in_or_below_any(tops)(path)


def in_or_below_any(tops: Collection[bytes]) -> Callable[[bytes], bool]:
    """A test of "``path`` or one of its directories is in ``tops``", for
    testing many paths. Each test costs one lookup per distinct length of
    ``tops`` shorter than the path, not one per level of the path (paths
    may be 10,000 levels deep)."""
    lengths = sorted({len(t) for t in tops})

    def test(path: bytes) -> bool:
        if path in tops:
            return True
        for length in lengths:
            if length >= len(path):
                break
            if path[length] == 0x2F and path[:length] in tops:  # b"/"
                return True
        return False

    return test


class Tops:
    """A growing set of paths that tells whether a path is one of them or
    lies below one (:meth:`covers`) at one lookup per distinct length of
    them, not one per level of the path (paths may be 10,000 levels deep).
    The root (``b"."``) covers every path, unless ``root_covers`` is False."""

    def __init__(self, root_covers: bool = True) -> None:
        self.paths: set[bytes] = set()
        self._lengths: list[int] = []
        self._root_covers = root_covers

    def add(self, path: bytes) -> None:
        if path not in self.paths:
            self.paths.add(path)
            if len(path) not in self._lengths:
                bisect.insort(self._lengths, len(path))

    def __contains__(self, path: object) -> bool:
        return path in self.paths

    def below(self, path: bytes) -> bool:
        """True if ``path`` lies strictly below one of the paths."""
        if self._root_covers and ROOT_PATH in self.paths and path != ROOT_PATH:
            return True
        for length in self._lengths:
            if length >= len(path):
                return False
            if path[length] == 0x2F and path[:length] in self.paths:  # b"/"
                return True
        return False

    def covers(self, path: bytes) -> bool:
        """True if ``path`` is one of the paths or lies below one."""
        return path in self.paths or self.below(path)


ROOT_PATH = b"."


def on_the_way(path: bytes, under: Sequence[bytes]) -> bool:
    """True if ``under`` is empty (everything), or ``path`` is one of
    ``under``, below one, or a directory above one: what a walk restricted to
    ``under`` must visit."""
    if not under:
        return True
    return any(is_under(path, u) or is_under(u, path) for u in under)
