"""The working directory of a plain workspace as a view (``diff REV``
against the working tree), whose entries read as status reads them."""

from __future__ import annotations

from dataclasses import replace

from snapws.backends.plain.workentry import WorkRules, as_recorded
from snapws.layers.view import ChainView, HashCache, Located
from snapws.model import Entry


class WorkingView(ChainView):
    """The directory ``root`` as a one-layer view. Its entries are what a
    commit would record (:func:`as_recorded` against HEAD's tree, ``head``),
    as status shows them: a difference from an older snapshot that no
    commit by this user could record (an owner she cannot give) is none."""

    def __init__(self, root: bytes, head: ChainView, hashes: HashCache, rules: WorkRules) -> None:
        super().__init__([root], hashes)
        self._head = head
        self._rules = rules

    def entry_of(self, loc: Located) -> Entry:
        e = super().entry_of(loc)
        rules = self._rules
        if rules.as_root and rules.xattrs_supported:
            return e  # read as it is
        if e.opaque:
            e = replace(e, opaque=False)  # a marker in a working tree is no opaque directory
        return as_recorded(e, self._head.entry(e.path), rules)
