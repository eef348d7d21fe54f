"""``snapws init``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from snapws.cli.app import App, emit_json, note_if_below_new_mount, pass_app
from snapws.cli.progress import ProgressBar
from snapws.ops.init import init
from snapws.ops.workspace import resolve_store


@click.command("init")
@click.argument("directory", required=False, type=click.Path(path_type=Path), default=".")
@click.option("-b", "--branch", help="Name of the first branch (default: main).")
@click.option("-m", "--message", default="initial snapshot", show_default=True)
@click.option(
    "--from",
    "source",
    metavar="SRC",
    help="Start the (new or empty) workspace on an image: an OCI layout or archive, a docker "
    "archive, dir:PATH or HOST[:PORT]/REPOSITORY[:TAG] (as `snapws clone` takes it).",
)
@click.option("--ref", help="With --from: which image of SRC (its tag or name).")
@click.option("--insecure", is_flag=True, help="With --from: a registry over plain HTTP.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "kernel", "rootless", "fuse", "plain"]),
    help="How the workspace is shown (default: `backend =` in snapws.toml, else auto: "
    "the first that works here of kernel, fuse, plain: plain for a user who is not root; "
    "rootless only when asked for; `snapws doctor` says which).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def init_cmd(
    app: App,
    directory: Path,
    branch: str | None,
    message: str,
    source: str | None,
    ref: str | None,
    backend: str | None,
    insecure: bool,
    as_json: bool,
) -> None:
    """Make DIRECTORY (default: .) a workspace; its content becomes the base layer.

    The store is --store, SNAPWS_STORE, `store =` in snapws.toml, or .snapws
    beside DIRECTORY. The store must be on the same filesystem.
    """
    path = Path(os.path.abspath(app.cwd / directory))
    store_root = resolve_store(path, app.config, app.store)
    if source is not None:
        from snapws.cli.cmd_remote import ByteBar
        from snapws.ops.clone import clone, resolve_source

        fetching = ByteBar(app, "fetching")
        fetching.bar.enabled = fetching.bar.enabled and not as_json
        try:
            src = resolve_source(source, app.cwd, insecure, ref)
            cloned = clone(path, store_root, app.config, src, app.who(), branch, backend, fetching)
            store, state = cloned.store, cloned.state
        finally:
            fetching.close()
    else:
        bar = ProgressBar(app.interactive and not app.quiet and not as_json, "hashing")
        try:
            store, state = init(path, store_root, app.config, branch, message, bar, backend=backend)
        finally:
            bar.close()
    if as_json:
        emit_json(
            {
                "id": state.head.hex,
                "branch": state.branch,
                "workspace": state.path,
                "store": str(store.root),
                "backend": state.backend,
            }
        )
        return
    app.say(
        f"Initialized workspace {state.path} (branch {state.branch}, "
        f"snapshot {state.head.short()}, backend {state.backend}, store {store.root})"
    )
    note_if_below_new_mount(app, state.path, state.backend)
    if state.backend == "rootless":
        app.info(
            "note: rootless: the workspace is mounted in a user namespace of its own; other "
            f"programs see {state.path} empty: work in it through `snapws shell {state.path}` "
            "(or `snapws run`)"
        )


COMMANDS = [init_cmd]
