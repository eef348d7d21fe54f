"""An empty revision (``''``) is refused by every command that takes one,
with exit 4 and "empty revision" (never read as HEAD or as the current
directory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Workspace, WorkspaceFactory

from snapws.errors import ExitCode


@pytest.fixture(scope="module")
def ws(make_module_workspace: WorkspaceFactory) -> Iterator[Workspace]:
    w = make_module_workspace(spec={"a": "a0"})
    (w.path / "a").write_text("a1")
    w.commit("c1")
    (w.path / "a").write_text("a2")
    yield w


@pytest.mark.parametrize(
    "argv",
    [
        ("checkout", ""),
        ("checkout", "--detach", ""),
        ("checkout", "-b", "nb", ""),
        ("diff", ""),
        ("diff", "", ""),
        ("diff", "", "--"),
        ("diff", "HEAD", ""),
        ("reset", ""),
        ("log", ""),
        ("show", ""),
        ("reflog", ""),
        ("restore", "-s", "", "a"),
        ("branch", "x", ""),
        ("tag", "x", ""),
    ],
)
def test_empty_revision_is_refused(ws: Workspace, argv: tuple[str, ...]) -> None:
    head, state = ws.head(), ws.json("status")
    r = ws.run(*argv, check=False)
    assert r.returncode == ExitCode.BAD_REVISION, (r.stdout, r.stderr)
    assert r.stderr.startswith("snapws: error: empty revision; "), r.stderr
    assert r.stdout == ""
    # nothing moved
    assert ws.head() == head and ws.json("status") == state
    assert (ws.path / "a").read_text() == "a2"


def test_push_of_an_empty_revision_is_refused(make_workspace: WorkspaceFactory) -> None:
    w = make_workspace(spec={"a": "a0"})
    image = w.path.parent / "image"
    w.run("remote", "add", "r", f"dir:{image}")
    r = w.run("push", "r", "", check=False)
    assert r.returncode == ExitCode.BAD_REVISION, (r.stdout, r.stderr)
    assert r.stderr.startswith("snapws: error: empty revision; "), r.stderr
    assert not image.exists()
