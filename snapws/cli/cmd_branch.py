"""``snapws branch`` and ``snapws tag``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.main import report_error
from snapws.errors import MissingArgumentError, SnapwsError
from snapws.ops.history.refs import KIND, DeletedRef, create_ref, delete_ref, list_refs

if TYPE_CHECKING:
    from snapws.session import Session

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _force_delete_option(kind: str) -> Decorator:
    """``branch -D`` (git's ``-d --force``); ``tag`` has none, as git's."""
    if kind != "branch":
        return lambda f: f
    return click.option(
        "-D",
        "force_delete",
        is_flag=True,
        help="Delete branch NAME even if it is not merged (-d --force).",
    )


def _ref_command(kind: str) -> click.Command:
    force_help = (
        "Move NAME if the branch exists; with -d, delete it even if it is not merged."
        if kind == "branch"
        else "Move NAME if the tag exists."
    )

    @click.command(kind)
    @click.argument("name", required=False)
    @click.argument("more", nargs=-1, metavar="[REV | NAME...]")
    @click.option("-d", "--delete", "delete", is_flag=True, help=f"Delete the {kind}(s) NAME...")
    @_force_delete_option(kind)
    @click.option("-f", "--force", is_flag=True, help=force_help)
    @click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
    @pass_app
    def cmd(
        app: App,
        name: str | None,
        more: tuple[str, ...],
        delete: bool,
        force: bool,
        as_json: bool,
        force_delete: bool = False,
    ) -> None:
        delete = delete or force_delete
        if delete and name is None:
            raise MissingArgumentError(
                f"{kind} name required", hint=f"`snapws {kind} -d NAME`; `snapws {kind}` lists them"
            )
        if not delete and len(more) > 1:
            raise click.UsageError(f"Got unexpected extra argument ({more[1]})")
        exclusive = name is not None
        with app.session(exclusive=exclusive, mount=False) as s:
            if name is None:
                _list(s, kind, as_json)
                return
            if delete:
                failed = _delete(app, s, kind, [name, *more], force or force_delete, as_json)
            else:
                target = app.resolve(s, more[0] if more else "HEAD")
                previous = s.store.read_ref(KIND[kind], name)
                create_ref(s.store, kind, name, target, app.who(), force)
        if delete:
            if failed is not None:  # after the session: what was deleted stays deleted
                raise click.exceptions.Exit(int(failed.exit_code))
            return
        if as_json:
            emit_json(
                {kind: name, "id": target.hex, "previous": previous.hex if previous else None}
            )
            return
        if kind == "tag" and previous is not None and previous != target:
            app.say(f"Updated tag '{name}' (was {previous.short()})")  # as git's tag -f
        else:
            app.info(f"{kind} {name} -> {target.short()}")

    cmd.help = (
        "List branches, create branch NAME at REV (default HEAD), or delete branches "
        "(-d: only if merged into HEAD or its upstream; -D: even if not)."
        if kind == "branch"
        else "List tags, create tag NAME at REV (default HEAD), or delete tags (-d)."
    )
    return cmd


def _list(s: Session, kind: str, as_json: bool) -> None:
    refs = list_refs(s.store, kind)
    current = s.state.branch if kind == "branch" else None
    if as_json:
        listed = [{"name": n, "id": sid.hex, "current": n == current} for n, sid in refs.items()]
        key = "branches" if kind == "branch" else "tags"
        emit_json({key: listed, "namespace": s.store.namespace})
        return
    for n, sid in refs.items():
        mark = "*" if n == current else " "
        click.echo(f"{mark} {n:<20} {sid.short()}")


def _delete(
    app: App, s: Session, kind: str, names: list[str], force: bool, as_json: bool
) -> SnapwsError | None:
    """Delete each of ``names``, as git does: one that fails is reported
    (``snapws: error:`` and its hint) and the others are still deleted.
    Returns the first failure (its exit code is the command's), None if
    none. With ``as_json``, one document lists those deleted (``deleted``;
    the top-level keys are the first's, as when only one name was taken),
    none if all failed."""
    gone: list[DeletedRef] = []
    failed: list[SnapwsError] = []
    for name in names:
        try:
            ref = delete_ref(s.store, kind, name, app.who(), s.state.branch, s.state.head, force)
        except SnapwsError as e:
            report_error(e.message, e.hint)
            failed.append(e)
            continue
        gone.append(ref)
        if ref.merged_into not in (None, "HEAD"):
            click.echo(
                f"warning: deleting branch {name!r} that has been merged to "
                f"{ref.merged_into!r}, but not yet merged to HEAD",
                err=True,
            )
        if not as_json:
            # git's words: "Deleted branch topic (was ID)." and "Deleted tag 'v1' (was ID)"
            shown = f"'{name}'" if kind == "tag" else name
            end = "." if kind == "branch" else ""
            app.say(f"Deleted {kind} {shown} (was {ref.previous.short()}){end}")  # -q: not, as git
    if as_json and gone:
        emit_json({**gone[0].to_json(), "deleted": [ref.to_json() for ref in gone]})
    return failed[0] if failed else None


COMMANDS = [_ref_command("branch"), _ref_command("tag")]
