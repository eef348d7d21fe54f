"""Flattening: bounded chain depth with ids, history and content unchanged."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from conftest import Workspace, WorkspaceFactory
from helpers import state_diff, tree_state
from robust.verify import assert_store_ok

from snapws.config import Config
from snapws.ids import SnapshotId
from snapws.model import Kind, decode_manifest
from snapws.ops.maintenance.compaction import MIN_DEPTH, NO_COMPACTION, next_run
from snapws.ops.maintenance.flatten import merge_run
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit
from snapws.store.store import Store


def _chain(ws: Workspace, sid: str) -> list[str]:
    return list(json.loads((ws.store / "chains" / f"{sid}.json").read_text()))


def _config(tmp: Path, text: str) -> dict[str, str]:
    cfg = tmp / "snapws.toml"
    cfg.write_text(text)
    return {"SNAPWS_CONFIG": str(cfg)}


def test_commits_past_max_depth_flatten_and_keep_history(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = make_workspace(spec={"base.txt": "base\n", "d": {"keep": "k\n"}})
    env = _config(tmp_path, "max_depth = 4\n")
    states = []
    ids = []
    for i in range(10):
        (ws.path / f"f{i}").write_text(f"{i}\n")
        with open(ws.path / "d" / "log", "a") as f:
            f.write(f"{i}\n")
        if i >= 2:
            os.unlink(ws.path / f"f{i - 2}")
        out = json.loads(ws.run("commit", "-m", f"c{i}", "--json", env=env).stdout)
        ids.append(out["id"])
        states.append(tree_state(ws.path))
        assert len(_chain(ws, out["id"])) <= 4
    # history and ids unchanged
    assert ws.log_ids()[:10] == list(reversed(ids))
    # every snapshot still checks out to exactly what was committed
    for sid, expect in list(zip(ids, states, strict=True))[::3]:
        ws.run("checkout", "--detach", sid, env=env)
        assert state_diff(expect, tree_state(ws.path)) == []
    # a diff between neighbours still shows just their change
    lines = ws.run("diff", "--name-status", ids[8], ids[9]).stdout.splitlines()
    assert sorted(lines) == ["A\tf9", "D\tf7", "M\td/log"]


def test_flatten_command_shares_inodes_and_keeps_uncommitted_work(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    ws = make_workspace(spec={"a": "A" * 5000, "b": {"c": "C\n"}})
    env = _config(tmp_path, "max_depth = 400\n")  # no compaction: a 6-layer chain
    for i in range(5):
        (ws.path / f"n{i}").write_text(str(i))
        ws.run("commit", "-m", f"c{i}", env=env)
    (ws.path / "uncommitted").write_text("still here\n")
    before = tree_state(ws.path)
    head = ws.head()
    assert len(_chain(ws, head)) == 6
    out = json.loads(ws.run("flatten", "--keep", "0", "--json").stdout)
    assert out["depth_before"] == 6 and out["depth_after"] == 1
    assert _chain(ws, head) == [out["layer"]]
    assert state_diff(before, tree_state(ws.path)) == []
    assert ws.porcelain() == ["?? uncommitted"]
    # the flat layer's file is the base layer's inode (a hardlink, not a copy)
    flat = ws.store / "layers" / out["layer"] / "tree" / "a"
    base_layers = [
        p
        for p in (ws.store / "layers").iterdir()
        if (p / "tree" / "a").exists() and p.name != out["layer"]
    ]
    assert base_layers
    assert os.stat(flat).st_ino == os.stat(base_layers[0] / "tree" / "a").st_ino
    again = json.loads(ws.run("flatten", "--json").stdout)
    assert again["layer"] is None


def test_flatten_merges_deletions_and_replaced_directories(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(spec={"d": {"x": "x", "sub": {"y": "y"}}, "f": "file"})
    import shutil

    shutil.rmtree(ws.path / "d")
    (ws.path / "d").mkdir()
    (ws.path / "d" / "new").write_text("new")
    ws.commit("replace d")
    os.unlink(ws.path / "f")
    os.mkdir(ws.path / "f")
    ws.commit("f becomes a dir")
    expect = tree_state(ws.path)
    ws.run("flatten", "--keep", "0")
    assert state_diff(expect, tree_state(ws.path)) == []
    assert sorted(os.listdir(ws.path / "d")) == ["new"]


# --------------------------------------------------------------------------- the compaction policy


def test_policy_merges_four_similar_layers_below_the_newest() -> None:
    # [B, L1 .. Lk, N]: the newest is never merged; a layer at most as big
    # as the layers above it in the run joins them; four or more are merged
    def run(*sizes: int) -> tuple[int, int] | None:
        return next_run(sizes, max_depth=32, floor=0)

    assert run(1000, 10, 10, 10, 10) is None  # three similar layers: not yet
    assert run(1000, 10, 10, 10, 10, 10) == (1, 5)
    assert run(1000, 100, 10, 10, 10, 10, 10) == (2, 6)  # 100 > 40: not rewritten
    assert run(1000, 40, 10, 10, 10, 10, 10) == (1, 6)  # 40 <= 40: joins
    assert run(1000, 40, 40, 40, 10, 10, 10, 10, 3) == (1, 8)
    # the bottom joins only when the layers above it reach its size
    assert run(100, 10, 10, 10, 10, 5) == (1, 5)
    assert run(100, 30, 30, 20, 20, 5) == (0, 5)
    # the newest layer alone on the bottom, or alone: nothing to do
    assert run(1000, 5000) is None
    assert run(5) is None
    # layers below ``lowest`` (a merge in progress) are left alone
    assert next_run([1000, 10, 10, 10, 10, 10, 10], max_depth=32, floor=0, lowest=3) is None
    assert next_run([1000, 10, 10, 10, 10, 10, 10, 1], 32, floor=0, lowest=2) == (2, 7)


def test_policy_leaves_short_chains_alone() -> None:
    assert MIN_DEPTH == 5
    assert next_run([1000, 10, 10, 10, 10], max_depth=32) is None
    assert next_run([1000, 10, 10, 10, 10, 10], max_depth=32) == (1, 5)
    assert next_run([10, 10, 10], max_depth=2) == (0, 2)  # the cap still holds


def test_policy_keeps_max_depth_as_a_hard_cap() -> None:
    sizes = [10_000, 5000, 1000, 200, 40, 5]  # nothing similar
    assert next_run(sizes, max_depth=32) is None
    # too deep for max_depth 5: a full flatten below the newest layer
    assert next_run(sizes, max_depth=5) == (0, 5)
    assert next_run(sizes, max_depth=6) is None
    # compaction off (max_depth at its maximum): only the cap
    assert next_run([100] * 10, max_depth=NO_COMPACTION, tiered=False) is None
    assert next_run([100] * 400, max_depth=NO_COMPACTION, tiered=False) is None
    assert next_run([100] * 401, max_depth=NO_COMPACTION, tiered=False) == (0, 400)


def test_policy_depth_and_merging_over_thousands_of_commits() -> None:
    """A simulation of 3000 commits of 10 entries on a 100,000-entry tree
    (merged size = sum of sizes: no path committed twice, the worst case):
    depth stays bounded (log4 of the history, 3 similar layers a level),
    the bottom is never merged, and each entry is merged again about once
    per level (what the store grows by: merged layers stay)."""
    sizes = [100_000]
    work = bottom = 0
    depths = []
    for _ in range(3000):
        sizes.append(10)
        while (run := next_run(sizes, max_depth=32)) is not None:
            start, end = run
            assert end == len(sizes) - 1, "the newest layer was merged"
            bottom += start == 0
            work += sum(sizes[start:end])
            sizes[start:end] = [sum(sizes[start:end])]
        depths.append(len(sizes))
    assert max(depths) <= 20
    assert sum(depths) / len(depths) <= 12
    assert bottom == 0
    assert work / (3000 * 10) <= 7  # log4(3000) = 5.8 merges an entry at most


# --------------------------------------------------------------------------- compaction at commit


def _lib_commit(ws: Workspace, config: Config, message: str) -> str:
    with open_session(ws.path, config) as session:
        made = commit(session, message, config.author)
    assert made.snapshot is not None
    return made.snapshot.hex


def test_commits_stay_shallow_and_keep_history(make_workspace: WorkspaceFactory) -> None:
    spec = {f"d{i}": {f"f{j}.txt": f"{i}/{j}\n" for j in range(100)} for i in range(20)}
    ws = make_workspace(spec=spec)
    store = Store.open(ws.store)
    base = _chain(ws, ws.head())[0]
    config = Config(author="t <t@example.org>", lock_timeout=30)  # default max_depth
    rng = random.Random(5)
    ids, states = [], []
    depths = []
    for i in range(60):
        for _ in range(3):
            p = ws.path / f"d{rng.randrange(20)}" / f"f{rng.randrange(110)}.txt"
            p.write_text(f"commit {i}\n")
        if i % 7 == 3:
            victim = ws.path / f"d{rng.randrange(20)}" / f"f{rng.randrange(100)}.txt"
            if victim.exists():
                victim.unlink()
        ids.append(_lib_commit(ws, config, f"c{i}"))
        states.append(tree_state(ws.path))
        depths.append(len(_chain(ws, ids[-1])))
        if i:
            # the parent was rewritten with the same layers: its diff to the
            # new snapshot costs the newest layer only
            assert _chain(ws, ids[-2]) == _chain(ws, ids[-1])[:-1], i
    assert max(depths) <= 11, depths  # 3 similar layers a level, log4(60) levels
    assert _chain(ws, ids[-1])[0] == base, "a few files a commit merged the 2000-file base"
    assert ws.log_ids()[:60] == list(reversed(ids))
    assert_store_ok(ws.store)
    for sid, expect in list(zip(ids, states, strict=True))[::9]:
        ws.run("checkout", "--detach", sid)
        assert state_diff(expect, tree_state(ws.path)) == [], sid
    lines = ws.run("diff", "--name-status", ids[40], ids[41]).stdout.splitlines()
    assert lines and all(line.startswith(("M\t", "A\t", "D\t")) for line in lines), lines
    assert len(store.snapshot_ids()) == 61


def test_compaction_off_at_the_maximum_max_depth(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a": "a\n"})
    config = Config(author="t <t@example.org>", lock_timeout=30, max_depth=NO_COMPACTION)
    for i in range(8):
        (ws.path / "a").write_text(f"{i}\n")
        sid = _lib_commit(ws, config, f"c{i}")
    assert len(_chain(ws, sid)) == 9


def test_merge_run_rewrites_every_chain_with_the_prefix(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    """A run in the middle: snapshots whose chain contains the whole prefix
    up to the run's end get the merged layer (branches too); shorter chains
    keep theirs; every snapshot still shows what it showed."""
    ws = make_workspace(spec={"keep": "k\n", "d": {"x": "x\n", "y": "y\n"}})
    env = _config(tmp_path, "max_depth = 400\n")
    ids = [ws.head()]
    states = [tree_state(ws.path)]
    edits = [
        lambda: (ws.path / "a").write_text("a\n"),
        lambda: shutil.rmtree(ws.path / "d"),
        lambda: (ws.path / "d").mkdir() or (ws.path / "d" / "z").write_text("z\n"),
        lambda: (ws.path / "a").unlink(),
        lambda: (ws.path / "b").write_text("b\n"),
    ]
    for n, edit in enumerate(edits):
        edit()
        ws.run("commit", "-m", f"e{n}", env=env)
        ids.append(ws.head())
        states.append(tree_state(ws.path))
    # a branch from ids[4], with one more commit
    ws.run("checkout", "-b", "side", ids[4], env=env)
    (ws.path / "side").write_text("side\n")
    ws.run("commit", "-m", "side", env=env)
    side = ws.head()
    side_state = tree_state(ws.path)
    store = Store.open(ws.store)
    chain = store.chain_layers(SnapshotId(ids[5]))
    assert len(chain) == 6
    lid, rewritten = merge_run(store, chain, 1, 5)  # the layers of e0..e3
    assert rewritten == 3  # ids[4], ids[5] and side; not ids[0..3]
    assert store.chain_layers(SnapshotId(ids[4])) == [chain[0], lid]
    assert store.chain_layers(SnapshotId(ids[5])) == [chain[0], lid, chain[5]]
    assert store.chain_layers(SnapshotId(side))[:2] == [chain[0], lid]
    for k in range(4):
        assert store.chain_layers(SnapshotId(ids[k])) == chain[: k + 1]
    assert_store_ok(ws.store)
    # the merged layer has the whiteout of a (deleted in e3, absent below),
    # and d is opaque (removed in e1, made again in e2)
    entries = {e.path: e for e in decode_manifest(store.read_manifest(lid))}
    assert entries[b"a"].kind is Kind.WHITEOUT
    assert entries[b"d"].opaque and b"d/x" not in entries
    for sid, expect in [*zip(ids, states, strict=True), (side, side_state)]:
        ws.run("checkout", "--detach", sid)
        assert state_diff(expect, tree_state(ws.path)) == [], sid


def test_flatten_keep_counts_after_compaction(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a": "a\n", "d": {"b": "b\n"}})
    for i in range(6):
        (ws.path / f"n{i}").write_text(f"{i}\n")
        ws.commit(f"c{i}")
    before = tree_state(ws.path)
    depth = len(_chain(ws, ws.head()))
    out = json.loads(ws.run("flatten", "--keep", "1", "--json").stdout)
    if depth > 2:
        assert out["depth_after"] == 2
    assert len(_chain(ws, ws.head())) == 2
    out = json.loads(ws.run("flatten", "--keep", "0", "--json").stdout)
    assert out["depth_after"] == 1 and len(_chain(ws, ws.head())) == 1
    assert state_diff(before, tree_state(ws.path)) == []
    assert_store_ok(ws.store)
