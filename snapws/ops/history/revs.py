"""Resolving revisions typed by people against a store and a workspace."""

from __future__ import annotations

from dataclasses import dataclass

from snapws.errors import RevisionNotFoundError
from snapws.ids import SnapshotId, is_hex_prefix
from snapws.revparse import parse_rev, resolve
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class StoreRevisions:
    """A :class:`snapws.revparse.RevisionSource` over a store, with HEAD
    taken from a workspace (or none, outside one)."""

    store: Store
    head_id: SnapshotId | None

    def head(self) -> SnapshotId | None:
        return self.head_id

    def ref(self, name: str) -> SnapshotId | None:
        return (
            self.store.read_ref("heads", name)
            or self.store.read_ref("tags", name)
            or self.store.read_ref("remotes", name)  # origin/main, as git
        )

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        return self.store.ids_with_prefix(prefix)

    def parents(self, sid: SnapshotId) -> tuple[SnapshotId, ...]:
        if self.store.is_forgotten(sid):
            raise _Forgotten(sid)
        return self.store.read_snapshot(sid).parents


class _Forgotten(Exception):
    def __init__(self, sid: SnapshotId) -> None:
        super().__init__(sid.hex)
        self.sid = sid


def _forgotten_error(text: str, sid: SnapshotId) -> RevisionNotFoundError:
    return RevisionNotFoundError(
        f"{text}: snapshot {sid.short()} was forgotten by `snapws prune` "
        "(history before it is gone)",
        hint="`snapws log` shows where the history now stops",
    )


def _forgotten_base(store: Store, text: str) -> SnapshotId | None:
    """The forgotten snapshot that ``text``'s base abbreviates, if it names
    no existing snapshot or ref."""
    try:
        base = parse_rev(text).base
    except RevisionNotFoundError:
        return None
    prefix = base.lower()
    if not is_hex_prefix(prefix) or StoreRevisions(store, None).ref(base) is not None:
        return None
    gone = store.forgotten_with_prefix(prefix)
    if len(gone) == 1 and not store.ids_with_prefix(prefix):
        return gone[0]
    return None


def resolve_rev(store: Store, head: SnapshotId | None, text: str) -> SnapshotId:
    """The snapshot ``text`` names. Raises RevisionNotFoundError (also when
    it names, or walks past, a snapshot that ``snapws prune`` forgot),
    AmbiguousRevisionError."""
    try:
        sid = resolve(text, StoreRevisions(store, head))
    except _Forgotten as e:
        raise _forgotten_error(text, e.sid) from None
    except RevisionNotFoundError:
        gone = _forgotten_base(store, text)
        if gone is not None:
            raise _forgotten_error(text, gone) from None
        raise
    if store.is_forgotten(sid):
        raise _forgotten_error(text, sid)
    return sid


def branch_named(store: Store, text: str) -> str | None:
    """``text`` if it is exactly a branch name (checkout then attaches HEAD)."""
    return text if store.read_ref("heads", text) is not None else None
