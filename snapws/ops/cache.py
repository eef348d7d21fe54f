"""``snapws cache``: a CI build-tree cache in a registry, with the semantics
of GitHub's actions/cache.

An entry is a snapshot pushed as an OCI image under a tag derived from its
key; its manifest carries the full key and the save time, so keys of any
length and alphabet work and entries can be listed, matched by prefix and
aged out (:mod:`snapws.ops.cachekeys`).

- save: the directory becomes a snapshot (the workspace's changes are
  committed; a plain directory is made a workspace, its content the base
  layer) and is pushed. Blobs the registry holds are not sent: a save after
  a restore uploads the new top layer only. Saving an existing key replaces
  the entry (the old manifest is deleted) instead of failing.
- restore: the entry whose key is KEY (exact hit), else, for the first
  restore key that some entry's key starts with, the newest such entry
  (prefix hit), else a miss. On a hit the image is imported (only layers the
  store lacks download) and the directory shows it.
- list and prune: entries with sizes and times; prune deletes the manifests
  of entries saved before a cut-off. Registries do not evict, and deleting a
  manifest frees no blob: the registry's ``garbage-collect`` does.

Compute, then act: a restore refuses (uncommitted changes, a non-empty
directory) before it downloads; the lookups only read the remote.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from snapws.config import Config
from snapws.errors import (
    BadNameError,
    BadPathError,
    InvalidOperationError,
    NameExistsError,
    NotAWorkspaceError,
    NotMountedError,
    RemoteError,
    RemoteNotFoundError,
    StoreNotFoundError,
    UncommittedChangesError,
)
from snapws.ids import SnapshotId
from snapws.model import Change, WorkspaceState, display_path
from snapws.oci.image import Descriptor, build_image, import_image
from snapws.ops.cachekeys import (
    CacheEntry,
    CacheMatch,
    annotate,
    cache_tag,
    check_key,
    entry_of,
    find_entry,
    format_time,
    plan_cache_prune,
    scan_entries,
)
from snapws.ops.remotes import RemoteEntry, TransferSettings, get_remote, open_remote, read_remotes
from snapws.ops.workspace import find_workspace, resolve_store
from snapws.remote.base import Remote, TransferStats
from snapws.remote.url import parse_remote_url
from snapws.store.store import Store

if TYPE_CHECKING:
    from snapws.ops.push import PushResult

#: remotes a cache command uses when given none (no SNAPWS_CACHE_REMOTE, no cache_remote)
DEFAULT_REMOTES = ("cache", "origin")
#: progress callback: (phase, done, total or None)
CacheProgress = Callable[[str, int, int | None], None]

_NS = 1_000_000_000


# ---- where a cache command works ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheContext:
    """Settings of one cache command: the current directory, the config,
    ``--store``, the remote (a name or a URL; None: ``default_remote`` (the
    CLI passes ``config.cache_remote``: SNAPWS_CACHE_REMOTE, else
    ``cache_remote`` in snapws.toml), else the remote named ``cache``, else
    ``origin``), plain HTTP for a URL, transfer knobs, and who acts."""

    cwd: Path
    config: Config
    store_path: Path | None = None
    remote: str | None = None
    default_remote: str | None = None
    insecure: bool = False
    settings: TransferSettings | None = None
    who: str = ""


def _is_url(text: str) -> bool:
    return "/" in text or ":" in text  # remote names hold neither


def cache_remote(ctx: CacheContext, store: Store | None) -> RemoteEntry:
    """The remote a cache command uses (see :class:`CacheContext`). A name
    needs ``store``'s remotes. Raises RemoteNotFoundError, BadRemoteUrlError."""
    given = ctx.remote or ctx.default_remote
    if given and _is_url(given):
        spec = parse_remote_url(given, ctx.insecure, ctx.cwd)
        return RemoteEntry(spec.url, spec.url, ctx.insecure)
    remotes = read_remotes(store) if store is not None else {}
    if given:
        if store is None:
            raise RemoteNotFoundError(
                f"no remote named {given!r}: there is no store yet to hold remotes",
                hint="give the registry's URL (--remote HOST[:PORT]/REPOSITORY, or "
                "SNAPWS_CACHE_REMOTE)",
            )
        entry = get_remote(store, given, remotes)
        return replace(entry, insecure=entry.insecure or ctx.insecure)
    for name in DEFAULT_REMOTES:
        if name in remotes:
            entry = remotes[name]
            return replace(entry, insecure=entry.insecure or ctx.insecure)
    raise RemoteNotFoundError(
        "no cache remote: none given, SNAPWS_CACHE_REMOTE and cache_remote (snapws.toml) "
        "are unset, and the store has no remote named cache or origin",
        hint="pass --remote HOST[:PORT]/REPOSITORY (or a remote's name), set "
        "SNAPWS_CACHE_REMOTE or cache_remote, or `snapws remote add cache URL`",
    )


def open_cache_remote(
    store: Store | None, entry: RemoteEntry, push: bool, settings: TransferSettings | None
) -> Remote:
    """Open ``entry`` (through the store when there is one: downloads are
    kept in its staging area); see :func:`snapws.ops.remotes.open_remote`."""
    return open_remote(store, entry, push, settings)


def locate_dir(
    ctx: CacheContext, path: Path | None
) -> tuple[Path, Store | None, WorkspaceState | None]:
    """The directory a cache command works on, its store and workspace
    state (both None: it is no workspace yet). ``path`` None: the workspace
    around the current directory. Raises NotAWorkspaceError (no ``path``,
    no workspace), BadPathError (``path`` lies inside another workspace)."""
    if path is None:
        try:
            store, state = find_workspace(ctx.cwd, ctx.config, ctx.store_path)
        except NotAWorkspaceError:
            raise NotAWorkspaceError(
                f"{ctx.cwd} is not inside a snapws workspace",
                hint="pass --path DIR (a directory that is not a workspace yet becomes one)",
            ) from None
        return Path(state.path), store, state
    target = Path(os.path.abspath(ctx.cwd / path))
    try:
        store, state = find_workspace(target, ctx.config, ctx.store_path)
    except (NotAWorkspaceError, StoreNotFoundError):
        return target, None, None
    if os.path.realpath(state.path) != os.path.realpath(target):
        raise BadPathError(
            f"{target} is inside the workspace {state.path}",
            hint=f"cache the whole workspace (--path {state.path}), or a directory outside "
            "every workspace",
        )
    return target, store, state


def existing_store(ctx: CacheContext, target: Path) -> Store | None:
    """The store a new workspace at ``target`` would use, if it exists."""
    try:
        return Store.open(resolve_store(target, ctx.config, ctx.store_path))
    except StoreNotFoundError:
        return None


# ---- save ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaveResult:
    key: str
    workspace: str
    snapshot: SnapshotId
    created_ns: int
    committed: bool  # the directory's changes became a new snapshot
    initialized: bool  # the directory became a workspace
    replaced: str | None  # manifest digest of the entry this save replaced
    push: PushResult

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "workspace": self.workspace,
            "committed": self.committed,
            "initialized": self.initialized,
            "created": format_time(self.created_ns),
            "replaced": self.replaced,
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
    that is no cache entry of this key), RemoteError, AuthError, and what
    ``init``/``commit`` raise."""
    from snapws.ops.commit import commit
    from snapws.ops.init import init
    from snapws.ops.push import PushPlan, send_image
    from snapws.ops.session import open_session

    tag = cache_tag(key)
    target, store, state = locate_dir(ctx, path)
    if state is None and not target.is_dir():
        raise BadPathError(
            f"{target} does not exist: there is nothing to save",
            hint="save the directory the build wrote (--path DIR)",
        )
    entry = cache_remote(ctx, store if store is not None else existing_store(ctx, target))
    message = f"cache: {key}"
    committed = initialized = False
    if state is None:
        store_root = resolve_store(target, ctx.config, ctx.store_path)
        branch = _free_branch(existing_store(ctx, target), ctx.config, tag)
        store, state = init(target, store_root, ctx.config, branch, message)
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
    with store.lock(False, ctx.config.lock_timeout):
        image = build_image(store, sid, progress=built)
    created = time.time_ns() if now_ns is None else now_ns
    image = annotate(image, key, created)
    remote = open_cache_remote(store, entry, True, ctx.settings)
    try:
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


# ---- restore ------------------------------------------------------------------------


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
    and what ``init``/``checkout`` raise."""
    from snapws.ops.checkout import checkout, uncommitted
    from snapws.ops.session import open_session

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
    elif target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BadPathError(
            f"{target} is not empty and not a workspace: restoring would hide its files",
            hint="restore into a new or empty directory, or `snapws init` it first "
            "(a restore then switches it to the cache's snapshot)",
        )
    if state is None:
        store_root = resolve_store(target, ctx.config, ctx.store_path)
        branch = _free_branch(known, ctx.config, match.entry.tag)
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
    shown = [display_path(c.path) for c in changes]
    listing = "\n".join(f"  {c.type.value} {p}" for c, p in zip(changes[:20], shown, strict=False))
    more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
    return UncommittedChangesError(
        f"cannot restore the cache: the workspace has {len(changes)} uncommitted "
        f"change(s):\n{listing}{more}",
        shown,
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


def _free_branch(store: Store | None, config: Config, tag: str) -> str:
    """The first-branch name of a workspace a restore creates: the default
    branch, or ``cache/TAG`` when a shared store has that one already."""
    from snapws.refnames import validate_ref_name

    for name in (config.default_branch, f"cache/{tag}"):
        try:
            validate_ref_name("branch", name)
        except BadNameError:
            continue
        if store is None or store.read_ref("heads", name) is None:
            return name
    raise NameExistsError(
        f"the store already has the branches {config.default_branch!r} and 'cache/{tag}'",
        hint="delete one (`snapws branch -d NAME`), or use a store of its own (--store)",
    )


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
    chooses: :func:`snapws.ops.importing.choose_new_backend`; then
    :func:`~snapws.ops.importing.init_on_snapshot`, or
    :func:`~snapws.ops.importing.start_plain_on_snapshot`)."""
    from snapws.ops.importing import (
        choose_new_backend,
        create_store_for,
        init_on_snapshot,
        start_plain_on_snapshot,
        undo_new_workspace,
    )
    from snapws.ops.init import validate_init
    from snapws.ops.recovery import recover

    validate_init(target, store_root)
    backend = choose_new_backend(ctx.config, store_root)
    assert match.entry is not None
    message = f"cache restore {match.entry.key}"
    author = ctx.who or ctx.config.author_or_default()
    created = not target.exists()
    store_created = not store_root.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        store = create_store_for(store_root, backend)
        remote = open_cache_remote(store, entry, False, ctx.settings)
        try:
            with store.lock(True, ctx.config.lock_timeout):
                recover(store)
                sid, fetched = _import(store, ctx, remote, match, progress)
                if backend != "plain":
                    state = init_on_snapshot(
                        store, target, sid, ctx.config, branch, message, backend, author
                    )
                    return state, fetched, remote
        finally:
            remote.close()
    except BaseException:
        undo_new_workspace(target, store_root, created, store_created)
        raise
    _store, state = start_plain_on_snapshot(
        target, store_root, sid, ctx.config, branch, message, author
    )
    return state, fetched, remote


# ---- list and prune -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheList:
    remote: str
    entries: list[CacheEntry]

    def to_json(self) -> dict[str, object]:
        return {"remote": self.remote, "entries": [e.to_json() for e in self.entries]}


def _store_for_listing(ctx: CacheContext) -> Store | None:
    explicit = ctx.store_path or ctx.config.store
    if explicit is not None:
        try:
            return Store.open(explicit)
        except StoreNotFoundError:
            return None
    try:
        return find_workspace(ctx.cwd, ctx.config, None)[0]
    except NotAWorkspaceError:
        return None


def list_cache(ctx: CacheContext) -> CacheList:
    """Every cache entry of the cache remote, sorted by key. Raises
    RemoteNotFoundError, RemoteError, AuthError."""
    store = _store_for_listing(ctx)
    remote = open_cache_remote(store, cache_remote(ctx, store), False, ctx.settings)
    try:
        return CacheList(remote.display, [e for e, _ in scan_entries(remote)])
    finally:
        remote.close()


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
    store = _store_for_listing(ctx)
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
