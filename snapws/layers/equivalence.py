"""Whether a layer chain shows what a snapshot record says it shows.

A snapshot's record names its own layer; its chain (the layers mounted,
bottom first) starts as its parent's chain plus that layer, and compaction
(:mod:`snapws.ops.maintenance.flatten`) may later replace a run of it ending at the top
by one merged layer (:func:`snapws.layers.merge.merge_entries`). So the
chain's top is either the record's layer or a merged layer whose run had it
(or a layer that did) on top. Both facts are checked from manifests alone:

- :func:`covers`: putting the record's layer directly on the chain's top
  changes nothing (overlay stacking is idempotent for a run's topmost
  layer). True when the top is the layer itself, or any merge with it on
  top; false when the top lacks any entry of the layer, or differs in one.
- :func:`chain_content`: what a chain shows, as one canonical list of
  entries (equal for equivalent chains, whatever compaction did), to compare
  a chain with its parent's chain plus the record's layer.

Hardlink leaders (``link``) are left out of both comparisons: a merge
recomputes them from the inodes it made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from snapws.layers.merge import MergedEntry, merge_entries
from snapws.model import Entry


def _plain(merged: list[MergedEntry]) -> list[Entry]:
    return [replace(m.entry, link=None) for m in merged]


def chain_content(manifests: Sequence[Sequence[Entry]]) -> list[Entry]:
    """What the chain of these layer manifests (bottom first) shows, parents
    before children, without hardlink leaders. Equivalent chains (one a
    compaction of the other) give equal lists."""
    return _plain(merge_entries(list(reversed(manifests)), bottom=True))


def covers(top: Sequence[Entry], layer: Sequence[Entry], bottom: bool) -> bool:
    """True if stacking ``layer`` directly on ``top`` shows the same as
    ``top`` alone: ``top`` is ``layer`` or a merge of a run that had
    ``layer`` (or a layer covering it) topmost. ``bottom``: ``top`` is the
    chain's bottom layer (its merge dropped whiteouts and opaque markers).
    An empty ``layer`` is covered by anything."""
    if not layer:
        return True
    return _plain(merge_entries([layer, top], bottom)) == _plain(merge_entries([top], bottom))
