"""Resolving revisions typed by people against a store and a workspace."""

from __future__ import annotations

from dataclasses import dataclass

from snapws.ids import SnapshotId
from snapws.revparse import resolve
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
        return self.store.read_ref("heads", name) or self.store.read_ref("tags", name)

    def ids_with_prefix(self, prefix: str) -> list[SnapshotId]:
        return self.store.ids_with_prefix(prefix)

    def parents(self, sid: SnapshotId) -> tuple[SnapshotId, ...]:
        return self.store.read_snapshot(sid).parents


def resolve_rev(store: Store, head: SnapshotId | None, text: str) -> SnapshotId:
    """The snapshot ``text`` names. Raises RevisionNotFoundError,
    AmbiguousRevisionError."""
    return resolve(text, StoreRevisions(store, head))


def branch_named(store: Store, text: str) -> str | None:
    """``text`` if it is exactly a branch name (checkout then attaches HEAD)."""
    return text if store.read_ref("heads", text) is not None else None
