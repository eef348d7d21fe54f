"""``snapws branch`` and ``snapws tag``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.errors import MissingArgumentError
from snapws.ops.history.refs import create_ref, delete_ref, list_refs

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
    @click.argument("rev", required=False)
    @click.option("-d", "--delete", "delete", is_flag=True, help=f"Delete the {kind} NAME.")
    @_force_delete_option(kind)
    @click.option("-f", "--force", is_flag=True, help=force_help)
    @click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
    @pass_app
    def cmd(
        app: App,
        name: str | None,
        rev: str | None,
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
        exclusive = name is not None
        with app.session(exclusive=exclusive, mount=False) as s:
            if name is None:
                refs = list_refs(s.store, kind)
                current = s.state.branch if kind == "branch" else None
                if as_json:
                    listed = [
                        {"name": n, "id": sid.hex, "current": n == current}
                        for n, sid in refs.items()
                    ]
                    key = "branches" if kind == "branch" else "tags"
                    emit_json({key: listed, "namespace": s.store.namespace})
                    return
                for n, sid in refs.items():
                    mark = "*" if n == current else " "
                    click.echo(f"{mark} {n:<20} {sid.short()}")
                return
            if delete:
                gone = delete_ref(
                    s.store,
                    kind,
                    name,
                    app.who(),
                    s.state.branch,
                    s.state.head,
                    force=force or force_delete,
                )
                if gone.merged_into not in (None, "HEAD"):
                    click.echo(
                        f"warning: deleting branch {name!r} that has been merged to "
                        f"{gone.merged_into!r}, but not yet merged to HEAD",
                        err=True,
                    )
                if as_json:
                    emit_json(gone.to_json())
                else:
                    click.echo(f"Deleted {kind} {name} (was {gone.previous.short()})")
                return
            target = app.resolve(s, rev or "HEAD")
            create_ref(s.store, kind, name, target, app.who(), force)
        app.info(f"{kind} {name} -> {target.short()}")

    cmd.help = (
        "List branches, create branch NAME at REV (default HEAD), or delete one "
        "(-d: only if merged into HEAD or its upstream; -D: even if not)."
        if kind == "branch"
        else "List tags, create tag NAME at REV (default HEAD), or delete one (-d)."
    )
    return cmd


COMMANDS = [_ref_command("branch"), _ref_command("tag")]
