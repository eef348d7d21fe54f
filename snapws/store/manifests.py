"""A snapshot's layer chain as manifests, searched in place."""

from __future__ import annotations

import mmap
import os

from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers.manifestdiff import SMALL_MANIFEST, ManifestChain, SortedManifest
from snapws.store.store import Store


def manifest_chain(
    store: Store, sid: SnapshotId, shared: dict[LayerId, SortedManifest] | None = None
) -> ManifestChain:
    """``sid``'s chain, topmost first, as manifests searched in place (a big
    layer's manifest is mapped, never read whole). ``shared``: manifests
    already open, by layer (those this opens are added), so that two chains
    read a layer they share once. Raises DamagedRecordError,
    MissingLayerError, StoreCorruptError."""
    chain = store.chain_layers(sid)
    store.check_layers(sid, chain)
    layers = []
    for lid in reversed(chain):
        known = shared.get(lid) if shared is not None else None
        if known is not None:
            layers.append((lid, known))
            continue
        path = store.layer_dir(lid) / "manifest"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > SMALL_MANIFEST:
                    data: bytes | mmap.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                else:
                    data = f.read()
            layers.append((lid, SortedManifest(data)))
            if shared is not None:
                shared[lid] = layers[-1][1]
        except (OSError, ValueError) as e:
            raise StoreCorruptError(f"layer {lid.short()} has an unreadable manifest: {e}") from e
    return ManifestChain(layers)
