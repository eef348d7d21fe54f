"""Reports in git's words: ``tag -f`` says "Updated tag", ``reset`` names
the snapshot's subject, ``-q`` (before or after the command) silences
"Deleted branch/tag"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Workspace, WorkspaceFactory


@pytest.fixture(scope="module")
def ws(make_module_workspace: WorkspaceFactory) -> Iterator[Workspace]:
    w = make_module_workspace(spec={"a": "a0"})
    (w.path / "a").write_text("a1")
    w.commit("first line\n\nbody")
    yield w


def test_tag_force_says_updated_as_git(ws: Workspace) -> None:
    first = ws.log_ids()[1]
    ws.run("tag", "v1", "HEAD~1")
    try:
        r = ws.run("tag", "-f", "v1")
        assert r.stdout == f"Updated tag 'v1' (was {first[:12]})\n"
        assert r.stderr == ""
        assert ws.run("-q", "tag", "-f", "v1", "HEAD~1").stdout == ""
    finally:
        ws.run("tag", "-d", "v1")


def test_reset_names_the_subject(ws: Workspace) -> None:
    head = ws.head()
    r = ws.run("reset", "HEAD")
    assert r.stdout == f"HEAD is now at {head[:12]} first line\n"


@pytest.mark.parametrize(
    "argv",
    [
        ("-q", "tag", "-d", "x"),
        ("tag", "-q", "-d", "x"),
        ("-q", "branch", "-d", "x"),
        ("branch", "-q", "-d", "x"),
        ("branch", "--quiet", "-D", "x"),
    ],
)
def test_quiet_deletes_say_nothing(ws: Workspace, argv: tuple[str, ...]) -> None:
    kind = "tag" if "tag" in argv else "branch"
    ws.run(kind, "x")
    r = ws.run(*argv)
    assert (r.stdout, r.stderr) == ("", "")
    listed = ws.json(kind)["branches" if kind == "branch" else "tags"]
    assert "x" not in [ref["name"] for ref in listed]
