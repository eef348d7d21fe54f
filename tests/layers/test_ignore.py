"""Ignore rules (snapws.layers.ignore) against git's own answers: the same
patterns written as .gitignore files, the same paths asked of
``git check-ignore --no-index``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import gen

from snapws.layers.ignore import IgnoreRules, Visit, drop_ignored, ignored_in_tree, ignored_tops
from snapws.model import Change, ChangeType, Entry, Kind

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

#: (directory of the file, its lines)
FILES: dict[str, list[str]] = {
    ".": [
        "# comment",
        "",
        "*.swp",
        ".venv/",
        "/build",
        "doc/*.html",
        "!doc/keep.html",
        "**/cache/**",
        "logs/**/debug.log",
        "a?c",
        "[Tt]emp[0-9]",
        "[!x]y",
        "\\#hash",
        "\\!bang",
        "trail\\ ",
        "spaces   ",
        "out/",
        "!out/keep",
        "*.o",
        "foo/**",
        "[[:upper:]]*.up",
        "x[a-c-]z",
        "lit[",
        "deep/**/*.tmp",
        "**/gen",
        "only/",
    ],
    "sub": ["*.log", "!important.log", "/rooted", "nested/x", ".venv/"],
    "sub/inner": ["!*.swp", "local"],
    "doc": ["*.txt", "!readme.txt"],
}

DIRS = [
    ".venv",
    "a/.venv",
    "build",
    "src/build",
    "doc",
    "doc/sub",
    "cache",
    "a/cache",
    "a/cache/b",
    "logs",
    "logs/x",
    "logs/x/y",
    "sub",
    "sub/nested",
    "sub/inner",
    "sub/inner/deep",
    "out",
    "foo",
    "foo/bar",
    "deep",
    "deep/a",
    "deep/a/b",
    "gen",
    "src/gen",
    "only",
    "x/only",
    "sub/.venv",
]
FILES_ = [
    "a.swp",
    "src/b.swp",
    ".venv/lib.py",
    "a/.venv/x",
    "build/out.o",
    "src/build/z",
    "build.txt",
    "doc/a.html",
    "doc/keep.html",
    "doc/sub/a.html",
    "doc/notes.txt",
    "doc/readme.txt",
    "cache/f",
    "a/cache/b/f",
    "logs/debug.log",
    "logs/x/debug.log",
    "logs/x/y/debug.log",
    "abc",
    "a/abc",
    "abbc",
    "Temp1",
    "temp2",
    "tempx",
    "ay",
    "xy",
    "#hash",
    "!bang",
    "trail ",
    "trail",
    "spaces",
    "out/keep",
    "out/other",
    "x.o",
    "foo/a",
    "foo/bar/b",
    "foo",
    "Big.up",
    "small.up",
    "xbz",
    "x-z",
    "xdz",
    "lit[",
    "deep/a.tmp",
    "deep/a/b/c.tmp",
    "gen",
    "src/gen",
    "only",
    "x/only/f",
    "sub/a.log",
    "sub/important.log",
    "sub/rooted",
    "rooted",
    "sub/nested/x",
    "sub/x",
    "sub/inner/a.swp",
    "sub/inner/local",
    "sub/inner/deep/local",
    "sub/inner/deep/b.swp",
    "sub/.venv/f",
    "plain.txt",
]


def _rules() -> IgnoreRules:
    contents = {d.encode(): "\n".join(lines).encode() + b"\n" for d, lines in FILES.items()}
    return IgnoreRules(contents.get)


def _git_ignored(tmp_path: Path, paths: list[str]) -> set[str]:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for d, lines in FILES.items():
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / ".gitignore").write_text("\n".join(lines) + "\n")
    for d in DIRS:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    for f in FILES_:
        if not (tmp_path / f).exists():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).write_text("x")
    out = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "--no-index", "-z", "--stdin"],
        input="\0".join(paths).encode() + b"\0",
        capture_output=True,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    return {p.decode() for p in out.stdout.split(b"\0") if p}


def test_excluded_agrees_with_git_check_ignore(tmp_path: Path) -> None:
    # git tells directories from files by looking at the tree it is given
    asked = DIRS + [f for f in FILES_ if f not in DIRS]
    want = _git_ignored(tmp_path, asked)
    rules = _rules()
    got = {p for p in asked if rules.excluded(p.encode(), p in DIRS)}
    assert sorted(got - want) == [] and sorted(want - got) == []


def test_config_patterns_rank_below_the_root_file() -> None:
    rules = IgnoreRules({b".": b"!keep.tmp\n"}.get, ["*.tmp", "/scratch/"])
    assert rules.excluded(b"a.tmp", False)
    assert not rules.excluded(b"keep.tmp", False)
    assert rules.excluded(b"scratch/x", False)
    assert not rules.excluded(b"sub/scratch", True)


def test_ignored_tops_skips_tracked_paths_and_descends_once() -> None:
    rules = IgnoreRules({b".": b"*.swp\nbuild/\n"}.get)
    visits = [
        Visit(b"a.swp", Kind.FILE),  # tracked: stays tracked
        Visit(b"b.swp", Kind.FILE),
        Visit(b"build", Kind.DIR),  # tracked directory
        Visit(b"build/new", Kind.FILE),  # untracked inside an excluded dir
        Visit(b"build/old", Kind.FILE),  # tracked
        Visit(b"gone.swp", Kind.WHITEOUT),
        Visit(b"x", Kind.DIR),
        Visit(b"x/build", Kind.DIR),
        Visit(b"x/build/f", Kind.FILE),
    ]
    tracked = {b"a.swp", b"build", b"build/old", b"gone.swp"}
    tops = ignored_tops(visits, tracked.__contains__, rules)
    assert tops == [b"b.swp", b"build/new", b"x/build"]


def _added(path: bytes, kind: Kind) -> Change:
    e = Entry(path=path, kind=kind, mode=0o755 if kind is Kind.DIR else 0o644, uid=0, gid=0)
    return Change(path, ChangeType.ADDED, None, e)


def test_drop_ignored_collapses_directories_holding_only_ignored_paths() -> None:
    changes = [
        _added(b"new", Kind.DIR),
        _added(b"new/sub", Kind.DIR),
        _added(b"mixed", Kind.DIR),
        _added(b"mixed/real", Kind.FILE),
        _added(b"empty", Kind.DIR),
    ]
    tops = [b"new/sub/a.swp", b"mixed/b.swp", b"top.swp"]
    kept, ignored = drop_ignored(changes, tops)
    assert [c.path for c in kept] == [b"mixed", b"mixed/real", b"empty"]
    assert ignored == [b"mixed/b.swp", b"new", b"top.swp"]


def test_ignored_in_tree_finds_the_topmost_and_folds_directories_of_only_ignored(
    tmp_path: Path,
) -> None:
    gen(
        tmp_path,
        {
            ".snapwsignore": "*.swp\n.venv/\n!keep.swp\n",
            "a.txt": "a",
            "a.swp": "x",
            "keep.swp": "k",
            ".venv": {"lib": {"site.py": "s"}},
            "only": {"deep": {"x.swp": "x"}, "y.swp": "y"},
            "mixed": {"m.swp": "m", "m.txt": "t", "sub": {"z.swp": "z"}},
            "sub": {".snapwsignore": "local/\n", "local": {"f": "f"}, "s.txt": "s"},
        },
    )
    rules = IgnoreRules.for_tree(os.fsencode(tmp_path))
    assert ignored_in_tree(os.fsencode(tmp_path), rules) == [
        b".venv",
        b"a.swp",
        b"mixed/m.swp",
        b"mixed/sub",
        b"only",
        b"sub/local",
    ]
