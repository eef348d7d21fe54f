"""``snapws cache save|restore|list|prune``: a CI build-tree cache in a
registry (actions/cache semantics; see :mod:`snapws.ops.transfer.cache`)."""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.cmd_remote import CREDENTIALS_HELP, ByteBar
from snapws.cli.cmd_verify import human_size, plural
from snapws.errors import ConfigError

if TYPE_CHECKING:
    from snapws.ops.transfer.cache.context import CacheContext
    from snapws.ops.transfer.cache.keys import CacheEntry

REMOTE_ENV = "SNAPWS_CACHE_REMOTE"
NOW_ENV = "SNAPWS_NOW"  # hidden: the clock of save and prune (tests, reproducible runs)


def _context(app: App, remote: str | None, insecure: bool) -> CacheContext:
    from snapws.ops.transfer.cache.context import CacheContext

    return CacheContext(
        cwd=app.cwd,
        config=app.config,
        store_path=app.store,
        remote=remote,
        default_remote=app.config.cache_remote or None,  # SNAPWS_CACHE_REMOTE, config
        insecure=insecure,
        who=app.who(),
    )


def _now_ns() -> int | None:
    """The clock SNAPWS_NOW sets (seconds since the epoch, or RFC 3339)."""
    from snapws.ops.transfer.cache.keys import parse_time

    text = os.environ.get(NOW_ENV, "").strip()
    if not text:
        return None
    try:
        return int(float(text) * 1_000_000_000)
    except ValueError:
        pass
    ns = parse_time(text)
    if ns is None:
        raise ConfigError(
            f"{NOW_ENV}={text!r} is not a time",
            hint="give seconds since the epoch or an RFC 3339 time (2026-01-31T12:00:00Z)",
        )
    return ns


def _final_key(app: App, key: str, key_from: tuple[str, ...]) -> str:
    from snapws.ops.transfer.cache.keys import check_key, key_from_files

    return key_from_files(key, key_from, app.cwd) if key_from else check_key(key)


def _local(ns: int | None) -> str:
    if ns is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns // 1_000_000_000))


_remote_option = click.option(
    "--remote",
    metavar="NAME|URL",
    help=f"A remote's name or a registry URL (default: ${REMOTE_ENV}, else `cache_remote` "
    "in snapws.toml, else the remote named cache, else origin).",
)
_insecure_option = click.option(
    "--insecure",
    is_flag=True,
    envvar="SNAPWS_CACHE_INSECURE",
    help="Plain HTTP for a registry URL (one on 127.0.0.1). Env: SNAPWS_CACHE_INSECURE=1.",
)
_path_option = click.option(
    "--path",
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory (default: the workspace around the current directory).",
)
_key_from_option = click.option(
    "--key-from",
    multiple=True,
    metavar="FILE",
    help="Append a hash of these files' contents to KEY (globs; repeat the option).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")


@click.group("cache")
def cache_cmd() -> None:
    """A build-tree cache in a registry, as actions/cache does it.

    `save KEY` snapshots a directory and pushes it (only layers the
    registry lacks are sent); `restore KEY --restore-key PREFIX` brings back
    the exact entry, else the newest whose key starts with the first prefix
    that matches; `list` and `prune --older-than 7d` manage entries.
    """


cache_cmd.help = inspect.cleandoc(cache_cmd.help or "") + "\n\n" + CREDENTIALS_HELP


@cache_cmd.command("save")
@click.argument("key")
@_path_option
@_remote_option
@_insecure_option
@_key_from_option
@_json_option
@pass_app
def save_cmd(
    app: App,
    key: str,
    path: Path | None,
    remote: str | None,
    insecure: bool,
    key_from: tuple[str, ...],
    as_json: bool,
) -> None:
    """Snapshot the directory and push it as cache entry KEY.

    A workspace's changes are committed ("cache: KEY"); a directory that is
    no workspace becomes one (its content the base layer). Saving a key
    that exists replaces that entry. Blobs the registry has are not sent:
    after a restore, only the new top layer is uploaded.
    """
    from snapws.ops.transfer.cache.save import save_cache

    final = _final_key(app, key, key_from)
    bar = ByteBar(app, "compressing")
    try:
        result = save_cache(_context(app, remote, insecure), final, path, _now_ns(), bar)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
        return
    p, s = result.push, result.push.stats
    verb = "Updated" if result.replaced else "Saved"
    app.say(f"{verb} cache {final} ({result.snapshot.short()}) in {p.url}:{p.tag}")
    app.say(
        f" sent {s.blobs_sent} of {plural(p.blobs, 'blob')} ({human_size(s.bytes_sent)}); "
        f"{s.blobs_skipped + s.blobs_mounted} already there"
    )


@cache_cmd.command("restore")
@click.argument("key")
@click.option(
    "--restore-key",
    "restore_keys",
    multiple=True,
    metavar="PREFIX",
    help="On a miss, the newest entry whose key starts with PREFIX (the first that "
    "matches, in order; repeat the option).",
)
@_path_option
@_remote_option
@_insecure_option
@_key_from_option
@click.option("--fail-on-cache-miss", is_flag=True, help="Exit 1 when nothing matched.")
@_json_option
@pass_app
@click.pass_context
def restore_cmd(
    ctx: click.Context,
    app: App,
    key: str,
    restore_keys: tuple[str, ...],
    path: Path | None,
    remote: str | None,
    insecure: bool,
    key_from: tuple[str, ...],
    fail_on_cache_miss: bool,
    as_json: bool,
) -> None:
    """Restore cache entry KEY (else a --restore-key match) into the directory.

    A new or empty directory becomes a workspace on the entry's snapshot; a
    workspace switches to it (refused with uncommitted changes, exit 5).
    Only layers the store lacks are downloaded. Prints whether it was an
    exact hit, a prefix hit (and the key it matched) or a miss; a miss
    exits 0 unless --fail-on-cache-miss. With --json, cache_hit is true for
    an exact hit only (as actions/cache's cache-hit output).
    """
    from snapws.ops.transfer.cache.restore import restore_cache

    final = _final_key(app, key, key_from)
    bar = ByteBar(app, "fetching")
    try:
        result = restore_cache(_context(app, remote, insecure), final, restore_keys, path, bar)
    finally:
        bar.close()
    m = result.match
    if as_json:
        emit_json(result.to_json())
    elif m.entry is None:
        click.echo(f"Cache miss: {final} (in {result.remote})")
    else:
        if m.hit == "exact":
            click.echo(f"Cache hit: {m.entry.key}")
        else:
            click.echo(f"Cache hit on restore key {m.restore_key}: {m.entry.key}")
        s = result.stats
        how = {"created": "new workspace", "switched": "switched", "up-to-date": "up to date"}
        click.echo(
            f" {result.workspace} at {result.snapshot.short() if result.snapshot else '?'} "
            f"({how.get(result.action, result.action)}; fetched {result.layers_fetched} of "
            f"{plural(result.layers, 'layer')}, {human_size(s.bytes_received)})"
        )
    if m.entry is None and fail_on_cache_miss:
        if not as_json:
            click.echo(f"snapws: error: no cache entry matches {final}", err=True)
        ctx.exit(1)


def _rows(entries: list[CacheEntry]) -> list[str]:
    rows = [("KEY", "SIZE", "SAVED")] + [
        (e.key, human_size(e.size), _local(e.created_ns)) for e in entries
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return [f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]}" for r in rows]


@cache_cmd.command("list")
@_remote_option
@_insecure_option
@_json_option
@pass_app
def list_cmd(app: App, remote: str | None, insecure: bool, as_json: bool) -> None:
    """List cache entries: key, size of their blobs, when saved (local time)."""
    from snapws.ops.transfer.cache.listing import list_cache

    result = list_cache(_context(app, remote, insecure))
    if as_json:
        emit_json(result.to_json())
        return
    if not result.entries:
        app.info(f"no cache entries in {result.remote}")
        return
    for line in _rows(result.entries):
        click.echo(line)


def _parse_duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    from snapws.ops.maintenance.gc import parse_grace

    try:
        return parse_grace(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cache_cmd.command("prune")
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    callback=_parse_duration,
    help="Remove entries saved longer ago than this: 7d, 12h, 30m (minutes), 1w, 90s.",
)
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@_remote_option
@_insecure_option
@_json_option
@pass_app
def prune_cmd(
    app: App,
    older_than: float,
    dry_run: bool,
    remote: str | None,
    insecure: bool,
    as_json: bool,
) -> None:
    """Remove cache entries saved before now - DURATION.

    Registries do not evict: this deletes the entries' manifests (the
    registry must allow deletes). Their blobs stay on disk until the
    registry's garbage collection runs (`registry garbage-collect CONFIG`).
    """
    from snapws.ops.transfer.cache.prune import prune_cache

    result = prune_cache(_context(app, remote, insecure), older_than, dry_run, _now_ns())
    if as_json:
        emit_json(result.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    for e in result.removed:
        app.say(f"{verb} {e.key} (saved {_local(e.created_ns)}, {human_size(e.size)})")
    for e in result.undated:
        app.info(f"kept {e.key}: it records no save time")
    app.say(
        f"{verb} {plural(len(result.removed), 'entry', 'entries')} saved before "
        f"{_local(result.cutoff_ns)}; kept {len(result.kept) + len(result.undated)}"
    )


COMMANDS = [cache_cmd]
