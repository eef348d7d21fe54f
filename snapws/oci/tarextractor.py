"""An OCI layer tar unpacked into a layer tree (see
:mod:`snapws.oci.tarwriter` for the way there; :mod:`snapws.oci.extractedlayer`
makes a staging dir for it and publishes it).

Reading treats the tar as hostile: each node is created by this module inside
a private staging tree, below directories it made itself, each resolved
beneath the tree's descriptor (:mod:`snapws.beneath`: no symlink is ever
followed), with ``O_EXCL``/``O_NOFOLLOW``; paths with ``..`` or a leading
``/``, symlinks whose relative target climbs out of the layer, hardlinks to
anything but an earlier file of the same tar, entries below a non-directory,
duplicates, whiteouts of ``.``/``..``, overlay xattrs and 0/0 character
devices are refused (BadImageError); device nodes need root
(UnsupportedError). Whiteouts and opaque markers apply to lower layers only,
as the OCI spec says, so they are applied once the whole tar is read.
Names are checked by :mod:`snapws.oci.tarnames` before anything is made;
small files go to a helper process (:mod:`snapws.oci.helperfeed`).
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from snapws.beneath import Beneath, NodeRef
from snapws.deeppath import anchored
from snapws.errors import BadImageError, UnsupportedError
from snapws.ids import ContentHash
from snapws.layers.entries import (
    Node,
    host_ids,
    is_overlay_xattr,
    list_xattrs,
    node_entry,
    ns_ids,
    parent_of,
    read_node,
)
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView, HashCache
from snapws.model import ROOT, Entry, Kind, display_path
from snapws.oci import filewriter
from snapws.oci import tarformat as tf
from snapws.oci.helperfeed import FileTables, HelperFeed
from snapws.oci.tarnames import escapes, normalize
from snapws.oci.tarwriter import CHUNK, OPAQUE_MARKER, WHITEOUT_PREFIX
from snapws.oci.writeback import EarlyWriteback

_ZERO_CHUNK = bytes(CHUNK)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _path_of(e: Entry) -> bytes:
    return e.path


def _is_zero(chunk: bytes) -> bool:
    return chunk == _ZERO_CHUNK if len(chunk) == CHUNK else not chunk.strip(b"\0")


def _current_umask() -> int:
    """This process's umask (from /proc: setting it to read it would race
    with other threads creating files)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: always chmod


def perm_error(layer: str, rel: bytes, e: OSError, what: str) -> Exception:
    """The error to raise for ``e``, met trying to ``what`` ``rel`` of the
    layer ``layer`` describes: UnsupportedError for what only root (or a
    filesystem with xattrs) could do, else ``e``."""
    if e.errno in (errno.EPERM, errno.EACCES):
        return UnsupportedError(
            f"{layer}: cannot {what} {display_path(rel)}: {e.strerror}",
            hint="import as root (owners, device nodes and trusted.* xattrs need it)",
        )
    if e.errno == errno.EINVAL and what == "set the owner of":
        # a rootless import: the owner is not mapped in this user namespace
        return UnsupportedError(
            f"{layer}: cannot set the owner of {display_path(rel)}: its uid or gid "
            "is not mapped in this user namespace (a rootless workspace maps only your "
            "own ids), so the files cannot keep the image's owners",
            hint="import it as root (`sudo snapws ...`, kernel or plain backend), or "
            "export the image from a workspace of your own user",
        )
    if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL) and what == "set xattrs of":
        return UnsupportedError(
            f"{layer}: this filesystem refuses an xattr of {display_path(rel)}: {e.strerror}"
        )
    return e


@dataclass(slots=True)
class _DirMeta:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


class LayerExtractor:
    """Unpacks one layer tar into ``tree`` (an empty directory of a private
    staging dir) in overlay form. ``lower`` is the merged view of the layers
    below it (metadata for directories the tar implies without an entry)."""

    #: Directory descriptors kept open at most (entries come grouped by directory).
    MAX_DIR_FDS = 64
    #: Small files written here before the rest go to a helper process
    #: (:mod:`snapws.oci.filewriter`; None: never)
    HELPER_AFTER: int | None = 200

    def __init__(
        self,
        tree: Path,
        lower: ChainView | None,
        what: str,
        opaque_name: str,
        writeback: EarlyWriteback | None = None,
        dedup_keys: bool = False,
    ) -> None:
        self.root = os.fsencode(tree)
        self.writeback = writeback  # told of each file's bytes
        self.dest = Beneath(self.root)  # every write resolved beneath it
        self._dir_fds: dict[bytes, int] = {}
        self.opaque_name = opaque_name  # the store's opaque marker attribute
        self.lower = lower
        self.what = what
        self.as_root = os.geteuid() == 0
        # What a new file gets without chown/chmod: this process's ids (unless
        # a set-group-id directory passes its group on) and the mode less
        # the umask. Syscalls that would change nothing are skipped.
        self.own_ids = (os.geteuid(), os.getegid())
        self.gid_inherited = bool(os.stat(self.root).st_mode & stat.S_ISGID)
        self.umask = _current_umask()
        # The manifest is computed from the nodes made. A file without xattrs
        # is described by its fstat, taken when it is complete, instead of
        # being read again: sound where nothing adds attributes on creation
        # (no default ACL, no security module labels: the new root has none).
        self.stat_files = not list_xattrs(self.root)
        # The manifest entry of each such file is made as soon as its fstat
        # is known (while the tar is still read), so that little is left to
        # do after the last byte (:meth:`entries`); a file that gets a
        # hardlink loses it (read again at the end, as every other node).
        # And, for a layer to be deduplicated, each such file's dedup key.
        self.files = FileTables()
        if dedup_keys:
            from snapws.store.dedup import dedup_material  # (sqlite3: only when needed)

            self.files.material = dedup_material
        self.file_hash = self.files.hashes
        self.file_stats = self.files.stats
        self.file_entry = self.files.entries
        self.file_keys = self.files.keys
        self.link_of: dict[bytes, bytes] = {}  # hardlink -> the file first made
        self.kinds: dict[bytes, Kind] = {ROOT: Kind.DIR}
        self.dirs: dict[bytes, _DirMeta] = {}  # explicit or implied directories
        self.explicit: set[bytes] = set()  # paths that had their own entry
        self.names: set[bytes] = set()  # every normalized tar name seen
        self.whiteouts: list[bytes] = []
        self.opaque: list[bytes] = []
        # (the callback does not hold the extractor: no reference cycle keeps
        # its tables alive until a garbage collection)
        self.feed = HelperFeed(
            self.root, self.HELPER_AFTER, self.files, functools.partial(perm_error, what)
        )

    def close(self) -> None:
        """Stop the helper process, close the descriptors of the tree
        (idempotent)."""
        self.feed.close()
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds.clear()
        self.dest.close()

    # -- helpers --
    def _parent(self, rel: bytes) -> tuple[int, bytes]:
        """The descriptor of ``rel``'s parent directory (opened beneath the
        tree, kept for the next entries) and ``rel``'s last component."""
        parent = parent_of(rel)
        fd = self._dir_fds.get(parent)
        if fd is None:
            if len(self._dir_fds) >= self.MAX_DIR_FDS:
                for old in self._dir_fds.values():
                    os.close(old)
                self._dir_fds.clear()
            fd = self.dest.open_dir(parent)
            self._dir_fds[parent] = fd
        return fd, rel.rsplit(b"/", 1)[-1]

    def _bad(self, why: str) -> BadImageError:
        return BadImageError(f"{self.what}: {why}")

    def _abs(self, rel: bytes) -> bytes:
        return self.root if rel == ROOT else self.root + b"/" + rel

    def _lower_meta(self, rel: bytes) -> _DirMeta:
        if self.lower is not None:
            loc = self.lower.locate(rel)
            if loc is not None and loc.node.kind is Kind.DIR:
                st = loc.node.st
                return _DirMeta(
                    stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, loc.node.xattrs
                )
        # none below: root's, as a container runtime would make it (owned by
        # the importing user when that is not root: nobody else could own it)
        uid, gid = host_ids(os.geteuid(), os.getegid())
        return _DirMeta(uid=uid, gid=gid)

    def _ensure_dir(self, rel: bytes) -> None:
        """Make sure ``rel`` is a directory of this layer (implied if new)."""
        kind = self.kinds.get(rel)
        if kind is Kind.DIR:
            return
        if kind is not None:
            raise self._bad(
                f"{display_path(rel)} is a {kind.name.lower()} of this layer but entries lie "
                "below it (extraction through a symlink or file is refused)"
            )
        self._ensure_dir(parent_of(rel))
        fd, name = self._parent(rel)
        os.mkdir(name, 0o700, dir_fd=fd)
        self.kinds[rel] = Kind.DIR
        self.dirs[rel] = self._lower_meta(rel)

    def _claim(self, rel: bytes) -> None:
        """Check ``rel`` may be created now (parents made)."""
        if rel in self.kinds:
            if rel in self.explicit or self.kinds[rel] is not Kind.DIR:
                raise self._bad(f"duplicate entry {display_path(rel)}")
            raise self._bad(f"entry {display_path(rel)} comes after entries below it")
        self._ensure_dir(parent_of(rel))

    def _xattrs(self, rel: bytes, xattrs: dict[str, bytes]) -> dict[str, bytes]:
        for name in xattrs:
            if is_overlay_xattr(name):
                raise self._bad(
                    f"{display_path(rel)} carries the overlayfs attribute {name}, "
                    "which would change what the layer hides"
                )
        return xattrs

    def _perm(self, rel: bytes, e: OSError, what: str) -> Exception:
        return perm_error(self.what, rel, e, what)

    def _set_meta(self, rel: bytes, kind: int, mode: int | None, h: tf.Header | _DirMeta) -> None:
        """Owner, then mode (chown clears set-id bits), xattrs, mtime, on
        the node ``rel`` (of type ``kind``, pinned: never followed)."""
        with self.dest.node(rel, kind) as ref:
            self._set_meta_of(rel, ref, mode, h)

    def _set_meta_of(
        self, rel: bytes, ref: NodeRef, mode: int | None, h: tf.Header | _DirMeta
    ) -> None:
        try:
            ref.chown(*ns_ids(h.uid, h.gid))
        except OSError as e:
            raise self._perm(rel, e, "set the owner of") from e
        if mode is not None:
            ref.chmod(mode)
        try:
            for name, value in sorted(h.xattrs.items()):
                ref.setxattr(name, value)
        except OSError as e:
            raise self._perm(rel, e, "set xattrs of") from e
        ref.utime(h.mtime_ns)

    # -- entries --
    def add(self, h: tf.Header, reader: tf.TarReader) -> None:
        """Create the node of one tar entry (data read from ``reader``)."""
        rel = normalize(h.name, self.what)
        if rel in self.names:
            raise self._bad(f"duplicate entry {display_path(rel)}")
        self.names.add(rel)
        if h.xattrs:
            self._xattrs(rel, h.xattrs)
        base = rel[rel.rfind(b"/") + 1 :]
        if base.startswith(WHITEOUT_PREFIX) and rel != ROOT:
            self._whiteout(rel, base)
            return
        if h.type == tf.DIRECTORY:
            self._dir(rel, h)
            return
        if rel == ROOT:
            raise self._bad("the layer's root is not a directory")
        self._claim(rel)
        path = self._abs(rel)
        try:
            if h.type == tf.REGULAR:
                self._file(rel, path, h, reader)
            elif h.type == tf.HARDLINK:
                self._hardlink(rel, path, h)
            elif h.type == tf.SYMLINK:
                if escapes(rel, h.linkname):
                    raise self._bad(
                        f"symlink {display_path(rel)} -> {display_path(h.linkname)} "
                        "leads out of the layer"
                    )
                fd, name = self._parent(rel)
                os.symlink(h.linkname, name, dir_fd=fd)
                self.kinds[rel] = Kind.SYMLINK
                self._set_meta(rel, stat.S_IFLNK, None, h)
            else:
                self._special(rel, path, h)
        except OSError as e:
            raise self._perm(rel, e, "create") from e
        self.explicit.add(rel)

    def _whiteout(self, rel: bytes, base: bytes) -> None:
        parent = parent_of(rel)
        if base == OPAQUE_MARKER:
            self._ensure_dir(parent)
            self.opaque.append(parent)
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in (b"", b".", b"..") or name.startswith(WHITEOUT_PREFIX):
            raise self._bad(f"whiteout {display_path(rel)} names no deletable path")
        self._ensure_dir(parent)
        self.whiteouts.append(name if parent == ROOT else parent + b"/" + name)

    def _dir(self, rel: bytes, h: tf.Header) -> None:
        meta = _DirMeta(h.mode, h.uid, h.gid, h.mtime_ns, h.xattrs)
        if rel == ROOT:
            if ROOT in self.explicit:
                raise self._bad("duplicate entry for the layer's root")
        elif rel in self.kinds:
            if rel in self.explicit or self.kinds[rel] is not Kind.DIR:
                raise self._bad(f"duplicate entry {display_path(rel)}")
        else:
            self._ensure_dir(parent_of(rel))
            fd, name = self._parent(rel)
            os.mkdir(name, 0o700, dir_fd=fd)
            self.kinds[rel] = Kind.DIR
        self.dirs[rel] = meta
        self.explicit.add(rel)

    # -- the helper process (snapws.oci.helperfeed) --
    def sync_helper(self) -> None:
        """Wait until the helper wrote every file sent so far. Raises what
        writing them raised (as :meth:`add` would have)."""
        self.feed.sync()

    def _send(
        self, helper: filewriter.FileWriterChild, rel: bytes, h: tf.Header, reader: tf.TarReader
    ) -> None:
        mode = h.mode
        plain = not (mode & ~0o777 or mode & self.umask)
        ids = ns_ids(h.uid, h.gid)
        flags = 0
        if ids != self.own_ids or self.gid_inherited:
            flags |= filewriter.CHOWN
        if not plain:
            flags |= filewriter.CHMOD
        if self.stat_files:
            flags |= filewriter.STAT
        data = reader.read_data()  # (at most filewriter.SMALL bytes)
        self.kinds[rel] = Kind.FILE
        self.feed.send(helper, rel, data, mode, mode if plain else 0o600, ids, h.mtime_ns, flags)
        if self.writeback is not None:
            self.writeback.wrote(h.size)

    def _file(self, rel: bytes, path: bytes, h: tf.Header, reader: tf.TarReader) -> None:
        """Create a regular file: the data written as it streams in (and
        hashed on the way: the manifest needs its XXH3), zero chunks left as
        holes, then owner, mode, xattrs and mtime, each only when the new
        file does not have it already. Small plain files go to the helper
        process instead (:meth:`HelperFeed.helper_for
        <snapws.oci.helperfeed.HelperFeed.helper_for>`)."""
        helper = self.feed.helper_for(h)
        if helper is not None:
            self._send(helper, rel, h, reader)
            return
        mode = h.mode
        plain = not (mode & ~0o777 or mode & self.umask)  # open() gives the mode
        dfd, base = self._parent(rel)
        fd = os.open(base, _CREATE, mode if plain else 0o600, dir_fd=dfd)
        try:
            self.kinds[rel] = Kind.FILE
            digest = xxhash.xxh3_128()
            hole = False
            for chunk in reader.data(CHUNK):
                digest.update(chunk)
                if chunk[:1] == b"\0" and chunk[-1:] == b"\0" and _is_zero(chunk):
                    os.lseek(fd, len(chunk), os.SEEK_CUR)
                    hole = True
                    continue
                n = os.write(fd, chunk)
                if n < len(chunk):
                    view = memoryview(chunk)[n:]
                    while view:
                        view = view[os.write(fd, view) :]
            if hole:
                os.ftruncate(fd, h.size)
            if self.writeback is not None:
                self.writeback.wrote(h.size)
            ids = ns_ids(h.uid, h.gid)
            if ids != self.own_ids or self.gid_inherited:
                try:
                    os.fchown(fd, *ids)
                except OSError as e:
                    raise self._perm(rel, e, "set the owner of") from e
            if not plain:
                os.fchmod(fd, mode)
            if h.xattrs:
                try:
                    for name, value in sorted(h.xattrs.items()):
                        os.setxattr(fd, name, value)
                except OSError as e:
                    raise self._perm(rel, e, "set xattrs of") from e
            os.utime(fd, ns=(h.mtime_ns, h.mtime_ns))
            st = os.fstat(fd) if self.stat_files and not h.xattrs else None
        finally:
            os.close(fd)
        ch = ContentHash(digest.hexdigest())
        if st is not None and st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
            node = Node(rel, path, st, Kind.FILE, {}, False, (), None)
            self.files.add(rel, ch, st, node_entry(node, ch))
        else:
            self.file_hash[rel] = ch

    def _hardlink(self, rel: bytes, path: bytes, h: tf.Header) -> None:
        target = normalize(h.linkname, self.what)
        if target in self.feed.pending:
            self.sync_helper()  # the file must exist, its hash be known
        if target not in self.file_hash or target not in self.explicit:
            raise self._bad(
                f"hardlink {display_path(rel)} -> {display_path(h.linkname)} does not name an "
                "earlier regular file of this layer"
            )
        sfd, sname = self._parent(target)
        dfd, dname = self._parent(rel)
        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        self.kinds[rel] = Kind.FILE
        self.file_hash[rel] = self.file_hash[target]
        first = self.link_of.get(target, target)
        self.link_of[rel] = first
        self.files.forget(first)  # its link count changed: read it again

    def _special(self, rel: bytes, path: bytes, h: tf.Header) -> None:
        dfd, name = self._parent(rel)
        if h.type == tf.FIFO:
            os.mkfifo(name, 0o600, dir_fd=dfd)
            self.kinds[rel] = Kind.FIFO
            fmt = stat.S_IFIFO
        else:
            if h.type == tf.CHARDEV and h.devmajor == 0 and h.devminor == 0:
                raise self._bad(
                    f"{display_path(rel)} is a 0/0 character device, which overlayfs reads "
                    "as a deletion"
                )
            if not self.as_root:
                raise UnsupportedError(
                    f"{self.what}: {display_path(rel)} is a device node; only root can create one",
                    hint="import as root",
                )
            fmt = stat.S_IFCHR if h.type == tf.CHARDEV else stat.S_IFBLK
            os.mknod(name, fmt | 0o600, os.makedev(h.devmajor, h.devminor), dir_fd=dfd)
            self.kinds[rel] = Kind.CHARDEV if h.type == tf.CHARDEV else Kind.BLOCKDEV
        with self.dest.node(rel, fmt) as ref:
            self._set_meta_of(rel, ref, None, h)
            ref.chmod(h.mode)  # after the xattrs, as before

    def extract(self, reader: tf.TarReader) -> None:
        """Every entry of ``reader`` (:meth:`add`), then :meth:`finish`."""
        for h in reader.entries():
            self.add(h, reader)
        self.finish()

    # -- the end --
    def finish(self) -> None:
        """Wait for the helper's files, apply whiteouts and opaque markers,
        then directory metadata (deepest first, so creating children does not
        change it again)."""
        self.feed.sync()
        self.feed.close()
        opaque = list(self.opaque)
        for w in self.whiteouts:
            kind = self.kinds.get(w)
            if kind is Kind.DIR:
                opaque.append(w)  # recreated in this layer: hide only what lies below
            elif kind is None:
                self._ensure_dir(parent_of(w))
                self._mknod_whiteout(w)
        for d in opaque:
            if d == ROOT:
                self._opaque_root()
            else:
                self._mark_opaque(d)
        for rel in sorted(self.dirs, key=lambda p: (p == ROOT, -p.count(b"/"), p)):
            meta = self.dirs[rel]
            self._set_meta(rel, stat.S_IFDIR, meta.mode, meta)
        if ROOT not in self.dirs:
            meta = self._lower_meta(ROOT)
            self._set_meta(ROOT, stat.S_IFDIR, meta.mode, meta)

    def _mark_opaque(self, rel: bytes) -> None:
        try:
            with self.dest.node(rel, stat.S_IFDIR) as ref:
                ref.setxattr(self.opaque_name, b"y")
        except OSError as e:
            raise self._perm(rel, e, "set xattrs of") from e

    def entries(self, threads: int = 8) -> list[Entry]:
        """The manifest entries of every node made (after :meth:`finish`),
        sorted by path, as :func:`entries_of` gives them for
        :func:`read_tree`'s nodes: files from the fstat taken when they
        were complete (:attr:`file_entry`, made while unpacking) where
        :attr:`stat_files` allows, everything else (directories, links,
        whiteouts, files with xattrs or hardlinks) read again, with the
        hashes computed while unpacking. Raises OSError."""
        hashes = HashCache()
        for rel, ch in self.file_hash.items():
            if rel not in self.file_entry:
                hashes.put(self._abs(rel), ch)
        if not self.stat_files:
            rest = read_tree(self.root)
            out = []
        else:
            rest = []
            out = list(self.file_entry.values())
            with anchored():  # paths may be longer than PATH_MAX
                for rel in self.kinds:
                    if rel not in self.file_entry:
                        rest.append(read_node(rel, self._abs(rel)))
        out += entries_of(rest, threads, known=hashes)
        out.sort(key=_path_of)
        return out

    def manifest(self, entries: list[Entry]) -> bytes:
        """The manifest of :meth:`entries` (``encode_manifest(entries)``,
        with the files' lines made while unpacking)."""
        return self.files.manifest(entries)

    def _mknod_whiteout(self, rel: bytes) -> None:
        try:
            fd, name = self._parent(rel)
            os.mknod(name, stat.S_IFCHR, 0, dir_fd=fd)
        except OSError as e:
            raise self._perm(rel, e, "create the whiteout") from e
        self.kinds[rel] = Kind.WHITEOUT

    def _opaque_root(self) -> None:
        """overlayfs ignores an opaque upper root: delete each lower child
        instead (and make directories of this layer hide their lower content)."""
        if self.lower is None:
            return
        for name in self.lower.listdir(ROOT):
            kind = self.kinds.get(name)
            if kind is None:
                self._mknod_whiteout(name)
            elif kind is Kind.DIR:
                self._mark_opaque(name)
