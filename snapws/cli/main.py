"""The ``snapws`` command: global options, error rendering, command registry.

Commands live one family per module (``cmd_*.py``): they parse options, make
one library call and render the result. They never hold logic of their own.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from snapws import __version__
from snapws.cli.app import App
from snapws.config import load_config
from snapws.errors import ExitCode, SnapwsError, environment_error


class SnapwsGroup(click.Group):
    """Loads commands lazily (:data:`COMMAND_MODULES`) and turns SnapwsError
    into ``snapws: error: ...`` + hint + its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        modname = COMMAND_MODULES.get(cmd_name)
        if modname is None:
            return None
        module = importlib.import_module(f"snapws.cli.{modname}")
        for command in module.COMMANDS:
            if command.name == cmd_name:
                assert isinstance(command, click.Command)
                return command
        raise LookupError(f"{modname} does not define the command {cmd_name!r}")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SnapwsError as e:
            click.echo(f"snapws: error: {e.message}", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(int(e.exit_code))
        except PermissionError as e:
            click.echo(f"snapws: error: {e}", err=True)
            click.echo("hint: snapws needs root for workspaces it mounts (sudo)", err=True)
            ctx.exit(int(ExitCode.UNSUPPORTED))
        except OSError as e:
            env = environment_error(e)
            if env is not None:
                click.echo(f"snapws: error: {env.message}", err=True)
                click.echo(f"hint: {env.hint}", err=True)
                ctx.exit(int(env.exit_code))
            click.echo(f"snapws: error: {e}", err=True)
            click.echo(
                "hint: this is unexpected; the store is left valid (the next command "
                "finishes or rolls back the step). Please report it with the command run",
                err=True,
            )
            ctx.exit(int(ExitCode.INTERNAL))
        except KeyboardInterrupt:
            click.echo("snapws: interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: say so, with the exit code for internal errors
            import traceback

            traceback.print_exc()
            click.echo(f"snapws: internal error: {type(e).__name__}: {e}", err=True)
            click.echo("hint: please report this bug with the command and output above", err=True)
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=SnapwsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="snapws")
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run as if started in DIR (as git -C).",
)
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SNAPWS_STORE",
    help="The store directory (default: found from the workspace; for init, .snapws beside it).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and requested data.")
@click.pass_context
def cli(ctx: click.Context, directory: Path | None, store: Path | None, quiet: bool) -> None:
    """snapws: git-like snapshots of a directory, at filesystem speed.

    A workspace is an overlay mount: read-only content-hashed layers below, an
    upperdir collecting your changes above. `snapws commit` freezes the changes
    into a layer; `snapws checkout` remounts any snapshot in milliseconds.
    Exit codes: docs/exit-codes.md.
    """
    try:
        config = load_config()
    except SnapwsError as e:
        click.echo(f"snapws: error: {e.message}", err=True)
        if e.hint:
            click.echo(f"hint: {e.hint}", err=True)
        ctx.exit(int(e.exit_code))
    cwd = _cwd()
    if directory is not None:
        # not a chdir: the process must not hold the workspace busy (umount)
        cwd = Path(os.path.normpath(cwd / directory))
        if not cwd.is_dir():
            raise click.UsageError(f"cannot change to {directory}: not a directory")
    ctx.obj = App(
        config=config,
        cwd=cwd,
        store=store.absolute() if store else None,
        quiet=quiet,
        interactive=sys.stderr.isatty(),
    )
    if ctx.invoked_subcommand not in _OWN_NAMESPACE:
        # a rootless workspace's mount lives in a user + mount namespace: move
        # into it now, while the process is single-threaded (no-op otherwise)
        from snapws.backends.userns import enter_for_workspace

        enter_for_workspace(cwd, config, ctx.obj.store)


#: Commands that do not open the workspace of the current directory, or that
#: find their namespace themselves (shell/run take a path; init makes one).
_OWN_NAMESPACE = {None, "init", "doctor", "workspaces", "shell", "run"}


def _cwd() -> Path:
    """The current directory; if it is unreachable (a shell left inside a
    workspace mount that a commit detached), the shell's $PWD names it."""
    try:
        return Path(os.getcwd())
    except FileNotFoundError:
        pwd = os.environ.get("PWD")
        if pwd and os.path.isabs(pwd):
            return Path(pwd)
        raise click.UsageError(
            "the current directory is gone (a detached workspace mount?); run `cd .`"
        ) from None


#: command name -> module in snapws.cli that defines it. Modules are imported
#: only when their command runs, so each invocation loads what it needs.
COMMAND_MODULES = {
    "init": "cmd_init",
    "status": "cmd_diff",
    "diff": "cmd_diff",
    "commit": "cmd_commit",
    "log": "cmd_log",
    "show": "cmd_log",
    "reflog": "cmd_log",
    "checkout": "cmd_checkout",
    "reset": "cmd_checkout",
    "branch": "cmd_branch",
    "tag": "cmd_branch",
    "restore": "cmd_restore",
    "flatten": "cmd_flatten",
    "verify": "cmd_verify",
    "du": "cmd_verify",
    "prune": "cmd_prune",
    "gc": "cmd_prune",
    "mount": "cmd_mount",
    "umount": "cmd_mount",
    "workspaces": "cmd_mount",
    "doctor": "cmd_doctor",
    "shell": "cmd_shell",
    "run": "cmd_shell",
    "export": "cmd_export",
    "import": "cmd_import",
    "remote": "cmd_remote",
    "push": "cmd_remote",
    "fetch": "cmd_remote",
    "pull": "cmd_remote",
    "cache": "cmd_cache",
}


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="snapws")
