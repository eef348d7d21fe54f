"""``snapws branch`` and ``snapws tag``: named pointers to snapshots.

Every function works in the branch namespace ``store`` is seen from
(:mod:`snapws.store.refs`): the workspace's, when the store comes from
:func:`snapws.ops.workspace.find_workspace`."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

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
    else:
        _refuse_path_clash(store, kind, name)
        users = checked_out_in(store, name) if kind == "branch" else []
        if users:
            raise InvalidOperationError(
                f"cannot move branch {name!r}: it is checked out in {', '.join(users)}",
                hint="use `snapws reset REV` there to move the current branch",
            )
    store.write_ref(KIND[kind], name, target, who, f"{kind}: created at {target.short()}")


def _refuse_path_clash(store: Store, kind: str, name: str) -> None:
    """Raise NameExistsError naming the existing ``kind`` that ``name``
    cannot live beside, as git's "'refs/heads/a/b' exists; cannot create
    'refs/heads/a'": one below it (``a/b`` for ``a``) or above it (``a``
    for ``a/b``), since a name is a file and ``/`` makes directories."""
    for other in list_refs(store, kind):
        if other.startswith(name + "/") or name.startswith(other + "/"):
            group = min(name, other, key=len)
            raise NameExistsError(
                f"cannot create {kind} {name!r}: {kind} {other!r} exists "
                f"({group!r} cannot name both a {kind} and a group of them)",
                hint=f"delete or rename {other!r} first (`snapws {kind} -d {other}`), "
                "or choose another name",
            )


@dataclass(frozen=True, slots=True)
class DeletedRef:
    """A branch or tag :func:`delete_ref` removed: where it pointed
    (``previous``), whether the merge check was skipped (``forced``), and for
    a branch deleted without force what held its snapshot: ``"HEAD"``, or a
    remote-tracking ref (``origin/NAME``) when only that did (git's upstream:
    the caller warns then, as git does)."""

    kind: str
    name: str
    previous: SnapshotId
    forced: bool = False
    merged_into: str | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {self.kind: self.name, "previous": self.previous.hex}
        if self.kind == "branch":
            doc["forced"] = self.forced
        return doc


def upstream_refs(store: Store, branch: str) -> list[str]:
    """The remote-tracking refs that stand for ``branch``'s upstream: snapws
    records no upstream per branch, but push and pull pair a branch with the
    remote tag named like it (``/`` becomes ``-``), so ``REMOTE/TAG`` of every
    remote of the namespace that has fetched or pushed that tag."""
    tag = branch.replace("/", "-")
    return sorted(name for name in store.list_refs("remotes") if name.partition("/")[2] == tag)


def merged_into(store: Store, sid: SnapshotId, head: SnapshotId, branch: str) -> str | None:
    """Where snapshot ``sid`` (branch ``branch``'s) is merged, as ``git branch
    -d`` decides: ``"HEAD"`` when it is ``head`` or one of its ancestors, else
    the first of :func:`upstream_refs` that holds it, else None. The walks
    follow parents iteratively and stop at ``sid`` (or at snapshots the store
    lacks or ``prune`` forgot), so an unmerged branch costs one walk of
    ``head``'s history."""
    # not at the top: fastforward reads OCI manifests too, which listing
    # branches does not need to import
    from snapws.ops.history.fastforward import is_ancestor

    if is_ancestor(store, sid, head):
        return "HEAD"
    remotes = store.list_refs("remotes")
    for ref in upstream_refs(store, branch):
        if is_ancestor(store, sid, remotes[ref]):
            return ref
    return None


def delete_ref(
    store: Store,
    kind: str,
    name: str,
    who: str,
    current_branch: str | None,
    head: SnapshotId,
    force: bool = False,
) -> DeletedRef:
    """Delete branch/tag ``name``. A branch is refused when a workspace has
    it checked out (even with ``force``), and, unless ``force``, when its
    snapshot is not merged (:func:`merged_into` ``head``, this workspace's
    HEAD, or its upstream), as git's ``branch -d`` refuses; a tag is deleted
    freely. Raises RevisionNotFoundError (no such ref), InvalidOperationError
    (refused; nothing changed)."""
    if kind == "branch":
        users = checked_out_in(store, name)
        if name == current_branch or users:
            raise InvalidOperationError(
                f"cannot delete branch {name!r}: it is checked out in "
                + (", ".join(users) or "this workspace"),
                hint="check out another branch first (`snapws checkout OTHER`)",
            )
    old = store.read_ref(KIND[kind], name)
    if old is None:
        raise RevisionNotFoundError(f"no {kind} named {name!r}", hint=f"`snapws {kind}` lists them")
    where = None
    if kind == "branch" and not force:
        where = merged_into(store, old, head, name)
        if where is None:
            also = "".join(f" nor in {ref}'s" for ref in upstream_refs(store, name))
            raise InvalidOperationError(
                f"the branch {name!r} is not fully merged: its snapshot {old.short()} "
                f"is not in HEAD's history{also}",
                hint="if you are sure you want to delete it, run "
                f"`snapws branch -D {shlex.quote(name)}`",
            )
    gone = store.delete_ref(KIND[kind], name, who, f"{kind}: deleted")
    if gone is None:  # pragma: no cover - the caller holds the store's exclusive lock
        raise RevisionNotFoundError(f"no {kind} named {name!r}", hint=f"`snapws {kind}` lists them")
    return DeletedRef(kind, name, gone, force and kind == "branch", where)
