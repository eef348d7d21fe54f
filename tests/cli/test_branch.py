"""``snapws branch`` and ``snapws tag`` (snapws/cli/cmd_branch.py): ``-d``
and ``-D`` take several names as git's (one that fails is reported and the
others are still deleted; the exit code is the first failure's), and
creating or moving a name with ``--json`` prints its document."""

from __future__ import annotations

import json

import pytest
from conftest import Workspace

from cli.test_json_schema import check
from snapws.errors import ExitCode

#: docs/json.md, `snapws branch NAME --json` and `snapws tag NAME --json`
CREATED = {
    "branch": {"branch": "str", "id": "id", "previous": "id?"},
    "tag": {"tag": "str", "id": "id", "previous": "id?"},
}


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    """Two snapshots; branches a, b, c and tags t1, t2 at HEAD."""
    (workspace.path / "f").write_text("1")
    workspace.commit("second")
    for name in ("a", "b", "c"):
        workspace.run("branch", name)
    for name in ("t1", "t2"):
        workspace.run("tag", name)
    return workspace


def names(ws: Workspace, kind: str) -> list[str]:
    key = "branches" if kind == "branch" else "tags"
    return [ref["name"] for ref in ws.json(kind)[key]]


def test_delete_several_branches(ws: Workspace) -> None:
    short = ws.head()[:12]
    r = ws.run("branch", "-d", "a", "b")
    assert r.stdout == f"Deleted branch a (was {short}).\nDeleted branch b (was {short}).\n"
    assert names(ws, "branch") == ["c", "main"]


def test_a_failure_does_not_stop_the_other_names(ws: Workspace) -> None:
    """As git: each error is reported, the others are deleted, and the
    command fails (with the first error's code: 4, no such branch)."""
    r = ws.run("branch", "-D", "a", "nosuch", "b", "main", "c", check=False)
    assert r.returncode == ExitCode.BAD_REVISION
    assert r.stdout.splitlines() == [f"Deleted branch {n} (was {ws.head()[:12]})." for n in "abc"]
    lines = r.stderr.splitlines()
    assert lines[0] == "snapws: error: no branch named 'nosuch'"
    assert lines[2].startswith("snapws: error: cannot delete branch 'main': it is checked out")
    assert [ln.startswith("hint: ") for ln in lines] == [False, True, False, True]
    assert names(ws, "branch") == ["main"]


def test_the_exit_code_is_the_first_failures(ws: Workspace) -> None:
    r = ws.run("branch", "-d", "main", "nosuch", check=False)
    assert r.returncode == ExitCode.BAD_NAME  # checked out
    assert r.stdout == ""


def test_delete_several_tags(ws: Workspace) -> None:
    ws.run("tag", "-d", "t1", "t2")
    assert names(ws, "tag") == []


def test_json_lists_each_name_deleted(ws: Workspace) -> None:
    head = ws.head()
    r = ws.run("branch", "-d", "a", "nosuch", "b", "--json", check=False)
    assert r.returncode == ExitCode.BAD_REVISION
    doc = json.loads(r.stdout)
    one = {"previous": head, "forced": False}
    assert doc == {
        "version": 1,
        "branch": "a",  # the first deleted's keys, as with one name
        **one,
        "deleted": [{"branch": "a", **one}, {"branch": "b", **one}],
    }
    doc = json.loads(ws.run("tag", "-d", "t1", "t2", "--json").stdout)
    assert doc["deleted"] == [{"tag": "t1", "previous": head}, {"tag": "t2", "previous": head}]


def test_json_of_a_delete_that_all_failed_is_nothing(ws: Workspace) -> None:
    r = ws.run("branch", "-d", "nosuch", "--json", check=False)
    assert (r.returncode, r.stdout) == (ExitCode.BAD_REVISION, "")


@pytest.mark.parametrize("kind", ["branch", "tag"])
def test_create_and_move_print_json(ws: Workspace, kind: str) -> None:
    head = ws.head()
    parent = ws.log_ids()[1]
    doc = json.loads(ws.run(kind, "new", "HEAD~1", "--json").stdout)
    check({k: v for k, v in doc.items() if k != "version"}, CREATED[kind], kind)
    assert doc == {"version": 1, kind: "new", "id": parent, "previous": None}
    doc = json.loads(ws.run(kind, "-f", "new", "--json").stdout)
    assert doc == {"version": 1, kind: "new", "id": head, "previous": parent}


def test_more_than_name_and_rev_is_a_usage_error(ws: Workspace) -> None:
    r = ws.run("branch", "x", "HEAD", "y", check=False)
    assert r.returncode == ExitCode.USAGE
    assert "unexpected extra argument (y)" in r.stderr
    assert "x" not in names(ws, "branch")
