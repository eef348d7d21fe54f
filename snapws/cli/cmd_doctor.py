"""``snapws doctor``."""

from __future__ import annotations

from pathlib import Path

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.errors import ExitCode, SnapwsError, StoreCorruptError
from snapws.model import WorkspaceState
from snapws.ops.maintenance.doctor import diagnose

MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def doctor_cmd(app: App, as_json: bool) -> None:
    """Check this machine and the store: kernel, overlayfs and its defaults,
    mount API, user namespaces, userxattr, fuse-overlayfs and /dev/fuse, and
    the store's filesystem (d_type, xattrs, overlay or not). Probes each
    backend (kernel, rootless, fuse, plain) with a small test mount beside
    the store, says which one `snapws init` picks and why, and how to fix
    each problem. Exits 9 (UNSUPPORTED) when no backend (or not the one
    configured by `backend =`) can run."""
    from snapws.ops.workspace import find_store, find_workspace
    from snapws.store.location import default_store_for

    store: Path | None = app.store or app.config.store
    state: WorkspaceState | None = None
    held = False
    try:
        found, state = find_workspace(app.cwd, app.config, store)
        store = found.root
        from snapws.ops.worktree.mounting import held_now

        held = held_now(found, state)
    except StoreCorruptError:  # a damaged record: the report says so
        store = store or find_store(app.cwd, app.config, None).root
    except (SnapwsError, OSError):  # not in a workspace (of this store)
        # the store a workspace made here (in this directory) would get: from
        # $HOME, the user's data store, not one beside $HOME
        store = store or default_store_for(app.cwd / "new-workspace")
    report = diagnose(store, app.config.backend, state, held)
    if as_json:
        emit_json(report.to_json())
    else:
        for c in report.checks:
            click.echo(f"[{MARK[c.status]}] {c.name}: {c.found}")
            if c.fix and c.status != "ok":
                click.echo(f"       fix: {c.fix}")
        click.echo("")
        click.echo("backends:")
        for b in report.backends:
            click.echo(f"  {b.backend:<9} {'available' if b.ok else 'unavailable'}: {b.reason}")
            if b.fix and not b.ok:
                click.echo(f"            fix: {b.fix}")
        click.echo("")
        if report.requested != "auto":
            click.echo(f"configured: backend = {report.requested}")
        click.echo(f"backend: {report.backend or 'none'} ({report.reason})")
        if state is not None:
            click.echo(f"workspace: {state.path}: {held_text(state, held)}")
    if not report.ok:
        raise SystemExit(int(ExitCode.UNSUPPORTED))


def held_text(state: WorkspaceState, held: bool) -> str:
    """Whether the workspace is held (issue 10; ``held``: a program holds
    it now), in words."""
    from snapws.backends import backend_for

    if not backend_for(state).replaces_mount:
        return "an ordinary directory (changed in place: nothing to remount)"
    if state.base is None:
        return "not held (the next commit or checkout remounts it, unless a program is inside)"
    if not held:
        return (
            f"no longer held: its mount shows {state.base.short()} below the changes until "
            "the next command that changes it, or `snapws mount`"
        )
    return (
        f"held: its mount still shows {state.base.short()} below the changes; commit and "
        "checkout go through the live mount until nothing holds it"
    )


COMMANDS = [doctor_cmd]
