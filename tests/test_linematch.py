"""snapws.linematch: which lines of two texts match (git's counts and
placement for ordinary edits; bounded work for large or repetitive ones)."""

from __future__ import annotations

import pytest

from snapws import linematch
from snapws.linematch import find_changes, slide_down, split_lines


def lines(*words: str) -> list[bytes]:
    return [w.encode() + b"\n" for w in words]


def test_split_lines_keeps_newlines_and_an_unterminated_last_line() -> None:
    assert split_lines(b"") == []
    assert split_lines(b"a\nb") == [b"a\n", b"b"]
    assert split_lines(b"a\n\n") == [b"a\n", b"\n"]


def test_equal_texts_have_no_change() -> None:
    assert find_changes(lines("a", "b"), lines("a", "b")) == []


def test_a_replaced_line_between_kept_ones() -> None:
    assert find_changes(lines("a", "b", "c"), lines("a", "x", "c")) == [(1, 2, 1, 2)]


def test_a_missing_newline_makes_another_line() -> None:
    assert find_changes([b"a\n", b"b"], [b"a\n", b"b\n"]) == [(1, 2, 1, 2)]


def test_a_duplicated_line_is_placed_last_as_git_does() -> None:
    a, b = lines("x", "y"), lines("x", "x", "y")
    assert slide_down(find_changes(a, b), a, b) == [(1, 1, 1, 2)]


def test_large_inputs_are_cut_at_unique_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linematch, "DIRECT_MATCH_CELLS", 4)
    a = lines("u1", "p", "u2", "q", "u3")
    b = lines("u1", "P", "u2", "Q", "u3")
    assert find_changes(a, b) == [(1, 2, 1, 2), (3, 4, 3, 4)]


def test_a_large_piece_without_anchor_is_wholly_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linematch, "DIRECT_MATCH_CELLS", 4)
    a = lines("s", "a", "b", "a", "b", "e")
    b = lines("s", "b", "a", "b", "a", "e")
    assert find_changes(a, b) == [(1, 5, 1, 5)]
