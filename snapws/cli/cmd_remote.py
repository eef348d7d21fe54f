"""``snapws remote``, ``push``, ``fetch`` and ``pull``."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.progress import ProgressBar
from snapws.store.store import Store

if TYPE_CHECKING:
    from snapws.oci.platform import Platform
    from snapws.ops.transfer.pull import FetchResult
    from snapws.ops.transfer.remotes import TransferSettings

CREDENTIALS_HELP = (
    "Credentials are never taken from the command line: snapws reads "
    "SNAPWS_REGISTRY_USERNAME + SNAPWS_REGISTRY_PASSWORD (or SNAPWS_REGISTRY_TOKEN), "
    "$XDG_CONFIG_HOME/snapws/credentials.toml, then docker/podman's auth.json "
    "($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json), "
    "with their credential helpers (credHelpers, credsStore: docker-credential-NAME)."
)


# ---- shared helpers ----------------------------------------------------------------


@contextmanager
def _store(app: App, exclusive: bool) -> Iterator[Store]:
    """The store of the current workspace (locked), or the one --store /
    SNAPWS_STORE names when the command runs outside a workspace."""
    from snapws.ops.transfer.push import workspace_or_store

    with workspace_or_store(app.cwd, app.config, app.store, exclusive) as (store, _state):
        yield store


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ByteBar:
    """A progress bar in bytes with the transfer rate (ETA is the bar's)."""

    def __init__(self, app: App, label: str) -> None:
        self.bar = ProgressBar(app.interactive and not app.quiet, label)
        self.start = time.monotonic()
        self.phase = label

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase:
            self.bar.restart(phase)
            self.phase = phase
            self.start = time.monotonic()
        if phase == "checking":  # counts blobs, not bytes
            self.bar(done, total, f"{done}/{total} blobs")
            return
        elapsed = max(time.monotonic() - self.start, 1e-3)
        text = f"{_human(done)}" + (f"/{_human(total)}" if total else "")
        self.bar(done, total, f"{text} {_human(done / elapsed)}/s")

    def simple(self, phase: str) -> ByteBarPhase:
        return ByteBarPhase(self, phase)

    def close(self) -> None:
        self.bar.close()


class ByteBarPhase:
    """``(done, total)`` callbacks feeding a :class:`ByteBar` phase."""

    def __init__(self, bar: ByteBar, phase: str) -> None:
        self.owner = bar
        self.phase = phase

    def __call__(self, done: int, total: int | None = None) -> None:
        self.owner(self.phase, done, total)


def _ref_line(move: str, old: str | None, new: str, src: str, dst: str) -> str:
    """One line of git's push/fetch summary: `` * [new tag]  main -> origin/main``,
    ``   a1b2c3d..e4f5a6b  main -> origin/main``, `` + a...b ... (forced update)``."""
    flag, summary, suffix = {
        "new": ("*", "[new tag]", ""),
        "up-to-date": ("=", "[up to date]", ""),
        "fast-forward": (" ", f"{old}..{new}", ""),
        "forced": ("+", f"{old}...{new}", "  (forced update)"),
    }[move]
    return f" {flag} {summary:<27} {src:<10} -> {dst}{suffix}"


def _platform(text: str | None) -> Platform | None:
    """``--platform``'s value (None: the host's); a bad one is a usage error."""
    from snapws.oci.platform import Platform

    if text is None:
        return None
    try:
        return Platform.parse(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--platform") from None


def _parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1] if t and t[-1] in "kmg" else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit() or int(number) <= 0:
        raise click.BadParameter(f"{text!r} is not a size such as 8M, 512K or 1048576")
    return int(number) * units[unit]


def _settings(chunk_size: str | None) -> TransferSettings:
    from snapws.ops.transfer.remotes import TransferSettings

    if chunk_size is None:
        return TransferSettings()
    return TransferSettings(chunk_size=_parse_size(chunk_size))


# ---- remote -------------------------------------------------------------------------


@click.group("remote", invoke_without_command=True)
@click.pass_context
def remote_cmd(ctx: click.Context) -> None:
    """Manage remotes: registry repositories and OCI layout directories.

    URL forms: HOST[:PORT]/REPOSITORY (or docker://HOST[:PORT]/REPOSITORY)
    for a registry (https; --insecure for plain HTTP), dir:/PATH or
    oci:/PATH for an OCI image layout directory.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(remote_list_cmd)


remote_cmd.help = inspect.cleandoc(remote_cmd.help or "") + "\n\n" + CREDENTIALS_HELP


@remote_cmd.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--insecure", is_flag=True, help="Speak plain HTTP (a registry on 127.0.0.1).")
@click.option("--json", "as_json", is_flag=True, help="Print the remote as JSON.")
@pass_app
def remote_add_cmd(app: App, name: str, url: str, insecure: bool, as_json: bool) -> None:
    """Add remote NAME at URL."""
    from snapws.ops.transfer.remotes import add_remote

    with _store(app, exclusive=True) as store:
        entry = add_remote(store, name, url, insecure, app.cwd)
    if as_json:
        emit_json(
            {
                "name": entry.name,
                "url": entry.url,
                "kind": entry.spec().kind,
                "insecure": entry.insecure,
            }
        )
        return
    app.info(f"remote {entry.name} -> {entry.url}{' (plain HTTP)' if insecure else ''}")


@remote_cmd.command("remove")
@click.argument("name")
@pass_app
def remote_remove_cmd(app: App, name: str) -> None:
    """Remove remote NAME and its remote-tracking refs."""
    from snapws.ops.transfer.remotes import remove_remote

    with _store(app, exclusive=True) as store:
        entry = remove_remote(store, name, app.who())
    app.info(f"removed remote {entry.name} ({entry.url})")


@remote_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="List as JSON.")
@pass_app
def remote_list_cmd(app: App, as_json: bool = False) -> None:
    """List remotes."""
    from snapws.ops.transfer.remotes import read_remotes, tracking_refs

    with _store(app, exclusive=False) as store:
        remotes = read_remotes(store)
        tracked = {name: tracking_refs(store, name) for name in remotes}
    if as_json:
        emit_json(
            {
                "remotes": [
                    {
                        "name": r.name,
                        "url": r.url,
                        "kind": r.spec().kind,
                        "insecure": r.insecure,
                        "tracking": tracked[r.name],
                    }
                    for r in remotes.values()
                ]
            }
        )
        return
    for r in remotes.values():
        click.echo(f"{r.name}\t{r.url}{'  (plain HTTP)' if r.insecure else ''}")


# ---- push ---------------------------------------------------------------------------


@click.command("push")
@click.argument("remote", required=False)
@click.argument("rev", required=False)
@click.option("--tag", help="The remote tag (default: the branch's name, else snap-<id>).")
@click.option(
    "--compression",
    type=click.Choice(["gzip", "zstd"]),
    default="gzip",
    show_default=True,
    help="How new layer blobs are compressed.",
)
@click.option("--chunk-size", metavar="SIZE", help="Upload chunk size (default 8M).")
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Replace what the remote tag names even when that drops snapshots.",
)
@click.option(
    "--force-with-lease",
    "lease",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[=EXPECTED]",
    help="Replace it only while it still names EXPECTED (default: what REMOTE/TAG "
    "names here, or no tag when this store has never seen it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@pass_app
def push_cmd(
    app: App,
    remote: str | None,
    rev: str | None,
    tag: str | None,
    compression: str,
    chunk_size: str | None,
    force: bool,
    lease: str | None,
    as_json: bool,
) -> None:
    """Send REV (default HEAD) to REMOTE (default origin) as an OCI image.

    Only the blobs the remote lacks are sent (each is checked first); the
    tag is written last, so an interrupted push never leaves a tag naming
    missing blobs, and running it again sends only what is still missing.
    The tag defaults to the branch's name ('/' becomes '-'), or
    snap-<id> for a detached snapshot.

    Only a fast-forward moves the tag: the snapshot it names must be REV or
    one of REV's ancestors (exit 8 otherwise; `snapws fetch` first when this
    store does not know it). --force replaces it anyway; --force-with-lease
    replaces it only if it still names what you last fetched or pushed
    (or EXPECTED), so work pushed meanwhile is never lost.
    """
    from snapws.ops.transfer.push import PushRequest, push

    request = PushRequest(remote, rev, tag, compression, force, lease)
    settings = _settings(chunk_size)
    bar = ByteBar(app, "building image")
    try:
        result = push(app.cwd, app.config, app.store, request, app.who(), settings, bar)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
        return
    s = result.stats
    old = result.previous.short() if result.previous else None
    app.say(f"To {result.url}")
    app.say(_ref_line(result.move.value, old, result.snapshot.short(), result.tag, result.tag))
    app.say(
        f"pushed {result.snapshot.short()} to {result.url}:{result.tag} "
        f"({s.blobs_sent} blob(s) sent, {_human(s.bytes_sent)}; "
        f"{s.blobs_skipped + s.blobs_mounted} already there)"
    )


# ---- fetch / pull -------------------------------------------------------------------


def _fetch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--depth`` and ``--platform``: what fetch and pull take alike."""
    command = click.option(
        "--platform",
        "platform_text",
        metavar="OS/ARCH[/VARIANT]",
        help="The image of a multi-platform index to take (default: this machine's).",
    )(command)
    return click.option(
        "--depth",
        type=click.IntRange(min=1),
        help="Bring at most N snapshots of each tag's history (1: the tip only).",
    )(command)


@click.command("fetch")
@click.argument("remote", required=False)
@click.argument("tag", required=False)
@_fetch_options
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@pass_app
def fetch_cmd(
    app: App,
    remote: str | None,
    tag: str | None,
    depth: int | None,
    platform_text: str | None,
    as_json: bool,
) -> None:
    """Import TAG (default: every tag) of REMOTE (default origin) into the store.

    Layers the store already has are not downloaded. Each tag is recorded
    as the remote-tracking ref REMOTE/TAG (`snapws log origin/main`,
    `snapws checkout -b NAME origin/main`). The workspace is not changed.
    """
    from snapws.ops.transfer.pull import fetch
    from snapws.ops.transfer.push import split_remote_arg
    from snapws.ops.transfer.remotes import get_remote

    platform = _platform(platform_text)
    bar = ByteBar(app, "fetching")
    try:
        with _store(app, exclusive=True) as store:
            remote_name, tag = split_remote_arg(store, remote, tag)
            entry = get_remote(store, remote_name)
            tags = [tag] if tag else None
            result = fetch(
                store, entry, tags, app.who(), progress=bar, depth=depth, platform=platform
            )
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
        return
    _print_fetched(app, result)
    if not result.fetched:
        app.say(f"{result.url} has no tags")
    s = result.stats
    app.info(f"received {s.blobs_received} blob(s), {_human(s.bytes_received)}")


def _print_fetched(app: App, result: FetchResult) -> None:
    """git's fetch summary: ``From URL``, then how each remote-tracking ref
    moved (not under -q, as git fetch -q)."""
    if result.fetched:
        app.say(f"From {result.url}")
    for f in result.fetched:
        old = f.previous.short() if f.previous else None
        dst = f"{result.remote}/{f.tag}"
        app.say(_ref_line(f.move.value, old, f.snapshot.short(), f.tag, dst))


@click.command("pull")
@click.argument("remote", required=False)
@click.argument("tag", required=False)
@_fetch_options
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
@pass_app
def pull_cmd(
    app: App,
    remote: str | None,
    tag: str | None,
    depth: int | None,
    platform_text: str | None,
    as_json: bool,
) -> None:
    """Fetch TAG (default: the current branch's name) and check it out.

    The branch named like the tag moves to it when that is a fast-forward
    (or is created if it does not exist here), and the workspace checks it
    out. Refuses with uncommitted changes (exit 5) or when the branch has
    diverged from the remote's (exit 8).
    """
    from snapws.ops.transfer.pull import pull
    from snapws.ops.transfer.push import split_remote_arg
    from snapws.ops.transfer.remotes import get_remote

    platform = _platform(platform_text)
    bar = ByteBar(app, "fetching")
    try:
        with app.session(exclusive=True) as s:
            remote_name, tag = split_remote_arg(s.store, remote, tag)
            entry = get_remote(s.store, remote_name)
            result = pull(s, entry, tag, app.who(), progress=bar, depth=depth, platform=platform)
    finally:
        bar.close()
    if as_json:
        emit_json(result.to_json())
        return
    _print_fetched(app, result.fetch)
    fetched = result.fetch.fetched[0]
    where = f"{result.fetch.remote}/{fetched.tag}"
    if result.action == "up-to-date":
        app.say(f"Already up to date ({result.branch} at {result.snapshot.short()})")
    elif result.action == "ahead":
        app.say(f"{result.branch} already contains {where}; nothing to do")
    elif result.action == "created":
        app.say(
            f"Switched to a new branch '{result.branch}' at {where} ({result.snapshot.short()})"
        )
    else:
        old = result.previous.short() if result.previous else "?"
        app.say(f"Fast-forward {result.branch} {old}..{result.snapshot.short()} ({where})")
    st = result.fetch.stats
    app.info(f"received {st.blobs_received} blob(s), {_human(st.bytes_received)}")


COMMANDS = [remote_cmd, push_cmd, fetch_cmd, pull_cmd]
