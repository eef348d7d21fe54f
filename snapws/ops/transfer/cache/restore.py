"""``snapws cache restore``: the entry whose key is KEY (exact hit), else,
for the first restore key that some entry's key starts with, the newest such
entry (prefix hit), else a miss. On a hit the image is imported (only layers
the store lacks download) and the directory shows it.

Compute, then act: a restore refuses (uncommitted changes, a non-empty
directory) before it downloads; the lookup only reads the remote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from snapws.errors import (
    BadPathError,
    NotMountedError,
    UncommittedChangesError,
    permission_denied,
)
from snapws.ids import SnapshotId
from snapws.model import Change, WorkspaceState
from snapws.oci.image import Descriptor
from snapws.oci.importer import import_image
from snapws.ops.transfer.cache.context import (
    CacheContext,
    CacheProgress,
    cache_remote,
    existing_store,
    free_branch,
    locate_dir,
    open_cache_remote,
)
from snapws.ops.transfer.cache.keys import CacheMatch, check_key, find_entry
from snapws.ops.transfer.remotes import RemoteEntry
from snapws.ops.workspace import resolve_store
from snapws.remote.base import Remote, TransferStats
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class RestoreResult:
    match: CacheMatch
    remote: str
    workspace: str | None  # None on a miss
    snapshot: SnapshotId | None
    action: str  # created, switched, up-to-date; none on a miss
    layers: int  # layers of the entry
    layers_fetched: int  # those the store lacked
    stats: TransferStats

    def to_json(self) -> dict[str, object]:
        m = self.match
        return {
            "key": m.key,
            "cache_hit": m.cache_hit,
            "hit": m.hit,
            "matched_key": m.entry.key if m.entry else None,
            "restore_key": m.restore_key,
            "entry": m.entry.to_json() if m.entry else None,
            "remote": self.remote,
            "workspace": self.workspace,
            "id": self.snapshot.hex if self.snapshot else None,
            "action": self.action,
            "layers": self.layers,
            "layers_fetched": self.layers_fetched,
            **self.stats.to_json(),
        }


def restore_cache(
    ctx: CacheContext,
    key: str,
    restore_keys: Sequence[str],
    path: Path | None,
    progress: CacheProgress | None = None,
) -> RestoreResult:
    """Find ``key`` (else the restore keys, see :func:`choose_entry`) and
    make the directory show it.

    ``path`` (None: the workspace around the current directory) is a
    workspace (it switches to the entry's snapshot, detached; refused with
    UncommittedChangesError when it has uncommitted changes) or becomes one
    on a new branch (it must be missing or empty: BadPathError otherwise).
    A miss changes nothing; on a hit the refusals come before the download. Raises
    BadNameError, RemoteNotFoundError, RemoteError, AuthError, BadImageError,
    PermissionDeniedError (a directory this user may not read), and what
    ``init``/``checkout`` raise."""
    from snapws.ops.session import open_session
    from snapws.ops.worktree.checkout import checkout, uncommitted

    for k in (key, *restore_keys):
        check_key(k)
    target, store, state = locate_dir(ctx, path)
    known = store if store is not None else existing_store(ctx, target)
    entry = cache_remote(ctx, known)
    remote = open_cache_remote(known, entry, False, ctx.settings)
    try:
        match = find_entry(remote, key, restore_keys)
    finally:
        remote.close()
    if match.entry is None or match.manifest is None:
        return RestoreResult(match, remote.display, None, None, "none", 0, 0, remote.stats)
    if state is not None:  # refusals come before the download
        with open_session(target, ctx.config, ctx.store_path, exclusive=False) as s:
            changes = uncommitted(s)
        if changes:
            raise refuse_changes(changes)
    elif hides_files(target):
        raise BadPathError(
            f"{target} is not empty and not a workspace: restoring would hide its files",
            hint="restore into a new or empty directory, or `snapws init` it first "
            "(a restore then switches it to the cache's snapshot)",
        )
    if state is None:
        store_root = resolve_store(target, ctx.config, ctx.store_path)
        branch = free_branch(known, ctx.config, match.entry.tag)
        new_state, fetched, remote = _start_workspace(
            ctx, entry, target, store_root, branch, match, progress
        )
        check_restore_shown(store_root, new_state)
        return RestoreResult(
            match,
            remote.display,
            new_state.path,
            new_state.head,
            "created",
            match.entry.layers,
            fetched,
            remote.stats,
        )
    with open_session(target, ctx.config, ctx.store_path, exclusive=True) as s:
        changes = uncommitted(s)
        if changes:
            raise refuse_changes(changes)
        remote = open_cache_remote(s.store, entry, False, ctx.settings)
        try:
            sid, fetched = _import(s.store, ctx, remote, match, progress)
        finally:
            remote.close()
        if s.state.head == sid:
            action = "up-to-date"
        else:
            checkout(s, sid, None, who=ctx.who, label=f"cache {match.entry.key}")
            action = "switched"
        s.reload()
        check_restore_shown(s.store.root, s.state)
    return RestoreResult(
        match, remote.display, state.path, sid, action, match.entry.layers, fetched, remote.stats
    )


def hides_files(target: Path) -> bool:
    """Whether a workspace started at ``target`` would hide files: it exists
    and is not an empty directory. Raises PermissionDeniedError when this
    user may not look into it."""
    try:
        return target.exists() and (not target.is_dir() or any(target.iterdir()))
    except PermissionError as e:
        raise permission_denied(e) from e


def check_restore_shown(store_root: Path, state: WorkspaceState) -> None:
    """Raise NotMountedError when the restored workspace will not show in
    its directory to other programs once this command exits (a rootless
    workspace restored outside a ``snapws shell``/``run``: its mount dies
    with the command), so that a restore never reports a hit over a
    directory that stays empty. The restore itself is kept."""
    from snapws.backends import backend_for

    backend = backend_for(state)
    if backend.shown_after_exit(Store.open(store_root), state):
        return
    path = Path(state.path)
    raise NotMountedError(
        f"restored snapshot {state.head.short()} into {path}, but other programs see the "
        f"directory empty: the {backend.name} workspace's mount ends with this command",
        hint=f"run the build through {backend.reach_hint(path)}, or restore from inside "
        f"it (`snapws -C {path} run -- snapws cache restore KEY`)",
    )


def refuse_changes(changes: list[Change]) -> UncommittedChangesError:
    """A cache restore refused because of uncommitted ``changes``."""
    from snapws.ops.worktree.checkout import refuse

    return refuse(
        changes,
        "restore the cache",
        hint="save them (`snapws cache save KEY` or `snapws commit -m MSG`) or throw them "
        "away (`snapws reset --hard HEAD`), then restore again",
    )


def _import(
    store: Store,
    ctx: CacheContext,
    remote: Remote,
    match: CacheMatch,
    progress: CacheProgress | None,
) -> tuple[SnapshotId, int]:
    """Import the matched image (the caller holds the store lock
    exclusively). Returns the snapshot and how many layers were fetched."""
    from snapws.oci.image import layer_ids_of, parse_manifest

    assert match.manifest is not None and match.entry is not None
    data = match.manifest.data
    lids = layer_ids_of(data)
    fetched = sum(1 for lid in lids if lid is None or not store.has_layer(lid))
    parsed = parse_manifest(data)
    total = parsed.config.size + sum(
        d.size
        for d, lid in zip(parsed.layers, lids, strict=True)
        if lid is None or not store.has_layer(lid)
    )
    base = 0

    def open_blob(d: Descriptor) -> BinaryIO:
        """Download (with progress over all blobs fetched) and open a blob."""
        nonlocal base
        start = base

        def bar(done: int, _size: int | None) -> None:
            if progress is not None:
                progress("fetching", start + done, max(total, start + done))

        f = remote.stream_blob(d.digest, d.size, bar)
        base += d.size
        return f

    sid = import_image(
        store,
        data,
        open_blob,
        source=f"cache {match.entry.key}",
        author=ctx.who or "snapws cache",
        threads=ctx.config.hash_threads,
        dedup=ctx.config.dedup,
    )
    return sid, fetched


def _start_workspace(
    ctx: CacheContext,
    entry: RemoteEntry,
    target: Path,
    store_root: Path,
    branch: str,
    match: CacheMatch,
    progress: CacheProgress | None,
) -> tuple[WorkspaceState, int, Remote]:
    """Import the matched image and make ``target`` (missing or empty) a
    workspace on it, as ``init --from`` does (the backend this machine
    chooses, :func:`snapws.ops.worktree.init.ready_backend`; then
    :func:`~snapws.ops.worktree.init.start_on_snapshot`)."""
    from snapws.ops.recovery import recover
    from snapws.ops.workspace import new_workspace_namespace
    from snapws.ops.worktree.init import (
        make_room,
        ready_backend,
        start_on_snapshot,
        undo_new_workspace,
        validate_init,
    )

    validate_init(target, store_root)
    backend = ready_backend(ctx.config, store_root)
    assert match.entry is not None
    message = f"cache restore {match.entry.key}"
    author = ctx.who or ctx.config.author_or_default()
    store, created, store_created = make_room(target, store_root, backend)
    try:
        remote = open_cache_remote(store, entry, False, ctx.settings)
        try:
            with store.lock(True, ctx.config.lock_timeout):
                recover(store)
                ns = new_workspace_namespace(store, target, ctx.config.namespace)
                store = store.in_namespace(ns)
                sid, fetched = _import(store, ctx, remote, match, progress)
                state = start_on_snapshot(
                    store, target, sid, ctx.config, branch, message, backend.name, author
                )
                return state, fetched, remote
        finally:
            remote.close()
    except BaseException:
        undo_new_workspace(target, store_root, created, store_created)
        raise
