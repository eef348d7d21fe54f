"""Pathspecs as git's default ones (snapws.pathspec)."""

from __future__ import annotations

import pytest

from snapws.pathspec import Pathspec, has_glob


@pytest.mark.parametrize(
    ("item", "path", "selected"),
    [
        (b"src", b"src", True),
        (b"src", b"src/a/b", True),
        (b"src", b"srcs", False),
        (b".", b"anything/at/all", True),
        (b"*.bin", b"x.bin", True),
        (b"*.bin", b"a/b/x.bin", True),  # * crosses '/'
        (b"*.bin", b"x.bin.txt", False),
        (b"src/*.bin", b"src/deep/x.bin", True),
        (b"src/*.bin", b"other/x.bin", False),
        (b"s?c/a", b"src/a", True),
        (b"s?c/a", b"src/a/b", False),  # a glob matching a directory: not below it, as git
        (b"[ab].txt", b"a.txt", True),
        (b"[ab].txt", b"c.txt", False),
        (b"[ab].txt", b"[ab].txt", True),  # taken literally too, as git
        (b"[!a].txt", b"b.txt", True),
    ],
)
def test_item_matches(item: bytes, path: bytes, selected: bool) -> None:
    assert Pathspec((item,)).matches(path) is selected


def test_no_items_select_everything() -> None:
    assert Pathspec(()).matches(b"x/y")
    assert Pathspec(()).roots == ()


def test_roots_are_the_literal_leading_directories() -> None:
    spec = Pathspec((b"*.bin", b"src/deep/*.py", b"docs", b"src/x?", b"a/b[c]/d"))
    assert spec.roots == (b".", b"src/deep", b"docs", b"src", b"a")
    assert spec.globs and not Pathspec((b"docs",)).globs


def test_has_glob() -> None:
    assert has_glob("*.c") and has_glob(b"a?") and has_glob("x[1]")
    assert not has_glob("plain/path.txt")
