"""Validation of branch and tag names (git's ``check-ref-format`` rules, plus a few of our own).

A name here is the short form, the part after ``refs/heads/`` or ``refs/tags/``; it may
contain ``/`` to group names (``feature/login``). Pure; imports only :mod:`snapws.errors`.
"""

from __future__ import annotations

from snapws.errors import BadNameError

MAX_NAME_BYTES = 200
"""Longest accepted name, in bytes of UTF-8."""

_KINDS = ("branch", "tag")
# Characters git forbids anywhere in a ref name (besides control characters and DEL).
_FORBIDDEN_CHARS = frozenset(" ~^:?*[\\")
_HEX_DIGITS = frozenset("0123456789abcdef")
_MIN_ID_PREFIX = 4
_MAX_ID_PREFIX = 32


def _looks_like_id(name: str) -> bool:
    """True if ``name`` could be read as an abbreviated snapshot id."""
    return _MIN_ID_PREFIX <= len(name) <= _MAX_ID_PREFIX and all(c in _HEX_DIGITS for c in name)


def _describe_char(char: str) -> str:
    if char == " ":
        return "a space"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"the control character {char!r}"
    return repr(char)


def _problem(name: str) -> str | None:
    """The first rule ``name`` breaks, worded for people; None if it is valid."""
    if not name:
        return "it is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long in UTF-8; the limit is {MAX_NAME_BYTES}"
    for char in name:
        if ord(char) < 0x20 or ord(char) == 0x7F or char in _FORBIDDEN_CHARS:
            return f"it contains {_describe_char(char)}"
    if "@{" in name:
        return "it contains '@{'"
    if name.startswith("/"):
        return "it starts with '/'"
    if name.endswith("/"):
        return "it ends with '/'"
    if "//" in name:
        return "it contains '//'"
    for component in name.split("/"):
        if component.startswith("."):
            return f"the component {component!r} starts with '.'"
        if component.endswith(".lock"):
            return f"the component {component!r} ends with '.lock'"
    if ".." in name:
        return "it contains '..'"
    if name.endswith("."):
        return "it ends with '.'"
    if name == "@":
        return "'@' alone means HEAD"
    if name == "HEAD":
        return "'HEAD' is reserved for the current snapshot"
    if name.startswith("-"):
        return "it starts with '-' (it would be read as an option)"
    if _looks_like_id(name):
        return (
            f"{_MIN_ID_PREFIX} to {_MAX_ID_PREFIX} lowercase hex digits "
            "would be confused with a snapshot id"
        )
    return None


def validate_ref_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid ``kind`` ("branch" or "tag") name.

    Raises :class:`BadNameError` naming the rule broken; ValueError for an unknown ``kind``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'branch' or 'tag', not {kind!r}")
    problem = _problem(name)
    if problem is not None:
        raise BadNameError(f"invalid {kind} name {name!r}: {problem}")
    return name
