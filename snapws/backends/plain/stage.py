"""Building a commit's layer tree from a plain workspace, in the form an
overlay upperdir would have for the same edits:

- new and modified non-directories are copied (data, mode, owner as far as
  this user may, xattrs, mtime), and so is every directory above them
  (with the working directory's metadata);
- a deleted path is a whiteout (a 0/0 character device);
- a directory replaced by a non-directory is that non-directory (it hides
  the subtree); a non-directory replaced by a directory, and a directory
  deleted and made again (its inode changed) with changes below it, are
  opaque directories holding their whole current subtree;
- a directory whose own metadata changed is copied without its children.

The working tree is only read. Files are hashed while they are copied, so
the manifest (made by :func:`snapws.layers.scan.entries_of` over the staged
tree, as for the other backends) costs no second read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import suppress

from snapws.backends.plain.fsops import apply_meta, create_node, make_whiteout, mark_opaque
from snapws.deeppath import anchored, open_fd, reach
from snapws.errors import LayerRejectedError
from snapws.layers.entries import Node, Tops, is_under, join, parent_of, read_node
from snapws.layers.view import HashCache
from snapws.model import ROOT, Change, Kind, display_path


class Stager:
    """Copies working-tree paths into a staging tree (see the module docstring)."""

    def __init__(self, work_root: bytes, tree: bytes, opaque_xattr: str, as_root: bool) -> None:
        self.work_root = work_root
        self.tree = tree
        self.opaque_xattr = opaque_xattr
        self.as_root = as_root
        self.hashes = HashCache()
        self._dirs: list[tuple[Node, bytes]] = []  # metadata to apply, parents first
        self._staged: set[bytes] = {ROOT}
        self._closed = Tops()  # paths below which nothing more is staged
        self._ignored: set[bytes] = set()  # ignored paths: never staged

    def _work_node(self, path: bytes) -> Node | None:
        try:
            return read_node(path, join(self.work_root, path))
        except FileNotFoundError:
            return None

    def _closed_at(self, path: bytes) -> bool:
        return self._closed.covers(path)

    def _ensure_parents(self, path: bytes) -> None:
        todo = []
        p = parent_of(path)
        while p not in self._staged:
            todo.append(p)
            p = parent_of(p)
        for q in reversed(todo):
            node = self._work_node(q)
            if node is None or node.kind is not Kind.DIR:
                raise LayerRejectedError(
                    f"{display_path(q)} changed while committing; run the commit again"
                )
            self._mkdir(node)

    def _mkdir(self, node: Node, opaque: bool = False) -> None:
        dst = join(self.tree, node.path)
        if node.path != ROOT:
            with reach(dst) as short:
                os.mkdir(short, 0o700)
        if opaque:
            mark_opaque(dst, self.opaque_xattr)
        self._staged.add(node.path)
        self._dirs.append((node, dst))

    def _copy(self, node: Node) -> None:
        zero_dev = node.kind is Kind.CHARDEV and node.st.st_rdev == 0
        if node.kind is Kind.WHITEOUT or zero_dev:
            raise LayerRejectedError(
                f"{display_path(node.path)} is a 0/0 character device, overlay's mark of a "
                "deleted file: it cannot be committed",
                hint="remove it (or give it another device number)",
            )
        dst = join(self.tree, node.path)
        digest = create_node(node, dst, hashed=True)
        if digest is not None:
            self.hashes.put(dst, digest)
        apply_meta(node, dst, self.as_root)
        self._staged.add(node.path)

    def _copy_subtree(self, node: Node) -> None:
        """Stage ``node`` (a directory) as opaque, with everything below it."""
        self._mkdir(node, opaque=True)
        stack = [node]
        while stack:
            d = stack.pop()
            fd = open_fd(d.abspath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                names = sorted(os.fsencode(n) for n in os.listdir(fd))
                kids = [(n, os.stat(n, dir_fd=fd, follow_symlinks=False)) for n in names]
            finally:
                os.close(fd)
            for name, st in kids:
                p = name if d.path == ROOT else d.path + b"/" + name
                if p in self._ignored:
                    continue
                kid = read_node(p, d.abspath + b"/" + name, st)
                if kid.kind is Kind.DIR:
                    self._mkdir(kid)
                    stack.append(kid)
                else:
                    self._copy(kid)

    def stage(
        self, changes: Iterable[Change], recreated: set[bytes], ignored: Iterable[bytes] = ()
    ) -> None:
        """Stage ``changes`` (status against HEAD, sorted by path); directories
        in ``recreated`` that have changes below them become opaque, with
        their subtrees but the ``ignored`` paths.
        Raises OSError, LayerRejectedError, UnsupportedError."""
        with anchored():  # paths may be longer than PATH_MAX
            self._stage(changes, recreated, ignored)

    def _stage(
        self, changes: Iterable[Change], recreated: set[bytes], ignored: Iterable[bytes]
    ) -> None:
        self._ignored.update(ignored)
        changes = sorted(changes, key=lambda c: c.path)
        root = self._work_node(ROOT)
        if root is None or root.kind is not Kind.DIR:
            raise LayerRejectedError("the workspace directory is gone")
        self._dirs.append((root, self.tree))
        below = [r for r in sorted(recreated) if r != ROOT]
        for c in changes:
            p = c.path
            if p == ROOT or self._closed_at(p):
                continue
            top = next((r for r in below if is_under(p, r)), None)
            if top is not None and not self._closed_at(top):
                # a directory made again: the kernel would have it opaque, whole
                node = self._work_node(top)
                if node is not None and node.kind is Kind.DIR:
                    self._ensure_parents(top)
                    self._copy_subtree(node)
                    self._closed.add(top)
                    continue
            node = self._work_node(p)
            if node is None:  # deleted (or deleted since the scan)
                if c.old is not None:
                    self._ensure_parents(p)
                    make_whiteout(join(self.tree, p))
                    self._staged.add(p)
                self._closed.add(p)
                continue
            self._ensure_parents(p)
            if node.kind is Kind.DIR:
                if c.old is not None and c.old.kind is not Kind.DIR:
                    self._copy_subtree(node)  # replaces a non-directory
                    self._closed.add(p)
                elif p not in self._staged:
                    self._mkdir(node)
                continue
            try:
                self._copy(node)
            except FileNotFoundError:  # deleted since it was read: as above
                self._vanished(p, c.old is not None)
            self._closed.add(p)

    def _vanished(self, path: bytes, was_there: bool) -> None:
        """``path`` was removed from the working tree while it was copied
        (a live tree): a whiteout if HEAD has it, and no partial copy."""
        dst = join(self.tree, path)
        with reach(dst) as short, suppress(FileNotFoundError):
            os.unlink(short)
        if was_there:
            make_whiteout(dst)
            self._staged.add(path)

    def finish(self) -> None:
        """Give staged directories their metadata (deepest first, so that
        their mtimes stay). Raises OSError."""
        with anchored():  # paths may be longer than PATH_MAX
            for node, dst in reversed(self._dirs):
                apply_meta(node, dst, self.as_root)
        self._dirs.clear()
