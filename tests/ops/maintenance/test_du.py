"""``snapws du``: own, referenced and shared bytes per snapshot, and the
store's real disk usage."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.cli.cmd_verify import human_size

pytestmark = pytest.mark.root

MB = 1_000_000
SLACK = 64 * 1024  # directories and the manifest of a small layer


def du(ws: Workspace, *args: str) -> dict[str, Any]:
    return ws.json("du", *args)  # type: ignore[no-any-return]


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in report["snapshots"]}


def chain(ws: Workspace, sid: str) -> list[str]:
    return list(json.loads((ws.store / "chains" / f"{sid}.json").read_text()))


def gnu_du_layers(store: Path) -> int:
    """Disk usage below layers/ by GNU du (hardlinks once, st_blocks * 512),
    the layers/ directory itself left out."""
    out = subprocess.run(
        ["du", "-s", "-B1", str(store / "layers")], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[0]) - os.lstat(store / "layers").st_blocks * 512


def test_own_refer_shared_and_total(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"a.txt": "a\n" * 100, "d": {"b.txt": "b\n"}})
    (ws.path / "small.txt").write_text("small\n")
    ws.commit("small")
    (ws.path / "big.bin").write_bytes(os.urandom(MB))
    big = ws.commit("big")
    ids = ws.log_ids()
    assert ids[0] == big

    report = du(ws)
    snaps = by_id(report)
    assert [s["id"] for s in report["snapshots"]] == ids
    tip = snaps[big]
    assert MB <= tip["own_bytes"] <= MB + SLACK
    layer_bytes = {lu["id"]: lu["bytes"] for lu in report["layers"]}
    for sid, s in snaps.items():
        assert s["referenced_bytes"] == sum(layer_bytes[lid] for lid in chain(ws, sid))
        assert s["shared_bytes"] == s["referenced_bytes"] - s["own_bytes"]
    # a linear history: older snapshots share every layer with the tip
    assert [snaps[sid]["own_bytes"] for sid in ids[1:]] == [0, 0]
    store = report["store"]
    assert store["total_bytes"] == sum(layer_bytes.values())
    assert store["total_bytes"] == gnu_du_layers(ws.store)
    assert store["total_bytes"] == store["used_bytes"] + store["unused_bytes"]
    assert store["used_bytes"] == tip["referenced_bytes"]
    assert store["layers"] == len(list((ws.store / "layers").iterdir()))

    text = ws.run("du").stdout.splitlines()
    assert text[0].split() == ["SNAPSHOT", "OWN", "REFER", "SHARED", "NAMES", "/", "MESSAGE"]
    assert text[1].startswith(big[:12]) and "MiB" in text[1] and text[1].endswith("(main) big")
    assert text[-1].startswith(f"store total: {human_size(store['total_bytes'])} in ")


def test_branches_own_their_layers(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"base.bin": os.urandom(200_000)})
    base = ws.head()
    (ws.path / "main.bin").write_bytes(os.urandom(300_000))
    main = ws.commit("on main")
    ws.run("checkout", "-b", "side", base)
    (ws.path / "side.bin").write_bytes(os.urandom(500_000))
    side = ws.commit("on side")

    snaps = by_id(du(ws))
    assert set(snaps) == {base, main, side}
    assert 300_000 <= snaps[main]["own_bytes"] <= 300_000 + SLACK
    assert 500_000 <= snaps[side]["own_bytes"] <= 500_000 + SLACK
    assert snaps[base]["own_bytes"] == 0
    assert (
        snaps[main]["shared_bytes"]
        == snaps[side]["shared_bytes"]
        == (snaps[base]["referenced_bytes"])
    )
    # counting main alone: everything it refers to is its own
    alone = du(ws, "main")
    assert [s["id"] for s in alone["snapshots"]] == [main]
    assert alone["snapshots"][0]["own_bytes"] == alone["snapshots"][0]["referenced_bytes"]
    assert alone["store"]["unused_bytes"] > 500_000  # side's layer is not counted


def test_hardlinks_count_once(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"x": "x"})
    (ws.path / "big.bin").write_bytes(os.urandom(MB))
    os.link(ws.path / "big.bin", ws.path / "big-again.bin")
    tip = ws.commit("hardlinked pair")
    report = du(ws)
    own = by_id(report)[tip]["own_bytes"]
    assert MB <= own <= MB + SLACK
    assert report["store"]["total_bytes"] == gnu_du_layers(ws.store)

    # an inode held by two layers (as flatten makes them) is nobody's own
    # and counted once in the total
    layers = ws.store / "layers"
    top = chain(ws, tip)[-1]
    bottom = chain(ws, tip)[0]
    os.link(layers / top / "tree" / "big.bin", layers / bottom / "tree" / "shared.bin")
    after = du(ws)
    assert by_id(after)[tip]["own_bytes"] < SLACK
    assert after["store"]["total_bytes"] == report["store"]["total_bytes"]
    assert after["store"]["total_bytes"] == gnu_du_layers(ws.store)
    assert by_id(after)[tip]["referenced_bytes"] == by_id(report)[tip]["referenced_bytes"]


def test_unreachable_snapshots_are_not_counted(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"x": "x"})
    (ws.path / "gone.bin").write_bytes(os.urandom(400_000))
    dropped = ws.commit("to be dropped")
    ws.run("reset", "--hard", "HEAD~1")
    report = du(ws)
    assert dropped not in by_id(report)
    assert report["store"]["unused_bytes"] >= 400_000
    # naming it still measures it
    assert by_id(du(ws, dropped))[dropped]["own_bytes"] >= 400_000


def test_du_outside_a_workspace_needs_store(make_workspace: WorkspaceFactory) -> None:
    ws = make_workspace(spec={"x": "x"})
    r = run_cli("du", cwd=ws.outside, check=False)
    assert r.returncode == 3
    ok = run_cli("--store", ws.store, "du", "--json", cwd=ws.outside)
    assert len(json.loads(ok.stdout)["snapshots"]) == 1


def test_human_size() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"


def test_flattened_store_counts_shared_inodes_once(
    make_workspace: WorkspaceFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "snapws.toml"
    cfg.write_text("max_depth = 3\n")
    env = {"SNAPWS_CONFIG": str(cfg)}
    ws = make_workspace(spec={"base.bin": os.urandom(MB)})
    for i in range(5):
        (ws.path / f"f{i}.txt").write_text(f"{i}\n" * 100)
        ws.run("commit", "-m", f"c{i}", env=env)
    report = du(ws)
    layer_sum = sum(lu["bytes"] for lu in report["layers"])
    total = report["store"]["total_bytes"]
    assert total == gnu_du_layers(ws.store)
    assert total < layer_sum - MB // 2, "the 1 MB file is in several layers, on disk once"
    for s in report["snapshots"]:
        assert 0 <= s["own_bytes"] <= s["referenced_bytes"] <= total
        # every snapshot refers to the base file once
        assert MB <= s["referenced_bytes"] < 2 * MB
