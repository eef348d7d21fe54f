"""Damaged store records: every record type, read by the commands that use
it, gives exit 11 (STORE_CORRUPT) with a message naming the file, never a
traceback; `verify` reports it, `doctor` says the store is damaged, and
`verify --repair` mends what it can without losing uncommitted files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapws.errors import ExitCode
from tests.conftest import Workspace

pytestmark = pytest.mark.root

CORRUPT = int(ExitCode.STORE_CORRUPT)


def _state_path(ws: Workspace) -> Path:
    (wsdir,) = (ws.store / "workspaces").iterdir()
    return wsdir / "state.json"


def _edit_state(ws: Workspace, change: Callable[[dict[str, Any]], None]) -> Path:
    path = _state_path(ws)
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


def _assert_clean_failure(ws: Workspace, args: tuple[str, ...], names: str) -> None:
    r = ws.run(*args, check=False)
    assert r.returncode == CORRUPT, (args, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert names in r.stderr, r.stderr
    assert "hint: " in r.stderr


def _verify_reports(ws: Workspace, kind: str, names: str) -> dict[str, Any]:
    r = ws.run("--store", ws.store, "verify", "--json", check=False)
    assert r.returncode == CORRUPT, r.stderr
    report = json.loads(r.stdout)
    found = [p for p in report["problems"] if p["kind"] == kind]
    assert found, report["problems"]
    assert any(names in p["message"] for p in found), found
    return report


def _doctor_reports(ws: Workspace, names: str) -> None:
    r = ws.run("--store", ws.store, "doctor", check=False)
    assert "Traceback" not in r.stderr, r.stderr
    assert "store records" in r.stdout and names in r.stdout, r.stdout


STATE_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "integer head": lambda o: o.update(head=12345),
    "list path": lambda o: o.update(path=["/tmp", "x"]),
    "climbing upper": lambda o: o.update(upper="../../.."),
    "climbing work": lambda o: o.update(work="../x"),
    "null id": lambda o: o.update(id=None),
    "not an object": lambda o: o.clear(),
}


@pytest.mark.parametrize("case", sorted(STATE_DAMAGE))
def test_damaged_workspace_record(workspace: Workspace, case: str) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    ws.commit("one")
    if case == "not an object":
        path = _state_path(ws)
        path.write_text("[1, 2]")
    else:
        path = _edit_state(ws, STATE_DAMAGE[case])
    for args in (("status",), ("commit", "-m", "x"), ("checkout", "HEAD~1"), ("log",)):
        _assert_clean_failure(ws, args, str(path))
    report = _verify_reports(ws, "bad-workspace", str(path))
    assert report["ok"] is False
    _doctor_reports(ws, str(path))


@pytest.mark.parametrize("garbage", [b"", b'{"id": "ab', b"\xff\xfe garbage"])
def test_truncated_or_garbage_workspace_record(workspace: Workspace, garbage: bytes) -> None:
    ws = workspace
    path = _state_path(ws)
    path.write_bytes(garbage)
    _assert_clean_failure(ws, ("status",), str(path))
    _verify_reports(ws, "bad-workspace", str(path))


def test_snapshot_record(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    sid = ws.commit("one")
    path = ws.store / "snapshots" / f"{sid}.json"
    path.chmod(0o644)
    rec = json.loads(path.read_bytes())
    rec["parents"] = "not a list"
    path.write_text(json.dumps(rec))
    _assert_clean_failure(ws, ("log",), str(path))
    report = _verify_reports(ws, "bad-snapshot", str(path))
    assert any(p["snapshot"] == sid for p in report["problems"])
    _doctor_reports(ws, str(path))


@pytest.mark.parametrize("content", ['{"a": 1}', "[1, 2]", "[]", '["../../etc"]', "[tru"])
def test_chain(workspace: Workspace, content: str) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    sid = ws.commit("one")
    path = ws.store / "chains" / f"{sid}.json"
    path.write_text(content)
    _assert_clean_failure(ws, ("status",), str(path))
    _verify_reports(ws, "bad-chain", str(path))
    _doctor_reports(ws, str(path))


@pytest.mark.parametrize(
    "journal",
    [
        '{"op": "commit", "ws": 7}',
        '{"op": "switch", "ws": "00000000000000000000000000000000", "old_upper": "../..", '
        '"new_state": {}}',
        '{"op": "gc", "layers": "all"}',
        '{"op": "rm -rf"}',
        '["op"]',
        '{"op": "prune", "forg',
    ],
)
def test_journal(workspace: Workspace, journal: str) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    path = ws.store / "journal.json"
    path.write_text(journal)
    _assert_clean_failure(ws, ("commit", "-m", "x"), str(path))
    _verify_reports(ws, "bad-journal", str(path))
    _doctor_reports(ws, str(path))
    assert (ws.path / "a.txt").read_text() == "one"


@pytest.mark.parametrize(
    "remotes",
    [
        '{"format": 1, "remotes": {"origin": {"url": 5}}}',
        '{"format": 1, "remotes": {"../x": {"url": "dir:/tmp"}}}',
        '{"format": 1, "remotes": []}',
        "nonsense",
    ],
)
def test_remotes_file(workspace: Workspace, remotes: str) -> None:
    ws = workspace
    path = ws.store / "remotes.json"
    path.write_text(remotes)
    _assert_clean_failure(ws, ("remote", "list"), str(path))
    _verify_reports(ws, "bad-remotes", str(path))
    _doctor_reports(ws, str(path))


def test_cache_index(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    ws.commit("one")
    lid = json.loads((ws.store / "chains" / f"{ws.head()}.json").read_text())[-1]
    entry = ws.store / "oci" / "layers" / f"{lid}.gzip.json"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text('{"digest": 5, "size": "big"}')
    _verify_reports(ws, "bad-cache", str(entry))
    # a cache: snapws itself ignores the entry and rebuilds it
    ws.run("export", "-o", ws.outside / "img.tar", "HEAD")
    r = ws.run("--store", ws.store, "verify", "--repair", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    ws.run("--store", ws.store, "verify")


def test_missing_layer(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    first = ws.commit("one")
    ws.gen({"b.txt": "two"})
    second = ws.commit("two")
    lid = json.loads((ws.store / "chains" / f"{first}.json").read_text())[-1]
    remote = ws.outside / "remote"
    ws.run("remote", "add", "origin", f"dir:{remote}")
    ws.run("push", "origin", "HEAD", "--tag", "t2")
    shutil.rmtree(ws.store / "layers" / lid)
    for args in (("status",), ("checkout", "HEAD~1"), ("commit", "-m", "x", "--allow-empty")):
        _assert_clean_failure(ws, args, lid)
    report = _verify_reports(ws, "missing-layer", lid[:12])
    affected = {s for p in report["problems"] for s in p["affected"]}
    assert {first, second} <= affected
    _doctor_reports(ws, lid[:12])
    reflog = ws.json("reflog")["entries"]
    r = ws.run("--store", ws.store, "verify", "--repair", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"fetched layer {lid[:12]}" in r.stdout
    ws.run("status")
    assert (ws.path / "a.txt").read_text() == "one"
    # remounting on the fetched layer moved no HEAD: nothing in HEAD's reflog
    assert ws.json("reflog")["entries"] == reflog


@pytest.mark.parametrize("case", ["integer head", "climbing upper", "garbage"])
def test_repair_reattaches_workspace(workspace: Workspace, case: str) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    ws.commit("one")
    ws.gen({"uncommitted.txt": "keep me", "a.txt": "changed"})
    path = _state_path(ws)
    if case == "garbage":
        path.write_bytes(b"\x00\x01garbage")
    else:
        _edit_state(ws, STATE_DAMAGE[case])
    ws.run("status", check=False)
    r = ws.run("--store", ws.store, "verify", "--repair", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"rewrote workspace record {path}" in r.stdout
    assert sorted(ws.porcelain()) == ["?? uncommitted.txt", "M  a.txt"] or sorted(
        line.split()[-1] for line in ws.porcelain()
    ) == ["a.txt", "uncommitted.txt"]
    ws.commit("after repair")
    assert (ws.path / "uncommitted.txt").read_text() == "keep me"
    assert (ws.path / "a.txt").read_text() == "changed"
    assert ws.porcelain() == []
    ws.run("--store", ws.store, "verify")


def test_repair_names_what_it_cannot_repair(workspace: Workspace) -> None:
    ws = workspace
    ws.gen({"a.txt": "one"})
    sid = ws.commit("one")
    path = ws.store / "chains" / f"{sid}.json"
    path.write_text("garbage")
    r = ws.run("--store", ws.store, "verify", "--repair", check=False)
    assert r.returncode == CORRUPT
    assert "cannot repair: " in r.stdout and str(path) in r.stdout
