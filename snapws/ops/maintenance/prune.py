"""``snapws prune``: forget snapshots by a retention policy, as restic's
``forget`` does.

Compute, then act. :func:`apply_policy` is pure: given snapshots (id, time,
time zone) and a :class:`Policy`, it says which to keep and why, with
restic's rules exactly (``internal/restic/snapshot_policy.go``):

- snapshots are walked newest first (ties: by id);
- each ``--keep-{last,hourly,daily,weekly,monthly,yearly} N`` rule is a
  bucket of N slots: a snapshot is kept, and takes a slot, when its hour /
  day / ISO week / month / year (local time of the zone it was taken in)
  differs from that of the last snapshot the rule kept. ``last`` keeps every
  snapshot until its N slots are taken; -1 means unlimited slots;
- the oldest snapshot is kept too if a rule still has free slots when the
  walk reaches it (restic >= 0.16: as much history as the limits allow);
- ``--keep-within D`` keeps every snapshot newer than (newest snapshot - D),
  the newest being the newest that is not in the future; D is ``2y5m7d3h``
  style (years, months, days, hours: calendar arithmetic, as Go's AddDate);
- a snapshot is kept if any rule keeps it. Branch heads, tags, workspace
  HEADs (what each workspace has mounted) and snapshots an interrupted
  operation names are always kept; they still take their slots.

:func:`forget` then deletes the others, one snapshot at a time (record and
chain; a tombstone ``forgotten/<id>`` says it was forgotten on purpose), under
a journal so that a crash is finished by the next command. Layers stay:
``snapws gc`` deletes those no snapshot uses any more. A snapshot's content
does not depend on its parent's record, so forgetting parents is safe;
``log`` stops at a forgotten parent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from snapws.config import Config
from snapws.crash import crashpoint, steps_of
from snapws.ids import SnapshotId
from snapws.interrupts import deferred_signals
from snapws.ops.maintenance.gc import journal_ids
from snapws.store.store import Store

UNLIMITED = -1

#: Named steps for crash tests (SNAPWS_CRASH_AT), in order.
CRASH_STEPS = steps_of("prune")

_WITHIN_PART = re.compile(r"([0-9]+)([ymdh])")
_NS = 1_000_000_000


# ---- the policy --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Within:
    """A calendar duration, restic's ``--keep-within`` form: ``2y5m7d3h``
    (years, months, days, hours; each unit at most once, in any order)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Within:
        """Parse ``text``; raises ValueError naming the accepted form."""
        t = text.strip()
        form = "a duration is numbers with units y, m (months), d, h, e.g. 2y5m7d3h or 36h"
        if not t:
            raise ValueError(f"empty duration; {form}")
        values: dict[str, int] = {}
        pos = 0
        while pos < len(t):
            m = _WITHIN_PART.match(t, pos)
            if m is None:
                raise ValueError(f"bad duration {text!r} at {t[pos:]!r}; {form}")
            if m.group(2) in values:
                raise ValueError(f"bad duration {text!r}: unit {m.group(2)!r} given twice")
            values[m.group(2)] = int(m.group(1))
            pos = m.end()
        return cls(values.get("y", 0), values.get("m", 0), values.get("d", 0), values.get("h", 0))

    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"

    def before(self, time_ns: int, tz_offset_min: int) -> int | None:
        """The instant this duration before ``time_ns``, in calendar terms of
        the zone ``tz_offset_min`` (Go's ``AddDate(-y, -m, -d).Add(-h)``:
        months and days overflow into the next unit as in Go). None when
        that lies before year 1 (everything is newer)."""
        secs, rest = divmod(time_ns, _NS)
        zone = timezone(timedelta(minutes=tz_offset_min))
        local = datetime.fromtimestamp(secs, tz=zone)
        month0 = local.month - 1 - self.months
        year = local.year - self.years + month0 // 12
        try:
            first = local.replace(year=year, month=month0 % 12 + 1, day=1)
            moved = first + timedelta(days=local.day - 1 - self.days, hours=-self.hours)
        except (ValueError, OverflowError):
            return None
        return int(moved.timestamp()) * _NS + rest


@dataclass(frozen=True, slots=True)
class Policy:
    """How many snapshots of each kind to keep (0: rule unused, -1: all)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Within | None = None

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """The policy snapws.toml sets (``prune_keep_*``)."""
        within = Within.parse(config.prune_keep_within) if config.prune_keep_within else None
        return cls(
            config.prune_keep_last,
            config.prune_keep_hourly,
            config.prune_keep_daily,
            config.prune_keep_weekly,
            config.prune_keep_monthly,
            config.prune_keep_yearly,
            within,
        )

    def counts(self) -> tuple[tuple[str, int], ...]:
        return (
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        )

    def empty(self) -> bool:
        """True if no rule is set (restic then keeps everything; snapws refuses)."""
        return all(n == 0 for _, n in self.counts()) and (self.within is None or self.within.zero())

    def describe(self) -> str:
        """``keep 7 daily, 2 weekly snapshots and all snapshots within 1m of the newest``."""
        names = {"last": "latest"}
        keeps = [
            f"{'all' if n == UNLIMITED else n} {names.get(rule, rule)}"
            for rule, n in self.counts()
            if n
        ]
        text = f"{', '.join(keeps)} snapshots" if keeps else ""
        if self.within is not None and not self.within.zero():
            text += (" and " if text else "") + f"all snapshots within {self.within} of the newest"
        return "keep " + text

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {f"keep_{rule}": n for rule, n in self.counts()}
        obj["keep_within"] = str(self.within) if self.within and not self.within.zero() else None
        return obj


# ---- applying it (pure) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the policy looks at: a snapshot's id and the time it was taken
    (``tz_offset_min``: the zone it was taken in, for its local hour/day)."""

    id: SnapshotId
    time_ns: int
    tz_offset_min: int = 0
    message: str = ""
    parents: tuple[SnapshotId, ...] = ()

    def local(self) -> datetime:
        zone = timezone(timedelta(minutes=self.tz_offset_min))
        return datetime.fromtimestamp(self.time_ns // _NS, tz=zone)


@dataclass(frozen=True, slots=True)
class Decision:
    """A snapshot and why it is kept (no reasons: it is removed).
    ``reachable_from``: the refs and workspace HEADs (of every workspace of
    the store) whose history holds it, as :func:`reachable_from` names them
    (empty: none; so a user sees whose history a removal cuts)."""

    snapshot: Candidate
    reasons: tuple[str, ...] = ()
    reachable_from: tuple[str, ...] = ()

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.snapshot.id.hex,
            "time": self.snapshot.local().isoformat(),
            "time_ns": self.snapshot.time_ns,
            "message": self.snapshot.message,
            "reasons": list(self.reasons),
            "reachable_from": list(self.reachable_from),
        }


@dataclass(slots=True)
class PrunePlan:
    """Every snapshot once, newest first, in ``keep`` or ``remove``."""

    policy: Policy
    keep: list[Decision] = field(default_factory=list)
    remove: list[Decision] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_json(),
            "keep": [d.to_json() for d in self.keep],
            "remove": [d.to_json() for d in self.remove],
        }


def _bucket_key(rule: str, when: datetime) -> tuple[int, ...]:
    if rule == "hourly":
        return (when.year, when.month, when.day, when.hour)
    if rule == "daily":
        return (when.year, when.month, when.day)
    if rule == "weekly":
        iso = when.isocalendar()
        return (iso.year, iso.week)
    if rule == "monthly":
        return (when.year, when.month)
    assert rule == "yearly", rule
    return (when.year,)


def apply_policy(
    snapshots: Iterable[Candidate],
    policy: Policy,
    protected: Mapping[SnapshotId, Sequence[str]] | None = None,
    now_ns: int | None = None,
) -> PrunePlan:
    """Which of ``snapshots`` ``policy`` keeps, with the reasons (see the
    module docstring). ``protected`` snapshots are kept whatever the policy,
    their reasons listed first. An empty policy keeps everything.
    ``now_ns`` (default: the clock) bounds the "newest snapshot" of
    ``--keep-within``: snapshots dated in the future do not count as newest."""
    protected = protected or {}
    now_ns = time.time_ns() if now_ns is None else now_ns
    ordered = sorted(snapshots, key=lambda c: (-c.time_ns, c.id.hex))
    plan = PrunePlan(policy)
    if not ordered:
        return plan
    if policy.empty():
        for c in ordered:
            plan.keep.append(Decision(c, (*protected.get(c.id, ()), "policy is empty")))
        return plan
    slots = {rule: n for rule, n in policy.counts() if n}
    last_key: dict[str, tuple[int, ...] | int] = {}
    cutoff: int | None = None
    within = policy.within if policy.within is not None and not policy.within.zero() else None
    if within is not None:
        past = [c for c in ordered if c.time_ns < now_ns]
        newest = past[0] if past else None
        # restic: no snapshot before now -> the newest is Go's zero time
        cutoff = within.before(newest.time_ns, newest.tz_offset_min) if newest else None
    for nr, cur in enumerate(ordered):
        reasons = list(protected.get(cur.id, ()))
        if within is not None and (cutoff is None or cur.time_ns > cutoff):
            reasons.append(f"within {within}")
        when = cur.local()
        for rule, count in policy.counts():
            if count == 0 or slots[rule] == 0:
                continue
            key: tuple[int, ...] | int = nr if rule == "last" else _bucket_key(rule, when)
            if key != last_key.get(rule) or nr == len(ordered) - 1:
                last_key[rule] = key
                if slots[rule] > 0:
                    slots[rule] -= 1
                reasons.append(f"{rule} snapshot")
        decision = Decision(cur, tuple(reasons))
        (plan.keep if decision.keep else plan.remove).append(decision)
    return plan


# ---- reading the store ----------------------------------------------------------


def protected_snapshots(store: Store) -> dict[SnapshotId, list[str]]:
    """Snapshots prune never removes, with why: branch heads, tags,
    remote-tracking refs (what a fetch or push saw on a remote), every
    workspace's HEAD (the snapshot it has mounted) and snapshots named by
    an interrupted operation."""
    out: dict[SnapshotId, list[str]] = {}
    what = {"heads": "branch", "tags": "tag", "remotes": "remote-tracking ref"}
    for (ns, kind, name), sid in store.every_ref().items():  # of every branch namespace
        where = f" (namespace {ns})" if ns else " (shared namespace)"
        where = "" if ns == store.namespace else where
        out.setdefault(sid, []).append(f"{what[kind]} {name}{where}")
    for ws in store.workspaces():
        out.setdefault(ws.head, []).append(f"HEAD of {ws.path}")
        if ws.base is not None:  # mounted below a held workspace's upperdir
            out.setdefault(ws.base, []).append(f"mounted in {ws.path}")
    for text in sorted(journal_ids(store)):
        sid = SnapshotId(text)
        if store.has_snapshot(sid):
            out.setdefault(sid, []).append("interrupted operation")
    return out


def candidates(store: Store) -> list[Candidate]:
    """Every snapshot of the store. Raises StoreCorruptError."""
    out = []
    for sid in store.snapshot_ids():
        rec = store.read_snapshot(sid)
        first = rec.message.splitlines()[0] if rec.message else ""
        out.append(Candidate(sid, rec.time_ns, rec.tz_offset_min, first, tuple(rec.parents)))
    return out


def reachable_from(
    snapshots: Iterable[Candidate], protected: Mapping[SnapshotId, Sequence[str]]
) -> dict[SnapshotId, tuple[str, ...]]:
    """For each of ``snapshots``, the names of the ``protected`` snapshots
    (refs, workspace HEADs: their reasons, but ``interrupted operation``)
    whose history (the snapshot itself and its ancestors among
    ``snapshots``) holds it, in the order of ``protected``; snapshots no
    name reaches are left out. Pure."""
    parents = {c.id: c.parents for c in snapshots}
    out: dict[SnapshotId, list[str]] = {}
    for root, reasons in protected.items():
        names = [r for r in reasons if r != "interrupted operation"]
        if not names or root not in parents:
            continue
        seen = {root}
        todo = [root]
        while todo:
            cur = todo.pop()
            have = out.setdefault(cur, [])
            have.extend(n for n in names if n not in have)
            for parent in parents.get(cur, ()):
                if parent in parents and parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
    return {sid: tuple(names) for sid, names in out.items()}


def plan_prune(store: Store, policy: Policy, now_ns: int | None = None) -> PrunePlan:
    """What :func:`forget` would remove under ``policy``, each decision
    with the refs and workspace HEADs it is reachable from
    (:func:`reachable_from`). Reads only (a shared lock is enough). Raises
    StoreCorruptError."""
    snapshots = candidates(store)
    protected = protected_snapshots(store)
    plan = apply_policy(snapshots, policy, protected, now_ns)
    reach = reachable_from(snapshots, protected)
    plan.keep = [replace(d, reachable_from=reach.get(d.snapshot.id, ())) for d in plan.keep]
    plan.remove = [replace(d, reachable_from=reach.get(d.snapshot.id, ())) for d in plan.remove]
    return plan


# ---- acting ------------------------------------------------------------------------


def forget(
    store: Store,
    sids: Sequence[SnapshotId],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Delete the snapshots ``sids`` (records and chains; layers stay).

    Precondition: the caller holds the store lock exclusively, after
    recovery, and ``sids`` came from :func:`plan_prune` under that lock.
    Journaled: a crash is finished by the next command. Protected snapshots
    are never deleted, whatever ``sids`` says. Returns how many were deleted."""
    if not sids:
        return 0
    with deferred_signals("the prune was finished first"):
        store.write_journal({"op": "prune", "forget": [s.hex for s in sids]})
        crashpoint("prune:journaled")
        done = _forget_listed(store, sids, progress)
        crashpoint("prune:forgotten")
        store.clear_journal()
    return done


def _forget_listed(
    store: Store,
    sids: Sequence[SnapshotId],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    keep = protected_snapshots(store)
    done = 0
    for i, sid in enumerate(sids):
        if sid not in keep and store.delete_snapshot(sid):
            done += 1
        if i == 0:
            crashpoint("prune:forgot-first")
        if progress is not None:
            progress(i + 1, len(sids))
    return done


def finish_forget(store: Store, j: dict[str, Any]) -> None:
    """Complete a journaled prune (run by recovery, under the exclusive lock)."""
    _forget_listed(store, [SnapshotId(x) for x in j.get("forget", [])])
    store.clear_journal()


def format_local(c: Candidate) -> str:
    """``2024-05-01 13:02:03`` in the zone the snapshot was taken in."""
    return c.local().strftime("%Y-%m-%d %H:%M:%S")


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Nanoseconds since the epoch of a UTC wall-clock time (tests, bench)."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * _NS
