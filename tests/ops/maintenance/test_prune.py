"""``snapws prune``: restic's ``forget`` policy (pure, synthetic timestamps,
results computed by hand) and the command on real workspaces: refs always
kept, --dry-run changes nothing, history stops cleanly at forgotten parents."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.ids import SnapshotId
from snapws.ops.maintenance.prune import (
    UNLIMITED,
    Candidate,
    Policy,
    Within,
    apply_policy,
    utc_ns,
)

# --------------------------------------------------------------------------- the policy (pure)

NOW = utc_ns(2030, 1, 1)


def snap(n: int, when: datetime, tz_min: int = 0) -> Candidate:
    """Snapshot number ``n`` taken at UTC time ``when`` in zone ``tz_min``."""
    return Candidate(SnapshotId(f"{n:032x}"), int(when.timestamp()) * 10**9, tz_min, f"s{n}")


def dt(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def kept(snaps: list[Candidate], policy: Policy, **kw: Any) -> list[int]:
    """Numbers of the snapshots kept, newest first."""
    plan = apply_policy(snaps, policy, now_ns=NOW, **kw)
    assert len(plan.keep) + len(plan.remove) == len(snaps)
    return [int(d.snapshot.id.hex, 16) for d in plan.keep]


#: 30 daily snapshots at noon UTC: 2024-01-01 (a Monday, ISO week 1) is n=1,
#: 2024-01-30 (Tuesday of ISO week 5) is n=30.
DAILY_30 = [snap(d, dt(2024, 1, d, 12)) for d in range(1, 31)]

CASES: list[tuple[str, list[Candidate], Policy, list[int]]] = [
    # 7 daily: Jan 30..24; 2 weekly: week 5 (Jan 30) and week 4 (its newest: Sunday Jan 28),
    # both already kept; no rule has slots left at the oldest
    ("daily7-weekly2", DAILY_30, Policy(daily=7, weekly=2), [30, 29, 28, 27, 26, 25, 24]),
    # 4 weekly: also week 3 (Sunday Jan 21) and week 2 (Sunday Jan 14)
    ("daily7-weekly4", DAILY_30, Policy(daily=7, weekly=4), [30, 29, 28, 27, 26, 25, 24, 21, 14]),
    ("last3", DAILY_30, Policy(last=3), [30, 29, 28]),
    # more slots than snapshots: all kept (the oldest too, by the oldest rule)
    ("last40", DAILY_30, Policy(last=40), list(range(30, 0, -1))),
    # monthly 1 fills at the newest; daily 40 still has slots left at the oldest
    ("daily40", DAILY_30, Policy(daily=40, monthly=1), list(range(30, 0, -1))),
    # 6 weekly, 5 weeks: the newest of each (Sunday Jan 7 for week 1), then Jan 1 as the
    # oldest snapshot while a slot is left
    ("weekly6", DAILY_30, Policy(weekly=6), [30, 28, 21, 14, 7, 1]),
    ("monthly-unlimited", DAILY_30, Policy(monthly=UNLIMITED), [30, 1]),
    ("daily-unlimited", DAILY_30, Policy(daily=UNLIMITED), list(range(30, 0, -1))),
    # within 3d of the newest (Jan 30 12:00): strictly after Jan 27 12:00
    ("within3d", DAILY_30, Policy(within=Within(days=3)), [30, 29, 28]),
    ("within3d-last1", DAILY_30, Policy(last=1, within=Within(days=3)), [30, 29, 28]),
    ("within1m", DAILY_30, Policy(within=Within(months=1)), list(range(30, 0, -1))),
    ("within29d", DAILY_30, Policy(within=Within(days=29)), list(range(30, 1, -1))),
]


@pytest.mark.parametrize(("name", "snaps", "policy", "expect"), CASES, ids=[c[0] for c in CASES])
def test_policy_table(name: str, snaps: list[Candidate], policy: Policy, expect: list[int]) -> None:
    assert kept(snaps, policy) == expect


def test_daily_weekly_reasons_as_restic_shows_them() -> None:
    plan = apply_policy(DAILY_30, Policy(daily=7, weekly=4), now_ns=NOW)
    reasons = {int(d.snapshot.id.hex, 16): d.reasons for d in plan.keep}
    assert reasons[30] == ("daily snapshot", "weekly snapshot")
    assert reasons[29] == ("daily snapshot",)
    assert reasons[28] == ("daily snapshot", "weekly snapshot")
    assert reasons[21] == ("weekly snapshot",)
    assert [int(d.snapshot.id.hex, 16) for d in plan.remove] == [
        23, 22, 20, 19, 18, 17, 16, 15, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1
    ]  # fmt: skip


def test_several_per_day_keep_the_newest_of_each_day_and_the_oldest() -> None:
    snaps = [
        snap(1, dt(2024, 3, 1, 8)),
        snap(2, dt(2024, 3, 1, 9)),
        snap(3, dt(2024, 3, 1, 17)),
        snap(4, dt(2024, 3, 2, 7)),
        snap(5, dt(2024, 3, 2, 23)),
    ]
    # daily 5: Mar 2 -> 5, Mar 1 -> 3, slots left at the oldest -> 1 too
    assert kept(snaps, Policy(daily=5)) == [5, 3, 1]
    # daily 2: both slots taken before the oldest
    assert kept(snaps, Policy(daily=2)) == [5, 3]
    # hourly 10: each snapshot is alone in its hour
    assert kept(snaps, Policy(hourly=10)) == [5, 4, 3, 2, 1]
    assert kept(snaps, Policy(hourly=2)) == [5, 4]


def test_buckets_use_the_zone_the_snapshot_was_taken_in() -> None:
    # 23:30 UTC on Jan 31 is 01:30 on Feb 1 at UTC+2: a February snapshot there
    snaps = [snap(2, dt(2024, 1, 31, 23, 30), tz_min=120), snap(1, dt(2024, 1, 31, 10))]
    assert kept(snaps, Policy(monthly=1)) == [2]  # oldest kept only with slots left
    assert kept(snaps, Policy(monthly=2)) == [2, 1]  # two months: Feb (local) and Jan
    same_zone = [snap(2, dt(2024, 1, 31, 23, 30)), snap(1, dt(2024, 1, 31, 10))]
    assert kept(same_zone, Policy(daily=1, monthly=2)) == [2, 1]  # oldest: slots left
    assert kept(same_zone, Policy(daily=1)) == [2]


def test_yearly_across_years_and_iso_weeks_at_new_year() -> None:
    # 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in ISO week 53 of 2020
    snaps = [
        snap(4, dt(2021, 1, 4, 12)),  # Monday: ISO 2021-W01
        snap(3, dt(2021, 1, 3, 12)),
        snap(2, dt(2020, 12, 31, 12)),
        snap(1, dt(2019, 6, 1, 12)),
    ]
    assert kept(snaps, Policy(weekly=2)) == [4, 3]
    assert kept(snaps, Policy(weekly=3)) == [4, 3, 1]
    assert kept(snaps, Policy(yearly=2)) == [4, 2]
    assert kept(snaps, Policy(yearly=5)) == [4, 2, 1]


def test_keep_within_is_strictly_newer_and_ignores_future_snapshots() -> None:
    base = dt(2024, 5, 10, 12)
    snaps = [
        snap(9, dt(2040, 1, 1)),  # in the future (after NOW): not "the newest"
        snap(3, base),
        snap(2, base - timedelta(hours=25)),
        snap(1, base - timedelta(hours=24)),  # exactly at the cut: not newer
    ]
    assert kept(snaps, Policy(within=Within(days=1))) == [9, 3]
    assert kept(snaps, Policy(within=Within(days=1, hours=2))) == [9, 3, 1, 2]


def test_within_uses_calendar_arithmetic_as_go_adddate() -> None:
    mar31 = utc_ns(2024, 3, 31, 10)
    # Feb 31 does not exist: Go normalises it to Mar 2 (2024 is a leap year)
    assert Within(months=1).before(mar31, 0) == utc_ns(2024, 3, 2, 10)
    assert Within(years=1, days=1).before(mar31, 0) == utc_ns(2023, 3, 30, 10)
    assert Within(hours=34).before(mar31, 0) == utc_ns(2024, 3, 30, 0)
    # in the zone of the newest snapshot: 00:30 at UTC+1 is 23:30 UTC the day before
    newest = utc_ns(2024, 3, 31, 23, 30)
    assert Within(months=1).before(newest, 60) == utc_ns(2024, 2, 29, 23, 30)
    assert Within(months=1).before(newest, 0) == utc_ns(2024, 3, 2, 23, 30)
    assert Within(years=5000).before(mar31, 0) is None  # before year 1: all is newer


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("2y5m7d3h", Within(2, 5, 7, 3)),
        ("3h", Within(hours=3)),
        ("7d1y", Within(years=1, days=7)),
        ("0d", Within()),
    ],
)
def test_within_parses_restic_durations(text: str, expect: Within) -> None:
    assert Within.parse(text) == expect


@pytest.mark.parametrize("text", ["", "5", "3x", "1d1d", "-1d", "1.5d", "d"])
def test_within_rejects_other_forms(text: str) -> None:
    with pytest.raises(ValueError):
        Within.parse(text)


def test_protected_snapshots_are_kept_first_and_still_take_their_slots() -> None:
    protected = {DAILY_30[0].id: ["tag old"], DAILY_30[29].id: ["branch main"]}
    plan = apply_policy(DAILY_30, Policy(daily=2), protected, now_ns=NOW)
    reasons = {int(d.snapshot.id.hex, 16): d.reasons for d in plan.keep}
    assert reasons == {
        30: ("branch main", "daily snapshot"),
        29: ("daily snapshot",),
        1: ("tag old",),
    }


def test_empty_policy_keeps_everything() -> None:
    assert Policy().empty()
    assert Policy(within=Within()).empty()
    assert not Policy(last=1).empty()
    plan = apply_policy(DAILY_30, Policy(), now_ns=NOW)
    assert not plan.remove
    assert {d.reasons for d in plan.keep} == {("policy is empty",)}


def test_policy_descriptions() -> None:
    assert Policy(daily=7, weekly=2).describe() == "keep 7 daily, 2 weekly snapshots"
    assert Policy(last=3, monthly=UNLIMITED, within=Within(years=2)).describe() == (
        "keep 3 latest, all monthly snapshots and all snapshots within 2y of the newest"
    )


def test_ties_are_broken_by_id() -> None:
    when = dt(2024, 1, 1)
    snaps = [snap(n, when) for n in (5, 3, 9)]
    assert kept(snaps, Policy(last=2)) == [3, 5]


# --------------------------------------------------------------------------- the command


def store_files(store: Path) -> dict[str, list[str]]:
    return {
        sub: sorted(os.listdir(store / sub))
        for sub in ("snapshots", "chains", "layers", "refs/heads", "refs/tags")
    }


def history(ws: Workspace, n: int) -> list[str]:
    """``n`` commits on the current branch; their ids, oldest first."""
    ids = []
    for i in range(n):
        (ws.path / f"f{i}.txt").write_text(f"{i}\n")
        ids.append(ws.commit(f"c{i}"))
    return ids


@pytest.mark.root
def test_prune_refuses_without_a_policy(workspace: Workspace, tmp_path: Path) -> None:
    history(workspace, 2)
    before = store_files(workspace.store)
    proc = workspace.run("prune", check=False)
    assert proc.returncode == 2
    assert "no policy was given" in proc.stderr
    assert store_files(workspace.store) == before
    proc = workspace.run("prune", "--keep-within", "3q", check=False)
    assert proc.returncode == 2
    assert "bad duration" in proc.stderr
    proc = workspace.run("prune", "--keep-last", "-1", check=False)
    assert proc.returncode == 2
    # the configured policy applies when no option is given
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("prune_keep_last = 1\n")
    out = json.loads(
        workspace.run("prune", "--json", "--dry-run", env={"SNAPWS_CONFIG": str(cfg)}).stdout
    )
    assert out["policy"]["keep_last"] == 1
    assert out["dry_run"] is True
    assert len(out["remove"]) == 2


@pytest.mark.root
def test_dry_run_lists_and_changes_nothing(workspace: Workspace) -> None:
    ids = history(workspace, 4)
    before = store_files(workspace.store)
    proc = workspace.run("prune", "--keep-last", "2", "--dry-run")
    assert store_files(workspace.store) == before
    lines = proc.stdout.splitlines()
    assert lines[0] == "applying policy: keep 2 latest snapshots"
    assert lines[1] == "keep 2 snapshots:"
    assert "branch main" in lines[3] and "last snapshot" in lines[3]
    assert "would remove 3 snapshots:" in lines
    assert lines[-1] == "dry run: nothing was removed"
    out = json.loads(workspace.run("prune", "--keep-last", "2", "--dry-run", "--json").stdout)
    assert [d["id"] for d in out["keep"]] == [ids[3], ids[2]]
    assert len(out["remove"]) == 3 and out["forgotten"] == 0
    assert store_files(workspace.store) == before


@pytest.mark.root
def test_refs_and_every_workspace_head_are_always_kept(make_workspace: WorkspaceFactory) -> None:
    # a second workspace of the same store, on its own base (older than ws's snapshots)
    other = make_workspace(name="other", spec={"o.txt": "o\n"}, branch="other")
    other_head = other.head()
    ws = make_workspace(spec={"a.txt": "a\n"})
    ids = history(ws, 6)
    ws.run("tag", "v1", ids[0])
    ws.run("branch", "old", ids[1])
    ws.run("checkout", "--detach", ids[2])
    (ws.path / "side.txt").write_text("side\n")
    side = ws.commit("side")  # detached HEAD: no ref but the workspace's HEAD

    out = json.loads(ws.run("prune", "--keep-last", "1", "--json").stdout)
    kept = {d["id"]: d["reasons"] for d in out["keep"]}
    assert kept[side] == [f"HEAD of {ws.path}", "last snapshot"]
    assert kept[ids[0]] == ["tag v1"]
    assert kept[ids[1]] == ["branch old"]
    assert kept[ids[5]] == ["branch main"]
    # (the store's first workspace: its branches are in the shared root namespace)
    assert kept[other_head] == ["branch other (shared namespace)", f"HEAD of {other.path}"]
    assert len(kept) == 5
    removed = {d["id"] for d in out["remove"]}
    assert removed == {ids[2], ids[3], ids[4], ws.json("log", "v1")["snapshots"][0]["parents"][0]}
    assert out["forgotten"] == 4
    store = ws.store
    assert sorted(p.removesuffix(".json") for p in os.listdir(store / "snapshots")) == sorted(kept)
    assert sorted(p.removesuffix(".json") for p in os.listdir(store / "chains")) == sorted(kept)
    assert sorted(os.listdir(store / "forgotten")) == sorted(removed)
    assert os.listdir(store / "trash") == []
    # the reflog keeps its entries (history of moves), naming forgotten ids
    moves = ws.json("reflog")["entries"]
    assert any(e["id"] == ids[4] for e in moves)
    ws.run("verify")  # a forgotten parent is not a missing one
    other.run("status")


@pytest.mark.root
def test_log_show_and_revisions_stop_at_forgotten_parents(workspace: Workspace) -> None:
    ids = history(workspace, 4)
    workspace.run("tag", "t1", ids[1])
    workspace.run("prune", "--keep-last", "2")  # keeps ids[3], ids[2] and t1 = ids[1]
    assert workspace.log_ids() == [ids[3], ids[2], ids[1]]
    entries = workspace.json("log")["snapshots"]
    assert [e["forgotten_parents"] for e in entries] == [[], [], [ids[0]]]
    assert workspace.log_ids("--all") == [ids[3], ids[2], ids[1]]
    t1 = workspace.json("log", "t1")["snapshots"]
    assert t1[0]["forgotten_parents"] == t1[0]["parents"] == [ids[0]]
    text = workspace.run("log", "t1").stdout
    assert f"Parent: {ids[0][:12]} (forgotten)" in text
    graph = workspace.run("log", "--graph", "--all").stdout.splitlines()
    assert [line.split()[1] for line in graph] == [i[:12] for i in (ids[3], ids[2], ids[1])]
    # t1's parent is gone: show lists t1's whole tree as added
    shown = workspace.run("show", "--name-only", "t1").stdout.split()
    assert "f0.txt" in shown and "f1.txt" in shown
    # walking past a forgotten snapshot, or naming one, is a clear error
    for rev in ("t1~1", "t1~2", "HEAD~3", ids[0][:10], f"{ids[0]}^"):
        proc = workspace.run("diff", rev, check=False)
        assert proc.returncode == 4, (rev, proc.stderr)
        assert f"snapshot {ids[0][:12]} was forgotten by `snapws prune`" in proc.stderr
    assert workspace.run("diff", "--name-only", "HEAD~2").stdout.split() == ["f2.txt", "f3.txt"]


@pytest.mark.root
def test_interrupted_half_deleted_snapshot_is_finished(workspace: Workspace) -> None:
    ids = history(workspace, 3)
    store = workspace.store
    # as a crash between the record and the chain would leave it
    os.makedirs(store / "forgotten", exist_ok=True)
    (store / "forgotten" / ids[0]).write_text("{}")
    os.unlink(store / "snapshots" / f"{ids[0]}.json")
    (store / "journal.json").write_text(json.dumps({"op": "prune", "forget": [ids[0], ids[1]]}))
    workspace.run("status")  # the next command finishes the prune
    assert not (store / "journal.json").exists()
    assert not (store / "chains" / f"{ids[0]}.json").exists()
    assert not (store / "snapshots" / f"{ids[1]}.json").exists()
    assert workspace.log_ids() == [ids[2]]
    run_cli("--store", store, "verify", cwd=workspace.outside)


def test_an_ordinary_user_prunes_and_collects_her_own_store() -> None:
    """prune and gc on a store an ordinary user made (plain workspaces) run
    as her (they needed root for any store); root's store still needs root."""
    from backends.users import UserArea

    area = UserArea()
    try:
        ws = area.root / "ws"
        env = {"SNAPWS_STORE": str(area.root / "store")}
        area.run("mkdir", ws)
        area.run("sh", "-c", f"echo 1 > {ws}/f")
        area.snapws("init", "-q", ws, env=env)
        for n in (2, 3):
            area.run("sh", "-c", f"echo {n} > {ws}/f")
            area.snapws("-C", ws, "commit", "-q", "-m", f"c{n}", env=env)
        r = area.snapws("-C", ws, "prune", "--keep-last", "1", check=False, env=env)
        assert r.returncode == 0, r.stderr
        r = area.snapws("-C", ws, "gc", "--grace", "0", check=False, env=env)
        assert r.returncode == 0, r.stderr
        assert "removed" in r.stdout
        assert area.snapws("-C", ws, "log", "--oneline", env=env).stdout.count("\n") == 1
        assert (ws / "f").read_text() == "3\n"
        # root's store ("trusted" attributes) still needs root
        from snapws.store.store import Store

        Store.create(area.root / "roots")
        r = area.snapws("--store", area.root / "roots", "gc", check=False)
        assert r.returncode == 9 and "root" in r.stderr, r.stderr
    finally:
        area.cleanup()


def test_reachable_from_names_every_ref_whose_history_holds_a_snapshot() -> None:
    from snapws.ops.maintenance.prune import reachable_from

    def c(n: int, *parents: int) -> Candidate:
        return Candidate(
            SnapshotId(f"{n:032x}"), n, 0, f"s{n}", tuple(SnapshotId(f"{p:032x}") for p in parents)
        )

    # 1 <- 2 <- 3 (main) ; 2 <- 4 (HEAD of /b) ; 5 alone ; 6's parent was forgotten (7)
    snaps = [c(1), c(2, 1), c(3, 2), c(4, 2), c(5), c(6, 7)]
    ids = {n: SnapshotId(f"{n:032x}") for n in range(1, 8)}
    protected = {
        ids[3]: ["branch main"],
        ids[4]: ["HEAD of /b", "interrupted operation"],
        ids[6]: ["interrupted operation"],
    }
    got = reachable_from(snaps, protected)
    assert got == {
        ids[1]: ("branch main", "HEAD of /b"),
        ids[2]: ("branch main", "HEAD of /b"),
        ids[3]: ("branch main",),
        ids[4]: ("HEAD of /b",),
    }


def test_prune_dry_run_says_whose_history_each_removal_cuts(tmp_path: Path) -> None:
    """Two plain workspaces in one store: --keep-last counts both, and the
    report says which workspace's branch each removed snapshot belonged to
    (or none), plain and --json (a key added to the existing ones)."""
    store = tmp_path / "st"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
        run_cli("--store", store, "init", "-q", "--backend", "plain", tmp_path / name, cwd=tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(2):
        (a / "f").write_text(f"a{i}")
        run_cli("--store", store, "-C", a, "commit", "-q", "-m", f"a{i}", cwd=tmp_path)
    (b / "f").write_text("b1")
    run_cli("--store", store, "-C", b, "commit", "-q", "-m", "b1", cwd=tmp_path)
    out = json.loads(
        run_cli(
            "--store",
            store,
            "-C",
            a,
            "prune",
            "--keep-last",
            "1",
            "--dry-run",
            "--json",
            cwd=tmp_path,
        ).stdout
    )
    assert set(out) == {"version", "policy", "keep", "remove", "dry_run", "forgotten"}
    removed = sorted((d["message"], d["reachable_from"]) for d in out["remove"])
    assert removed == [
        ("a0", ["branch main", f"HEAD of {a}"]),
        ("initial snapshot", ["branch main", f"HEAD of {a}"]),
        ("initial snapshot", ["branch main (namespace b)", f"HEAD of {b}"]),
    ]
    assert all(
        set(d) == {"id", "time", "time_ns", "message", "reasons", "reachable_from"}
        for d in out["remove"] + out["keep"]
    )
    text = run_cli(
        "--store", store, "-C", a, "prune", "--keep-last", "1", "--dry-run", cwd=tmp_path
    ).stdout
    lines = text.splitlines()
    head = lines.index(f"would remove {len(out['remove'])} snapshots:") + 1
    assert lines[head].split() == ["SNAPSHOT", "TIME", "REACHABLE", "FROM", "MESSAGE"]
    a0 = next(line for line in lines[head:] if line.endswith(" a0"))
    assert f"branch main, HEAD of {a}" in a0
