"""``snapws commit``."""

from __future__ import annotations

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.render import changes_json, summary
from snapws.ops.worktree.commit import commit


@click.command("commit")
@click.option("-m", "--message", required=True, help="The snapshot's message.")
@click.option("--allow-empty", is_flag=True, help="Make a snapshot even if nothing changed.")
@click.option(
    "-a",
    "--all",
    "all_changes",
    is_flag=True,
    help="Accepted for git's habit (`commit -am MSG`): every change is committed anyway.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def commit_cmd(app: App, message: str, allow_empty: bool, all_changes: bool, as_json: bool) -> None:
    """Freeze the working tree's changes into a new snapshot."""
    if not message.strip():
        raise click.UsageError("empty snapshot message: say what changed with -m MSG")
    with app.session(exclusive=True) as s:
        result = commit(s, message, app.who(), allow_empty)
    if as_json:
        emit_json(
            {
                "id": result.snapshot.hex if result.snapshot else None,
                "layer": result.layer.hex if result.layer else None,
                "branch": result.branch,
                "changes": changes_json(result.changes),
            }
        )
        return
    if result.snapshot is None:
        app.say("nothing to commit, working tree clean")
        return
    where = result.branch or "detached HEAD"
    first = message.splitlines()[0] if message else ""
    app.say(f"[{where} {result.snapshot.short()}] {first}")
    app.say(f" {summary(result.changes)}")


COMMANDS = [commit_cmd]
