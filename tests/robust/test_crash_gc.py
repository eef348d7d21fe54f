"""Crash safety of ``snapws prune`` and ``snapws gc``: SIGKILL at each of
their named steps (``SNAPWS_CRASH_AT``), then the next command (``snapws
status``) finishes the interrupted operation. After it the store verifies,
exactly what the plan (``--dry-run``) listed is gone, and every kept snapshot
still checks out to the tree it was committed with."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from snapws.ops.maintenance.gc import CRASH_STEPS as GC_STEPS
from snapws.ops.maintenance.prune import CRASH_STEPS as PRUNE_STEPS

from .conftest import Workspace, crash, recover
from .verify import assert_store_ok

pytestmark = pytest.mark.root

Tree = dict[str, tuple[str, int, bytes | None]]


def test_every_step_is_exercised() -> None:
    # the steps each operation names, in order; each is a parameter below
    assert PRUNE_STEPS and all(s.startswith("prune:") for s in PRUNE_STEPS)
    assert GC_STEPS and all(s.startswith("gc:") for s in GC_STEPS)
    assert PRUNE_STEPS[0] == "prune:journaled" and GC_STEPS[0] == "gc:journaled"


@dataclass
class History:
    trees: dict[str, Tree]  # snapshot id -> its tree, for the snapshots prune keeps
    head: str


def make_history(ws: Workspace) -> History:
    """main: S0 - A - B - C (HEAD), tag t1 at A; two abandoned branches
    x and y (one commit each, deleted) whose layers only they use."""
    ws.init({"base.txt": "base\n", "d": {"keep.txt": "keep\n"}})
    trees: dict[str, Tree] = {}
    (ws.path / "a.txt").write_text("a\n")
    a = ws.commit("A")
    trees[a] = ws.tree()
    ws.run("tag", "t1")
    for name in ("x", "y"):
        ws.run("checkout", "-b", name)
        (ws.path / f"{name}.bin").write_bytes(bytes(range(256)) * 400)
        (ws.path / "d" / f"{name}.txt").write_text(f"{name}\n")
        ws.commit(f"on {name}")
        ws.run("checkout", "main")
        ws.run("branch", "-D", name)  # not merged: -D
    (ws.path / "b.txt").write_text("b\n")
    ws.commit("B")
    (ws.path / "d" / "keep.txt").unlink()
    (ws.path / "c.txt").write_text("c\n")
    head = ws.commit("C")
    trees[head] = ws.tree()
    return History(trees, head)


def dry_run(ws: Workspace, *args: str) -> dict[str, object]:
    return dict(json.loads(ws.run(*args, "--dry-run", "--json").stdout))


def snapshot_ids(ws: Workspace) -> set[str]:
    return {s.hex for s in ws.store().snapshot_ids()}


def layer_ids(ws: Workspace) -> set[str]:
    return {lid.hex for lid in ws.store().layer_ids()}


def check_kept_trees(ws: Workspace, h: History) -> None:
    for sid, tree in h.trees.items():
        ws.run("checkout", "--detach", sid)
        assert ws.tree() == tree, f"snapshot {sid[:12]} changed"
    ws.run("checkout", "main")
    assert ws.state().head.hex == h.head


@pytest.mark.parametrize("step", PRUNE_STEPS)
def test_crash_during_prune(ws: Workspace, step: str) -> None:
    h = make_history(ws)
    plan = dry_run(ws, "prune", "--keep-last", "1")
    keep = {d["id"] for d in plan["keep"]}  # type: ignore[attr-defined]
    remove = {d["id"] for d in plan["remove"]}  # type: ignore[attr-defined]
    assert set(h.trees) == keep and len(remove) == 4  # S0, x, y, B
    layers = layer_ids(ws)

    crash(ws, "prune", "--keep-last", "1", step=step)
    assert recover(ws) == []

    # journaled from the first step on: the prune is finished, exactly as planned
    assert snapshot_ids(ws) == keep
    assert layer_ids(ws) == layers, "prune deleted layers"
    check_kept_trees(ws, h)
    again = json.loads(ws.run("prune", "--keep-last", "1", "--json").stdout)
    assert again["remove"] == []
    assert_store_ok(ws.store_path)


@pytest.mark.parametrize("step", GC_STEPS)
def test_crash_during_gc(ws: Workspace, step: str) -> None:
    h = make_history(ws)
    ws.run("prune", "--keep-last", "1")
    plan = dry_run(ws, "gc", "--grace", "0")
    doomed = {r["name"] for r in plan["removed"] if r["kind"] == "layer"}  # type: ignore[attr-defined]
    assert len(doomed) >= 2, plan  # the two abandoned branches' layers at least
    in_use = set(plan["kept"])  # type: ignore[arg-type]

    crash(ws, "gc", "--grace", "0", step=step)
    assert recover(ws) == []

    left = layer_ids(ws)
    assert in_use <= left, f"gc deleted layers in use: {sorted(in_use - left)}"
    assert left.isdisjoint(doomed), "the interrupted gc was not finished"
    check_kept_trees(ws, h)
    again = json.loads(ws.run("gc", "--grace", "0", "--json").stdout)
    assert again["removed"] == []
    assert_store_ok(ws.store_path)
