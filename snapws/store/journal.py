"""Checking ``journal.json`` when it is read (docs/format.md, "Journal").

A journal names the operation it belongs to (``op``) and every name the
recovery will use: directories inside the store, ids, a workspace record
to reach. Each field that recovery reads is checked here before any of it
is acted on, so that a damaged journal is reported (naming the field), never
followed out of the store or into a TypeError. Fields this module does not
know are left to the operation (journals may grow fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from snapws.ids import Digest
from snapws.model import SnapshotRecord, WorkspaceState, dir_name_problem, namespace_problem

OPS = ("init", "commit", "switch", "prune", "gc", "plain-commit", "plain-switch", "eject")

Check = Callable[[Any], str | None]  # None: fine, else what is wrong


def _is_id(v: Any) -> str | None:
    if not isinstance(v, str):
        return "is not an id"
    try:
        Digest(v)
    except ValueError:
        return "is not a 32-digit hex id"
    return None


def _opt(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _is_name(v: Any) -> str | None:
    if not isinstance(v, str):
        return "is not a name"
    return dir_name_problem(v)


def _is_str(v: Any) -> str | None:
    return None if isinstance(v, str) else "is not a string"


def _is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "is not true or false"


def _is_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) else "is not an integer"


def _is_number(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    return None if ok else "is not a number"


def _list_of(check: Check) -> Check:
    def run(v: Any) -> str | None:
        if not isinstance(v, list):
            return "is not a list"
        for item in v:
            problem = check(item)
            if problem is not None:
                return f"holds an item that {problem}"
        return None

    return run


def _is_rel_path(v: Any) -> str | None:
    if not isinstance(v, str) or not v or v.startswith("/") or "\0" in v:
        return "is not a relative path"
    if ".." in v.split("/"):
        return "climbs out of the workspace ('..')"
    return None


def _is_ref_move(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2 or not isinstance(v[0], str):
        return "is not [branch, snapshot id] or null"
    return _is_id(v[1])


def _is_state(v: Any) -> str | None:
    try:
        WorkspaceState.from_json(v)
    except ValueError as e:
        return f"is not a workspace record ({e})"
    return None


def _is_record(v: Any) -> str | None:
    if not isinstance(v, str):
        return "is not a snapshot record"
    try:
        SnapshotRecord.from_canonical(v.encode())
    except (ValueError, UnicodeError) as e:
        return f"is not a snapshot record ({e})"
    return None


def _is_namespace(v: Any) -> str | None:
    if not isinstance(v, str):
        return "is not a string"
    if v and namespace_problem(v) is not None:
        return "is not a namespace name"
    return None


#: Fields of a workspace backend's part of a journal (``part``).
_PART: dict[str, Check] = {
    "upper": _is_name,
    "new_upper": _is_name,
    "new_work": _is_name,
    "carry_from": _is_name,
    "ignored_from": _is_name,
    "ignored": _list_of(_is_rel_path),
    "index_staging": _is_name,
    "prune": _list_of(_is_rel_path),
    "prune_kept": _list_of(_is_rel_path),
    "carry": _list_of(_is_rel_path),
    "paths": _list_of(_is_rel_path),
    "meta_only": _list_of(_is_rel_path),
    "keep": _list_of(_is_rel_path),
}


def _part_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping):
        return "is not an object"
    for key, check in _PART.items():
        if key in v:
            problem = check(v[key])
            if problem is not None:
                return f"has a field {key!r} that {problem}"
    return None


_COMMON: dict[str, Check] = {
    "ws": _is_id,
    "staging": _is_name,
    "index_staging": _is_name,
    "upper": _is_name,
    "work": _is_name,
    "new_upper": _is_name,
    "new_work": _is_name,
    "old_upper": _is_name,
    "layer": _opt(_is_id),
    "snapshot": _opt(_is_id),
    "old_head": _opt(_is_id),
    "chain": _list_of(_is_id),
    "forget": _list_of(_is_id),
    "layers": _list_of(_is_id),
    "prune": _list_of(_is_rel_path),
    "record": _is_record,
    "new_state": _opt(_is_state),
    "state": _is_state,
    "part": lambda v: _part_problem(v),
    "shown": _is_bool,
    "log": _is_bool,
    "create_ref": _is_ref_move,
    "move_ref": _is_ref_move,
    "branch": _opt(_is_str),
    "path": _is_str,
    "keep_upper": _is_bool,
    "time_ns": _is_int,
    "tz": _is_int,
    "max_depth": _opt(_is_int),
    "grace": _opt(_is_number),
    "message": _opt(_is_str),
    "author": _is_str,
    "source": _is_id,
    "paths": _list_of(_is_rel_path),
    "meta_only": _list_of(_is_rel_path),
    "who": _is_str,
    "namespace": _is_namespace,
}

#: Fields each operation's recovery cannot do without.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "init": ("ws", "path", "staging"),
    "commit": ("ws", "staging", "layer", "record", "chain"),
    "switch": ("ws", "new_state"),
    "prune": ("forget",),
    "gc": ("layers",),
    "plain-commit": ("ws",),
    "plain-switch": ("ws",),
    "eject": ("ws", "path"),
}


def journal_problem(obj: Any) -> str | None:
    """What is wrong with a parsed journal (None: it can be recovered from)."""
    if not isinstance(obj, Mapping):
        return "it is not a JSON object"
    op = obj.get("op")
    if op not in OPS:
        return f"it names an unknown operation {op!r}"
    for key in _REQUIRED[op]:
        if key not in obj:
            return f"its {op} journal has no {key!r} field"
    for key, check in _COMMON.items():
        if key in obj:
            problem = check(obj[key])
            if problem is not None:
                return f"its field {key!r} {problem}"
    return None
