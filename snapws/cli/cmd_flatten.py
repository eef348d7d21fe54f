"""``snapws flatten``."""

from __future__ import annotations

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.progress import ProgressBar
from snapws.ops.maintenance.flatten import flatten_in_workspace


@click.command("flatten")
@click.argument("rev", default="HEAD")
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Newest layers to leave as they are (1 keeps diffs against the parent cheap).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def flatten_cmd(app: App, rev: str, keep: int, as_json: bool) -> None:
    """Merge the older layers of REV's chain into one (ids and history stay).

    A full flatten, bottom layer included. Commits keep chains short on
    their own (compaction, and a full flatten past `max_depth`; see
    snapws.toml)."""
    bar = ProgressBar(app.interactive and not app.quiet and not as_json, "merging entries")
    with app.session(exclusive=True) as s:
        sid = app.resolve(s, rev)
        try:
            result = flatten_in_workspace(s, sid, keep, bar)
        finally:
            bar.close()
    if as_json:
        emit_json(
            {
                "id": sid.hex,
                "layer": result.layer.hex if result.layer else None,
                "merged": result.merged,
                "depth_before": result.depth_before,
                "depth_after": result.depth_after,
                "chains_rewritten": result.chains_rewritten,
            }
        )
        return
    if result.layer is None:
        app.say(f"nothing to flatten: the chain has {result.depth_before} layer(s)")
        return
    app.say(
        f"flattened {result.merged} layers into {result.layer.short()}: depth "
        f"{result.depth_before} -> {result.depth_after} "
        f"({result.chains_rewritten} snapshot chain(s) rewritten)"
    )


COMMANDS = [flatten_cmd]
