"""``snapws branch`` and ``snapws tag``: named pointers to snapshots.

Every function works in the branch namespace ``store`` is seen from
(:mod:`snapws.store.refs`): the workspace's, when the store comes from
:func:`snapws.ops.workspace.find_workspace`."""

from __future__ import annotations

from snapws.errors import InvalidOperationError, NameExistsError, RevisionNotFoundError
from snapws.ids import SnapshotId
from snapws.refnames import validate_ref_name
from snapws.store.store import Store

KIND = {"branch": "heads", "tag": "tags"}


def list_refs(store: Store, kind: str) -> dict[str, SnapshotId]:
    """The branches or tags (``kind``) of the store's namespace, by name."""
    return store.list_refs(KIND[kind])


def checked_out_in(store: Store, branch: str) -> list[str]:
    """The paths of the workspaces of the store's namespace that have
    ``branch`` checked out (a branch of another namespace is another one)."""
    return [
        ws.path
        for ws in store.workspaces()
        if ws.branch == branch and ws.namespace == store.namespace
    ]


def create_ref(
    store: Store, kind: str, name: str, target: SnapshotId, who: str, force: bool = False
) -> None:
    """Create branch/tag ``name`` at ``target``. Raises BadNameError,
    NameExistsError (unless ``force``)."""
    validate_ref_name(kind, name)
    if store.read_ref(KIND[kind], name) is not None:
        if not force:
            raise NameExistsError(f"a {kind} named {name!r} already exists")
        users = checked_out_in(store, name) if kind == "branch" else []
        if users:
            raise InvalidOperationError(
                f"cannot move branch {name!r}: it is checked out in {', '.join(users)}",
                hint="use `snapws reset REV` there to move the current branch",
            )
    store.write_ref(KIND[kind], name, target, who, f"{kind}: created at {target.short()}")


def delete_ref(
    store: Store, kind: str, name: str, who: str, current_branch: str | None
) -> SnapshotId:
    """Delete branch/tag ``name``; refuses the branch a workspace has checked
    out. Returns where it pointed. Raises RevisionNotFoundError,
    InvalidOperationError."""
    if kind == "branch":
        users = checked_out_in(store, name)
        if name == current_branch or users:
            raise InvalidOperationError(
                f"cannot delete branch {name!r}: it is checked out in "
                + (", ".join(users) or "this workspace"),
                hint="check out another branch first (`snapws checkout OTHER`)",
            )
    old = store.delete_ref(KIND[kind], name, who, f"{kind}: deleted")
    if old is None:
        raise RevisionNotFoundError(f"no {kind} named {name!r}", hint=f"`snapws {kind}` lists them")
    return old
