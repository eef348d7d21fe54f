"""``snapws mount``, ``snapws umount``, ``snapws workspaces``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.ops.recovery import recover
from snapws.ops.workspace import find_workspace, workspaces_store
from snapws.ops.worktree.mounting import mount, umount, workspaces
from snapws.store.store import Store


@click.command("mount")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@pass_app
def mount_cmd(app: App, directory: Path | None) -> None:
    """Mount the workspace DIRECTORY (after a reboot or `snapws umount`)."""
    store, _ = find_workspace(
        (app.cwd / directory) if directory else app.cwd, app.config, app.store
    )
    with store.lock(True, app.config.lock_timeout):
        recover(store)
        state = store.read_workspace(_.id)
        did = mount(store, state)
    app.info(f"mounted {state.path}" if did else f"{state.path} is already mounted")


@click.command("umount")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--lazy", is_flag=True, help="Freeze and detach even if processes use it.")
@pass_app
def umount_cmd(app: App, directory: Path | None, lazy: bool) -> None:
    """Unmount a workspace. Uncommitted changes stay in the store."""
    store, found = find_workspace(
        (app.cwd / directory) if directory else app.cwd, app.config, app.store
    )
    with store.lock(True, app.config.lock_timeout):
        recover(store)
        state = store.read_workspace(found.id)
        did = umount(store, state, lazy)
    app.info(f"unmounted {state.path}" if did else f"{state.path} was not mounted")


@click.command("workspaces")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@pass_app
def workspaces_cmd(app: App, as_json: bool) -> None:
    """The store's workspaces, their HEADs and where they are mounted."""
    if app.store is not None or app.config.store is not None:
        store = Store.open(app.store or app.config.store)  # type: ignore[arg-type]
    else:
        store = workspaces_store(app.cwd, app.config)
    infos = workspaces(store)
    if as_json:
        emit_json(
            {
                "workspaces": [
                    {
                        "id": i.state.id.hex,
                        "path": i.state.path,
                        "branch": i.state.branch,
                        "head": i.state.head.hex,
                        "mount": i.mount,
                        "backend": i.state.backend,
                        "base": i.state.base.hex if i.state.base else None,
                        "held": i.held,
                    }
                    for i in infos
                ]
            }
        )
        return
    for i in infos:
        where = i.state.branch or f"detached {i.state.head.short()}"
        mount = i.mount if i.mount == i.state.backend else f"{i.mount}, {i.state.backend}"
        base = i.state.base  # set: changed through its live mount while programs held it
        if base is not None and i.held:
            mount += f", held (its mount still shows {base.short()} below the changes)"
        elif base is not None and i.mount in ("mounted", "frozen"):
            mount += (
                f", no longer held (its mount shows {base.short()} below the changes "
                "until the next command that changes it, or `snapws mount`)"
            )
        if not os.path.isdir(i.state.path):
            mount += ", its directory is gone"
        click.echo(f"{i.state.path}  {where}  {i.state.head.short()}  [{mount}]")


COMMANDS = [mount_cmd, umount_cmd, workspaces_cmd]
