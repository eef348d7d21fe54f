"""``snapws import``."""

from __future__ import annotations

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.cmd_export import byte_bar, bytes_progress


@click.command("import")
@click.argument("source")
@click.option("--ref", help="Which image of the layout or archive (its tag or name).")
@click.option("--branch", help="Create branch NAME at the imported snapshot.")
@click.option("--tag", help="Create tag NAME at the imported snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def import_cmd(
    app: App,
    source: str,
    ref: str | None,
    branch: str | None,
    tag: str | None,
    as_json: bool,
) -> None:
    """Import an OCI image layout (directory or .tar) or a docker archive.

    Prints the snapshot's id. An image exported by snapws comes back as the
    same snapshot; any other image (a container's root filesystem...)
    becomes a new snapshot without parents. Works inside a workspace, or
    anywhere with --store PATH (created if missing).
    """
    from snapws.oci.imagesource import source_relative_to
    from snapws.ops.transfer.importing import import_source

    if branch and tag:
        raise click.UsageError("give --branch or --tag, not both")
    bar = byte_bar(app, as_json, "importing")
    try:
        result = import_source(
            app.cwd,
            app.config,
            app.store,
            source_relative_to(source, app.cwd),
            ref,
            branch,
            tag,
            bytes_progress(bar),
        )
    finally:
        bar.close()
    if as_json:
        emit_json(
            {
                "id": result.snapshot.hex,
                "source": result.source,
                "layers": result.layers,
                "branch": result.ref if result.ref_kind == "branch" else None,
                "tag": result.ref if result.ref_kind == "tag" else None,
            }
        )
        return
    click.echo(result.snapshot.hex)
    named = f" as {result.ref_kind} {result.ref}" if result.ref_kind else ""
    app.info(f"imported {result.source}{named}: {result.layers} layers")


COMMANDS = [import_cmd]
