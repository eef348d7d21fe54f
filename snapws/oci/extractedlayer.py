"""An unpacked layer's life: a layer tar unpacked into a new staging dir
of the store (:func:`extract_layer`, by
:class:`~snapws.oci.tarextractor.LayerExtractor`), then published
(:func:`publish_extracted`: deduplicated if asked, made durable, renamed
into place) or discarded (:func:`discard_extracted`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from snapws.ids import LayerId
from snapws.layers.entries import opaque_xattr
from snapws.layers.view import ChainView
from snapws.model import Entry, manifest_id
from snapws.oci import tarformat as tf
from snapws.oci.tarextractor import LayerExtractor
from snapws.oci.writeback import EarlyWriteback
from snapws.store.atomic import syncfs
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class ExtractedLayer:
    """A layer tar unpacked into ``staging/tree``, not published yet."""

    staging: Path
    entries: list[Entry]
    manifest: bytes
    #: the writeback started while unpacking (waited for by publishing)
    writeback: EarlyWriteback | None = field(default=None, compare=False)
    #: the fstat of files taken when they were complete (for dedup)
    stats: dict[bytes, os.stat_result] = field(default_factory=dict, compare=False)
    #: dedup keys made while unpacking (:func:`snapws.store.dedup.dedup_material`)
    keys: dict[bytes, tuple[str, bytes]] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> LayerId:
        return manifest_id(self.manifest)


def extract_layer(
    store: Store,
    reader: tf.TarReader,
    lower_trees: list[Path],
    threads: int = 8,
    dedup: bool = False,
) -> ExtractedLayer:
    """Unpack the tar ``reader`` reads into a new staging dir of ``store`` and
    compute its manifest. ``lower_trees``: the trees of the layers below,
    topmost first. ``dedup``: it will be deduplicated (its files' dedup
    keys are made as they are written). The caller publishes (:func:`publish_extracted`) or
    discards the staging dir; on error it is discarded here.

    Raises BadImageError, UnsupportedError, OSError."""
    staging = store.new_staging("import")
    writeback = EarlyWriteback(staging)
    try:
        tree = staging / "tree"
        tree.mkdir(mode=0o700)
        lower = ChainView([os.fsencode(p) for p in lower_trees]) if lower_trees else None
        x = LayerExtractor(
            tree, lower, reader.what, opaque_xattr(store.xattr_form), writeback, dedup
        )
        try:
            x.extract(reader)
        finally:
            x.close()
        writeback.kick()  # the disk works while the manifest is computed
        entries = x.entries(threads)
        return ExtractedLayer(
            staging, entries, x.manifest(entries), writeback, x.file_stats, x.file_keys
        )
    except BaseException:
        writeback.close()
        store.discard(staging)
        raise


def discard_extracted(store: Store, layer: ExtractedLayer) -> None:
    """Throw an extracted layer away (its staging dir), once its early
    writeback is over."""
    if layer.writeback is not None:
        layer.writeback.close()
    if layer.staging.exists():
        store.discard(layer.staging)


def publish_extracted(store: Store, layer: ExtractedLayer, dedup: bool = False) -> LayerId:
    """Publish an extracted layer (dedup first, if asked); if the store has it
    already, drop the copy. Precondition: the store lock is held exclusively.

    Durability: nothing was fsynced while unpacking (writeback was only
    started early, :mod:`snapws.oci.writeback`, and goes on while the
    tree is deduplicated); one syncfs of the store's filesystem, after
    everything, makes the whole tree (and anything else written to the
    store so far, such as the blob-cache copy of the layer's blob) durable
    before the rename publishes it. The dedup index (a cache: entries are
    used only once their layer is published) commits in a thread
    meanwhile, waited for before this returns. Raises OSError, MountError
    (syncfs failed)."""
    lid = layer.id
    try:
        if not store.has_layer(lid):
            pending = None
            try:
                if dedup:
                    from snapws.store.dedup import start_dedup_tree

                    tree = layer.staging / "tree"
                    pending = start_dedup_tree(
                        store, tree, lid, layer.entries, known=layer.stats, keys=layer.keys
                    )
                if layer.writeback is not None:
                    layer.writeback.wait()
                syncfs(layer.staging)
                store.publish_layer(layer.staging, layer.manifest)
            finally:
                if pending is not None:
                    pending.wait()  # the dedup index, committed meanwhile
    finally:
        discard_extracted(store, layer)
    return lid
