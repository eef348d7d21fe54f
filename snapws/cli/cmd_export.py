"""``snapws export`` and ``snapws import``: snapshots as OCI images."""

from __future__ import annotations

from pathlib import Path

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.cmd_verify import human_size
from snapws.cli.progress import ProgressBar


def byte_bar(app: App, as_json: bool, label: str) -> ProgressBar:
    """A progress bar counting bytes (drawn only on a terminal)."""
    return ProgressBar(app.interactive and not app.quiet and not as_json, label)


def bytes_progress(bar: ProgressBar) -> _BytesProgress:
    return _BytesProgress(bar)


class _BytesProgress:
    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar

    def __call__(self, done: int, total: int) -> None:
        self.bar(done, total, f"{human_size(done)} / {human_size(total)}")


@click.command("export")
@click.argument("rev")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="An OCI image layout directory (created, or added to), or FILE.tar.",
)
@click.option(
    "--compression",
    type=click.Choice(["gzip", "zstd"]),
    default="gzip",
    show_default=True,
    help="How layers are compressed (zstd needs: pip install 'snapws[zstd]').",
)
@click.option("--tag", help="The image's name in the layout (default: latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def export_cmd(
    app: App, rev: str, output: Path, compression: str, tag: str | None, as_json: bool
) -> None:
    """Write snapshot REV as an OCI image (umoci, skopeo and podman read it).

    Works inside a workspace, or anywhere with --store PATH.
    """
    from snapws.ops.transfer.export import export_rev

    bar = byte_bar(app, as_json, "compressing")
    try:
        result = export_rev(
            app.cwd,
            app.config,
            app.store,
            rev,
            app.cwd / output,
            compression,
            tag,
            bytes_progress(bar),
        )
    finally:
        bar.close()
    if as_json:
        emit_json(
            {
                "id": result.snapshot.hex,
                "output": str(result.dest),
                "tag": result.ref,
                "manifest": str(result.manifest_digest),
                "layers": result.layers,
                "bytes": result.bytes,
            }
        )
        return
    app.say(
        f"Exported snapshot {result.snapshot.short()} to {result.dest} (tag {result.ref}): "
        f"{result.layers} layer{'s' if result.layers != 1 else ''}, "
        f"{human_size(result.bytes)}, manifest {result.manifest_digest}"
    )


COMMANDS = [export_cmd]
