"""``snapws restore``."""

from __future__ import annotations

import click

from snapws.cli.app import App, pass_app
from snapws.ops.worktree.restore import restore


@click.command("restore")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-s", "--source", default="HEAD", show_default=True, help="The snapshot to take paths from."
)
@pass_app
def restore_cmd(app: App, paths: tuple[str, ...], source: str) -> None:
    """Bring PATHS (files, directories, globs as git's) back from a snapshot
    into the working tree, as git's restore: paths HEAD has and the snapshot
    does not are removed, new (untracked) files are left alone, everything
    else is left as it is."""
    with app.session(exclusive=True) as s:
        sid = app.resolve(s, source)
        rel = list(app.rel_paths(s, paths))
        done = restore(s, sid, rel)
    app.info(f"restored {len(done)} path(s) from {sid.short()}")


COMMANDS = [restore_cmd]
