"""``snapws status`` and ``snapws diff``."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from snapws.cli import gitformat
from snapws.cli.app import (
    App,
    HintedUsageError,
    PathsAfterDashDash,
    emit_bytes,
    emit_json,
    pass_app,
)
from snapws.cli.diffout import emit_patch, emit_stat
from snapws.errors import (
    AmbiguousRevisionError,
    BadPathError,
    ExitCode,
    RevisionNotFoundError,
)
from snapws.model import display_path
from snapws.ops.worktree.diff import diff, status, status_ignored
from snapws.pathspec import Pathspec, has_glob
from snapws.refnames import shown
from snapws.revparse import parse_rev

if TYPE_CHECKING:
    from snapws.session import Session


@click.command("status")
@click.option(
    "--porcelain",
    type=click.Choice(["v1"]),
    is_flag=False,
    flag_value="v1",
    default=None,
    help="git's porcelain v1 format, for scripts: ' M', ' D', ' T', then '??' for new paths.",
)
@click.option(
    "-s",
    "--short",
    is_flag=True,
    help="git's short format: the porcelain lines, paths relative to the current directory.",
)
@click.option(
    "-z", "nul", is_flag=True, help="End porcelain records with NUL, names unquoted (as git)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--exit-code", is_flag=True, help="Exit with 1 if there are changes.")
@click.option(
    "--ignored",
    "show_ignored",
    is_flag=True,
    help="Also list ignored paths (.snapwsignore, config ignore): '!!' in porcelain.",
)
@pass_app
def status_cmd(
    app: App,
    porcelain: str | None,
    short: bool,
    nul: bool,
    as_json: bool,
    exit_code: bool,
    show_ignored: bool,
) -> None:
    """What changed since HEAD: A added, M modified, D deleted, T type changed.

    Costs the number of changes, not the size of the tree. Copy-ups that
    changed nothing (touch, open for write) are not changes; metadata-only
    changes show what changed, e.g. `M  run.sh  (mode)`. Formats:
    docs/formats-output.md.
    """
    from snapws.cli.render import change_line, changes_json, relative_to

    ignored: list[tuple[bytes, bool]] = []
    with app.session(exclusive=False) as s:
        if show_ignored:
            changes, ignored = status_ignored(s)
        else:
            changes = status(s)
        branch, head = s.state.branch, s.state.head
        here = app.cwd_in_workspace(s)
    if as_json:
        emit_json(
            {
                "id": head.hex,
                "branch": branch,
                "clean": not changes,
                "changes": changes_json(changes),
                **({"ignored": [display_path(p) for p, _ in ignored]} if show_ignored else {}),
            }
        )
    elif porcelain or nul:
        emit_bytes(gitformat.porcelain(changes, nul) + gitformat.ignored_lines(ignored, nul))
    elif short:  # as git's status -s: relative to the current directory
        shown = [replace(c, path=relative_to(c.path, here)) for c in changes]
        hidden = [(relative_to(p, here), d) for p, d in ignored]
        emit_bytes(gitformat.porcelain(shown) + gitformat.ignored_lines(hidden))
    else:  # one write (a line each would cost 10 us a change)
        lines = [f"On branch {branch}" if branch else f"HEAD detached at {head.short()}"]
        if not changes:
            lines.append("nothing to commit, working tree clean")
        # relative to the current directory, as git's status
        lines += [f"  {change_line(c, base=here)}" for c in changes]
        if ignored:
            lines.append("Ignored files:")
            lines += [
                f"  {display_path(relative_to(p, here))}{'/' if is_dir else ''}"
                for p, is_dir in ignored
            ]
        click.echo("\n".join(lines))
    if exit_code and changes:
        raise SystemExit(int(ExitCode.DIFFERENCES))


_DASHDASH_HINT = (
    "put paths after -- (`snapws diff [REV...] -- PATH...`), also those not in the "
    "working tree (deleted ones)"
)


def _a_pathspec(app: App, arg: str) -> bool:
    """Whether ``arg`` may be a path without ``--``: it exists in the
    working tree, or it is a glob (as git: no revision has ``*?[``)."""
    return has_glob(arg) or os.path.lexists(os.path.join(app.cwd, arg))


def _revs_then_paths(
    app: App, session: Session, args: tuple[str, ...]
) -> tuple[list[str], tuple[str, ...]]:
    """Split the arguments of ``snapws diff`` given without ``--`` as git
    does: the leading ones that are revisions, then paths, from the first
    that is not one on, each of which must exist in the working tree. An
    argument that is both a revision and such a path is refused as
    ambiguous (exit 2). Raises RevisionNotFoundError or BadPathError."""
    for i, arg in enumerate(args):
        if not arg:  # not the current directory: an empty revision, refused as everywhere
            parse_rev(arg)
        is_path = _a_pathspec(app, arg)
        try:
            app.resolve(session, arg)
        except (RevisionNotFoundError, AmbiguousRevisionError) as e:
            if not is_path:
                raise type(e)(
                    f"{shown(arg)} is neither a revision nor a path in the working tree "
                    f"({e.message})",
                    hint=_DASHDASH_HINT,
                ) from None
            for later in args[i + 1 :]:
                if not _a_pathspec(app, later):
                    raise BadPathError(
                        f"{shown(later)}: no such path in the working tree", hint=_DASHDASH_HINT
                    ) from None
            return list(args[:i]), args[i:]
        if is_path:
            raise HintedUsageError(
                f"ambiguous argument {shown(arg)}: both a revision and a path in the working tree",
                f"use -- to tell: `snapws diff {arg} --` for the revision, "
                f"`snapws diff -- {arg}` for the path",
            )
    return list(args), ()


def _no_index(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """git's ``diff --cached``/``--staged``: refused, saying why (not click's
    "Did you mean '--patch'?")."""
    if value:
        raise HintedUsageError(
            f"snapws has no index (no staging area), so no {param.opts[0]}",
            "`snapws diff` compares HEAD with the working tree (what `snapws commit` "
            "would record); `snapws diff REV1 REV2` compares two snapshots",
            ctx,
        )


def _app_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``-q`` after ``diff``: the global ``-q`` (``--quiet`` there is git's)."""
    app = ctx.find_object(App)
    if value and app is not None:
        app.quiet = True


@click.command("diff", cls=PathsAfterDashDash)
@click.argument("revs", nargs=-1, metavar="[REV [REV2]] [[--] PATH...]")
@click.option("--stat", "show_stat", is_flag=True, help="A diffstat (lines added/removed).")
@click.option("--name-status", is_flag=True, help="One line per path: status and name.")
@click.option("--name-only", is_flag=True, help="Only the changed paths.")
@click.option(
    "-z", "nul", is_flag=True, help="With --name-only/--name-status: NUL-terminated, unquoted."
)
@click.option("-p", "--patch", is_flag=True, help="A unified diff of text files.")
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@click.option("--exit-code", is_flag=True, help="Exit with 1 if there are differences.")
@click.option(
    "--quiet",
    "quiet",
    is_flag=True,
    help="Print nothing; exit with 1 if there are differences (as git's: implies --exit-code).",
)
@click.option("-q", is_flag=True, hidden=True, expose_value=False, callback=_app_quiet)
@click.option("--cached", is_flag=True, hidden=True, expose_value=False, callback=_no_index)
@click.option("--staged", is_flag=True, hidden=True, expose_value=False, callback=_no_index)
@pass_app
def diff_cmd(
    app: App,
    revs: tuple[str, ...],
    show_stat: bool,
    name_status: bool,
    name_only: bool,
    nul: bool,
    patch: bool,
    as_json: bool,
    exit_code: bool,
    quiet: bool,
) -> None:
    """Show changes: working tree vs HEAD, vs REV, or REV1 vs REV2.

    \b
    snapws diff                  working tree against HEAD
    snapws diff REV              working tree against REV
    snapws diff REV1 REV2        REV1 against REV2 (any two snapshots)
    snapws diff ... -- PATH...   only these paths
    snapws diff [REV...] PATH... likewise, PATHs in the working tree (as git)
    """
    meta = click.get_current_context().meta
    paths_raw: tuple[str, ...] = meta.get("snapws.paths", ())
    if nul and not (name_only or name_status):
        raise click.UsageError("-z goes with --name-only or --name-status")
    with app.session(exclusive=False) as s:
        if meta.get("snapws.dashdash"):
            argv_revs = list(revs)
        else:  # as git: revisions first, then paths of the working tree
            argv_revs, paths_raw = _revs_then_paths(app, s, revs)
        if len(argv_revs) > 2:
            raise click.UsageError("at most two revisions (use -- before paths)")
        old = app.resolve(s, argv_revs[0]) if argv_revs else None
        new = app.resolve(s, argv_revs[1]) if len(argv_revs) == 2 else None
        spec = Pathspec(app.rel_paths(s, paths_raw))
        result = diff(s, old, new, spec.roots)
        if spec.globs:
            result.changes = [c for c in result.changes if spec.matches(c.path)]
        changes = result.changes
        if quiet:
            pass  # as git's --quiet: only the exit status
        elif as_json:
            from snapws.cli.render import changes_json  # only here: start-up

            emit_json(
                {
                    "old": (old or s.state.head).hex,
                    "new": new.hex if new is not None else None,
                    "changes": changes_json(changes),
                }
            )
        elif show_stat:
            emit_stat(result)
        elif patch:
            emit_patch(result)
        elif name_only:
            emit_bytes(gitformat.name_only(changes, nul))
        elif name_status:
            emit_bytes(gitformat.name_status(changes, nul))
        else:
            from snapws.cli.render import change_line

            if changes:
                click.echo("\n".join(change_line(c) for c in changes))
    if (exit_code or quiet) and changes:
        raise SystemExit(int(ExitCode.DIFFERENCES))


COMMANDS = [status_cmd, diff_cmd]
