"""``snapws branch`` and ``snapws tag``."""

from __future__ import annotations

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.ops.history.refs import create_ref, delete_ref, list_refs


def _ref_command(kind: str) -> click.Command:
    @click.command(kind)
    @click.argument("name", required=False)
    @click.argument("rev", required=False)
    @click.option("-d", "--delete", "delete", is_flag=True, help=f"Delete the {kind} NAME.")
    @click.option("-f", "--force", is_flag=True, help=f"Move NAME if the {kind} exists.")
    @click.option("--json", "as_json", is_flag=True, help="List as JSON.")
    @pass_app
    def cmd(
        app: App, name: str | None, rev: str | None, delete: bool, force: bool, as_json: bool
    ) -> None:
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
                old = delete_ref(s.store, kind, name, app.who(), s.state.branch)
                click.echo(f"Deleted {kind} {name} (was {old.short()})")
                return
            target = app.resolve(s, rev or "HEAD")
            create_ref(s.store, kind, name, target, app.who(), force)
        app.info(f"{kind} {name} -> {target.short()}")

    cmd.help = (
        f"List {kind}es, create {kind} NAME at REV (default HEAD), or delete one (-d)."
        if kind == "branch"
        else "List tags, create tag NAME at REV (default HEAD), or delete one (-d)."
    )
    return cmd


COMMANDS = [_ref_command("branch"), _ref_command("tag")]
