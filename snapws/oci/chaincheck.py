"""Checks that an imported layer chain is what a snapshot record says, and
what the store holds of it: a snapws image gives back the exact snapshot,
and a stored snapshot id is never trusted over content. Used by image
import (:mod:`snapws.oci.importer`) and history import
(:mod:`snapws.oci.history`).
"""

from __future__ import annotations

import os

from snapws.errors import BadImageError, StoreCorruptError
from snapws.ids import LayerId, SnapshotId
from snapws.layers.equivalence import chain_content, covers
from snapws.layers.merge import RunLayer, build_merged_tree
from snapws.model import Entry, SnapshotRecord, decode_manifest, manifest_id
from snapws.oci.imageconfig import SnapwsInfo
from snapws.store.store import EMPTY_LAYER, Store


def _nonempty(chain: list[LayerId]) -> list[LayerId]:
    return [lid for lid in chain if lid != EMPTY_LAYER]


def _entries(store: Store, lid: LayerId) -> list[Entry]:
    try:
        return decode_manifest(store.read_manifest(lid))
    except ValueError as e:
        raise StoreCorruptError(f"manifest of layer {lid.short()} is unreadable: {e}") from e


def content_of(store: Store, chain: list[LayerId]) -> list[Entry]:
    return chain_content([_entries(store, lid) for lid in _nonempty(chain)])


def same_as_stored(store: Store, info: SnapwsInfo) -> bool:
    """True if the store has the image's snapshot with all its layers, and
    the image lists that chain or one showing the same content (nothing to
    fetch). A stored id is never trusted over content: an image listing other
    layers is imported and compared (:func:`check_stored`)."""
    sid = info.record.id
    if not store.has_snapshot(sid):
        return False
    local = _nonempty(store.chain(sid))
    listed = _nonempty(info.layers)
    if not all(store.has_layer(lid) for lid in local):
        return False
    if listed == local:
        return True
    return all(store.has_layer(lid) for lid in listed) and content_of(store, listed) == content_of(
        store, local
    )


def check_record(
    store: Store,
    record: SnapshotRecord,
    chain: list[LayerId],
    carried: bytes | None,
    top_entries: list[Entry] | None = None,
) -> list[Entry]:
    """Check that ``chain`` (imported, verified layers) is what ``record``
    says: its top is the record's layer, or covers it (a merged top; the
    layer's manifest from the store or ``carried`` by the image); and, when
    the store has the parent, the chain shows the parent's content with the
    record's layer on top. Returns the record layer's entries.
    ``top_entries``: the top layer's entries, when the caller has them
    (it has just unpacked that layer): not read again. Raises
    BadImageError."""
    ch = _nonempty(chain)
    top = ch[-1] if ch else EMPTY_LAYER
    sid = record.id.short()
    if record.layer == top:
        entries = top_entries if top_entries is not None else _entries(store, top)
    elif record.layer == EMPTY_LAYER:
        entries = []
    else:
        if store.has_layer(record.layer):
            data = store.read_manifest(record.layer)
        elif carried is not None:
            data = carried
        else:
            raise BadImageError(
                f"snapshot {sid}: the image's top layer {top.short()} is not the record's "
                f"layer {record.layer.short()}, and the image does not carry that layer's "
                "manifest to show that the top includes it",
                hint="nothing was imported; export the snapshot again with this snapws "
                "from a store that has its layer, or import it from its source",
            )
        try:
            entries = decode_manifest(data)
        except ValueError as e:
            raise BadImageError(f"the manifest of layer {record.layer.short()}: {e}") from None
        if not covers(_entries(store, top), entries, len(ch) == 1):
            raise BadImageError(
                f"snapshot {sid}: the image's layers are not the record's: its top layer "
                f"{top.short()} does not hold layer {record.layer.short()}",
                hint="nothing was imported; the image was forged or damaged: "
                "get it again from its source",
            )
    if len(record.parents) == 1 and store.has_snapshot(record.parents[0]):
        try:
            below = _nonempty(store.chain(record.parents[0]))
        except StoreCorruptError:
            below = None
        if below is not None and all(store.has_layer(lid) for lid in below):
            want = chain_content([*(_entries(store, lid) for lid in below), entries])
            if content_of(store, ch) != want:
                raise BadImageError(
                    f"snapshot {sid}: the image's layers do not show its parent "
                    f"{record.parents[0].short()} with layer {record.layer.short()} on top",
                    hint="nothing was imported; the image was forged or damaged: "
                    "get it again from its source",
                )
    return entries


def check_stored(store: Store, sid: SnapshotId, chain: list[LayerId]) -> None:
    """Refuse (BadImageError) when the store already has snapshot ``sid``
    with all its layers but other content than ``chain`` shows."""
    if not store.has_snapshot(sid):
        return
    local = _nonempty(store.chain(sid))
    if all(store.has_layer(lid) for lid in local) and content_of(store, local) != content_of(
        store, chain
    ):
        raise BadImageError(
            f"snapshot {sid.short()} is in this store with other content than the image gives it",
            hint="nothing was imported; `snapws verify` checks the stored snapshot; "
            "if it is the forged one, delete it (prune) and import again",
        )


def keep_record_layer(store: Store, lid: LayerId, top: LayerId, entries: list[Entry]) -> bool:
    """Publish the record's layer ``lid`` (whose ``entries`` the merged
    layer ``top`` covers) from ``top``'s tree, so that exports from this
    store can prove their merged tops too. Best effort: False (nothing
    kept) if the tree made does not hash to ``lid`` or writing fails."""
    staging = store.new_staging("record-layer")
    try:
        manifest = build_merged_tree(
            [RunLayer(os.fsencode(store.layer_tree(top)), entries)],
            os.fsencode(staging / "tree"),
            False,
            None,
            store.xattr_form,
        )
        if manifest_id(manifest) != lid:
            store.discard(staging)
            return False
        store.write_pending_manifest(staging, manifest)
        return store.publish_pending(staging) == lid
    except OSError:
        if staging.exists():
            store.discard(staging)
        return False
