"""Text forms of library results (the JSON forms are the objects' to_json)."""

from __future__ import annotations

import posixpath
import time
from collections import Counter
from typing import Any

from snapws.model import (
    Change,
    ChangeType,
    Kind,
    ReflogEntry,
    SnapshotRecord,
    display_path,
)
from snapws.ops.history.log import LogEntry


def relative_to(path: bytes, base: bytes) -> bytes:
    """Workspace path ``path`` as seen from the workspace directory ``base``
    (both relative to the workspace root, ``b""`` for the root itself), as
    git's human status shows it: ``sub/y`` from the root, ``y`` from
    ``sub``, ``../x`` from ``sub`` for ``x``."""
    if not base:
        return path
    return posixpath.relpath(b"/" + path, b"/" + base)


def change_path(c: Change, base: bytes = b"") -> str:
    """``c``'s path for people: relative to ``base`` (:func:`relative_to`),
    quoted as git quotes odd names, ``/`` after a directory."""
    entry = c.new or c.old
    suffix = "/" if entry is not None and entry.kind is Kind.DIR else ""
    return display_path(relative_to(c.path, base)) + suffix


def change_line(c: Change, detail: bool = True, base: bytes = b"") -> str:
    """``M  path  (mode)``: the human line for ``c``, its path relative to
    ``base`` (the current directory's path in the workspace)."""
    line = f"{c.type.value}  {change_path(c, base)}"
    if detail and c.type is ChangeType.MODIFIED and c.what != ("content",):
        line += f"  ({', '.join(c.what)})"
    if detail and c.type is ChangeType.TYPE_CHANGED and c.old and c.new:
        line += f"  ({c.old.kind.name.lower()} -> {c.new.kind.name.lower()})"
    return line


def summary(changes: list[Change]) -> str:
    n = Counter(c.type for c in changes)
    parts = [f"{len(changes)} change{'s' if len(changes) != 1 else ''}"]
    names = {
        ChangeType.ADDED: "added",
        ChangeType.MODIFIED: "modified",
        ChangeType.DELETED: "deleted",
        ChangeType.TYPE_CHANGED: "type changed",
    }
    details = [f"{n[t]} {names[t]}" for t in names if n[t]]
    if details:
        parts.append("(" + ", ".join(details) + ")")
    return " ".join(parts)


def format_time(time_ns: int, tz_offset_min: int) -> str:
    """git's default date format: ``Mon Dec 7 18:05:09 2026 +0100`` (the
    day of the month not padded, as git's ``%e`` less its space)."""
    secs = time_ns // 1_000_000_000
    t = time.gmtime(secs + tz_offset_min * 60)
    sign = "+" if tz_offset_min >= 0 else "-"
    off = abs(tz_offset_min)
    day = time.strftime("%a %b", t) + f" {t.tm_mday} " + time.strftime("%H:%M:%S %Y", t)
    return day + f" {sign}{off // 60:02d}{off % 60:02d}"


def iso_time(time_ns: int, tz_offset_min: int) -> str:
    secs = time_ns // 1_000_000_000
    t = time.gmtime(secs + tz_offset_min * 60)
    sign = "+" if tz_offset_min >= 0 else "-"
    off = abs(tz_offset_min)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f"{sign}{off // 60:02d}:{off % 60:02d}"


def decorations(refs: tuple[str, ...], head: bool, branch: str | None) -> str:
    names = list(refs)
    if head:
        if branch is not None and branch in names:
            names.remove(branch)
            names.insert(0, f"HEAD -> {branch}")
        else:
            names.insert(0, "HEAD")
    return f" ({', '.join(names)})" if names else ""


def record_json(sid: str, rec: SnapshotRecord) -> dict[str, Any]:
    return {
        "id": sid,
        "parents": [p.hex for p in rec.parents],
        "layer": rec.layer.hex,
        "message": rec.message,
        "author": rec.author,
        "time": iso_time(rec.time_ns, rec.tz_offset_min),
        "time_ns": rec.time_ns,
    }


def log_entry_json(e: LogEntry) -> dict[str, Any]:
    obj = record_json(e.id.hex, e.record)
    obj["refs"] = list(e.refs)
    obj["forgotten_parents"] = [p.hex for p in e.forgotten]
    return obj


def reflog_entry_json(e: ReflogEntry) -> dict[str, Any]:
    """A move of a ref: ``id`` where it points after (null: deleted),
    ``previous`` before (null: created)."""
    return {
        "id": e.new.hex if e.new else None,
        "previous": e.old.hex if e.old else None,
        "message": e.message,
        "author": e.who,
        "time": iso_time(e.time_ns, 0),
        "time_ns": e.time_ns,
    }


def changes_json(changes: list[Change]) -> list[dict[str, Any]]:
    return [c.to_json() for c in changes]
