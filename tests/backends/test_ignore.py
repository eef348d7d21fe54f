"""Ignored paths (.snapwsignore, config ``ignore``) on every backend root
runs: never committed, kept in place across commit, checkout and reset, a
tracked path stays tracked, and ``status --ignored`` agrees with git's
``status --porcelain --ignored`` on the same tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace
from helpers import Spec, gen

from backends.conftest import ROOT_BACKENDS, BackendFactory

pytestmark = pytest.mark.root

BASE: Spec = {"a.txt": "a\n", "tracked.swp": "t\n", "sub": {"s.txt": "s\n"}, "old": {"f": "f\n"}}
ROOT_RULES = "*.swp\n.venv/\n!keep.swp\n"
SUB_RULES = "local/\n!b.swp\n"
#: untracked content that the rules ignore (path -> text)
IGNORED = {
    ".venv/lib/site.py": "x\n",
    ".venv/bin/python": "py\n",
    "a.swp": "swap\n",
    "sub/local/z": "z\n",
    "newdir/deep/c.swp": "c\n",  # a new directory holding only ignored paths
}


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _names(ws: Workspace, rev: str) -> list[str]:
    return [
        ln.split("\t", 1)[-1] for ln in ws.run("show", "--name-status", rev).stdout.splitlines()
    ]


def _setup(make: BackendFactory, backend: str) -> Workspace:
    ws = make(backend, spec=BASE)
    gen(ws.path, {".snapwsignore": ROOT_RULES, "sub": {".snapwsignore": SUB_RULES}})
    gen(ws.path, {"keep.swp": "keep\n", "sub": {"b.swp": "b\n"}})
    for rel, text in IGNORED.items():
        (ws.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.path / rel).write_text(text)
    (ws.path / "tracked.swp").write_text("t2\n")  # tracked: stays tracked
    return ws


def _assert_ignored_present(ws: Workspace) -> None:
    files = _files(ws.path)
    for rel, text in IGNORED.items():
        assert files.get(rel) == text, rel


@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_ignored_paths_are_not_committed_and_stay(
    make_backend_workspace: BackendFactory, backend: str
) -> None:
    ws = _setup(make_backend_workspace, backend)
    assert sorted(ws.porcelain()) == sorted(
        [
            " M tracked.swp",
            "?? .snapwsignore",
            "?? keep.swp",
            "?? sub/.snapwsignore",
            "?? sub/b.swp",
        ]
    )
    diffed = ws.run("diff", "--name-only").stdout.split()
    assert sorted(diffed) == [
        ".snapwsignore",
        "keep.swp",
        "sub/.snapwsignore",
        "sub/b.swp",
        "tracked.swp",
    ]
    s1 = ws.commit("with ignore rules")
    shown = _names(ws, s1)
    assert all(".venv" not in n and "local" not in n and "newdir" not in n for n in shown), shown
    assert "a.swp" not in shown and "tracked.swp" in shown and "keep.swp" in shown
    _assert_ignored_present(ws)
    assert ws.porcelain() == []
    ignored = ws.run("status", "--porcelain", "--ignored").stdout.splitlines()
    assert ignored == ["!! .venv/", "!! a.swp", "!! newdir/", "!! sub/local/"]
    human = ws.run("status", "--ignored").stdout
    assert "Ignored files:\n  .venv/\n" in human

    ws.run("checkout", "-b", "other")
    _assert_ignored_present(ws)
    (ws.path / "o.txt").write_text("o\n")
    s2 = ws.commit("on other")
    ws.run("checkout", "main")
    _assert_ignored_present(ws)
    assert not (ws.path / "o.txt").exists()
    ws.run("checkout", "--detach", s2)
    _assert_ignored_present(ws)
    ws.run("reset", "--hard", s1)
    _assert_ignored_present(ws)
    (ws.path / "a.txt").write_text("changed\n")
    ws.run("checkout", "--discard", "main")
    _assert_ignored_present(ws)
    assert (ws.path / "a.txt").read_text() == "a\n"
    ws.run("reset", s2)  # keeps the working tree (git's reset --keep)
    _assert_ignored_present(ws)
    assert ws.porcelain() == []


@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_a_directory_removed_by_checkout_keeps_its_ignored_files(
    make_backend_workspace: BackendFactory, backend: str
) -> None:
    ws = make_backend_workspace(backend, spec={**BASE, ".snapwsignore": "*.swp\n"})
    s0 = ws.head()
    shutil.rmtree(ws.path / "old")
    s1 = ws.commit("old is gone")
    ws.run("checkout", "--detach", s0)
    (ws.path / "old" / "o.swp").write_text("o\n")
    ws.run("checkout", "--detach", s1)  # as git, the ignored file stays
    assert _files(ws.path / "old") == {"o.swp": "o\n"}
    assert ws.porcelain() == []
    # (tracked.swp was ignored when init made the base layer: never tracked)
    assert ws.run("status", "--porcelain", "--ignored").stdout == "!! old/\n!! tracked.swp\n"


@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_config_patterns_and_the_tracked_rule(
    make_backend_workspace: BackendFactory, backend: str, tmp_path: Path
) -> None:
    config = tmp_path / "snapws.toml"
    config.write_text('ignore = ["*.log", "build/"]\n')
    env = {"SNAPWS_CONFIG": str(config)}
    ws = make_backend_workspace(backend, spec={**BASE, "build": {"tracked.o": "o\n"}})
    gen(ws.path, {"run.log": "l\n", "build": {"new.o": "n\n"}, ".snapwsignore": "!run.log\n"})
    (ws.path / "build" / "tracked.o").write_text("o2\n")
    out = ws.run("status", "--porcelain", "--ignored", env=env).stdout.splitlines()
    # the root file re-includes run.log; build/ is tracked, but new files in it are ignored
    assert out == [" M build/tracked.o", "?? .snapwsignore", "?? run.log", "!! build/new.o"]
    ws.run("commit", "-m", "x", env=env)
    assert (ws.path / "build" / "new.o").read_text() == "n\n"
    assert ws.run("status", "--porcelain", env=env).stdout == ""


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_status_ignored_agrees_with_git(
    make_backend_workspace: BackendFactory, backend: str, tmp_path: Path
) -> None:
    ws = _setup(make_backend_workspace, backend)
    mine = ws.run("status", "--porcelain", "--ignored").stdout.replace(
        ".snapwsignore", ".gitignore"
    )
    repo = tmp_path / "git"
    gen(repo, BASE)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    gen(repo, {".gitignore": ROOT_RULES, "sub": {".gitignore": SUB_RULES}})
    gen(repo, {"keep.swp": "keep\n", "sub": {"b.swp": "b\n"}})
    for rel, text in IGNORED.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "tracked.swp").write_text("t2\n")
    theirs = subprocess.run(
        [*git, "status", "--porcelain", "--ignored"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert sorted(mine.splitlines()) == sorted(theirs.splitlines())


@pytest.mark.parametrize("backend", ROOT_BACKENDS)
def test_init_leaves_ignored_paths_out_of_the_base_layer(
    make_backend_workspace: BackendFactory, backend: str
) -> None:
    spec: Spec = {
        **BASE,
        ".snapwsignore": ROOT_RULES,
        "keep.swp": "keep\n",
        ".venv": {"lib": {"site.py": "x\n"}, "bin": {"python": "py\n"}},
        "a.swp": "swap\n",
        "sub": {"s.txt": "s\n", ".snapwsignore": SUB_RULES, "local": {"z": "z\n"}},
    }
    ws = make_backend_workspace(backend, spec=spec)
    base = _names(ws, "HEAD")
    assert ".venv/lib/site.py" not in base and "a.swp" not in base and "sub/local/z" not in base
    assert "keep.swp" in base and "sub/s.txt" in base  # (!keep.swp)
    assert "tracked.swp" not in base  # ignored as a.swp is: nothing is tracked yet
    assert ws.porcelain() == []  # ignored, and still where they were
    assert (ws.path / ".venv" / "lib" / "site.py").read_text() == "x\n"
    assert (ws.path / "sub" / "local" / "z").read_text() == "z\n"
    ignored = ws.run("status", "--ignored", "--porcelain").stdout.splitlines()
    assert {"!! .venv/", "!! a.swp", "!! sub/local/"} <= set(ignored), ignored
    (ws.path / "a.txt").write_text("a2\n")
    ws.run("commit", "-m", "x")
    assert _names(ws, "HEAD") == ["a.txt"]
    assert (ws.path / "a.swp").read_text() == "swap\n"
