"""Compaction spread over commits: a merge bigger than a commit's budget
is built a step per commit in ``staging/compact-*``, then published; every
snapshot shows what was committed all along, and an interrupted step, a
torn job or a job whose chains moved on never harm the store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import Workspace, WorkspaceFactory
from helpers import state_diff, tree_state
from robust.verify import assert_store_ok

import snapws.ops.maintenance.compaction as compaction
from snapws.config import Config
from snapws.ids import SnapshotId
from snapws.layers.merge import TreeBuilder
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit
from snapws.store.store import Store

SPEC = {
    f"d{i}": {f"s{j}": {f"f{k}.txt": f"{i}/{j}/{k}\n" for k in range(10)} for j in range(5)}
    for i in range(8)
}
CONFIG = Config(author="t <t@example.org>", lock_timeout=30)


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget of a few commits' entries: every merge of more than a few
    commits becomes a job."""
    monkeypatch.setattr(compaction, "MIN_STEP", 1000)
    monkeypatch.setattr(compaction, "STEP_FACTOR", 4)


def _jobs(ws: Workspace) -> list[Path]:
    return sorted((ws.store / "staging").glob("compact-*"))


def _commit(ws: Workspace, rng: random.Random, i: int) -> str:
    for _ in range(3):
        p = ws.path / f"d{rng.randrange(8)}" / f"s{rng.randrange(5)}" / f"f{rng.randrange(12)}.txt"
        p.write_text(f"commit {i}\n")
    if i % 5 == 2:
        victim = ws.path / f"d{rng.randrange(8)}" / f"s{rng.randrange(5)}" / "f0.txt"
        victim.unlink(missing_ok=True)
    with open_session(ws.path, CONFIG) as session:
        made = commit(session, f"c{i}", CONFIG.author)
    assert made.snapshot is not None
    return made.snapshot.hex


def _chain(ws: Workspace, sid: str) -> list[str]:
    return list(json.loads((ws.store / "chains" / f"{sid}.json").read_text()))


def _check_history(ws: Workspace, ids: list[str], states: list[object]) -> None:
    for sid, expect in list(zip(ids, states, strict=True))[::4]:
        ws.run("checkout", "--detach", sid)
        assert state_diff(expect, tree_state(ws.path)) == [], sid  # type: ignore[arg-type]


def test_big_merges_are_spread_over_commits(
    make_workspace: WorkspaceFactory, small_budget: None
) -> None:
    ws = make_workspace(spec=SPEC)
    rng = random.Random(11)
    ids: list[str] = []
    states: list[object] = []
    steps_seen = published = 0
    depths = []
    for i in range(40):
        before = _jobs(ws)
        ids.append(_commit(ws, rng, i))
        states.append(tree_state(ws.path))
        after = _jobs(ws)
        steps_seen += bool(after)
        published += bool(before) and not after
        depths.append(len(_chain(ws, ids[-1])))
        if i:  # the parent keeps the new chain's layers below the newest
            assert _chain(ws, ids[-2]) == _chain(ws, ids[-1])[:-1], i
    assert steps_seen >= 5, "no merge was spread over commits"
    assert published >= 1, "no spread merge was published"
    assert max(depths) <= 16, depths  # the policy's depth, and the commits a job takes
    _check_history(ws, ids, states)
    while _jobs(ws):  # let the job in progress finish
        ids.append(_commit(ws, rng, len(ids)))
        states.append(tree_state(ws.path))
    assert_store_ok(ws.store)
    _check_history(ws, ids[-3:], states[-3:])


def test_an_interrupted_step_is_made_again(
    make_workspace: WorkspaceFactory, small_budget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(spec=SPEC)
    rng = random.Random(12)
    ids: list[str] = []
    states: list[object] = []
    while not _jobs(ws):
        ids.append(_commit(ws, rng, len(ids)))
        states.append(tree_state(ws.path))
    real_make = TreeBuilder.make
    calls = {"n": 0}

    def failing_make(self: TreeBuilder, steps: object) -> None:
        calls["n"] += 1
        todo = list(steps)  # type: ignore[call-overload]
        real_make(self, todo[: len(todo) // 2])  # half made, then the step dies
        raise OSError("interrupted")

    monkeypatch.setattr(TreeBuilder, "make", failing_make)
    with pytest.raises(OSError, match="interrupted"), open_session(ws.path, CONFIG) as session:
        compaction.compact(session.store, session.state.head, 32)
    monkeypatch.setattr(TreeBuilder, "make", real_make)
    assert calls["n"] == 1 and _jobs(ws)
    for _ in range(30):
        if not _jobs(ws):
            break
        ids.append(_commit(ws, rng, len(ids)))
        states.append(tree_state(ws.path))
    assert not _jobs(ws), "the job never finished"
    assert_store_ok(ws.store)
    _check_history(ws, ids, states)


def test_torn_and_stale_jobs_are_dropped(
    make_workspace: WorkspaceFactory, small_budget: None
) -> None:
    ws = make_workspace(spec=SPEC)
    rng = random.Random(13)
    ids: list[str] = []
    while not _jobs(ws):
        ids.append(_commit(ws, rng, len(ids)))
    (job,) = _jobs(ws)
    # a torn state: dropped, and the next commit plans afresh
    (job / "job.json").write_bytes(b'{"prefix": [')
    ids.append(_commit(ws, rng, len(ids)))
    assert job not in _jobs(ws)
    while not _jobs(ws):
        ids.append(_commit(ws, rng, len(ids)))
    # a full flatten moves every chain on: the job has nothing left to shorten
    (job,) = _jobs(ws)
    ws.run("flatten")
    ids.append(_commit(ws, rng, len(ids)))
    assert job not in _jobs(ws)
    store = Store.open(ws.store)
    assert len(store.chain_layers(SnapshotId(ids[-1]))) <= 3
    while _jobs(ws):
        ids.append(_commit(ws, rng, len(ids)))
    assert_store_ok(ws.store)


@pytest.mark.parametrize("torn", ["merged", "sources"])
def test_a_torn_first_half_of_a_plan_drops_the_job(
    make_workspace: WorkspaceFactory, small_budget: None, torn: str
) -> None:
    ws = make_workspace(spec=SPEC)
    rng = random.Random(14)
    ids: list[str] = []
    states: list[object] = []
    while not _jobs(ws):
        ids.append(_commit(ws, rng, len(ids)))
        states.append(tree_state(ws.path))
    (job,) = _jobs(ws)
    state = json.loads((job / "job.json").read_bytes())
    assert state["phase"] == "keys" and not (job / "steps").exists()  # planned by halves
    data = (job / torn).read_bytes()
    (job / torn).write_bytes(data[: len(data) // 2 - 1] + b"x")
    ids.append(_commit(ws, rng, len(ids)))
    states.append(tree_state(ws.path))
    assert job not in _jobs(ws)
    for _ in range(60):  # planned afresh, then built and published
        ids.append(_commit(ws, rng, len(ids)))
        states.append(tree_state(ws.path))
        if not _jobs(ws):
            break
    assert not _jobs(ws), "the job never finished"
    assert_store_ok(ws.store)
    _check_history(ws, ids, states)
