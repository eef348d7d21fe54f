"""Error messages that say what is wrong, in the user's terms: a revision
with a ``..`` component, a branch name clashing with another (named), and
git's ``diff --cached`` in a tool without an index."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from conftest import Workspace, WorkspaceFactory

from snapws.errors import ExitCode


def _error(r: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """(exit code, the error line, the hint line) of a failed command."""
    lines = r.stderr.splitlines()
    assert r.stdout == "" and len(lines) == 2, (r.returncode, r.stdout, r.stderr)
    return r.returncode, lines[0].removeprefix("snapws: error: "), lines[1]


@pytest.fixture(scope="module")
def ws(make_module_workspace: WorkspaceFactory) -> Iterator[Workspace]:
    yield make_module_workspace(spec={"a": "a0"})


@pytest.mark.parametrize("rev", ["../x", "a/../b", ".."])
def test_a_dotdot_component_is_not_called_a_range(ws: Workspace, rev: str) -> None:
    code, error, _ = _error(ws.run("log", rev, check=False))
    assert code == ExitCode.BAD_REVISION
    assert error.startswith(f"bad revision {rev!r}: it has a '..' component"), error
    assert "range" not in error


def test_a_range_is_still_called_one(ws: Workspace) -> None:
    code, error, _ = _error(ws.run("log", "main..HEAD", check=False))
    assert code == ExitCode.BAD_REVISION
    assert "ranges (A..B) are not accepted here" in error


@pytest.mark.parametrize(
    ("kind", "existing", "new"),
    [("branch", "ok/name", "ok"), ("branch", "ok", "ok/name"), ("tag", "t/x/y", "t")],
)
def test_a_name_clash_names_the_other(ws: Workspace, kind: str, existing: str, new: str) -> None:
    ws.run(kind, existing)
    try:
        code, error, hint = _error(ws.run(kind, new, check=False))
        assert code == ExitCode.BAD_NAME
        group = min(existing, new, key=len)
        assert error == (
            f"cannot create {kind} {new!r}: {kind} {existing!r} exists "
            f"({group!r} cannot name both a {kind} and a group of them)"
        )
        assert hint == (
            f"hint: delete or rename {existing!r} first (`snapws {kind} -d {existing}`), "
            "or choose another name"
        )
    finally:
        ws.run(kind, "-d", existing)


@pytest.mark.parametrize("option", ["--cached", "--staged"])
def test_diff_cached_says_there_is_no_index(ws: Workspace, option: str) -> None:
    code, error, hint = _error(ws.run("diff", option, check=False))
    assert code == ExitCode.USAGE
    assert error == f"snapws has no index (no staging area), so no {option}"
    assert "`snapws diff` compares HEAD with the working tree" in hint
    assert "--patch" not in hint
