"""``snapws gc``: layers no snapshot, mount or interrupted operation uses are
deleted once older than the grace period; bytes freed count inodes whose
every link goes; what is kept still checks out byte-for-byte."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli
from helpers import state_diff, tree_state

from snapws.ids import LayerId
from snapws.model import SnapshotRecord
from snapws.ops.maintenance.gc import format_grace, freed_bytes, parse_grace, plan_gc
from snapws.store.store import EMPTY_LAYER, Store

MB = 1 << 20


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("now", 0), ("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400),
     ("2d", 172800), ("1w", 604800), ("1.5h", 5400)],
)  # fmt: skip
def test_parse_grace(text: str, seconds: float) -> None:
    assert parse_grace(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1y", "-5m", "5 m", "1h30"])
def test_parse_grace_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_grace(text)


def test_format_grace() -> None:
    assert [format_grace(s) for s in (0, 59, 60, 3600, 5400, 86400, 1.5)] == [
        "0s", "59s", "1m", "1h", "90m", "1d", "1.5s"
    ]  # fmt: skip


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_freed_bytes_counts_an_inode_only_when_all_its_links_go(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "shared").write_bytes(os.urandom(MB))
    os.link(a / "shared", b / "shared")  # as flatten links old layers' files
    (a / "own").write_bytes(os.urandom(MB // 2))
    os.link(a / "own", a / "own2")  # a hardlink inside one tree
    dirs_a, dirs_b = blocks(a), blocks(b)
    shared, own = blocks(a / "shared"), blocks(a / "own")
    assert freed_bytes([a]) == [dirs_a + own]  # "shared" stays alive in b
    assert freed_bytes([b]) == [dirs_b]
    assert freed_bytes([a, b]) == [dirs_a + own + shared, dirs_b]  # counted once
    single = tmp_path / "file"
    single.write_bytes(b"x" * 5000)
    assert freed_bytes([single]) == [blocks(single)]
    assert freed_bytes([tmp_path / "missing"]) == [0]


def fake_layer(store: Store, name: str, size: int = 10_000) -> LayerId:
    staging = store.new_staging("test")
    (staging / "tree").mkdir()
    (staging / "tree" / "data").write_bytes(os.urandom(size))
    return store.publish_layer(staging, f"manifest of {name}\n".encode())


def test_plan_keeps_young_journaled_and_empty_layers(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "store")
    old = fake_layer(store, "old")
    named = fake_layer(store, "named by a journal")
    (store.root / "staging" / "junk").mkdir()
    (store.root / "trash" / "left").write_bytes(b"x" * 3000)
    store.write_journal(
        {
            "op": "commit",
            "ws": "0" * 32,
            "upper": "upper-1",
            "new_upper": "upper-2",
            "new_work": "work-2",
            "staging": "junk",
            "layer": named.hex,
            "record": SnapshotRecord(
                parents=(), layer=named, message="m", author="a", time_ns=0, tz_offset_min=0
            )
            .canonical()
            .decode(),
            "chain": [named.hex],
        }
    )
    later = time.time() + 7200
    plan = plan_gc(store, grace=3600, now=later)
    assert plan.layers == [old]
    assert plan.kept == {EMPTY_LAYER: "the empty layer", named: "interrupted operation"}
    assert [(d.kind, d.name) for d in plan.doomed] == [("layer", old.hex), ("trash", "left")]
    assert plan.young == ["staging/junk"]  # named by the journal
    assert plan.bytes_freed == sum(d.bytes for d in plan.doomed) > 10_000
    # now: everything is younger than the grace period
    plan = plan_gc(store, grace=3600)
    assert plan.doomed == []
    assert plan.kept[old] == "younger than 1h"
    assert sorted(plan.young) == ["staging/junk", "trash/left"]
    # a gc journal (its own list) protects nothing
    store.write_journal({"op": "gc", "layers": [old.hex, named.hex]})
    assert plan_gc(store, grace=0).layers == sorted([old, named])


# --------------------------------------------------------------------------- on workspaces


def remount(ws: Workspace) -> None:
    ws.run("umount")
    run_cli("--store", ws.store, "mount", ws.path, cwd=ws.outside)


def unused_bytes(ws: Workspace) -> int:
    """What `snapws du` counts as used by no snapshot, less the empty layer
    (in no chain, but every store keeps it)."""
    report = ws.json("du")
    (empty,) = (lu["bytes"] for lu in report["layers"] if lu["id"] == EMPTY_LAYER.hex)
    return int(report["store"]["unused_bytes"]) - int(empty)


def gc(ws: Workspace, *args: str) -> dict[str, Any]:
    return json.loads(ws.run("gc", "--json", *args).stdout)  # type: ignore[no-any-return]


def layer_ids(ws: Workspace) -> set[str]:
    return set(os.listdir(ws.store / "layers"))


def chain(ws: Workspace, sid: str) -> list[str]:
    return list(json.loads((ws.store / "chains" / f"{sid}.json").read_text()))


@pytest.mark.root
def test_prune_then_gc_frees_exactly_the_abandoned_layers(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"keep.txt": "keep\n", "d": {"x.bin": os.urandom(100_000)}})
    s1 = ws.commit("s1")
    ws.run("checkout", "-b", "exp")
    (ws.path / "exp.bin").write_bytes(os.urandom(2 * MB))
    e1 = ws.commit("experiment")
    exp_layer = chain(ws, e1)[-1]
    ws.run("checkout", "main")
    ws.run("branch", "-D", "exp")  # not merged: -D
    (ws.path / "d" / "x.bin").unlink()
    (ws.path / "new.txt").write_text("new\n")
    s2 = ws.commit("s2")
    states = {s2: tree_state(ws.path)}
    ws.run("checkout", "--detach", s1)
    states[s1] = tree_state(ws.path)
    ws.run("checkout", "main")
    ws.run("tag", "t1", s1)
    layers_before = layer_ids(ws)

    pruned = ws.json("prune", "--keep-last", "1")
    parent = ws.json("log", s1)["snapshots"][0]["parents"][0]
    assert {d["id"] for d in pruned["remove"]} == {e1, parent}
    assert layer_ids(ws) == layers_before  # prune deletes no layer

    # younger than the default grace period (1 h): nothing goes
    young = gc(ws)
    assert young["removed"] == [] and young["kept"][exp_layer] == "younger than 1h"
    dry = gc(ws, "--grace", "0", "--dry-run")
    assert [(r["kind"], r["name"]) for r in dry["removed"]] == [("layer", exp_layer)]
    assert layer_ids(ws) == layers_before
    unused = unused_bytes(ws)

    done = gc(ws, "--grace", "0")
    assert done["removed"] == dry["removed"]
    assert 2 * MB <= done["bytes_freed"] == dry["bytes_freed"] == unused
    assert layer_ids(ws) == layers_before - {exp_layer}
    assert gc(ws, "--grace", "0")["removed"] == []
    # every kept snapshot still checks out byte-for-byte, and the store verifies
    for sid, expect in states.items():
        ws.run("checkout", "--detach", sid)
        assert state_diff(expect, tree_state(ws.path)) == []
    ws.run("verify")
    text = ws.run("gc", "--grace", "0").stdout
    assert text.startswith("removed 0 layers, freed 0 B; kept ")


@pytest.mark.root
def test_gc_after_flatten_frees_only_inodes_no_kept_layer_links(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("max_depth = 3\n")
    env = {"SNAPWS_CONFIG": str(cfg)}
    ws = make_workspace(spec={"big.bin": os.urandom(MB)})  # stays: shared by flatten
    for i in range(6):
        (ws.path / "churn.bin").write_bytes(os.urandom(8192))  # replaced each time
        (ws.path / f"f{i}").write_text(f"{i}\n")
        ws.run("commit", "-m", f"c{i}", env=env)
    expect = tree_state(ws.path)
    ws.run("prune", "--keep-last", "1")
    unused = unused_bytes(ws)
    total = ws.json("du")["store"]["total_bytes"]
    out = gc(ws, "--grace", "0")
    assert out["removed"], "flatten left old layers that only pruned snapshots used"
    assert out["bytes_freed"] == unused
    assert ws.json("du")["store"]["total_bytes"] == total - out["bytes_freed"]
    assert unused_bytes(ws) == 0
    # the big file's inode is linked by the merged layer: it was not freed
    assert out["bytes_freed"] < MB
    assert state_diff(expect, tree_state(ws.path)) == []
    remount(ws)
    assert state_diff(expect, tree_state(ws.path)) == []
    ws.run("verify")


@pytest.mark.root
def test_gc_keeps_layers_a_workspace_still_has_mounted(make_workspace: WorkspaceFactory) -> None:
    a = make_workspace(name="a", spec={"base.txt": "base\n"})
    for i in range(3):
        (a.path / f"a{i}.txt").write_text(f"{i}\n")
        head = a.commit(f"a{i}")
    old_chain = chain(a, head)
    expect = tree_state(a.path)
    b = make_workspace(name="b", spec={"b.txt": "b\n"}, branch="b")
    b.run("checkout", "--detach", head)
    # b flattens the shared snapshot: its chain changes, a stays mounted on the old one
    b.run("flatten", "--keep", "0", head)
    assert chain(a, head) != old_chain and len(chain(a, head)) == 1
    a.run("prune", "--keep-last", "1")  # the older snapshots used the old layers too

    out = gc(a, "--grace", "0")
    removed = {r["name"] for r in out["removed"] if r["kind"] == "layer"}
    assert removed.isdisjoint(old_chain)
    for lid in old_chain:
        assert out["kept"][lid] == f"mounted at {a.path}"
    assert state_diff(expect, tree_state(a.path)) == []
    # once a is unmounted, its old layers are garbage; mounted again, it uses the new chain
    a.run("umount")
    out = run_cli("--store", a.store, "gc", "--grace", "0", "--json", cwd=a.outside)
    report = json.loads(out.stdout)
    removed = {r["name"] for r in report["removed"]}
    own = old_chain[-1]  # head's own layer stays: an export proves its merged top with it
    assert set(old_chain) - {own} <= removed
    assert report["kept"][own] == "the layer of a snapshot's record"
    run_cli("--store", a.store, "mount", a.path, cwd=a.outside)
    assert state_diff(expect, tree_state(a.path)) == []
    a.run("verify")
    b.run("status")


@pytest.mark.root
def test_gc_refuses_a_bad_grace(workspace: Workspace) -> None:
    proc = workspace.run("gc", "--grace", "soon", check=False)
    assert proc.returncode == 2 and "bad duration" in proc.stderr
    assert (
        proc.stderr.startswith("snapws: error:") and "hint: see `snapws gc --help`" in proc.stderr
    )
