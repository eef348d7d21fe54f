"""``snapws eject``."""

from __future__ import annotations

from pathlib import Path

import click

from snapws.cli.app import App, emit_json, pass_app


@click.command("eject")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def eject_cmd(app: App, directory: Path | None, as_json: bool) -> None:
    """Stop using snapws for the workspace DIRECTORY (default: the one around
    the current directory): it becomes an ordinary directory holding its
    current tree, uncommitted changes included, no longer mounted. The store
    keeps every snapshot, branch and tag; it forgets the workspace."""
    from snapws.ops.session import open_session
    from snapws.ops.worktree.eject import eject

    start = (app.cwd / directory) if directory else app.cwd
    if directory is not None:
        # the namespace of a rootless DIRECTORY (the group entered the one of
        # the current directory, if any): as `snapws -C DIRECTORY eject`
        from snapws.backends.userns import enter_for_workspace

        enter_for_workspace(start, app.config, app.store)
    with open_session(start, app.config, app.store, exclusive=True) as s:
        result = eject(s)
    if as_json:
        emit_json(result.to_json())
        return
    app.say(
        f"Ejected {result.path}: an ordinary directory now, with its current tree "
        "(uncommitted changes included); the store keeps its snapshots"
    )


COMMANDS = [eject_cmd]
