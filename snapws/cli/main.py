"""The ``snapws`` command: global options, error rendering, command registry.

Commands live one family per module (``cmd_*.py``): they parse options, make
one library call and render the result. They never hold logic of their own.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from snapws import __version__
from snapws.cli import stdstreams
from snapws.cli.app import CANNOT_ENTER_HINT, App, HintedUsageError, cannot_enter
from snapws.config import load_config
from snapws.errors import ExitCode, OutputError, SnapwsError, environment_error
from snapws.interrupts import DeferredInterrupt


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
                if not any(p.name == "quiet" for p in command.params):
                    command.params.append(_quiet_after_command())
                return command
        raise LookupError(f"{modname} does not define the command {cmd_name!r}")

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and name[0] != "-" and name not in COMMAND_MODULES and not ctx.resilient_parsing:
            raise _unknown_command(name, ctx)
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _usage_error(e)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's main, with the standard streams guarded (:mod:`stdstreams`):
        a failed write to them is exit 74 (OUTPUT_FAILED), in :meth:`invoke`
        as for any SnapwsError, here when it comes outside a command
        (``--help``, ``--version``, the last flush)."""
        with stdstreams.guarded():
            try:
                try:
                    return super().main(*args, **kwargs)
                finally:
                    stdstreams.flush()
            except OutputError as e:
                report_error(e.message, e.hint)
                sys.exit(int(e.exit_code))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # a closed pipe shows here, not at exit
        except click.UsageError as e:
            _usage_error(e)
        except BrokenPipeError:
            # the reader went away (`snapws log | head -1`): end quietly, as git
            # does (it dies of SIGPIPE; main() does too, see CLOSED_PIPE)
            _silence_stdout()
            ctx.exit(CLOSED_PIPE)
        except SnapwsError as e:
            report_error(e.message, e.hint)
            ctx.exit(int(e.exit_code))
        except OSError as e:  # one no entry point wrapped: say what it is, never guess
            env = environment_error(e)
            if env is not None:
                report_error(env.message, env.hint)
                ctx.exit(int(env.exit_code))
            report_error(
                str(e),
                "this is unexpected; the store is left valid (the next command "
                "finishes or rolls back the step). Please report it with the command run",
            )
            ctx.exit(int(ExitCode.INTERNAL))
        except DeferredInterrupt as e:  # came during a critical section, acted on after it
            say_on_stderr(f"snapws: interrupted ({e.finished})")
            ctx.exit(int(ExitCode.INTERRUPTED) if e.signum == signal.SIGINT else 128 + e.signum)
        except KeyboardInterrupt:
            say_on_stderr("snapws: interrupted")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # a bug: say so, with the exit code for internal errors
            import traceback

            with contextlib.suppress(OSError):
                traceback.print_exc()
            say_on_stderr(f"snapws: internal error: {type(e).__name__}: {e}")
            say_on_stderr("hint: please report this bug with the command and output above")
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=SnapwsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="snapws")
@click.option(
    "-C",
    "directory",
    type=click.Path(path_type=Path),
    help="Run as if started in DIR (as git -C).",
)
@click.option(
    "--store",
    # readable=False: a store this user may not read is the library's error (exit 9)
    type=click.Path(file_okay=False, readable=False, path_type=Path),
    envvar="SNAPWS_STORE",
    help=(
        "The store directory (default: found from the workspace; for init, this user's "
        "store on the directory's filesystem: /var/lib/snapws for root, "
        "~/.local/share/snapws for others)."
    ),
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
        report_error(e.message, e.hint)
        ctx.exit(int(e.exit_code))
    cwd = _cwd()
    if directory is not None:
        # not a chdir: the process must not hold the workspace busy (umount)
        cwd = Path(os.path.normpath(cwd / directory))
        why = cannot_enter(cwd)
        if why is not None:  # as git's "fatal: cannot change to 'DIR': ..."
            report_error(f"cannot change to '{directory}': {why}", CANNOT_ENTER_HINT)
            ctx.exit(int(ExitCode.USAGE))
    ctx.obj = App(
        config=config,
        cwd=cwd,
        store=store.absolute() if store else None,
        quiet=quiet,
        interactive=sys.stderr.isatty(),
    )
    _notice_lock_waits(ctx.obj)
    if ctx.invoked_subcommand not in _OWN_NAMESPACE:
        # a rootless workspace's mount lives in a user + mount namespace: move
        # into it now, while the process is single-threaded (no-op otherwise)
        from snapws.backends.userns import enter_for_workspace

        enter_for_workspace(cwd, config, ctx.obj.store)


def _notice_lock_waits(app: App) -> None:
    """A command that waits for the store lock says so once on stderr,
    after a second, naming the holder when known (not under -q)."""
    from snapws.store import lock

    def notice(text: str) -> None:
        if not app.quiet:
            say_on_stderr(f"snapws: {text}")

    lock.set_wait_notice(notice)


#: The exit status of a command whose output pipe closed: the shell's 128 +
#: SIGPIPE. main() turns it into death by SIGPIPE, as git's.
CLOSED_PIPE = 128 + signal.SIGPIPE


def _open_closed_streams() -> None:
    """A standard stream the caller closed (``snapws status >&-``) reads or
    writes /dev/null, as for a daemon: else writing to it fails, or a file a
    command opens takes its descriptor."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def report_error(message: str, hint: str | None) -> None:
    """``snapws: error: MESSAGE`` and ``hint: HINT`` on stderr (also for a
    command that reports several errors and goes on). A stderr
    that cannot be written to (OutputError) changes nothing: the exit code
    still says which error it was."""
    say_on_stderr(f"snapws: error: {message}")
    if hint:
        say_on_stderr(f"hint: {hint}")


def say_on_stderr(line: str) -> None:
    """``line`` on stderr, if it can be written. A full or failing stderr
    (OutputError) or one whose reader went away (a closed pipe: later
    writes are dropped, stderr then goes to /dev/null) changes nothing: the
    caller's exit code stands (a command that failed keeps its code)."""
    try:
        click.echo(line, err=True)
    except OutputError:
        pass
    except BrokenPipeError:
        _silence(sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that no later flush fails again."""
    _silence(sys.stdout)


def _silence(stream: Any) -> None:
    """Point ``stream``'s descriptor at /dev/null so that no later write or
    flush fails again (what it still buffers goes there)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (click's test runner)
        pass


#: UsageErrors that click shows as help, not as an error (click >= 8.2)
_HELP_ERRORS: tuple[type[click.UsageError], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


def _unknown_command(name: str, ctx: click.Context) -> HintedUsageError:
    """``'stauts' is not a snapws command``, with the most similar ones as
    git names them (``The most similar command is status``)."""
    import difflib  # only here: start-up

    known = list(COMMAND_MODULES)
    similar = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if len(name) >= 3:  # an abbreviation: `snapws work` for workspaces
        similar += [c for c in known if c.startswith(name) and c not in similar]
    shown = ", ".join(f"`snapws {c}`" for c in similar[:3])
    if not similar:
        hint = "see `snapws --help` for the list of commands"
    elif len(similar) == 1:
        hint = f"the most similar command is {shown}"
    else:
        hint = f"the most similar commands are {shown}"
    return HintedUsageError(f"{name!r} is not a snapws command", hint, ctx)


def _usage_error(e: click.UsageError) -> NoReturn:
    """A bad command line: ``snapws: error:`` + ``hint:``, exit 2 (USAGE)."""
    if isinstance(e, _HELP_ERRORS):  # a group run without a command: its help
        raise e
    try:
        click.echo(f"snapws: error: {e.format_message()}", err=True)
        where = e.ctx.command_path if e.ctx is not None else "snapws"
        hint = e.hint if isinstance(e, HintedUsageError) else f"see `{where} --help`"
        click.echo(f"hint: {hint}", err=True)
    except BrokenPipeError:
        _silence(sys.stderr)
    except OutputError:
        pass
    sys.exit(int(ExitCode.USAGE))


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    app = ctx.find_object(App)
    if value and app is not None:
        app.quiet = True


def _quiet_after_command() -> click.Option:
    """``-q``/``--quiet`` after the command name (``snapws commit -q``), as
    well as before it."""
    return click.Option(
        ["-q", "--quiet"],
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="Print only errors and requested data.",
    )


#: Commands that do not open the workspace of the current directory, or that
#: find their namespace themselves (shell/run take a path; init makes one).
_OWN_NAMESPACE = {None, "init", "clone", "doctor", "workspaces", "shell", "run"}


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
    "clone": "cmd_clone",
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
    "eject": "cmd_eject",
    "doctor": "cmd_doctor",
    "shell": "cmd_shell",
    "run": "cmd_shell",
    "hook": "cmd_hook",
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
    _open_closed_streams()
    try:
        cli(prog_name="snapws")
    except SystemExit as e:
        if e.code == CLOSED_PIPE:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGPIPE)
        raise
