"""``snapws cache save``: the directory becomes a snapshot (the workspace's
changes are committed; a plain directory is made a workspace, its content
the base layer) and is pushed as a cache entry. Blobs the registry holds are
not sent: a save after a restore uploads the new top layer only. Saving an
existing key replaces the entry (the old manifest is deleted) instead of
failing."""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snapws.errors import BadPathError, InvalidOperationError, RemoteError, permission_denied
from snapws.ids import BlobDigest, SnapshotId
from snapws.oci.export import build_image
from snapws.ops.transfer.cache.context import (
    CacheContext,
    CacheProgress,
    cache_remote,
    existing_store,
    free_branch,
    locate_dir,
    open_cache_remote,
)
from snapws.ops.transfer.cache.keys import annotate, cache_tag, entry_of, format_time
from snapws.ops.workspace import resolve_store

if TYPE_CHECKING:
    from snapws.ops.transfer.push import PushResult


@dataclass(frozen=True, slots=True)
class SaveResult:
    key: str
    workspace: str
    snapshot: SnapshotId
    created_ns: int
    committed: bool  # the directory's changes became a new snapshot
    initialized: bool  # the directory became a workspace
    replaced: BlobDigest | None  # manifest digest of the entry this save replaced
    push: PushResult

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "workspace": self.workspace,
            "committed": self.committed,
            "initialized": self.initialized,
            "created": format_time(self.created_ns),
            "replaced": str(self.replaced) if self.replaced is not None else None,
            **self.push.to_json(),
        }


def save_cache(
    ctx: CacheContext,
    key: str,
    path: Path | None,
    now_ns: int | None = None,
    progress: CacheProgress | None = None,
) -> SaveResult:
    """Snapshot the directory and push it as cache entry ``key``.

    ``path`` (None: the workspace around the current directory) is a
    workspace (its changes are committed as ``cache: KEY``; nothing changed:
    HEAD is saved) or becomes one (``init``). Then the image goes to the
    remote: blobs the remote holds are skipped, the manifest is put last, and
    an older entry of the same key is replaced (its manifest deleted when the
    registry allows). Raises BadPathError (no such directory), BadNameError
    (key), RemoteNotFoundError, InvalidOperationError (the tag holds an image
    that is no cache entry of this key), RemoteError, AuthError,
    PermissionDeniedError (a directory this user may not read), and what
    ``init``/``commit`` raise."""
    from snapws.ops.session import open_session
    from snapws.ops.transfer.push import PushPlan, remote_holds, send_image
    from snapws.ops.worktree.commit import commit
    from snapws.ops.worktree.init import init

    tag = cache_tag(key)
    target, store, state = locate_dir(ctx, path)
    try:
        missing = state is None and not target.is_dir()
    except PermissionError as e:
        raise permission_denied(e) from e
    if missing:
        raise BadPathError(
            f"{target} does not exist: there is nothing to save",
            hint="save the directory the build wrote (--path DIR)",
        )
    entry = cache_remote(ctx, store if store is not None else existing_store(ctx, target))
    message = f"cache: {key}"
    committed = initialized = False
    if state is None:
        store_root = resolve_store(target, ctx.config, ctx.store_path)
        branch = free_branch(existing_store(ctx, target), ctx.config, tag)
        made = init(target, store_root, ctx.config, branch, message)
        store, state = made.store, made.state
        initialized = True
        sid = state.head
    else:
        with open_session(target, ctx.config, ctx.store_path, exclusive=True) as s:
            result = commit(s, message, ctx.who)
            committed = result.snapshot is not None
            sid = result.snapshot or s.state.head
            store = s.store

    def built(done: int, total: int) -> None:
        if progress is not None:
            progress("compressing", done, total)

    assert store is not None
    remote = open_cache_remote(store, entry, True, ctx.settings)
    try:
        with store.lock(False, ctx.config.lock_timeout):
            # a layer a restore unpacked (its blob not kept) is not compressed
            # again when the registry has its blob
            image = build_image(store, sid, progress=built, have=remote_holds(remote))
        created = time.time_ns() if now_ns is None else now_ns
        image = annotate(image, key, created)
        old = remote.get_manifest(tag)
        if old is not None:
            old_entry = entry_of(tag, old)
            if old_entry is None or old_entry.key != key:
                what = f"the cache entry {old_entry.key!r}" if old_entry else "an image"
                raise InvalidOperationError(
                    f"{remote.display}:{tag} holds {what}, not an entry of cache key {key!r}",
                    hint="use a repository of its own for the cache (--remote, "
                    "SNAPWS_CACHE_REMOTE), or another key",
                )
        pushed = send_image(
            store, PushPlan(entry, sid, tag, image), ctx.settings, progress, remote, force=True
        )  # a cache entry is replaced, not extended
        replaced = None
        if old is not None and old.digest != pushed.manifest_digest:
            replaced = old.digest
            # a registry without deletes keeps it untagged (its gc cannot free it)
            with suppress(RemoteError):
                remote.delete_manifest(old.digest)
    finally:
        remote.close()
    return SaveResult(key, state.path, sid, created, committed, initialized, replaced, pushed)
