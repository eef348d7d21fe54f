"""A tree deeper than Python's recursion limit (about 1,900 levels of
one-letter names, paths just under PATH_MAX) and one of 10,000 levels
(paths of ~20,000 bytes, beyond PATH_MAX: no syscall takes them whole) go
through status, diff, commit, checkout, export, import and verify: every
walk is iterative, and every path beyond PATH_MAX is reached from an
ancestor's descriptor (:mod:`snapws.deeppath`, :class:`snapws.beneath.Beneath`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Workspace, run_cli

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """Remove the test's trees once its workspace is unmounted (this fixture
    is set up first, so torn down last): pytest's own clean-up of old
    temporary directories recurses, and these trees are ~2,000 and 10,000
    levels deep. ``rm -rf`` walks them without recursion limits."""
    yield
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


def _make_deep(root: Path, depth: int, content: bytes = b"deep") -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            with contextlib.suppress(FileExistsError):  # (made by an earlier call)
                os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        out = os.open("f", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        os.write(out, content)
        os.close(out)
    finally:
        os.close(fd)


def _read_deep(root: Path, depth: int) -> bytes:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        inner = os.open("f", os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(inner, 100)
        finally:
            os.close(inner)
    finally:
        os.close(fd)


def test_deepest_tree_paths_allow(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    # the longest path snapws builds: <store>/layers/<id>/tree/d/.../d/f
    prefix = len(str(ws.store)) + len("/workspaces/") + 32 + len("/upper-12345678/") + 8
    depth = (4095 - prefix - 2) // 2
    assert depth > 1500  # deeper than the recursion limit
    ws.gen({"top.txt": "top"})
    ws.commit("top")
    _make_deep(ws.path, depth)
    _commit_and_carry(ws, depth, tmp_path)


def _commit_and_carry(ws: Workspace, depth: int, tmp_path: Path) -> None:
    """Commit the deep tree, then: diff HEAD~1 HEAD lists every level,
    checkout there and back, verify, export, import into another store and
    verify there."""
    deep = ws.commit("deep")
    diff = ws.run("diff", "HEAD~1", "HEAD", "--name-only").stdout.split()
    assert len(diff) == depth + 1 and diff[-1] == "d/" * depth + "f"
    ws.run("checkout", "HEAD~1")
    assert not (ws.path / "d").exists()
    ws.run("checkout", "main")
    assert _read_deep(ws.path, depth) == b"deep"
    ws.run("verify")
    image = tmp_path / "image.tar"
    ws.run("export", "-o", image, "HEAD")
    other = tmp_path / "other-store"
    out = run_cli("--store", other, "import", image, "--json", cwd=ws.outside).stdout
    assert deep in out
    run_cli("--store", other, "verify", cwd=ws.outside)


def test_tree_deeper_than_path_max(workspace: Workspace, tmp_path: Path) -> None:
    """10,000 levels: paths of ~20,000 bytes, which no syscall takes whole;
    every verb works relative to directory fds."""
    ws = workspace
    depth = 10_000
    ws.gen({"top.txt": "top"})
    ws.commit("top")
    _make_deep(ws.path, depth)
    status = ws.run("status").stdout
    assert "d" in status
    changed = ws.run("diff", "--name-only").stdout.split()
    assert len(changed) == depth + 1 and changed[-1].endswith("/d/f")
    _commit_and_carry(ws, depth, tmp_path)
    assert ws.run("status", "--porcelain").stdout == ""
    assert not list((ws.store / "staging").iterdir())


def test_merges_of_layers_with_paths_beyond_path_max(workspace: Workspace) -> None:
    """Commits of a tree deeper than PATH_MAX (compaction runs after each),
    then a flatten: the merges reach the deep paths too (they failed with
    ENAMETOOLONG, which left a commit unfinished and the workspace
    read-only), and every snapshot still reads back."""
    ws = workspace
    ws.gen({"top.txt": "0\n"})
    ws.commit("top")
    for n in range(8):
        _make_deep(ws.path, 2_500, b"deep %d" % n)  # the same deep file, rewritten
        (ws.path / "top.txt").write_text(f"{n}\n")
        head = ws.commit(f"deep {n}")
    chain = json.loads((ws.store / "chains" / f"{head}.json").read_bytes())
    assert len(chain) < 10, chain  # init's layer and 9 commits' ones: some were merged
    ws.run("flatten", "--keep", "0")
    ws.run("verify")
    ws.run("checkout", "HEAD~4")
    assert _read_deep(ws.path, 2_500) == b"deep 3"
    ws.run("checkout", "main")
    assert _read_deep(ws.path, 2_500) == b"deep 7"
