"""``snapws clone``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from snapws.cli.app import App, emit_json, note_if_below_new_mount, pass_app
from snapws.cli.cmd_remote import CREDENTIALS_HELP, ByteBar


@click.command("clone")
@click.argument("source")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option(
    "--ref", metavar="TAG", help="The tag (or image of a layout) to check out, if SOURCE has none."
)
@click.option("-b", "--branch", help="Name of the new branch (default: named like the tag).")
@click.option("--insecure", is_flag=True, help="Speak plain HTTP (a registry on 127.0.0.1).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "kernel", "rootless", "fuse", "plain"]),
    help="How the workspace is shown (as for `snapws init`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def clone_cmd(
    app: App,
    source: str,
    directory: Path | None,
    ref: str | None,
    branch: str | None,
    insecure: bool,
    backend: str | None,
    as_json: bool,
) -> None:
    """Make a new workspace DIRECTORY on SOURCE's snapshot, as git clone does.

    \b
    SOURCE is one of:
      HOST[:PORT]/REPOSITORY[:TAG]   a registry (https; --insecure for HTTP)
      dir:PATH                       an OCI layout directory used as a remote
      PATH, oci:PATH[:REF],          an OCI layout directory or tar, or a
      oci-archive:FILE[:REF],        docker archive (docker save)
      docker-archive:FILE

    DIRECTORY defaults to the repository's or file's name. A registry or
    dir: SOURCE becomes the remote `origin`, its tag the tracking ref
    origin/TAG and the new branch's name (`snapws pull` then updates it).
    Without a tag: the only one, else main, else latest. The store is
    --store, SNAPWS_STORE, `store =` in snapws.toml, or this user's store
    on DIRECTORY's filesystem, as for init.
    """
    from snapws.ops.transfer.clone import clone, resolve_source
    from snapws.ops.workspace import resolve_store

    src = resolve_source(source, app.cwd, insecure, ref)
    path = Path(os.path.abspath(app.cwd / (directory or src.name)))
    store_root = resolve_store(path, app.config, app.store)
    bar = ByteBar(app, "fetching" if src.remote else "importing")
    bar.bar.enabled = bar.bar.enabled and not as_json
    try:
        result = clone(path, store_root, app.config, src, app.who(), branch, backend, bar)
    finally:
        bar.close()
    state = result.state
    if as_json:
        emit_json(
            {
                "id": state.head.hex,
                "branch": state.branch,
                "workspace": state.path,
                "store": str(result.store.root),
                "backend": state.backend,
                "source": result.source,
                "remote": result.remote.name if result.remote else None,
                "url": result.remote.url if result.remote else None,
                "tag": result.tag,
            }
        )
        return
    app.say(
        f"Cloned {result.source} into {state.path} (branch {state.branch}, "
        f"snapshot {state.head.short()}, backend {state.backend})"
    )
    note_if_below_new_mount(app, state.path, state.backend)


clone_cmd.help = (clone_cmd.help or "") + "\n\n" + CREDENTIALS_HELP

COMMANDS = [clone_cmd]
