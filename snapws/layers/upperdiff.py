"""Changes of an upperdir over a chain whose side is read from manifests.

The same answer as :func:`snapws.layers.diff.diff_views` gives for HEAD's
view against U over the mount's chain, at the cost of U's nodes (already
read) and of manifest lookups: no layer tree below U is probed and no file
of a layer is read or hashed again (a manifest records its hash); U's files
are hashed (through the workspace's cache), as a change shows its hash.

``lower`` is the chain the mount shows below U; ``head`` the snapshot U is
compared with: the same chain for a workspace that was free at its last
change, a newer one for a held workspace (its mount is still on an older
chain, :mod:`snapws.backends.held`), whose layers the two chains do not share
add their entries to the candidates, as in
:func:`snapws.layers.manifestdiff.diff_chains`.

Pure but for hashing U's files: nodes and manifests in, changes out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from snapws.ids import ContentHash
from snapws.layers.entries import Node, complete, in_or_below_any, node_entry
from snapws.layers.hashcache import HashCache
from snapws.layers.manifestdiff import ManifestChain, as_shown, unshared_manifests
from snapws.model import ROOT, Change, Entry, Kind, classify


class UpperOver:
    """U's nodes over a manifest chain, looked up by the overlayfs rules: a
    path of U shows U's node (none for a whiteout); any other path shows
    the chain's entry unless a directory of U above it is opaque, or a
    non-directory of U stands on its way."""

    def __init__(self, nodes: Iterable[Node], lower: ManifestChain) -> None:
        self.nodes = {n.path: n for n in nodes}
        self.lower = lower
        self._hidden: dict[bytes, bool] = {}  # directory -> lower content below it hidden

    def node(self, path: bytes) -> Node | None:
        """U's node at ``path`` (a whiteout included), or None."""
        return self.nodes.get(path)

    def hides_below(self, path: bytes) -> bool:
        """True if the chain's content strictly below ``path`` is hidden by U:
        ``path`` or one of its ancestors is a whiteout, a non-directory or an
        opaque directory of U."""
        pending = []  # from ``path`` up to the first answer, none of them hiding
        p = path
        while True:
            hidden = self._hidden.get(p)
            if hidden is not None:
                break
            n = self.nodes.get(p)
            if n is not None and (n.kind is not Kind.DIR or n.opaque):
                hidden = True
                self._hidden[p] = True
                break
            pending.append(p)
            if p == ROOT:
                hidden = False
                break
            i = p.rfind(b"/")
            p = ROOT if i < 0 else p[:i]
        for q in pending:  # (a loop, not a recursion: trees go 10,000 levels deep)
            self._hidden[q] = hidden
        return hidden

    def locate(self, path: bytes) -> Node | tuple[int, Entry] | None:
        """U's node, or the chain's (layer index, entry), that ``path``
        shows; None if absent."""
        n = self.nodes.get(path)
        if n is not None:
            return None if n.kind is Kind.WHITEOUT else n
        if path == ROOT:
            return self.lower.locate(ROOT)
        i = path.rfind(b"/")
        if self.hides_below(ROOT if i < 0 else path[:i]):
            return None
        return self.lower.locate(path)


def diff_upper(
    nodes: list[Node],
    lower: ManifestChain,
    head: ManifestChain,
    hashes: HashCache,
    skip: Collection[bytes] = (),
    focus: Collection[bytes] | None = None,
    below: Collection[bytes] = (),
) -> list[Change]:
    """Changes from ``head`` to U (``nodes``, parents before children) over
    ``lower``, sorted by path, directories as entries of their own; paths at
    or below one of ``skip`` (ignored paths) are left out. Raises
    ValueError (a malformed manifest line), OSError (a file of U unreadable).

    ``focus``: compare only these paths, and everything visible below those
    of ``below`` (and below the nodes of ``focus`` that hide what lies
    below them): the changes among them. For a caller that knows the rest
    unchanged since it last compared the same U, head and lower
    (:mod:`snapws.backends.heldclean`)."""
    work = UpperOver(nodes, lower)
    if focus is not None:
        candidates = set(focus)
        expand = set(below) | {
            p for p in candidates if (n := work.nodes.get(p)) is not None and hides(n)
        }
    else:
        candidates = set(work.nodes)
        expand = {n.path for n in nodes if hides(n)}
        for m in unshared_manifests(head, lower):
            for e in m.entries():
                candidates.add(e.path)
                if e.kind is not Kind.DIR or e.opaque:
                    expand.add(e.path)
    for top in sorted(expand):  # in path order: the manifests are searched forward
        for chain in (head, lower):
            loc = chain.locate(top)
            if loc is not None and loc[1].kind is Kind.DIR:
                candidates.update(chain.visible_below(top))
    if skip:
        skipped = in_or_below_any(skip)
        candidates = {p for p in candidates if not skipped(p)}
    changes = []
    for p in sorted(candidates):
        lo = head.locate(p)
        ln = work.locate(p)
        if ln is None:
            new = None
        elif isinstance(ln, Node):
            ln = complete(ln)  # (one the caller knew unchanged, compared after all)
            new = node_entry(ln, _digest(hashes, ln.abspath) if ln.kind is Kind.FILE else None)
        elif lo is not None and head.layers[lo[0]][0] == lower.layers[ln[0]][0]:
            continue  # the very same entry of a layer both chains have
        else:
            new = as_shown(ln[1])
        c = classify(p, as_shown(lo[1]) if lo is not None else None, new)
        if c is not None:
            changes.append(c)
    return changes


def hides(node: Node) -> bool:
    """Whether U's ``node`` hides what the chain has below it."""
    return node.kind is not Kind.DIR or node.opaque


def _digest(hashes: HashCache, abspath: bytes) -> ContentHash | None:
    """The hash of U's file at ``abspath``; None if it was removed since U
    was read (a live commit's upperdir: it then differs from any file)."""
    try:
        return hashes.get(abspath)
    except FileNotFoundError:
        return None
