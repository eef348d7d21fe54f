"""``snapws log``, ``snapws show``, ``snapws reflog``."""

from __future__ import annotations

import click

from snapws.cli import gitformat
from snapws.cli.app import App, CountAsOption, LogCommand, emit_bytes, emit_json, pass_app
from snapws.cli.diffout import emit_patch, emit_stat
from snapws.cli.graph import graph_lines
from snapws.cli.render import (
    change_line,
    changes_json,
    decorations,
    format_time,
    log_entry_json,
    record_json,
    reflog_entry_json,
    summary,
)
from snapws.errors import RevisionNotFoundError
from snapws.ids import SnapshotId
from snapws.model import SnapshotRecord
from snapws.ops.history.log import LogEntry, all_ref_heads, log, ref_names, reflog
from snapws.ops.worktree.diff import shown_diff
from snapws.refnames import ref_name_problem, shown
from snapws.revparse import parse_rev


def _oneline(e: LogEntry, head: SnapshotId, branch: str | None) -> str:
    first = e.record.message.splitlines()[0] if e.record.message else ""
    return f"{e.id.short()}{decorations(e.refs, e.id == head, branch)} {first}"


@click.command("log", cls=LogCommand)
@click.argument("revs", nargs=-1)
@click.option(
    "-n", "--max-count", type=click.IntRange(min=0), help="Show at most N snapshots (also -N)."
)
@click.option("--all", "all_refs", is_flag=True, help="Start from every branch, tag and workspace.")
@click.option("--graph", is_flag=True, help="Draw the history as a graph (one line each).")
@click.option("--oneline", is_flag=True, help="One line per snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshots as JSON.")
@pass_app
def log_cmd(
    app: App,
    revs: tuple[str, ...],
    max_count: int | None,
    all_refs: bool,
    graph: bool,
    oneline: bool,
    as_json: bool,
) -> None:
    """Show snapshots reachable from REV... (default HEAD), newest first."""
    with app.session(exclusive=False) as s:
        head, branch = s.state.head, s.state.branch
        starts = [app.resolve(s, r) for r in revs] or [head]
        if all_refs:
            starts = all_ref_heads(s.store, starts)
        entries = log(s.store, starts, max_count)
    if as_json:
        emit_json({"snapshots": [log_entry_json(e) for e in entries]})
        return
    if graph:
        render = {e.id: _oneline(e, head, branch) for e in entries}
        for line in graph_lines(entries, render):
            click.echo(line)
        return
    for i, e in enumerate(entries):
        if oneline:
            click.echo(_oneline(e, head, branch))
            continue
        if i:
            click.echo("")
        click.echo(f"snapshot {e.id.hex}{decorations(e.refs, e.id == head, branch)}")
        if len(e.record.parents) > 1:
            click.echo("Merge: " + " ".join(p.short() for p in e.record.parents))
        if e.forgotten:
            click.echo("Parent: " + " ".join(f"{p.short()} (forgotten)" for p in e.forgotten))
        click.echo(f"Author: {e.record.author}")
        click.echo(f"Date:   {format_time(e.record.time_ns, e.record.tz_offset_min)}")
        click.echo("")
        for line in e.record.message.splitlines() or [""]:
            click.echo(f"    {line}")


@click.command("show")
@click.argument("rev", default="HEAD")
@click.option("--name-only", is_flag=True, help="Only the changed paths (as git).")
@click.option("--name-status", is_flag=True, help="Status and path, tab-separated (as git).")
@click.option(
    "-z", "nul", is_flag=True, help="With --name-only/--name-status: NUL-terminated, unquoted."
)
@click.option("--stat", "show_stat", is_flag=True, help="The header, then a diffstat (as git).")
@click.option("-p", "--patch", is_flag=True, help="The header, then a unified diff (as git).")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
@pass_app
def show_cmd(
    app: App,
    rev: str,
    name_only: bool,
    name_status: bool,
    nul: bool,
    show_stat: bool,
    patch: bool,
    as_json: bool,
) -> None:
    """Show a snapshot: message, author, time, and what it changed.

    --name-only and --name-status print only the changes, in git's format
    (docs/formats-output.md); --stat and -p the header, then git's diffstat
    or patch.
    """
    if nul and not (name_only or name_status):
        raise click.UsageError("-z goes with --name-only or --name-status")
    with app.session(exclusive=False) as s:
        sid = app.resolve(s, rev)
        rec = s.store.read_snapshot(sid)
        parent = rec.parents[0] if rec.parents else None
        if parent is not None and s.store.is_forgotten(parent):
            parent = None  # its parent was pruned: show the whole tree as added
        result = shown_diff(s, sid, parent)
        changes = result.changes
        refs = tuple(ref_names(s.store).get(sid, ()))
        head, branch = s.state.head, s.state.branch
        if (show_stat or patch) and not (as_json or name_only or name_status):
            _header(sid, rec, refs, sid == head, branch)
            if show_stat:
                emit_stat(result)
            if show_stat and patch:
                click.echo("")
            if patch:
                emit_patch(result)  # (reads the layers: inside the session)
            return
    if as_json:
        obj = record_json(sid.hex, rec)
        obj["refs"] = list(refs)
        obj["changes"] = changes_json(changes)
        emit_json(obj)
        return
    if name_only or name_status:
        form = gitformat.name_only if name_only else gitformat.name_status
        emit_bytes(form(changes, nul))
        return
    _header(sid, rec, refs, sid == head, branch)
    click.echo(f" {summary(changes)}")
    for c in changes:
        click.echo(f"  {change_line(c)}")


def _header(
    sid: SnapshotId, rec: SnapshotRecord, refs: tuple[str, ...], is_head: bool, branch: str | None
) -> None:
    """``show``'s header: id and names, author, date, layer, the message."""
    click.echo(f"snapshot {sid.hex}{decorations(refs, is_head, branch)}")
    click.echo(f"Author: {rec.author}")
    click.echo(f"Date:   {format_time(rec.time_ns, rec.tz_offset_min)}")
    click.echo(f"Layer:  {rec.layer.hex}")
    click.echo("")
    for line in rec.message.splitlines() or [""]:
        click.echo(f"    {line}")
    click.echo("")


@click.command("reflog", cls=CountAsOption)
@click.argument("ref", default="HEAD")
@click.option(
    "-n", "--max-count", type=click.IntRange(min=0), help="Show at most N entries (also -N)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@pass_app
def reflog_cmd(app: App, ref: str, max_count: int | None, as_json: bool) -> None:
    """Where HEAD (or a branch/tag REF) has pointed, newest first: the undo path."""
    if not ref:
        parse_rev(ref)  # the "empty revision" error of every command
    with app.session(exclusive=False) as s:
        problem = ref_name_problem(ref)
        if ref in ("HEAD", "@"):
            name = s.head_ref()
        elif problem is not None:
            raise RevisionNotFoundError(f"no reflog for {shown(ref)}: {problem}")
        elif s.store.read_ref("heads", ref) is not None or s.store.read_reflog(f"refs/heads/{ref}"):
            name = f"refs/heads/{ref}"
        else:
            name = f"refs/tags/{ref}"
        entries = reflog(s.store, name)[:max_count]
    if as_json:
        emit_json({"ref": name, "entries": [reflog_entry_json(e) for e in entries]})
        return
    for i, e in enumerate(entries):
        sid = e.new.short() if e.new else "(deleted)   "
        click.echo(f"{sid} {ref}@{{{i}}}: {e.message}")


COMMANDS = [log_cmd, show_cmd, reflog_cmd]
