"""Where a cache command works: its settings (:class:`CacheContext`), the
remote it uses, the directory and store it acts on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from snapws.config import Config
from snapws.errors import (
    BadNameError,
    BadPathError,
    NameExistsError,
    NotAWorkspaceError,
    RemoteNotFoundError,
    StoreNotFoundError,
)
from snapws.model import WorkspaceState
from snapws.ops.transfer.remotes import (
    RemoteEntry,
    TransferSettings,
    get_remote,
    open_remote,
    read_remotes,
)
from snapws.ops.workspace import find_workspace, open_named_store, resolve_store
from snapws.remote.base import Remote
from snapws.remote.url import parse_remote_url
from snapws.store.store import Store

#: remotes a cache command uses when given none (no SNAPWS_CACHE_REMOTE, no cache_remote)
DEFAULT_REMOTES = ("cache", "origin")
#: progress callback: (phase, done, total or None)
CacheProgress = Callable[[str, int, int | None], None]


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
    kept in its staging area); see :func:`snapws.ops.transfer.remotes.open_remote`."""
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


def free_branch(store: Store | None, config: Config, tag: str) -> str:
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


def store_for_listing(ctx: CacheContext) -> Store | None:
    explicit = ctx.store_path or ctx.config.store
    if explicit is not None:
        try:
            return open_named_store(explicit, ctx.config)
        except StoreNotFoundError:
            return None
    try:
        return find_workspace(ctx.cwd, ctx.config, None)[0]
    except NotAWorkspaceError:
        return None
