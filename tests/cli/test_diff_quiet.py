"""``snapws diff --quiet`` as git's: nothing printed, the exit status says;
the global ``-q`` keeps its meaning."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Workspace, WorkspaceFactory

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
