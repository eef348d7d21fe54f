"""Crash safety of flatten and of the compaction a commit runs: SIGKILL at
every ``flatten:*`` step (``SNAPWS_CRASH_AT``), then the next command
(``snapws status``) recovers. After it the store verifies, the workspace is
mounted read-write, shows the same content (uncommitted changes included),
history and ids are unchanged, every chain is valid, and the workspace keeps
working (commit, flatten again)."""

from __future__ import annotations

import pytest

from snapws.crash import STEPS
from snapws.ids import SnapshotId

from .conftest import Workspace, crash, recover
from .verify import assert_store_ok

pytestmark = pytest.mark.root

FLATTEN_STEPS = [s for s in STEPS if s.startswith("flatten:")]
#: Steps of a merge (shared by ``snapws flatten`` and a commit's compaction);
#: the others are the remount of ``snapws flatten``.
MERGE_STEPS = ["flatten:staged", "flatten:published", "flatten:chain-rewritten"]

BASE = {
    "a.txt": "alpha\n",
    "docs": {"readme.md": "# readme\n", "guide.md": "guide\n"},
    "old": {"x.txt": "x\n", "sub": {"y.txt": "y\n"}},
    "keep": {"k.txt": "k\n"},
}


def test_every_flatten_step_is_tested() -> None:
    assert FLATTEN_STEPS, "no flatten steps in snapws.crash.STEPS"
    assert set(MERGE_STEPS) <= set(FLATTEN_STEPS)
    # test_crash_during_flatten takes every step, test_crash_during_compaction the merge steps
    assert set(FLATTEN_STEPS) - set(MERGE_STEPS) == {
        "flatten:frozen",
    }


def make_history(ws: Workspace, commits: int) -> list[str]:
    """``commits`` commits without compaction (max_depth at its maximum), so
    the chain is deep; then the default settings again. Returns the ids,
    oldest first (the init snapshot included)."""
    ws.init(BASE)
    ids = [ws.state().head.hex]
    ws.set_config(lock_timeout=30, max_depth=400)
    for i in range(commits):
        (ws.path / f"n{i}.txt").write_text(f"{i}\n")
        with open(ws.path / "a.txt", "a") as f:
            f.write(f"{i}\n")
        if i == 2:
            (ws.path / "old" / "sub" / "y.txt").unlink()
        ids.append(ws.commit(f"c{i}"))
    ws.set_config(lock_timeout=30)
    assert len(ws.store().chain(SnapshotId(ids[-1]))) == commits + 1
    return ids


def chains(ws: Workspace) -> dict[str, list[str]]:
    store = ws.store()
    return {s.hex: [x.hex for x in store.chain_layers(s)] for s in store.snapshot_ids()}


def works_afterwards(ws: Workspace, ids: list[str]) -> None:
    """A commit and a flatten after recovery; history intact."""
    (ws.path / "after.txt").write_text("after\n")
    last = ws.commit("after the crash")
    assert ws.status() == []
    assert ws.log_ids() == [last, *reversed(ids)]
    ws.run("flatten")
    assert ws.status() == []
    assert (ws.path / "after.txt").read_text() == "after\n"
    assert_store_ok(ws.store_path)


@pytest.mark.parametrize("step", FLATTEN_STEPS)
def test_crash_during_flatten(ws: Workspace, step: str) -> None:
    ids = make_history(ws, 5)
    (ws.path / "uncommitted.txt").write_text("not committed\n")
    (ws.path / "docs" / "guide.md").unlink()
    before = ws.tree()
    changes = ws.status()
    assert len(changes) == 2
    old_chains = chains(ws)

    crash(ws, "flatten", step=step)
    lines = recover(ws)

    assert lines == changes
    assert ws.tree() == before
    assert ws.log_ids() == list(reversed(ids))
    new_chains = chains(ws)
    assert new_chains.keys() == old_chains.keys()
    head = ids[-1]
    if step == "flatten:staged":
        assert new_chains == old_chains, "a chain changed before the layer was published"
    if step in ("flatten:frozen", "flatten:detached"):
        assert len(new_chains[head]) == 2, "the flatten before the remount was lost"
    for sid, chain in new_chains.items():
        old = old_chains[sid]
        # each chain is the old one or flattened (the bottom layers merged)
        assert chain == old or (
            len(chain) < len(old) and chain[1:] == old[len(old) - len(chain) + 1 :]
        )
    works_afterwards(ws, ids)


@pytest.mark.parametrize("step", MERGE_STEPS)
def test_crash_during_compaction(ws: Workspace, step: str) -> None:
    """A commit whose compaction merges the layers below the new one: the
    commit is rolled forward and the merge finished (the parent's chain is
    rewritten too), whatever the step."""
    ids = make_history(ws, 6)
    (ws.path / "new.txt").write_text("new\n")
    (ws.path / "keep" / "k.txt").write_text("k, changed\n")
    before = ws.tree()

    crash(ws, "commit", "-m", "compacting", step=step)
    lines = recover(ws)

    assert lines == []
    assert ws.tree() == before
    head = ws.state().head.hex
    assert head not in ids
    assert ws.log_ids() == [head, *reversed(ids)]
    store = ws.store()
    chain = [x.hex for x in store.chain_layers(SnapshotId(head))]
    parent = [x.hex for x in store.chain_layers(SnapshotId(ids[-1]))]
    assert len(chain) < len(ids), "the commit did not compact its chain"
    assert parent == chain[:-1], "the merge was not finished for the parent"
    shown = ws.run("diff", "--name-only", "HEAD~1", "HEAD").stdout.split()
    assert sorted(shown) == ["keep/k.txt", "new.txt"]
    works_afterwards(ws, [*ids, head])
