"""``snapws cache list``: every entry of the cache remote with its size and
save time."""

from __future__ import annotations

from dataclasses import dataclass

from snapws.ops.transfer.cache.context import (
    CacheContext,
    cache_remote,
    open_cache_remote,
    store_for_listing,
)
from snapws.ops.transfer.cache.keys import CacheEntry, scan_entries


@dataclass(frozen=True, slots=True)
class CacheList:
    remote: str
    entries: list[CacheEntry]

    def to_json(self) -> dict[str, object]:
        return {"remote": self.remote, "entries": [e.to_json() for e in self.entries]}


def list_cache(ctx: CacheContext) -> CacheList:
    """Every cache entry of the cache remote, sorted by key. Raises
    RemoteNotFoundError, RemoteError, AuthError."""
    store = store_for_listing(ctx)
    remote = open_cache_remote(store, cache_remote(ctx, store), False, ctx.settings)
    try:
        return CacheList(remote.display, [e for e, _ in scan_entries(remote)])
    finally:
        remote.close()
