"""``snapws init``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import click

from snapws.backends import backend_for
from snapws.cli.app import App, emit_json, note_if_below_new_mount, pass_app
from snapws.cli.progress import ProgressBar
from snapws.config import SHARED_NAMESPACE
from snapws.errors import BadNameError
from snapws.model import namespace_problem
from snapws.mounts.busy import Holder
from snapws.ops.workspace import forget_unused_store, resolve_store
from snapws.ops.worktree.init import init


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
@click.option(
    "--namespace",
    metavar="NAME",
    help="Keep the workspace's branches in the store's namespace NAME, shared with the other "
    "workspaces given NAME (default: `namespace =` in snapws.toml, else a namespace of its "
    "own, named after DIRECTORY).",
)
@click.option(
    "--shared",
    is_flag=True,
    help="Keep the workspace's branches in the store's shared root namespace, with the "
    "workspaces made before namespaces (as git worktrees share a repository's branches).",
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
    namespace: str | None,
    shared: bool,
    as_json: bool,
) -> None:
    """Make DIRECTORY (default: .) a workspace; its content becomes the base layer.

    The store is --store, SNAPWS_STORE, `store =` in snapws.toml, or this
    user's store on DIRECTORY's filesystem: $XDG_DATA_HOME/snapws
    (~/.local/share/snapws; root: /var/lib/snapws) when that is on it, else
    .snapws-UID at the top of that filesystem. The store must be on the same
    filesystem. Each workspace has a branch namespace of its own in the store
    unless --namespace or --shared says otherwise.
    """
    if shared and namespace is not None:
        raise click.UsageError("--shared and --namespace exclude each other")
    if namespace is not None and namespace_problem(namespace) is not None:  # before any change
        raise BadNameError(f"{namespace!r} is not a namespace name: {namespace_problem(namespace)}")
    config = app.config
    if shared or namespace is not None:
        config = replace(config, namespace=SHARED_NAMESPACE if shared else str(namespace))
    path = Path(os.path.abspath(app.cwd / directory))
    store_root = resolve_store(path, config, app.store)
    if source is not None:
        from snapws.cli.cmd_remote import ByteBar
        from snapws.ops.transfer.clone import clone, resolve_source

        fetching = ByteBar(app, "fetching")
        fetching.bar.enabled = fetching.bar.enabled and not as_json
        try:
            src = resolve_source(source, app.cwd, insecure, ref)
            cloned = clone(path, store_root, config, src, app.who(), branch, backend, fetching)
            store, state, left_behind = cloned.store, cloned.state, []
        except BaseException:
            forget_unused_store(store_root)  # a default store made for nothing goes again
            raise
        finally:
            fetching.close()
    else:
        bar = ProgressBar(app.interactive and not app.quiet and not as_json, "hashing")
        try:
            made = init(path, store_root, config, branch, message, bar, backend=backend)
            store, state, left_behind = made.store, made.state, made.left_behind
        except BaseException:
            forget_unused_store(store_root)  # a default store made for nothing goes again
            raise
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
                "namespace": state.namespace,
                "left_behind": [
                    {"pid": h.pid, "command": h.command, "how": h.how, "path": str(h.path)}
                    for h in left_behind
                ],
            }
        )
        warn_left_behind(left_behind, state.path)
        return
    app.say(
        f"Initialized workspace {state.path} (branch {state.branch}, "
        f"snapshot {state.head.short()}, backend {state.backend}, store {store.root})"
    )
    note_if_below_new_mount(app, state.path, state.backend)
    warn_left_behind(left_behind, state.path)
    if not backend_for(state).mount_is_shared:
        app.info(
            "note: rootless: the workspace is mounted in a user namespace of its own; other "
            f"programs see {state.path} empty: work in it through `snapws shell {state.path}` "
            "(or `snapws run`)"
        )


def warn_left_behind(holders: list[Holder], path: str) -> None:
    """Name the programs that were inside the directory when it was mounted
    over (on stderr, even with --quiet or --json: they see the old, now
    empty directory, and what they write there is hidden by the mount)."""
    if not holders:
        return
    lines = [
        f"warning: {len(holders)} other program(s) were inside {path} and stay on the "
        "directory below the new mount (empty now; what they write there is hidden):"
    ]
    lines += [f"  pid {h.pid} ({h.command}): {_HOW.get(h.how, h.how)} {h.path}" for h in holders]
    lines.append(
        "  in such a shell run `cd .`; restart such a program (or cd it out and back in) "
        "to see the workspace"
    )
    click.echo("\n".join(lines), err=True)


_HOW = {"cwd": "working directory", "root": "root directory", "open": "open file", "mmap": "mapped"}


COMMANDS = [init_cmd]
