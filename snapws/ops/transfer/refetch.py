"""Fetching layers the store lost back from its remotes (restic's repair):
every tag of every configured remote is imported again while layers are
missing; :func:`snapws.oci.image.import_image` downloads only the layers the
store lacks and checks each against the id the image records, so a layer
comes back only as exactly itself.

Precondition: the caller holds the store lock exclusively.
"""

from __future__ import annotations

from typing import BinaryIO

from snapws.errors import SnapwsError
from snapws.ids import LayerId
from snapws.oci.image import Descriptor
from snapws.oci.importer import import_image
from snapws.ops.transfer.remotes import open_remote, read_remotes
from snapws.remote.base import DOCKER_LIST, OCI_INDEX, Remote
from snapws.store.store import Store


def refetch_layers(store: Store, missing: set[LayerId]) -> dict[LayerId, str]:
    """Bring back what it can of ``missing``; returns each layer fetched with
    the remote and tag it came from. Remotes that fail are skipped (what is
    still missing is reported by the caller)."""
    got: dict[LayerId, str] = {}
    try:
        remotes = read_remotes(store)
    except SnapwsError:
        return got
    for entry in remotes.values():
        if not missing - set(got):
            break
        try:
            remote = open_remote(store, entry, push=False)
        except SnapwsError:
            continue
        try:
            for tag in remote.list_tags():
                if not missing - set(got):
                    break
                _import_tag(store, remote, tag)
                for lid in missing - set(got):
                    if store.has_layer(lid):
                        got[lid] = f"{entry.name} ({remote.display}:{tag})"
        except SnapwsError:
            pass
        finally:
            remote.close()
    return got


def _import_tag(store: Store, remote: Remote, tag: str) -> None:
    manifest = remote.get_manifest(tag)
    if manifest is None or manifest.media_type in (OCI_INDEX, DOCKER_LIST):
        return

    def open_blob(d: Descriptor) -> BinaryIO:
        return remote.stream_blob(d.digest, d.size, None)

    try:
        import_image(store, manifest.data, open_blob, source=f"{remote.display}:{tag}")
    except SnapwsError:
        return
