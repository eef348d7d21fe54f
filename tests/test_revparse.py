"""Revision expressions: parsing (git's grammar) and resolution against a fake store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from snapws.errors import AmbiguousRevisionError, ExitCode, RevisionNotFoundError
from snapws.ids import SnapshotId
from snapws.revparse import (
    PriorCheckout,
    RevisionSource,
    RevSpec,
    parse_rev,
    prior_checkout,
    prior_checkout_number,
    resolve,
)


def sid(label: str) -> SnapshotId:
    """A snapshot id whose hex starts with ``label`` (padded with zeros)."""
    return SnapshotId(label.ljust(32, "0"))


@dataclass
class FakeSource:
    """An in-memory store: ``history`` maps an id label to its parents' labels."""

    history: Mapping[str, tuple[str, ...]]
    head_at: str | None = None
    branches: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    prefix_queries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._graph = {sid(k): tuple(sid(p) for p in ps) for k, ps in self.history.items()}
        for parents in self._graph.values():
            assert all(p in self._graph for p in parents), "history names an unknown parent"

    def head(self) -> SnapshotId | None:
        return None if self.head_at is None else sid(self.head_at)

    def ref(self, name: str) -> SnapshotId | None:
        for table in (self.branches, self.tags):
            if name in table:
                return sid(table[name])
        return None

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        self.prefix_queries.append(prefix)
        return [s for s in self._graph if s.hex.startswith(prefix)]

    def parents(self, sid_: SnapshotId) -> tuple[SnapshotId, ...]:
        return self._graph[sid_]


#   1111 - 2222 - 3333 - 4444 - 6666 (HEAD, main) - 7777 (octopus: 6666, abcd2, 1111)
#                     \         /
#                      5555 ---' (feature)
#   abcd1 - abcd2              (a second root; "abcd" is ambiguous)
#   0123456789abcdef1, 0123456789abcdef2   (share 16 digits)
HISTORY: dict[str, tuple[str, ...]] = {
    "1111": (),
    "2222": ("1111",),
    "3333": ("2222",),
    "4444": ("3333",),
    "5555": ("3333",),
    "6666": ("4444", "5555"),
    "abcd1": (),
    "abcd2": ("abcd1",),
    "7777": ("6666", "abcd2", "1111"),
    "0123456789abcdef1": (),
    "0123456789abcdef2": (),
}


DEFAULT_BRANCHES = {"main": "6666", "feature": "5555", "ABCD": "2222", "same": "4444"}
DEFAULT_TAGS = {"v1": "2222", "same": "1111"}


def make_source(
    head_at: str | None = "6666",
    branches: Mapping[str, str] = DEFAULT_BRANCHES,
    tags: Mapping[str, str] = DEFAULT_TAGS,
) -> FakeSource:
    return FakeSource(HISTORY, head_at=head_at, branches=branches, tags=tags)


@pytest.fixture
def source() -> FakeSource:
    return make_source()


def test_fake_source_satisfies_the_protocol(source: FakeSource) -> None:
    typed: RevisionSource = source
    assert typed.head() == sid("6666")


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "base", "steps"),
    [
        ("HEAD", "HEAD", ()),
        ("@", "@", ()),
        ("main", "main", ()),
        ("feature/login", "feature/login", ()),
        ("abcd", "abcd", ()),
        ("HEAD~", "HEAD", (("~", 1),)),
        ("HEAD^", "HEAD", (("^", 1),)),
        ("HEAD~0", "HEAD", (("~", 0),)),
        ("HEAD^0", "HEAD", (("^", 0),)),
        ("HEAD~3", "HEAD", (("~", 3),)),
        ("HEAD^2", "HEAD", (("^", 2),)),
        ("HEAD~01", "HEAD", (("~", 1),)),
        ("HEAD~12", "HEAD", (("~", 12),)),
        ("@~2", "@", (("~", 2),)),
        ("HEAD^^", "HEAD", (("^", 1), ("^", 1))),
        ("HEAD~~", "HEAD", (("~", 1), ("~", 1))),
        ("HEAD~2^", "HEAD", (("~", 2), ("^", 1))),
        ("main^2~3^0", "main", (("^", 2), ("~", 3), ("^", 0))),
        ("v1.0~1", "v1.0", (("~", 1),)),
        ("a@b^", "a@b", (("^", 1),)),
    ],
)
def test_parse_rev(text: str, base: str, steps: tuple[tuple[str, int], ...]) -> None:
    assert parse_rev(text) == RevSpec(base, steps)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("~1", "does not start with HEAD, a name or an id"),
        ("^", "does not start with HEAD, a name or an id"),
        ("HEAD~x", "unexpected 'x' after 'HEAD~'"),
        ("HEAD~1x", "unexpected 'x' after 'HEAD~1'"),
        ("HEAD^-1", "unexpected '-1' after 'HEAD^'"),
        ("HEAD~2^ ", "unexpected ' ' after 'HEAD~2^'"),
        ("HEAD^{commit}", "unexpected '{commit}' after 'HEAD^'"),
        ("HEAD~\u00b2", "unexpected '\u00b2' after 'HEAD~'"),  # superscript two is not a digit
        ("HEAD~1234567890", "too large"),
        ("HEAD@{1}", "@{...} forms are not supported"),
        ("HEAD:path", "contains ':'"),
        (" HEAD", "contains ' '"),
        ("main..feature", "ranges (A..B) are not accepted"),
        ("-h", "starts with '-'"),
        ("ma*in", "contains '*'"),
    ],
)
def test_parse_rev_rejects_garbage(text: str, detail: str) -> None:
    with pytest.raises(RevisionNotFoundError) as info:
        parse_rev(text)
    message = str(info.value)
    assert message.startswith(f"bad revision {text!r}: ")
    assert detail in message
    assert "HEAD (or @), a branch or tag name, or 4 to 32 hex digits" in message
    assert "~[N] and ^[N]" in message
    assert info.value.exit_code == ExitCode.BAD_REVISION


def test_parse_rev_rejects_the_empty_string() -> None:
    with pytest.raises(RevisionNotFoundError, match=r"^empty revision; a revision is HEAD"):
        parse_rev("")


def test_syntax_errors_are_raised_before_the_store_is_asked() -> None:
    class Untouchable:
        def head(self) -> SnapshotId | None:
            raise AssertionError("asked")

        def ref(self, name: str) -> SnapshotId | None:
            raise AssertionError("asked")

        def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
            raise AssertionError("asked")

        def parents(self, sid_: SnapshotId) -> tuple[SnapshotId, ...]:
            raise AssertionError("asked")

    with pytest.raises(RevisionNotFoundError, match="bad revision 'HEAD~x'"):
        resolve("HEAD~x", Untouchable())


# ---------------------------------------------------------------- resolving


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HEAD", "6666"),
        ("@", "6666"),
        ("HEAD^0", "6666"),
        ("HEAD~0", "6666"),
        ("HEAD~", "4444"),
        ("HEAD~1", "4444"),
        ("HEAD^", "4444"),
        ("HEAD^1", "4444"),
        ("HEAD^2", "5555"),
        ("HEAD~2", "3333"),
        ("HEAD~3", "2222"),
        ("HEAD~4", "1111"),
        ("@~4", "1111"),
        ("HEAD^^", "3333"),
        ("HEAD~~~", "2222"),
        ("HEAD~2^", "2222"),
        ("HEAD^2~1", "3333"),
        ("HEAD^2^", "3333"),
        ("HEAD^2^0~2", "2222"),
        ("main", "6666"),
        ("main~1", "4444"),
        ("feature", "5555"),
        ("feature~2", "2222"),
        ("v1", "2222"),
        ("v1~", "1111"),
        ("7777^1", "6666"),
        ("7777^2", "abcd2"),
        ("7777^3", "1111"),
        ("7777^2^", "abcd1"),
        ("5555", "5555"),
        ("55550", "5555"),
        ("6666^2", "5555"),
        ("abcd1", "abcd1"),
        ("abcd2~1", "abcd1"),
        ("5555" + "0" * 28, "5555"),  # a full id
        ("0123456789abcdef1", "0123456789abcdef1"),
    ],
)
def test_resolve(source: FakeSource, text: str, expected: str) -> None:
    assert resolve(text, source) == sid(expected)


def test_names_are_looked_up_through_the_source_branch_first(source: FakeSource) -> None:
    # "same" is both a branch (4444) and a tag (1111); the source decides, as git does.
    assert resolve("same", source) == sid("4444")


def test_head_is_never_looked_up_as_a_name() -> None:
    source = make_source(branches={"HEAD": "1111", "@": "1111"})
    assert resolve("HEAD", source) == sid("6666")
    assert resolve("@", source) == sid("6666")


def test_names_win_over_id_prefixes(source: FakeSource) -> None:
    # "ABCD" is a branch; as a prefix it would be ambiguous (abcd1, abcd2).
    assert resolve("ABCD", source) == sid("2222")
    assert source.prefix_queries == []


def test_uppercase_prefix_is_matched_in_lowercase() -> None:
    source = make_source(branches={})
    assert resolve("5555", source) == resolve("5555".upper(), source) == sid("5555")
    assert resolve("ABCD1", source) == sid("abcd1")
    assert source.prefix_queries[-1] == "abcd1"


def test_fewer_than_four_hex_digits_are_not_a_prefix(source: FakeSource) -> None:
    # "abc" would match abcd1 and abcd2, but 3 digits are too few to be tried as an id.
    with pytest.raises(RevisionNotFoundError, match=r"^unknown revision 'abc'$"):
        resolve("abc", source)
    assert source.prefix_queries == []


def test_ambiguous_prefix_lists_every_candidate_sorted(source: FakeSource) -> None:
    with pytest.raises(AmbiguousRevisionError) as info:
        resolve("abcd~1", source)
    assert str(info.value) == (
        "ambiguous revision 'abcd~1': 2 snapshots start with 'abcd': abcd10000000, abcd20000000"
    )
    assert info.value.exit_code == ExitCode.BAD_REVISION
    assert "more characters" in info.value.hint


def test_ambiguous_candidates_are_shown_long_enough_to_tell_apart(source: FakeSource) -> None:
    # They share 16 digits, so the 12-digit short form would print the same text twice.
    with pytest.raises(AmbiguousRevisionError) as info:
        resolve("0123456789ab", source)
    assert str(info.value).endswith(": 0123456789abcdef1, 0123456789abcdef2")


def test_ambiguous_candidates_sorted_whatever_the_source_order() -> None:
    class Reversed(FakeSource):
        def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
            return sorted(super().ids_with_prefix(prefix), reverse=True) * 2  # and duplicated

    source = Reversed(HISTORY)
    with pytest.raises(AmbiguousRevisionError, match=r": abcd10000000, abcd20000000$"):
        resolve("abcd", source)


@pytest.mark.parametrize("text", ["nope", "nope~2", "beef", "feature/x^", "0123456789abcdef3"])
def test_unknown_revision(source: FakeSource, text: str) -> None:
    with pytest.raises(RevisionNotFoundError) as info:
        resolve(text, source)
    assert str(info.value) == f"unknown revision {text!r}"
    assert info.value.exit_code == ExitCode.BAD_REVISION


@pytest.mark.parametrize("text", ["HEAD", "@", "HEAD~1", "@^2"])
def test_head_without_snapshot(text: str) -> None:
    source = make_source(head_at=None)
    with pytest.raises(RevisionNotFoundError, match=r"^HEAD has no snapshot yet$") as info:
        resolve(text, source)
    assert "commit" in info.value.hint
    # names and ids still work before HEAD has a snapshot
    assert resolve("main", source) == sid("6666")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HEAD~5", "HEAD~5: 'HEAD' has only 4 ancestors"),
        ("HEAD~100", "HEAD~100: 'HEAD' has only 4 ancestors"),
        ("@~5", "@~5: '@' has only 4 ancestors"),
        ("HEAD~2~5", "HEAD~2~5: 'HEAD~2' has only 2 ancestors"),
        ("HEAD^2~4", "HEAD^2~4: 'HEAD^2' has only 3 ancestors"),
        ("v1~2", "v1~2: 'v1' has only 1 ancestor"),
        ("1111~", "1111~: '1111' has no ancestors (it is a root snapshot)"),
        ("HEAD~4~", "HEAD~4~: 'HEAD~4' has no ancestors (it is a root snapshot)"),
        ("HEAD^3", "HEAD^3: 'HEAD' has only 2 parents"),
        ("HEAD~^2", "HEAD~^2: 'HEAD~' has only 1 parent"),
        ("7777^4", "7777^4: '7777' has only 3 parents"),
        ("1111^", "1111^: '1111' has no parents (it is a root snapshot)"),
        ("HEAD~4^1", "HEAD~4^1: 'HEAD~4' has no parents (it is a root snapshot)"),
    ],
)
def test_walking_past_a_root(source: FakeSource, text: str, message: str) -> None:
    with pytest.raises(RevisionNotFoundError) as info:
        resolve(text, source)
    assert str(info.value) == message


def test_caret_zero_on_a_root_is_the_root_itself(source: FakeSource) -> None:
    assert resolve("1111^0", source) == sid("1111")
    assert resolve("1111~0", source) == sid("1111")


# ---------------------------------------------------------------- names that are not names


class _RefsUntouchable(FakeSource):
    def ref(self, name: str) -> SnapshotId | None:
        raise AssertionError(f"looked up {name!r}")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("/etc/passwd", "it starts with '/'"),
        ("/var/tmp/x/victim", "it starts with '/'"),
        ("/etc/passwd~1", "it starts with '/'"),
        ("a/../b", "it has a '..' component (a revision is a name, never a path)"),
        ("../../etc/passwd", "it has a '..' component"),
        ("../x", "it has a '..' component"),
        ("..", "it has a '..' component"),
        ("a/..b", "the component '..b' starts with '.'"),
        ("./main", "the component '.' starts with '.'"),
        ("a//b", "it contains '//'"),
        ("main/", "it ends with '/'"),
        ("x.lock", "ends with '.lock'"),
        ("main\x01", "contains '\\x01'"),
        ("x" * 100_000, "100000 bytes long in UTF-8; the limit is 1024"),
        ("x" * 300 + "/y", "a component is longer than 255 bytes"),
    ],
)
def test_a_base_that_is_no_ref_name_is_refused_unread(text: str, detail: str) -> None:
    """An absolute path, '..', control characters or a huge string never reach
    the store as a ref name: exit 4 with the reason, the message kept short."""
    with pytest.raises(RevisionNotFoundError) as info:
        resolve(text, _RefsUntouchable(HISTORY, "6666"))
    message = str(info.value)
    assert message.startswith("bad revision "), message
    assert detail in message
    assert len(message) < 1000
    assert info.value.exit_code == ExitCode.BAD_REVISION


def test_unknown_long_revision_message_is_shortened(source: FakeSource) -> None:
    text = "/".join(["y" * 200] * 4)  # a valid name, just unknown
    with pytest.raises(RevisionNotFoundError) as info:
        resolve(text, source)
    assert str(info.value) == f"unknown revision {text[:256]!r}... (803 characters)"


# ---- @{-N}: the N-th previous checkout (git's `checkout -`) ----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@{-1}", (1, "")),
        ("@{-12}~2", (12, "~2")),
        ("@{-1}^", (1, "^")),
        ("HEAD", None),
        ("@", None),
        ("main", None),
        ("HEAD@{1}", None),
        ("@{1}", None),
        ("@{-x}", None),
    ],
)
def test_prior_checkout_number(text: str, expected: tuple[int, str] | None) -> None:
    assert prior_checkout_number(text) == expected


def test_prior_checkout_zero_is_refused() -> None:
    with pytest.raises(RevisionNotFoundError, match="N starts at 1"):
        prior_checkout_number("@{-0}")


def test_the_other_at_brace_forms_stay_refused_and_say_which_is_accepted() -> None:
    with pytest.raises(RevisionNotFoundError, match=r"except @\{-N\}"):
        parse_rev("main@{1}")


A, B, C = (SnapshotId(c * 32) for c in "abc")


def test_prior_checkout_reads_only_checkouts_newest_first() -> None:
    moves = [  # newest first, as HEAD's reflog reads backwards
        (B, "commit: two"),
        (A, "checkout: moving from feat to main"),
        (C, "reset: moving to HEAD~1"),
        (C, f"checkout: moving from {C.short()} to feat"),
        (A, "checkout: moving from main to HEAD~1"),
    ]
    assert prior_checkout(moves, 1) == PriorCheckout("feat", A)
    assert prior_checkout(moves, 2) == PriorCheckout(None, C)  # detached: its full id
    assert prior_checkout(moves, 3) == PriorCheckout("main", A)
    assert prior_checkout(moves, 4) is None


def test_prior_checkout_of_an_empty_or_checkout_free_reflog() -> None:
    assert prior_checkout([], 1) is None
    assert prior_checkout([(A, "commit: one"), (None, "init")], 1) is None


def test_a_damaged_checkout_message_falls_back_to_the_snapshot_left() -> None:
    moves = [(A, "checkout: moving from ../../etc to main"), (B, "checkout: moving from  to x")]
    assert prior_checkout(moves, 1) == PriorCheckout(None, A)
    assert prior_checkout(moves, 2) == PriorCheckout(None, B)
