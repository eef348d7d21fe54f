"""``snapws prune`` (forget snapshots by a retention policy) and ``snapws gc``
(delete the layers no snapshot uses)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.cmd_verify import human_size, plural
from snapws.cli.progress import ProgressBar
from snapws.ops.maintenance.gc import collect, format_grace, parse_grace, plan_gc
from snapws.ops.maintenance.prune import (
    UNLIMITED,
    Decision,
    Policy,
    PrunePlan,
    Within,
    forget,
    format_local,
    plan_prune,
)
from snapws.ops.workspace import find_workspace, open_named_store
from snapws.store.store import Store


@contextmanager
def _locked_store(app: App, exclusive: bool) -> Iterator[Store]:
    """The store (--store/config, else the workspace's) under the lock;
    an exclusive lock first finishes an interrupted operation."""
    explicit = app.store or app.config.store
    store = (
        open_named_store(explicit, app.config)
        if explicit
        else find_workspace(app.cwd, app.config, None)[0]
    )
    if exclusive:
        from snapws.ops.recovery import recover
        from snapws.ops.worktree.init import check_root

        if store.xattr_form == "trusted":  # root's store (a user's says "user")
            check_root()  # (finishing an interrupted operation there may mount)
        with store.lock(True, app.config.lock_timeout):
            recover(store)
            yield store
        return
    if store.read_journal() is not None:
        app.info("note: an interrupted operation is pending; the next snapws command finishes it")
    with store.lock(False, app.config.lock_timeout):
        yield store


# ---- prune ---------------------------------------------------------------------------


def _parse_count(_ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A count, or ``unlimited`` (restic's spelling of "keep them all")."""
    if value is None:
        return None
    if value.strip().lower() == "unlimited":
        return UNLIMITED
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a count (a number, or 'unlimited')") from None
    if n < 0:
        raise click.BadParameter(f"{value!r} is negative (use 'unlimited' to keep all)")
    return n


def _parse_within(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return Within.parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    ]


def _print_decisions(title: str, decisions: list[Decision], reasons: bool) -> None:
    """The table of kept snapshots (``reasons``: why each is kept) or of
    removed ones (from which refs and workspace HEADs each was reachable:
    whose history the removal cuts; ``none`` when no ref reaches it)."""
    click.echo(f"{title} {plural(len(decisions), 'snapshot')}:")
    if not decisions:
        return
    head: tuple[str, ...] = ("SNAPSHOT", "TIME", "REASONS" if reasons else "REACHABLE FROM")
    rows = [(*head, "MESSAGE")] + [
        (
            d.snapshot.id.short(),
            format_local(d.snapshot),
            ", ".join(d.reasons if reasons else d.reachable_from) or "none",
            d.snapshot.message,
        )
        for d in decisions
    ]
    for line in _table(rows):
        click.echo("  " + line)


_KEEP_OPTIONS = (
    ("last", "-l", "Keep the N newest snapshots."),
    ("hourly", "-H", "Keep the newest snapshot of each of the last N hours that have one."),
    ("daily", "-d", "Keep the newest snapshot of each of the last N days that have one."),
    ("weekly", "-w", "Keep the newest snapshot of each of the last N ISO weeks that have one."),
    ("monthly", "-m", "Keep the newest snapshot of each of the last N months that have one."),
    ("yearly", "-y", "Keep the newest snapshot of each of the last N years that have one."),
)


def _keep_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for rule, short, text in reversed(_KEEP_OPTIONS):
        f = click.option(
            f"--keep-{rule}",
            short,
            f"keep_{rule}",
            metavar="N",
            callback=_parse_count,
            help=f"{text.removesuffix('.')}; N may be 'unlimited'.",
        )(f)
    return f


@click.command("prune")
@_keep_options
@click.option(
    "--keep-within",
    metavar="DURATION",
    callback=_parse_within,
    help="Keep every snapshot newer than the newest minus DURATION "
    "(y, m = months, d, h: e.g. 2y5m7d3h).",
)
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@pass_app
def prune_cmd(
    app: App,
    keep_last: int | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    keep_within: Within | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Forget snapshots by a retention policy (restic's `forget` rules).

    Walking snapshots newest first, each --keep-* rule keeps the newest
    snapshot of each distinct hour/day/week/month/year until N are kept; a
    snapshot is kept if any rule keeps it. Branch heads, tags and workspace
    HEADs are always kept. Without options, the prune_keep_* settings of
    snapws.toml apply. Layers are freed by `snapws gc`, not here.
    """
    counts = (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    if keep_within is not None or any(n is not None for n in counts):
        last, hourly, daily, weekly, monthly, yearly = (n or 0 for n in counts)
        policy = Policy(last, hourly, daily, weekly, monthly, yearly, keep_within)
    else:
        policy = Policy.from_config(app.config)
    if policy.empty():
        raise click.UsageError(
            "no policy was given, so no snapshot would be removed: pass --keep-last, "
            "--keep-daily, ... or --keep-within (or set prune_keep_* in snapws.toml)"
        )
    with _locked_store(app, exclusive=not dry_run) as store:
        plan = plan_prune(store, policy)
        removed = 0
        if not dry_run and plan.remove:
            bar = ProgressBar(app.interactive and not app.quiet, "forgetting snapshots")
            try:
                removed = forget(store, [d.snapshot.id for d in plan.remove], bar)
            finally:
                bar.close()
    _report_prune(app, plan, dry_run, removed, as_json)


def _report_prune(app: App, plan: PrunePlan, dry_run: bool, removed: int, as_json: bool) -> None:
    if as_json:
        emit_json({**plan.to_json(), "dry_run": dry_run, "forgotten": removed})
        return
    if app.quiet:
        return
    click.echo(f"applying policy: {plan.policy.describe()}")
    _print_decisions("keep", plan.keep, reasons=True)
    _print_decisions("would remove" if dry_run else "remove", plan.remove, reasons=False)
    if dry_run:
        click.echo("dry run: nothing was removed")
    elif removed:
        click.echo(
            f"removed {plural(removed, 'snapshot')}; `snapws gc` deletes the layers "
            "no snapshot uses any more"
        )


# ---- gc ------------------------------------------------------------------------------


def _parse_grace(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_grace(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option(
    "--grace",
    metavar="DURATION",
    callback=_parse_grace,
    help="Never delete what changed less than DURATION ago (s, m = minutes, h, d, w; "
    "default: gc_grace in snapws.toml, 1h).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def gc_cmd(app: App, dry_run: bool, grace: float | None, as_json: bool) -> None:
    """Delete layers that no snapshot uses (after `snapws prune`).

    A layer stays while a snapshot's chain, a mounted workspace or an
    interrupted operation uses it, or while it is younger than the grace
    period. Leftovers of interrupted commands in staging/ and trash/ are
    removed by the recovery every locked command runs first. Bytes freed count
    real disk usage: an inode counts only when all its links go."""
    grace = app.config.gc_grace if grace is None else grace
    with _locked_store(app, exclusive=not dry_run) as store:
        plan = plan_gc(store, grace)
        if not dry_run:
            bar = ProgressBar(app.interactive and not app.quiet, "deleting layers")
            try:
                collect(store, plan, bar)
            finally:
                bar.close()
    if as_json:
        emit_json({**plan.to_json(), "dry_run": dry_run})
        return
    if app.quiet:
        return
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for d in plan.doomed:
            click.echo(f"remove {d.kind} {d.name} ({human_size(d.bytes)})")
    kept = ", ".join(f"{n} {why}" for why, n in sorted(plan.kept_counts().items()))
    others = len(plan.doomed) - len(plan.layers)
    extra = f" and {plural(others, 'leftover')} of staging/ or trash/" if others else ""
    click.echo(
        f"{verb} {plural(len(plan.layers), 'layer')}{extra}, "
        f"{'freeing' if dry_run else 'freed'} {human_size(plan.bytes_freed)}; "
        f"kept {plural(len(plan.kept), 'layer')} ({kept}); grace {format_grace(plan.grace)}"
    )


COMMANDS = [prune_cmd, gc_cmd]
