"""HEAD's full tree for the plain backend's index, from manifests alone, and
content hashes of layer files taken from manifests (never re-read)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace

from snapws.backends.plain.index import Index
from snapws.ids import LayerId, SnapshotId
from snapws.layers.merge import merge_entries
from snapws.layers.view import HashCache
from snapws.model import Entry, Kind, decode_manifest
from snapws.store.store import Store


def snapshot_entries(store: Store, sid: SnapshotId) -> list[Entry]:
    """Every entry of ``sid``'s tree (its chain's manifests merged by
    overlay rules), parents before children. Raises StoreCorruptError."""
    chain = store.chain_layers(sid)
    layers = [decode_manifest(store.read_manifest(lid)) for lid in reversed(chain)]
    return [replace(m.entry, opaque=False, link=None) for m in merge_entries(layers, bottom=True)]


def rebuild_index(store: Store, sid: SnapshotId) -> Index:
    """An index of ``sid``'s tree with no scan records: the next scan looks
    at (and hashes) every file once. Raises StoreCorruptError."""
    return Index.from_entries(sid, snapshot_entries(store, sid))


def seed_hashes(store: Store, layers: Iterable[LayerId], hashes: HashCache) -> None:
    """Put the manifest hashes of ``layers``' files into ``hashes`` (layer
    trees are immutable and their manifests are their record)."""
    for lid in layers:
        tree = os.fsencode(store.layer_tree(lid))
        for e in decode_manifest(store.read_manifest(lid)):
            if e.kind is Kind.FILE and e.hash is not None:
                hashes.put(tree + b"/" + e.path, e.hash)
