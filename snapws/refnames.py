"""Validation of ref names: git's ``check-ref-format`` rules, plus a few of our own.

A name here is the short form, the part after ``refs/heads/``, ``refs/tags/`` or
``refs/remotes/``; it may contain ``/`` to group names (``feature/login``, ``origin/v1``).

:func:`ref_name_problem` is the one place git's rules live. Every name that becomes a
path below ``<store>/refs`` passes it first, wherever it came from: typed by a user,
sent by a remote, or found in the store. A name it accepts is a relative path of
plain components: never absolute, never ``..``, no control characters, bounded in
length. :func:`validate_ref_name` adds snapws's own rules for names being created.
Pure; imports only :mod:`snapws.errors`.
"""

from __future__ import annotations

from snapws.errors import BadNameError

MAX_NAME_BYTES = 200
"""Longest name a user may create (branch, tag), in bytes of UTF-8."""

MAX_REF_BYTES = 1024
"""Longest ref name snapws reads or writes at all (remote-tracking refs included)."""

MAX_COMPONENT_BYTES = 255
"""Longest component (between slashes) of a ref name: a file name's limit."""

_KINDS = ("branch", "tag")
# Characters git forbids anywhere in a ref name (besides control characters and DEL).
_FORBIDDEN_CHARS = frozenset(" ~^:?*[\\")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")  # ids are read in any case
_MIN_ID_PREFIX = 4
_MAX_ID_PREFIX = 32


def _looks_like_id(name: str) -> bool:
    """True if ``name`` could be read as an abbreviated snapshot id (in any
    case: revisions take ids in any case, so ``A113B92E`` is one)."""
    return _MIN_ID_PREFIX <= len(name) <= _MAX_ID_PREFIX and all(c in _HEX_DIGITS for c in name)


def _describe_char(char: str) -> str:
    if char == " ":
        return "a space"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"the control character {char!r}"
    return repr(char)


def _format_problem(name: str, max_bytes: int) -> str | None:
    """The first of git's rules ``name`` breaks (with ``max_bytes`` as the length
    limit), worded for people; None if it follows them all."""
    if not name:
        return "it is empty"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > max_bytes:
        return f"it is {size} bytes long in UTF-8; the limit is {max_bytes}"
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
        if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return f"a component is longer than {MAX_COMPONENT_BYTES} bytes"
    if ".." in name:
        return "it contains '..'"
    if name.endswith("."):
        return "it ends with '.'"
    return None


def _snapws_problem(name: str) -> str | None:
    """The first of snapws's own rules for new names that ``name`` breaks."""
    if name == "@":
        return "'@' alone means HEAD"
    if name == "HEAD":
        return "'HEAD' is reserved for the current snapshot"
    if name.startswith("-"):
        return "it starts with '-' (it would be read as an option)"
    if _looks_like_id(name):
        return (
            f"{_MIN_ID_PREFIX} to {_MAX_ID_PREFIX} hex digits would be confused with a snapshot id"
        )
    return None


def ref_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a ref name (git's ``check-ref-format`` rules, at most
    :data:`MAX_REF_BYTES` bytes and :data:`MAX_COMPONENT_BYTES` per component), worded
    for people; None if it can. A name this accepts is a safe relative path: no
    absolute path, no ``.``/``..`` component, no empty component, no control
    character. Pure; never raises."""
    return _format_problem(name, MAX_REF_BYTES)


def check_ref_format(name: str) -> str:
    """Return ``name`` if :func:`ref_name_problem` accepts it; else raise
    :class:`BadNameError` naming the rule broken (the name is shortened in the message)."""
    problem = ref_name_problem(name)
    if problem is not None:
        raise BadNameError(f"invalid ref name {shown(name)}: {problem}")
    return name


def shown(text: str, limit: int = 256) -> str:
    """``repr(text)``, cut to about ``limit`` characters with its length appended
    when longer: a name or revision quoted in a message stays readable."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def validate_ref_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid ``kind`` ("branch" or "tag") name.

    The name must follow git's rules (:func:`ref_name_problem`, with the shorter limit
    :data:`MAX_NAME_BYTES`) and snapws's own: not ``@`` or ``HEAD``, no leading ``-``,
    not 4 to 32 hex digits in any case (an id). Raises :class:`BadNameError` naming the
    rule broken; ValueError for an unknown ``kind``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'branch' or 'tag', not {kind!r}")
    problem = _format_problem(name, MAX_NAME_BYTES) or _snapws_problem(name)
    if problem is not None:
        raise BadNameError(f"invalid {kind} name {shown(name)}: {problem}")
    return name
