"""Shared state of one ``snapws`` invocation (``ctx.obj``) and small helpers
the commands share."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snapws.config import Config
from snapws.errors import BadPathError, RevisionNotFoundError
from snapws.ids import SnapshotId

if TYPE_CHECKING:
    from snapws.session import Session


@dataclass(slots=True)
class App:
    config: Config
    cwd: Path
    store: Path | None
    quiet: bool
    interactive: bool

    @contextmanager
    def session(self, exclusive: bool = False, mount: bool = True) -> Iterator[Session]:
        from snapws.ops.session import open_session

        with open_session(self.cwd, self.config, self.store, exclusive, mount) as s:
            yield s

    def who(self) -> str:
        return self.config.author_or_default()

    def resolve(self, session: Session, rev: str) -> SnapshotId:
        from snapws.ops.history.revs import resolve_rev

        return resolve_rev(session.store, session.state.head, self.expand_prior(session, rev))

    def expand_prior(self, session: Session, rev: str) -> str:
        """``rev`` with a leading ``@{-N}`` replaced by the branch name (or
        the full id of the detached snapshot) that HEAD's reflog says the
        N-th last checkout left, as git does; other revisions as they are.
        Raises RevisionNotFoundError when there is no such checkout or its
        branch no longer exists."""
        from snapws.revparse import prior_checkout, prior_checkout_number

        found = prior_checkout_number(rev)
        if found is None:
            return rev
        n, rest = found
        from snapws.ops.history.log import reflog

        moves = ((e.old, e.message) for e in reflog(session.store, session.head_ref()))
        prior = prior_checkout(moves, n)
        if prior is None:
            went = "no checkout" if n == 1 else f"fewer than {n} checkouts"
            raise RevisionNotFoundError(
                f"{rev}: HEAD's reflog shows {went} to go back to",
                hint="`snapws reflog` shows where HEAD has been",
            )
        if prior.branch is None:
            return prior.id.hex + rest
        if session.store.read_ref("heads", prior.branch) is None:
            raise RevisionNotFoundError(
                f"{rev}: the branch checked out before, {prior.branch!r}, no longer exists",
                hint=f"`snapws checkout {prior.id.short()}` goes back to where it was then",
            )
        return prior.branch + rest

    def rel_paths(self, session: Session, paths: tuple[str, ...]) -> tuple[bytes, ...]:
        """Command-line paths (relative to the current directory) as paths
        relative to the workspace root. Raises BadPathError outside it."""
        root = os.path.realpath(session.path)
        out = []
        for p in paths:
            absp = os.path.normpath(os.path.join(self.cwd, p))
            # the cwd may be a detached old mount of the same path: compare by name
            real_parent = os.path.realpath(os.path.dirname(absp)) if absp != root else root
            cand = absp if absp == root else os.path.join(real_parent, os.path.basename(absp))
            if cand != root and not cand.startswith(root + os.sep):
                raise BadPathError(
                    f"{p} is outside the workspace {session.path}",
                    hint="paths are relative to the current directory",
                )
            rel = os.path.relpath(cand, root)
            out.append(os.fsencode(rel))
        return tuple(out)

    def cwd_in_workspace(self, session: Session) -> bytes:
        """The current directory's path relative to the workspace root
        (``b""`` at the root, or when the current directory is outside the
        workspace), for showing paths relative to it as git's status does."""
        root = os.path.realpath(session.path)
        cwd = os.path.realpath(self.cwd)
        if cwd == root or not cwd.startswith(root + os.sep):
            return b""
        return os.fsencode(os.path.relpath(cwd, root))

    def say(self, text: str) -> None:
        """A report for people on stdout (``Switched to branch ...``),
        silenced by --quiet as git's -q silences it."""
        if not self.quiet:
            click.echo(text)

    def info(self, text: str) -> None:
        """A message for people (stderr), silenced by --quiet."""
        if not self.quiet:
            click.echo(text, err=True)


pass_app = click.make_pass_decorator(App)

#: the hint after ``cannot change to 'DIR'`` (``-C DIR``)
CANNOT_ENTER_HINT = (
    "-C takes an existing directory, relative to the current one (as git -C); "
    "to create a workspace there, `snapws init DIR`"
)


def cannot_enter(path: Path) -> str | None:
    """Why ``-C path`` cannot be entered, in the system's words (``No such
    file or directory``, ``Not a directory``, ``Permission denied``), or
    None when it can. snapws does not chdir (the process must not hold a
    workspace busy), so this checks what chdir would refuse."""
    import errno
    import stat

    try:
        st = os.stat(path)
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    if not stat.S_ISDIR(st.st_mode):
        return os.strerror(errno.ENOTDIR)
    if not os.access(path, os.X_OK):
        return os.strerror(errno.EACCES)
    return None


def note_if_below_new_mount(app: App, path: str, backend: str) -> None:
    """After init or clone: a shell whose cwd is inside the new workspace sees
    the directory under the mount until it runs ``cd .``; say so (not for a
    rootless mount, which that shell does not see at all)."""
    from snapws.backends import get_backend

    cwd = str(app.cwd)
    shown = get_backend(backend)
    below = shown.replaces_mount and shown.mount_is_shared
    if below and (cwd == path or cwd.startswith(path + os.sep)):
        app.info("note: your shell is below the new mount; run `cd .` to see the workspace")


class HintedUsageError(click.UsageError):
    """A bad command line whose ``hint:`` line says more than "see --help"
    (exit 2, USAGE)."""

    def __init__(self, message: str, hint: str, ctx: click.Context | None = None) -> None:
        super().__init__(message, ctx)
        self.hint = hint


class PathsAfterDashDash(click.Command):
    """A command whose arguments after ``--`` are paths (kept in
    ``ctx.meta["snapws.paths"]``), as in ``snapws diff REV -- PATH``;
    ``ctx.meta["snapws.dashdash"]`` tells whether ``--`` was given."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["snapws.dashdash"] = "--" in args
        if "--" in args:
            i = args.index("--")
            ctx.meta["snapws.paths"] = tuple(args[i + 1 :])
            args = args[:i]
        else:
            ctx.meta["snapws.paths"] = ()
        return super().parse_args(ctx, args)


class NoPaths(click.Command):
    """A command that takes no paths: ``--`` (git's ``checkout -- FILE``,
    ``log -- FILE``) is refused with the hint of the class attribute
    ``paths_hint`` (exit 2, USAGE)."""

    paths_hint = ""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            raise HintedUsageError(f"`snapws {self.name}` takes no paths", self.paths_hint, ctx)
        return super().parse_args(ctx, args)


class CheckoutCommand(NoPaths):
    paths_hint = "to bring files back: `snapws restore [--source REV] PATH...`"


class CountAsOption(click.Command):
    """A command that takes git's ``-<number>`` for ``-n <number>``
    (``snapws log -3``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        for arg in args:
            if arg == "--":  # what follows is not an option
                out += args[len(out) :]
                break
            takes_value = bool(out) and out[-1] in ("-n", "--max-count")
            count = arg[1:]
            if not takes_value and arg[:1] == "-" and count.isascii() and count.isdigit():
                arg = f"--max-count={count}"
            out.append(arg)
        return super().parse_args(ctx, out)


class LogCommand(CountAsOption, NoPaths):
    paths_hint = (
        "log does not follow paths; `snapws diff REV1 REV2 -- PATH` shows what "
        "changed there between two snapshots"
    )


def emit_bytes(data: bytes) -> None:
    """Write ``data`` to stdout as it is (names that are not UTF-8, NULs).
    Not click.echo: when stdout is unbuffered (python -u, PYTHONUNBUFFERED)
    it writes once and drops the rest of a partial write, so a reader that
    left (a closed pipe) would go unnoticed. Raises BrokenPipeError then."""
    sys.stdout.flush()
    stream = click.get_binary_stream("stdout")
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written if written is not None else 0 :]
    stream.flush()


#: The version of the CLI's JSON schema (docs/json.md), the first key of
#: every ``--json`` document. Renaming or removing a key, or changing a
#: value's type, raises it; adding keys does not.
JSON_VERSION = 1


def emit_json(doc: Mapping[str, Any]) -> None:
    """Print ``doc`` as a ``--json`` document: an object whose first key is
    ``"version"`` (:data:`JSON_VERSION`), then ``doc``'s (docs/json.md)."""
    import json

    out = {"version": JSON_VERSION, **doc}
    click.echo(json.dumps(out, indent=2, sort_keys=False, ensure_ascii=True))
