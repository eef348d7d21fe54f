"""The global -q (and -q after the command): informational lines are not
printed; requested data (import's snapshot id, listings) and errors are."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a").write_text("0")
    run_cli("--store", tmp_path / "st", "init", "-q", "--backend", "plain", ws, cwd=tmp_path)
    for i in range(1, 4):
        (ws / "a").write_text(str(i))
        run_cli("--store", tmp_path / "st", "-C", ws, "commit", "-q", "-m", f"c{i}", cwd=tmp_path)
    return ws


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["export", "-o", "../img.tar", "HEAD"], "Exported snapshot "),
        (["flatten"], "flattened "),
        (["prune", "--keep-last", "1"], "applying policy"),
        (["gc", "--grace", "0"], "removed "),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else "",
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_informational_lines_obey_quiet(ws: Path, args: list[str], said: str, where: str) -> None:
    store = ws.parent / "st"
    loud = run_cli("--store", store, "-C", ws, *args, cwd=ws)
    assert said in loud.stdout
    if args[0] == "export":
        (ws.parent / "img.tar").unlink()
    if args[0] == "flatten":  # flatten again: a chain of its own to merge
        for i in range(2):
            (ws / "a").write_text(f"more {i}")
            run_cli("--store", store, "-C", ws, "commit", "-q", "-m", f"m{i}", cwd=ws)
    quiet = ["-q", *args] if where == "before" else [args[0], "-q", *args[1:]]
    r = run_cli("--store", store, "-C", ws, *quiet, cwd=ws)
    assert (r.stdout, r.stderr) == ("", "")


def test_import_still_prints_the_snapshot_id_under_quiet(ws: Path) -> None:
    store = ws.parent / "st"
    run_cli("--store", store, "-C", ws, "export", "-q", "-o", "../img.tar", "HEAD", cwd=ws)
    r = run_cli("--store", store, "-q", "import", ws.parent / "img.tar", cwd=ws.parent)
    assert len(r.stdout.strip()) == 32 and r.stderr == ""
