"""Revision expressions, as git writes them: ``HEAD~2``, ``main^2``, ``1a2b3c4d^``.

Grammar::

    REV    := BASE SUFFIX*
    BASE   := "HEAD" | "@" (alias of HEAD) | branch or tag name | 4..32 hex digits of an id
    SUFFIX := "~" [N] | "^" [N]

``~`` alone is ``~1``, ``^`` alone is ``^1``. ``~N`` follows first parents N times;
``^N`` takes the N-th parent (``^0`` is the snapshot itself, ``^2`` a merge's second parent).

``@{-N}`` (the N-th branch or snapshot checked out before the current one, as
git's; ``checkout -`` is ``@{-1}``) is not resolved here but replaced first by
the branch name or snapshot id that HEAD's reflog names
(:func:`prior_checkout_number`, :func:`prior_checkout`).

A base that is not HEAD, ``@`` or an id prefix must be a valid ref name
(:func:`snapws.refnames.ref_name_problem`): an absolute path, ``..``, control
characters or an overlong name are refused before any ref is looked up.

Pure: the snapshots are reached through a :class:`RevisionSource`. Imports only
:mod:`snapws.errors`, :mod:`snapws.ids` and :mod:`snapws.refnames`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from snapws.errors import AmbiguousRevisionError, RevisionNotFoundError
from snapws.ids import HEX_LEN, SHORT_LEN, SnapshotId, is_hex_prefix
from snapws.refnames import ref_name_problem, shown

ACCEPTED_FORMS = (
    "a revision is HEAD (or @), a branch or tag name, or 4 to 32 hex digits of a snapshot id, "
    "followed by any number of ~[N] and ^[N] suffixes (e.g. HEAD~2, main^2, 1a2b3c4d^)"
)

_HEAD_NAMES = ("HEAD", "@")
_SUFFIX_RE = re.compile(r"([~^])([0-9]*)")
_MAX_DIGITS = 9
# Characters that can be in neither a branch/tag name nor an id (see snapws.refnames).
_BAD_BASE_CHARS = frozenset(" :?*[\\")


@dataclass(frozen=True)
class RevSpec:
    """A parsed revision: where to start, then the steps to take (``('~', n)`` or ``('^', n)``)."""

    base: str
    steps: tuple[tuple[str, int], ...]


class RevisionSource(Protocol):
    """What :func:`resolve` needs to know about a store."""

    def head(self) -> SnapshotId | None:
        """The snapshot HEAD points at; None before the first commit."""
        ...

    def ref(self, name: str) -> SnapshotId | None:
        """The snapshot a branch, else a tag, of that name points at (as git); None if
        neither. :func:`resolve` passes only valid ref names."""
        ...

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        """Every known snapshot id starting with ``prefix`` (lowercase hex)."""
        ...

    def parents(self, sid: SnapshotId) -> tuple[SnapshotId, ...]:
        """The parents of ``sid``, first parent first; empty for a root snapshot."""
        ...


def _syntax_error(text: str, reason: str) -> RevisionNotFoundError:
    return RevisionNotFoundError(f"bad revision {shown(text)}: {reason}; {ACCEPTED_FORMS}")


def _base_problem(base: str) -> str | None:
    if not base:
        return "it does not start with HEAD, a name or an id"
    for char in base:
        if ord(char) < 0x20 or ord(char) == 0x7F or char in _BAD_BASE_CHARS:
            return f"{shown(base)} contains {char!r}"
    if "@{" in base:
        return "the @{...} forms are not supported (except @{-N}, the N-th previous checkout)"
    if ".." in base.split("/"):
        return "it has a '..' component (a revision is a name, never a path)"
    if ".." in base and not any(c.startswith(".") for c in base.split("/")):
        return "ranges (A..B) are not accepted here"
    if base.startswith("-"):
        return f"{shown(base)} starts with '-'"
    if base in _HEAD_NAMES or is_hex_prefix(base.lower()):
        return None
    problem = ref_name_problem(base)
    if problem is not None:
        return f"{shown(base)} is not a valid branch or tag name: {problem}"
    return None


def _parse(text: str) -> tuple[RevSpec, list[int]]:
    """Parse ``text``; also return where each step ends in it (for error messages)."""
    if not text:
        raise RevisionNotFoundError(f"empty revision; {ACCEPTED_FORMS}")
    cut = len(text)
    for i, char in enumerate(text):
        if char in "~^":
            cut = i
            break
    base = text[:cut]
    problem = _base_problem(base)
    if problem is not None:
        raise _syntax_error(text, problem)
    steps: list[tuple[str, int]] = []
    ends: list[int] = []
    pos = cut
    while pos < len(text):
        match = _SUFFIX_RE.match(text, pos)
        if match is None:
            raise _syntax_error(text, f"unexpected {text[pos:]!r} after {text[:pos]!r}")
        op, digits = match.groups()
        if len(digits) > _MAX_DIGITS:
            raise _syntax_error(text, f"the number in {op}{digits} is too large")
        steps.append((op, int(digits) if digits else 1))
        pos = match.end()
        ends.append(pos)
    return RevSpec(base, tuple(steps)), ends


def parse_rev(text: str) -> RevSpec:
    """Parse a revision expression; RevisionNotFoundError (naming the accepted forms) if invalid.

    The base is kept as written (``@`` is not rewritten to ``HEAD``).
    """
    return _parse(text)[0]


def _abbreviations(ids: list[SnapshotId]) -> list[str]:
    """``ids`` sorted and shortened to the shortest length >= SHORT_LEN that tells them apart."""
    hexes = sorted({sid.hex for sid in ids})
    length = SHORT_LEN
    while length < HEX_LEN and len({h[:length] for h in hexes}) < len(hexes):
        length += 1
    return [h[:length] for h in hexes]


def _resolve_base(text: str, base: str, source: RevisionSource) -> SnapshotId:
    if base in _HEAD_NAMES:
        head = source.head()
        if head is None:
            raise RevisionNotFoundError(
                "HEAD has no snapshot yet", hint="make the first one with `snapws commit -m MSG`"
            )
        return head
    named = source.ref(base)
    if named is not None:
        return named
    prefix = base.lower()
    if is_hex_prefix(prefix):
        candidates = sorted(set(source.ids_with_prefix(prefix)))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = ", ".join(_abbreviations(candidates))
            raise AmbiguousRevisionError(
                f"ambiguous revision {text!r}: {len(candidates)} snapshots start with "
                f"{prefix!r}: {listed}"
            )
    raise RevisionNotFoundError(f"unknown revision {shown(text)}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def resolve(text: str, source: RevisionSource) -> SnapshotId:
    """The snapshot ``text`` names.

    Raises RevisionNotFoundError (bad syntax, unknown base, walking past a root) or
    AmbiguousRevisionError (an id prefix matching several snapshots; all are listed).
    """
    spec, ends = _parse(text)
    sid = _resolve_base(text, spec.base, source)
    start = len(spec.base)
    for (op, count), end in zip(spec.steps, ends, strict=True):
        label = text[:start]
        if op == "~":
            for done in range(count):
                parents = source.parents(sid)
                if not parents:
                    have = (
                        "no ancestors (it is a root snapshot)"
                        if done == 0
                        else f"only {_plural(done, 'ancestor')}"
                    )
                    raise RevisionNotFoundError(f"{text}: {label!r} has {have}")
                sid = parents[0]
        elif count > 0:
            parents = source.parents(sid)
            if count > len(parents):
                have = (
                    "no parents (it is a root snapshot)"
                    if not parents
                    else f"only {_plural(len(parents), 'parent')}"
                )
                raise RevisionNotFoundError(f"{text}: {label!r} has {have}")
            sid = parents[count - 1]
        start = end
    return sid


_PRIOR_RE = re.compile(r"@\{-([0-9]{1,9})\}")
_CHECKOUT_PREFIX = "checkout: moving from "


def prior_checkout_number(text: str) -> tuple[int, str] | None:
    """``(N, rest)`` when ``text`` starts with ``@{-N}`` (N >= 1), e.g.
    ``(1, "~2")`` for ``@{-1}~2``; None for any other revision. Raises
    RevisionNotFoundError for ``@{-0}``."""
    match = _PRIOR_RE.match(text)
    if match is None:
        return None
    n = int(match.group(1))
    if n == 0:
        raise _syntax_error(text, "@{-0} is not a previous checkout (N starts at 1)")
    return n, text[match.end() :]


@dataclass(frozen=True, slots=True)
class PriorCheckout:
    """Where HEAD was before a checkout: on ``branch``, or detached (None)
    at ``id`` (the snapshot HEAD left)."""

    branch: str | None
    id: SnapshotId


def prior_checkout(moves: Iterable[tuple[SnapshotId | None, str]], n: int) -> PriorCheckout | None:
    """Where HEAD was before the ``n``-th last checkout (``@{-n}``, n >= 1),
    as git finds it: from HEAD's reflog, ``moves`` being its entries newest
    first as ``(old snapshot, message)``. Only ``checkout: moving from A to
    B`` entries count (commits, resets and remounts do not); ``A`` is a
    branch name, or the short id of a detached HEAD, which ``old`` gives in
    full. None when the reflog has fewer than ``n`` checkouts."""
    seen = 0
    for old, message in moves:
        if not message.startswith(_CHECKOUT_PREFIX) or old is None:
            continue
        name = message[len(_CHECKOUT_PREFIX) :].split(" to ", 1)[0]
        seen += 1
        if seen < n:
            continue
        detached = is_hex_prefix(name) and old.hex.startswith(name)
        if detached or ref_name_problem(name) is not None:  # (a damaged message too)
            return PriorCheckout(None, old)
        return PriorCheckout(name, old)
    return None
