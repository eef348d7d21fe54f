"""``snapws checkout`` and ``snapws reset``."""

from __future__ import annotations

import os
import shlex

import click

from snapws.cli.app import App, CheckoutCommand, emit_json, pass_app
from snapws.errors import ExitCode, SnapwsError
from snapws.model import Change, ChangeType, display_path
from snapws.ops.history.revs import branch_named
from snapws.ops.worktree.checkout import checkout, reset


@click.command("checkout", cls=CheckoutCommand)
@click.argument("rev", required=False)
@click.option(
    "-b",
    "new_branch",
    metavar="NAME",
    help="Create branch NAME at REV (default HEAD) and switch to it.",
)
@click.option("--discard", is_flag=True, help="Throw away uncommitted changes.")
@click.option("--detach", is_flag=True, help="Detach HEAD even if REV is a branch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def checkout_cmd(
    app: App, rev: str | None, new_branch: str | None, discard: bool, detach: bool, as_json: bool
) -> None:
    """Remount the workspace on REV (a branch, tag, id, HEAD~N...; `-` is
    the branch or snapshot checked out before, as git's).

    A branch name attaches HEAD to it; anything else gives a detached HEAD,
    as in git. Uncommitted changes make it refuse (exit 5) unless --discard.
    """
    if rev is None and new_branch is None:
        raise click.UsageError("give a revision, or -b NAME")
    with app.session(exclusive=True) as s:
        if rev is not None:  # `-`, @{-N}: the branch or snapshot checked out before, as git
            rev = app.expand_prior(s, "@{-1}" if rev == "-" else rev)
        try:
            target = app.resolve(s, "HEAD" if rev is None else rev)  # '' is refused
        except SnapwsError as e:
            if e.exit_code is ExitCode.BAD_REVISION and rev and _a_path(app, rev):
                e.hint = f"to bring back the file {rev!r}: `snapws restore {shlex.quote(rev)}`"
            raise
        if detach or new_branch:
            branch = None
        elif rev in ("HEAD", "@"):
            branch = s.state.branch  # as git: checking out HEAD stays on the branch
        else:
            branch = branch_named(s.store, rev or "")
        on = s.state.branch  # (before the switch)
        result = checkout(s, target, branch, new_branch, discard, app.who(), rev or "HEAD")
    if as_json:
        emit_json(
            {
                "id": result.head.hex,
                "branch": result.branch,
                "previous": result.previous.hex,
                "discarded": len(result.discarded),
            }
        )
        return
    say_discarded(app, result.discarded)
    if new_branch:
        app.say(f"Switched to a new branch '{new_branch}' at {result.head.short()}")
    elif result.branch and result.branch == on and result.head == result.previous:
        app.say(f"Already on '{result.branch}'")  # as git
    elif result.branch:
        app.say(f"Switched to branch '{result.branch}' ({result.head.short()})")
    else:
        app.say(f"HEAD is now at {result.head.short()} (detached)")


@click.command("reset")
@click.argument("rev", default="HEAD")
@click.option("--hard", is_flag=True, help="Also discard uncommitted changes (rollback).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def reset_cmd(app: App, rev: str, hard: bool, as_json: bool) -> None:
    """Move the current branch (or detached HEAD) to REV (default HEAD:
    `reset --hard` alone throws away uncommitted changes, as in git).

    Without --hard, uncommitted changes are kept on top of REV (git's
    `reset --keep`); it refuses if one of them touches a path that differs
    between HEAD and REV. --hard makes the working tree exactly REV.
    """
    with app.session(exclusive=True) as s:
        target = app.resolve(s, rev)
        result = reset(s, target, hard, app.who(), rev)
        subject = s.store.read_snapshot(result.head).message.partition("\n")[0]
    if as_json:
        emit_json(
            {
                "id": result.head.hex,
                "branch": result.branch,
                "previous": result.previous.hex,
                "discarded": len(result.discarded),
            }
        )
        return
    say_discarded(app, result.discarded)
    app.say(f"HEAD is now at {result.head.short()} {subject}".rstrip())  # as git


def say_discarded(app: App, discarded: list[Change]) -> None:
    """How many uncommitted changes were thrown away, naming the new paths
    removed (git would have kept those: they are gone for good)."""
    if not discarded:
        return
    app.info(f"discarded {len(discarded)} uncommitted change(s)")
    added = {c.path for c in discarded if c.type is ChangeType.ADDED}
    new = sorted(p for p in added if p.rpartition(b"/")[0] not in added)  # topmost
    if new:
        names = ", ".join(display_path(p) for p in new[:5])
        more = f" and {len(new) - 5} more" if len(new) > 5 else ""
        app.info(f"removed {len(new)} new path(s) that no snapshot holds: {names}{more}")


COMMANDS = [checkout_cmd, reset_cmd]


def _a_path(app: App, arg: str) -> bool:
    """Whether ``arg`` names something in the current directory's tree."""
    return os.path.lexists(os.path.join(app.cwd, arg))
