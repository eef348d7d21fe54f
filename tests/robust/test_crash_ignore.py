"""Crash safety with ignored paths present: SIGKILL at every named commit
and checkout step (and between the moves of ignored paths into the next
upperdir, ``carry:moved:N``), then the next command recovers: the ignored
paths are still in the working tree, in no layer, and nothing else
changed. Kernel and fuse backends (plain: its own steps, which never touch
ignored paths)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.crash import steps_of
from snapws.mounts import fuse

from .conftest import Workspace, crash, tree_of
from .verify import assert_store_ok

pytestmark = pytest.mark.root

BASE = {"a.txt": "a\n", "keep": {"k.txt": "k\n"}, ".snapwsignore": "*.swp\n.venv/\n"}
IGNORED = {
    ".venv/lib/site.py": b"site\n",
    ".venv/bin/python": b"py\n",
    "top.swp": b"top\n",
    "keep/k.swp": b"k swap\n",
    "fresh/only.swp": b"only\n",
}
BACKENDS = ("kernel", "fuse", "plain")


def _steps(backend: str, op: str) -> list[str]:
    if backend == "plain":
        return list(steps_of(op, backend))
    return [*steps_of(op, backend), "carry:moved:1", "carry:moved:2"]


def _cases(op: str) -> list[tuple[str, str]]:
    """(backend, step) pairs: every step each backend reaches in ``op``."""
    return [(b, step) for b in BACKENDS for step in _steps(b, op)]


def _workspace(backend: str, tmp_path: Path) -> Workspace:
    if backend == "fuse" and fuse.find_program() is None:
        pytest.skip("fuse-overlayfs is not installed (CI installs it)")
    assert os.geteuid() == 0, "the crash tests need root"
    it = Workspace(tmp_path)
    it.set_config(lock_timeout=30, backend=backend)
    it.backend = backend  # type: ignore[attr-defined]
    return it


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[Workspace]]:
    """Workspaces made by the test (torn down after it, whatever happened)."""
    out: list[Workspace] = []
    try:
        yield out
    finally:
        for it in out:
            it.teardown()


def _init(ws: Workspace) -> None:
    ws.gen(BASE)
    ws.run("init")


def _add_ignored(ws: Workspace) -> None:
    for rel, data in IGNORED.items():
        (ws.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.path / rel).write_bytes(data)


def _assert_ignored_kept(ws: Workspace) -> None:
    tree = tree_of(ws.path)
    for rel, data in IGNORED.items():
        assert tree.get(rel, (None, 0, None))[2] == data, rel


def _recover(ws: Workspace) -> list[str]:
    lines = ws.status()
    if ws.backend == "plain":  # type: ignore[attr-defined]
        ws.run("verify")  # (the robust suite's checker knows overlay workspaces only)
    else:
        assert_store_ok(ws.store_path)
    return lines


def _not_in_layers(ws: Workspace) -> None:
    layers = ws.store_path / "layers"
    for rel in IGNORED:
        top = rel.split("/")[0]
        found = [p for p in layers.glob(f"*/tree/{top}")] if layers.exists() else []
        if top in ("keep",):
            found = [p for p in layers.glob(f"*/tree/{rel}")]
        assert not found, found


@pytest.mark.parametrize(("backend", "step"), _cases("commit"))
def test_crash_during_commit_keeps_ignored_paths(
    made: list[Workspace], tmp_path: Path, backend: str, step: str
) -> None:
    bws = _workspace(backend, tmp_path)
    made.append(bws)
    _init(bws)
    _add_ignored(bws)
    (bws.path / "a.txt").write_text("a2\n")
    (bws.path / "b.txt").write_text("b\n")
    crash(bws, "commit", "-m", "with ignored", step=step)
    lines = _recover(bws)
    assert lines in ([" M a.txt", "?? b.txt"], []), lines
    _assert_ignored_kept(bws)
    _not_in_layers(bws)
    if lines:
        bws.commit("again")
        _assert_ignored_kept(bws)
    assert bws.status() == []


@pytest.mark.parametrize(("backend", "step"), _cases("checkout"))
def test_crash_during_checkout_keeps_ignored_paths(
    made: list[Workspace], tmp_path: Path, backend: str, step: str
) -> None:
    bws = _workspace(backend, tmp_path)
    made.append(bws)
    _init(bws)
    (bws.path / "b.txt").write_text("b\n")
    (bws.path / "c.txt").write_text("c\n")
    bws.commit("second")
    _add_ignored(bws)
    crash(bws, "checkout", "--detach", "HEAD~1", step=step)
    _recover(bws)
    _assert_ignored_kept(bws)
    assert bws.status() == []


@pytest.mark.parametrize(
    ("backend", "step"), [(b, s) for b in BACKENDS for s in steps_of("init", b)]
)
def test_crash_during_init_keeps_ignored_paths_out_of_the_base_layer(
    made: list[Workspace], tmp_path: Path, backend: str, step: str
) -> None:
    bws = _workspace(backend, tmp_path)
    made.append(bws)
    bws.gen(BASE)
    _add_ignored(bws)
    before = tree_of(bws.path)
    crash(bws, "init", step=step)
    if step in ("init:journaled", "init:moved"):  # rolled back: DIR holds it all again
        assert bws.run("status", check=False).returncode == 3  # (and recovers first)
        assert tree_of(bws.path) == before
        bws.run("init")
    assert _recover(bws) == []
    assert tree_of(bws.path) == before
    _assert_ignored_kept(bws)
    _not_in_layers(bws)
