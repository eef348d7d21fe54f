"""``snapws verify`` and ``snapws du``: checking and measuring the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from snapws.cli.app import App, emit_json, pass_app
from snapws.cli.progress import ProgressBar
from snapws.errors import NotAWorkspaceError, StoreCorruptError, VerifyFailedError
from snapws.ids import LayerId, SnapshotId
from snapws.model import display_path
from snapws.ops.history.log import ref_names
from snapws.ops.history.revs import resolve_rev
from snapws.ops.maintenance.du import UsageReport, disk_usage
from snapws.ops.maintenance.repair import RepairReport
from snapws.ops.maintenance.repair import repair as repair_store
from snapws.ops.maintenance.verify import DataSubset, Problem, Progress, VerifyReport, verify
from snapws.ops.workspace import find_store, find_workspace
from snapws.store.store import Store

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_MAX_LISTED = 5


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, as ``du -h``)."""
    size = float(n)
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 layer``, ``2 layers``."""
    return f"{n} {one if n == 1 else many or one + 's'}"


@contextmanager
def _locked_store(
    app: App, revs: tuple[str, ...], repair: bool = False
) -> Iterator[tuple[Store, list[SnapshotId]]]:
    """The store (from --store/config, else the workspace around the current
    directory) under a shared lock (exclusive for ``repair``), and ``revs``
    resolved (HEAD is the workspace's, when there is one). A damaged workspace
    record does not stop it: verify reports it."""
    explicit = app.store or app.config.store
    wid = None
    try:
        store, state = find_workspace(app.cwd, app.config, explicit)
        wid = state.id
    except NotAWorkspaceError:
        if explicit is None:
            raise
        store = Store.open(explicit)
    except StoreCorruptError:  # a damaged record: verify reports it
        store = find_store(app.cwd, app.config, explicit)
    if repair:
        with store.lock(True, app.config.lock_timeout):
            yield store, []
        return
    if _journal_pending(store):
        app.info("note: an interrupted operation is pending; the next snapws command finishes it")
    with store.lock(False, app.config.lock_timeout):
        head = store.read_workspace(wid).head if wid is not None else None
        yield store, [resolve_rev(store, head, r) for r in revs]


def _journal_pending(store: Store) -> bool:
    try:
        return store.read_journal() is not None
    except StoreCorruptError:
        return True  # damaged: verify reports it


def _parse_subset(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return DataSubset.parse(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


class _VerifyProgress:
    """Feeds verify's phases to a progress bar: layers while scanning,
    bytes while hashing."""

    def __init__(self) -> None:
        self.bar = ProgressBar(True, "scanning layers")
        self.phase = ""

    def __call__(self, p: Progress) -> None:
        if p.phase != self.phase:
            self.bar.restart("scanning layers" if p.phase == "scan" else "hashing")
            self.phase = p.phase
        if p.phase == "hash":
            text = f"{p.done}/{p.total} files, {human_size(p.bytes_done)}"
            self.bar(p.bytes_done, p.bytes_total, text)
        else:
            self.bar(p.done, p.total, f"{p.done}/{p.total} layers")

    def close(self) -> None:
        self.bar.close()


def _affected(users: tuple[SnapshotId, ...], names: dict[SnapshotId, list[str]]) -> str:
    shown = [
        sid.short() + (f" ({', '.join(names[sid])})" if sid in names else "")
        for sid in users[:_MAX_LISTED]
    ]
    more = f", and {len(users) - _MAX_LISTED} more" if len(users) > _MAX_LISTED else ""
    return f"used by {plural(len(users), 'snapshot')}: " + ", ".join(shown) + more


def _print_problems(problems: list[Problem], names: dict[SnapshotId, list[str]]) -> None:
    by_layer: dict[LayerId | None, list[Problem]] = {}
    for p in problems:
        key = p.layer if p.path is not None or p.kind == "bad-manifest" else None
        by_layer.setdefault(key, []).append(p)
    for lid, group in by_layer.items():
        if lid is None:
            click.echo("store records:")
            for p in group:
                click.echo(f"  {p.kind:<14} {p.message}")
            continue
        users = group[0].affected
        click.echo(
            f"layer {lid.hex} ({_affected(users, names) if users else 'used by no snapshot'}):"
        )
        for p in group:
            where = display_path(p.path) if p.path is not None else "(manifest)"
            click.echo(f"  {p.kind:<10} {where}: {p.message}")


def _print_repair(r: RepairReport) -> None:
    for line in r.repaired:
        click.echo(f"repaired: {line}")
    for line in r.unrepairable:
        click.echo(f"cannot repair: {line}")
    if not r.repaired and not r.unrepairable:
        click.echo("repair: nothing to repair")


def _summary(r: VerifyReport) -> list[str]:
    lines = [
        f"checked {plural(r.snapshots_checked, 'snapshot')}, "
        f"{plural(r.layers_checked, 'layer')}, {plural(r.entries_checked, 'entry', 'entries')} "
        f"({plural(r.files_checked, 'file')})"
    ]
    part = f" (read-data-subset {r.subset})" if r.subset else ""
    lines.append(
        f"hashed {r.files_hashed} of {r.files_to_hash} files{part}, "
        f"{human_size(r.bytes_hashed)} in {r.seconds:.2f} s: "
        f"{r.bytes_per_second() / 1e6:.1f} MB/s, {r.files_per_second():.0f} files/s"
    )
    if not r.complete:
        lines.append(
            f"stopped by --max-duration: {plural(r.files_to_hash - r.files_hashed, 'file')} "
            f"({human_size(max(0, r.bytes_to_hash - r.bytes_hashed))}) were not hashed"
        )
    return lines


@click.command("verify")
@click.argument("revs", nargs=-1, metavar="[REV]...")
@click.option(
    "--read-data-subset",
    "subset",
    metavar="N%|N/M",
    callback=_parse_subset,
    help="Re-hash only slice N of M, or N percent, of the files (chosen by a hash of "
    "their path: the same files every run). Metadata and sizes of all are checked.",
)
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop hashing S seconds after the start and say how far it got "
    "(problems found so far still set the exit code).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="First mend what can be mended without deleting user data: re-attach damaged "
    "workspace records to their upperdirs, drop damaged cache entries, fetch missing "
    "layers back from remotes that have them; name what cannot be repaired. Then verify.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def verify_cmd(
    app: App,
    revs: tuple[str, ...],
    subset: DataSubset | None,
    max_duration: float | None,
    repair: bool,
    as_json: bool,
) -> None:
    """Re-hash layers against their manifests and check the store's records.

    Checks the layers of REV...'s chains, or (default) every layer, snapshot
    and ref of the store. Reports every corrupted, truncated, missing, extra or
    changed file with its layer and the snapshots using it. Exit code 11 when
    anything is wrong (docs/exit-codes.md).
    """
    bar = _VerifyProgress() if app.interactive and not app.quiet else None
    mended: RepairReport | None = None
    if repair and revs:
        raise click.UsageError("--repair checks the whole store: give no REV")
    with _locked_store(app, revs, repair) as (store, sids):
        if repair:
            mended = repair_store(store)
            if not as_json:
                _print_repair(mended)
        try:
            report = verify(
                store,
                sids or None,
                subset,
                max_duration,
                app.config.hash_threads,
                bar,
            )
        finally:
            if bar is not None:
                bar.close()
        try:
            names = ref_names(store)
        except StoreCorruptError:
            names = {}  # a damaged workspace record: reported above
    if as_json:
        out = report.to_json()
        if mended is not None:
            out["repair"] = mended.to_json()
        emit_json(out)
    else:
        _print_problems(report.problems, names)
        if not app.quiet:
            for line in _summary(report):
                click.echo(line)
    if report.problems:
        layers = {p.layer for p in report.problems if p.layer is not None}
        affected = {s for p in report.problems for s in p.affected}
        raise VerifyFailedError(
            f"verify found {plural(len(report.problems), 'problem')} in "
            f"{plural(len(layers), 'layer')} (affecting {plural(len(affected), 'snapshot')})"
        )
    if not as_json and not app.quiet:
        click.echo("no problems found" + ("" if report.complete else " in the part checked"))


def _print_usage(report: UsageReport) -> None:
    rows = [("SNAPSHOT", "OWN", "REFER", "SHARED", "NAMES / MESSAGE")]
    for s in report.snapshots:
        first = s.record.message.splitlines()[0] if s.record.message else ""
        label = (f"({', '.join(s.refs)}) " if s.refs else "") + first
        rows.append(
            (s.id.short(), human_size(s.own), human_size(s.refer), human_size(s.shared), label)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)]
        click.echo("  ".join([*cells, r[4]]).rstrip())
    click.echo(
        f"layers used by these snapshots: {human_size(report.used)} in "
        f"{plural(report.used_layers, 'layer')}; not used by them: "
        f"{human_size(report.unused)} in {plural(report.unused_layers, 'layer')}"
    )
    click.echo(
        f"store total: {human_size(report.total)} in {plural(len(report.layers), 'layer')} "
        "(disk usage of layers/, hardlinked files counted once)"
    )


@click.command("du")
@click.argument("revs", nargs=-1, metavar="[REV]...")
@click.option("--json", "as_json", is_flag=True, help="Print the figures (bytes) as JSON.")
@pass_app
def du_cmd(app: App, revs: tuple[str, ...], as_json: bool) -> None:
    """Disk usage per snapshot, and the store's total.

    OWN is what deleting the snapshot alone would free (bytes no other listed
    snapshot's layers hold), REFER the bytes of its whole chain, SHARED the
    rest. Lists REV..., or every snapshot reachable from a branch, tag or
    workspace HEAD. Real disk usage: hardlinked files count once."""
    with _locked_store(app, revs) as (store, sids):
        report = disk_usage(store, sids or None)
    if as_json:
        emit_json(report.to_json())
        return
    _print_usage(report)


COMMANDS = [verify_cmd, du_cmd]
