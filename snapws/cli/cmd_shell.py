"""``snapws shell`` and ``snapws run``."""

from __future__ import annotations

from pathlib import Path

import click

from snapws.cli.app import App, pass_app
from snapws.ops.worktree.shell import Place, default_shell, prepare, run_program


def _run(ctx: click.Context, argv: list[str], place: Place) -> None:
    try:
        code = run_program(argv, place)
    except FileNotFoundError:
        click.echo(f"snapws: {argv[0]}: command not found", err=True)
        code = 127
    except PermissionError:
        click.echo(f"snapws: {argv[0]}: permission denied", err=True)
        code = 126
    ctx.exit(code)


@click.command("shell")
@click.argument("path", required=False, type=click.Path(file_okay=False, path_type=Path))
@pass_app
@click.pass_context
def shell_cmd(ctx: click.Context, app: App, path: Path | None) -> None:
    """Open $SHELL (or /bin/sh) in the mounted workspace containing PATH (default: .).

    The workspace is mounted first if it is not. For a rootless workspace
    the shell runs inside the workspace's user namespace, where you are uid 0
    and the mount lives: leave it with `exit`. $SNAPWS_WORKSPACE names the
    workspace (for your prompt). The shell's exit status is snapws's.
    """
    place = prepare(app.cwd / path if path else app.cwd, app.config, app.store)
    app.info(f"snapws: {place.backend} workspace {place.workspace}; `exit` leaves the shell")
    _run(ctx, [default_shell()], place)


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run in DIR (in its workspace) instead of the current directory.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_app
@click.pass_context
def run_cmd(ctx: click.Context, app: App, directory: Path | None, command: tuple[str, ...]) -> None:
    """Run COMMAND in the mounted workspace: `snapws run [-C DIR] -- CMD ARGS...`.

    The workspace is mounted first if it is not; COMMAND starts in the
    current directory (or DIR) if it is inside the workspace, else at its
    root. For a rootless workspace it runs inside the workspace's user
    namespace. Exit status: COMMAND's (128+N if signal N killed it; 127 if
    it was not found). SIGTERM and SIGHUP are passed on to it.
    """
    place = prepare(app.cwd / directory if directory else app.cwd, app.config, app.store)
    _run(ctx, list(command), place)


COMMANDS = [shell_cmd, run_cmd]
