"""``snapws diff``'s arguments as git's: pathspecs (a glob, ``'*.bin'``,
matches at any depth, ``*`` crossing ``/``; a path without glob characters
is the path and what is below it), and ``--quiet`` (nothing printed, the
exit status says; the global ``-q`` keeps its meaning)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Workspace, WorkspaceFactory, run_cli

from snapws.errors import ExitCode

BASE = {
    "top.bin": "t0",
    "top.txt": "t0",
    "src": {"a.bin": "a0", "a.txt": "a0", "deep": {"b.bin": "b0", "c.py": "c0"}},
    "docs": {"x.md": "x0"},
}


@pytest.fixture(scope="module")
def ws(make_module_workspace: WorkspaceFactory) -> Iterator[Workspace]:
    """R: BASE; HEAD: every file changed; the working tree: src/a.txt again."""
    w = make_module_workspace(spec=BASE)
    w.run("tag", "R")
    for rel in ("top.bin", "top.txt", "src/a.bin", "src/a.txt", "src/deep/b.bin"):
        (w.path / rel).write_text("1")
    (w.path / "src/deep/c.py").write_text("1")
    (w.path / "docs/x.md").write_text("1")
    w.commit("c1")
    (w.path / "src/a.txt").write_text("2")
    yield w


# ---- glob pathspecs ------------------------------------------------------------


def _names(ws: Workspace, *argv: str) -> list[str]:
    return ws.run("diff", "--name-only", *argv).stdout.splitlines()


def test_a_glob_matches_at_any_depth(ws: Workspace) -> None:
    assert _names(ws, "R", "HEAD", "--", "*.bin") == ["src/a.bin", "src/deep/b.bin", "top.bin"]
    # * crosses '/', as git's default pathspecs (no FNM_PATHNAME)
    assert _names(ws, "R", "HEAD", "--", "src/*.bin") == ["src/a.bin", "src/deep/b.bin"]
    assert _names(ws, "R", "HEAD", "--", "src/deep/?.*") == ["src/deep/b.bin", "src/deep/c.py"]
    assert _names(ws, "R", "HEAD", "--", "src/[a]*") == ["src/a.bin", "src/a.txt"]
    # several pathspecs: any of them
    assert _names(ws, "R", "HEAD", "--", "*.md", "top.txt") == ["docs/x.md", "top.txt"]
    # against the working tree too
    assert _names(ws, "--", "*.txt") == ["src/a.txt"]
    assert _names(ws, "R", "--", "*.txt") == ["src/a.txt", "top.txt"]


def test_a_path_without_glob_characters_is_a_prefix(ws: Workspace) -> None:
    assert _names(ws, "R", "HEAD", "--", "src/deep") == ["src/deep/b.bin", "src/deep/c.py"]
    # not a string prefix: src/de is no directory
    assert _names(ws, "R", "HEAD", "--", "src/de") == []


def test_a_glob_is_relative_to_the_current_directory(ws: Workspace) -> None:
    out = run_cli("diff", "--name-only", "R", "HEAD", "--", "*.bin", cwd=ws.path / "src")
    assert out.stdout.splitlines() == ["src/a.bin", "src/deep/b.bin"]


def test_a_glob_given_without_dashdash_is_a_path_as_in_git(ws: Workspace) -> None:
    # git takes an argument with glob characters as a pathspec without --
    assert _names(ws, "R", "HEAD", "*.bin") == ["src/a.bin", "src/deep/b.bin", "top.bin"]


# ---- --quiet -----------------------------------------------------------------


def test_diff_quiet_prints_nothing_and_exits_1_on_differences(ws: Workspace) -> None:
    r = ws.run("diff", "--quiet", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (ExitCode.DIFFERENCES, "", "")
    r = ws.run("diff", "--quiet", "R", "HEAD", "--", "src", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (ExitCode.DIFFERENCES, "", "")
    # no differences: exit 0, still nothing
    r = ws.run("diff", "--quiet", "--", "docs")
    assert (r.stdout, r.stderr) == ("", "")
    # with any format option, still nothing
    r = ws.run("diff", "--quiet", "--stat", check=False)
    assert (r.returncode, r.stdout) == (ExitCode.DIFFERENCES, "")


def test_global_quiet_before_diff_keeps_its_meaning(ws: Workspace) -> None:
    for argv in (("-q", "diff"), ("diff", "-q")):
        r = ws.run(*argv)
        assert (r.returncode, r.stdout) == (0, "M  src/a.txt\n"), argv
