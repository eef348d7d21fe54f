"""Flattening: bounded chain depth with ids, history and content unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Workspace, WorkspaceFactory
from helpers import state_diff, tree_state


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
        ids.append(out["snapshot"])
        states.append(tree_state(ws.path))
        assert len(_chain(ws, out["snapshot"])) <= 4
    # history and ids unchanged
    assert ws.log_ids()[:10] == list(reversed(ids))
    # every snapshot still checks out to exactly what was committed
    for sid, expect in list(zip(ids, states, strict=True))[::3]:
        ws.run("checkout", "--detach", sid, env=env)
        assert state_diff(expect, tree_state(ws.path)) == []
    # a diff between neighbours still shows just their change
    lines = ws.run("diff", "--name-status", ids[8], ids[9]).stdout.splitlines()
    assert sorted(lines) == ["A  f9", "D  f7", "M  d/log"]


def test_flatten_command_shares_inodes_and_keeps_uncommitted_work(
    make_workspace: WorkspaceFactory,
) -> None:
    ws = make_workspace(spec={"a": "A" * 5000, "b": {"c": "C\n"}})
    for i in range(5):
        (ws.path / f"n{i}").write_text(str(i))
        ws.commit(f"c{i}")
    (ws.path / "uncommitted").write_text("still here\n")
    before = tree_state(ws.path)
    head = ws.head()
    assert len(_chain(ws, head)) == 6
    out = json.loads(ws.run("flatten", "--keep", "0", "--json").stdout)
    assert out["depth_before"] == 6 and out["depth_after"] == 1
    assert _chain(ws, head) == [out["layer"]]
    assert state_diff(before, tree_state(ws.path)) == []
    assert ws.porcelain() == ["A  uncommitted"]
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
