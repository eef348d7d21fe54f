"""A snapshot's layer chain as manifests, searched in place; a big
manifest's fences (:mod:`snapws.layers.fences`) kept as a cache in
``cache/fences/<layer-id>``."""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from snapws.errors import StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers import fences as fence_form
from snapws.layers.fences import Fences
from snapws.layers.manifestdiff import SMALL_MANIFEST, ManifestChain, SortedManifest
from snapws.store.lock import owned_here
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
                    fences = _cached_fences(store, lid, size)
                    manifest = SortedManifest(data, fences=fences)
                    if fences is None:
                        _cache_fences(store, lid, manifest)
                else:
                    manifest = SortedManifest(f.read())
            layers.append((lid, manifest))
            if shared is not None:
                shared[lid] = manifest
        except (OSError, ValueError) as e:
            raise StoreCorruptError(f"layer {lid.short()} has an unreadable manifest: {e}") from e
    return ManifestChain(layers)


def fences_dir(store: Store) -> Path:
    """Where the fences of big manifests are cached (one file a layer)."""
    return store.root / "cache" / "fences"


def _cached_fences(store: Store, lid: LayerId, size: int) -> Fences | None:
    try:
        data = (fences_dir(store) / lid.hex).read_bytes()
    except OSError:
        return None
    return fence_form.decode(data, size)


def _cache_fences(store: Store, lid: LayerId, manifest: SortedManifest) -> None:
    """Compute ``manifest``'s fences (now used by it) and keep them, if the
    store can be written to and is this user's (a cache: no fsync, a torn
    file fails its digest and is made again; a store this user cannot write
    to, or root reading another user's, computes them at each command)."""
    try:
        fences = manifest.fences()
    except ValueError:
        return  # a damaged line: lookups find it without fences, and say so
    if fences is None or not owned_here(store.root):
        return  # (never a file of this user's in another's store: root reading it)
    where = fences_dir(store)
    tmp = where / f".{lid.hex}.tmp-{os.getpid()}"
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(fences.encode())
        os.replace(tmp, where / lid.hex)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def prune_fences(store: Store) -> int:
    """Delete the cached fences of layers no longer in the store, and
    copies a killed writer left (gc, under the exclusive lock). Returns
    how many files went."""
    gone = 0
    try:
        names = os.listdir(fences_dir(store))
    except OSError:
        return 0
    for name in names:
        stray = name.startswith(".")
        if not stray:
            try:
                stray = not store.has_layer(LayerId(name))
            except ValueError:
                stray = True
        if stray:
            with contextlib.suppress(OSError):
                os.unlink(fences_dir(store) / name)
                gone += 1
    return gone
