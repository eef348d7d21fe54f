"""``snapws cache prune``: delete the manifests of entries saved before a
cut-off. Registries do not evict, and deleting a manifest frees no blob:
the registry's ``garbage-collect`` does."""

from __future__ import annotations

import time
from dataclasses import dataclass

from snapws.ops.transfer.cache.context import (
    CacheContext,
    cache_remote,
    open_cache_remote,
    store_for_listing,
)
from snapws.ops.transfer.cache.keys import CacheEntry, format_time, plan_cache_prune, scan_entries

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class CachePrune:
    remote: str
    cutoff_ns: int
    removed: list[CacheEntry]  # with dry_run: would be removed
    kept: list[CacheEntry]
    undated: list[CacheEntry]  # entries without a save time: kept
    dry_run: bool

    def to_json(self) -> dict[str, object]:
        return {
            "remote": self.remote,
            "cutoff": format_time(self.cutoff_ns),
            "dry_run": self.dry_run,
            "removed": [e.to_json() for e in self.removed],
            "kept": [e.to_json() for e in self.kept],
            "undated": [e.to_json() for e in self.undated],
        }


def prune_cache(
    ctx: CacheContext, older_than_s: float, dry_run: bool = False, now_ns: int | None = None
) -> CachePrune:
    """Delete the manifests of entries saved more than ``older_than_s``
    seconds before ``now_ns`` (default: the clock). Blobs stay until the
    registry's garbage collection. Raises RemoteNotFoundError, RemoteError
    (a registry that does not allow deletes), AuthError."""
    store = store_for_listing(ctx)
    now = time.time_ns() if now_ns is None else now_ns
    cutoff = now - int(older_than_s * _NS)
    remote = open_cache_remote(store, cache_remote(ctx, store), not dry_run, ctx.settings)
    try:
        entries = [e for e, _ in scan_entries(remote)]
        old, kept, undated = plan_cache_prune(entries, cutoff)
        if not dry_run:
            for e in old:
                remote.delete_manifest(e.digest)
        return CachePrune(remote.display, cutoff, old, kept, undated, dry_run)
    finally:
        remote.close()
