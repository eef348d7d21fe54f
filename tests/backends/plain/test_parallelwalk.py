"""The forked walk of a plain workspace's status: the same result as one
process, also when a child fails (its share is walked again here), and no
child left behind."""

from __future__ import annotations

import os

import pytest
from conftest import Workspace

from snapws.backends.plain import parallelwalk
from snapws.backends.plain.index import Index
from snapws.backends.plain.parallelwalk import PROCS_ENV
from snapws.backends.plain.scan import ScanResult, Unit, Walker, scan
from snapws.backends.plain.workentry import WorkRules
from snapws.layers.ignore import IgnoreRules

from .conftest import PlainFactory

SPEC = {f"d{i}": {f"s{j}": {"f": f"{i}{j}\n"} for j in range(2)} for i in range(30)}


def scan_with(ws: Workspace, procs: int, monkeypatch: pytest.MonkeyPatch) -> ScanResult:
    """A scan in this process with ``procs`` walkers (the index is read, not written)."""
    (path,) = ws.store.glob("workspaces/*/index")
    index = Index.decode(path.read_bytes())
    assert index is not None
    monkeypatch.setenv(PROCS_ENV, str(procs))
    root = os.fsencode(ws.path)
    return scan(index, root, WorkRules.for_workspace(root), 1, IgnoreRules.for_tree(root), True)


def count_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the walkers forked from now on."""
    forks: list[int] = []
    real = parallelwalk._fork_walker

    def counted(w: Walker, share: list[Unit]) -> tuple[int, int, list[Unit]]:
        forks.append(len(share))
        return real(w, share)

    monkeypatch.setattr(parallelwalk, "_fork_walker", counted)
    return forks


def no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def ws(make_plain: PlainFactory) -> Workspace:
    w = make_plain(spec=SPEC)
    p = w.path
    (p / "d1" / "s1" / "f").write_text("changed\n")
    (p / "d22" / "s0" / "f").unlink()
    (p / "d29" / "new").mkdir()
    (p / "d29" / "new" / "n").write_text("n\n")
    return w


def _summary(r: ScanResult) -> tuple[object, ...]:
    return ([(c.path, c.type) for c in r.changes], sorted(r.recreated), r.listed + r.reused)


def test_forked_walkers_find_what_one_process_finds(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = scan_with(ws, 1, monkeypatch)
    assert [c.path for c in one.changes] == [b"d1/s1/f", b"d22/s0/f", b"d29/new", b"d29/new/n"]
    forks = count_forks(monkeypatch)
    assert _summary(scan_with(ws, 3, monkeypatch)) == _summary(one)
    assert len(forks) == 2 and all(forks)
    assert no_children_left()


def test_a_failed_child_share_is_walked_here(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = scan_with(ws, 1, monkeypatch)
    parent = os.getpid()
    export = Walker.export

    def failing_export(self: Walker) -> bytes:
        if os.getpid() != parent:
            raise OSError("no space left in the child")
        return export(self)

    monkeypatch.setattr(Walker, "export", failing_export)
    forks = count_forks(monkeypatch)
    assert _summary(scan_with(ws, 3, monkeypatch)) == _summary(one)
    assert len(forks) == 2
    assert no_children_left()
