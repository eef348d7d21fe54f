"""``snapws checkout``, ``reset`` and ``restore`` in a plain workspace:
compute the paths that differ, journal ``plain-switch`` with them, rewrite
them (:mod:`snapws.backends.plain.write`), then move refs, log, update the
index and the state (:func:`finish_switch`, idempotent, run again by
recovery)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from snapws.backends.plain.fsops import is_root
from snapws.backends.plain.headtree import seed_hashes
from snapws.backends.plain.index import Index, IndexWriter, load_index, save_index
from snapws.backends.plain.status import refresh_index, scan_workspace, snapshot_changes
from snapws.backends.plain.write import check_writable, rewrite_paths
from snapws.crash import crashpoint
from snapws.errors import BadPathError, NameExistsError, UncommittedChangesError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.diff import diff_views
from snapws.layers.entries import is_under, join
from snapws.layers.view import ChainView, HashCache
from snapws.model import ROOT, Change, ChangeType, Kind, WorkspaceState, display_path
from snapws.ops.workspace import Session
from snapws.refnames import validate_ref_name
from snapws.store.store import Store

if TYPE_CHECKING:  # the generic modules import this package lazily
    from snapws.ops.checkout import SwitchResult


def _refuse(changes: list[Change], action: str) -> UncommittedChangesError:
    from snapws.ops.checkout import _refuse as refuse

    return refuse(changes, action)


def _name(state: WorkspaceState) -> str:
    return state.branch or state.head.short()


def checkout(
    session: Session,
    target: SnapshotId,
    branch: str | None,
    create_branch: str | None = None,
    discard: bool = False,
    who: str = "",
    label: str = "",
) -> SwitchResult:
    """Switch the workspace to ``target`` (on ``branch``, or detached),
    rewriting only the paths that differ. Refuses with
    UncommittedChangesError when the directory has changes, unless
    ``discard``. Raises NameExistsError, UnsupportedError."""
    from snapws.ops.checkout import SwitchResult

    store, state = session.store, session.state
    if create_branch is not None:
        validate_ref_name("branch", create_branch)
        if store.read_ref("heads", create_branch) is not None:
            raise NameExistsError(f"a branch named {create_branch!r} already exists")
        branch = create_branch
    result, index, writer = scan_workspace(session)
    changes = result.changes
    if changes and not discard:
        refresh_index(index, writer)
        raise _refuse(changes, "check out")
    try:
        between, view = snapshot_changes(session, state.head, target, (), index)
        paths = {c.path for c in between} | {c.path for c in changes}
        check_writable(view, sorted(paths), is_root())
    except BaseException:
        refresh_index(index, writer)
        raise
    new_state = replace(state, head=target, branch=branch)
    j = _switch_journal(
        state,
        new_state,
        target,
        paths,
        _meta_only(between, changes),
        who,
        f"checkout: moving from {_name(state)} to {label or target.short()}",
    )
    j["create_ref"] = [create_branch, target.hex] if create_branch else None
    j["keep"] = [os.fsdecode(p) for p in result.ignored]
    store.write_journal(j)
    crashpoint("plain-switch:journaled")
    finish_switch(store, j, index, writer, between, view)
    session.reload()
    return SwitchResult(target, branch, state.head, changes)


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        out.append(path)
    return out


def reset(
    session: Session, target: SnapshotId, hard: bool, who: str = "", label: str = ""
) -> SwitchResult:
    """Move the current branch (or detached HEAD) to ``target``. ``hard``:
    the directory becomes exactly ``target``. Otherwise uncommitted changes
    stay (git's ``reset --keep``), refused when one of them touches a path
    that differs between HEAD and ``target``. Raises UncommittedChangesError."""
    from snapws.ops.checkout import SwitchResult

    store, state = session.store, session.state
    result, index, writer = scan_workspace(session)
    changes = result.changes
    try:
        between, view = snapshot_changes(session, state.head, target, (), index)
        if not hard and changes:
            moved = {c.path for c in between}
            moved_dirs = {a for q in moved for a in _ancestors(q)}
            clash = [
                c.path
                for c in changes
                if c.path in moved
                or c.path in moved_dirs
                or any(a in moved for a in _ancestors(c.path))
            ]
            # deleted or replaced paths of the working tree hide what REV adds below them
            hiding = {
                c.path
                for c in changes
                if c.new is None or (c.old is not None and c.old.kind is not c.new.kind)
            } | result.recreated
            clash += [q for q in moved if any(a in hiding for a in (q, *_ancestors(q)))]
            clash = sorted(set(clash))
            if clash:
                raise UncommittedChangesError(
                    "cannot reset: uncommitted changes touch paths that differ between "
                    f"HEAD and {label or target.short()}: "
                    + ", ".join(display_path(p) for p in clash[:10]),
                    [display_path(p) for p in clash],
                    hint="commit them first, or use `snapws reset --hard` to discard them",
                )
        paths = {c.path for c in between}
        if hard:
            paths |= {c.path for c in changes}
        check_writable(view, sorted(paths), is_root())
    except BaseException:
        refresh_index(index, writer)
        raise
    new_state = replace(state, head=target)
    message = f"reset: moving to {label or target.short()}"
    meta = _meta_only(between, changes if hard else [])
    j = _switch_journal(state, new_state, target, paths, meta, who, message)
    j["move_ref"] = [state.branch, target.hex] if state.branch else None
    j["keep"] = [os.fsdecode(p) for p in result.ignored]
    store.write_journal(j)
    crashpoint("plain-switch:journaled")
    finish_switch(store, j, index, writer, between, view)
    session.reload()
    return SwitchResult(target, state.branch, state.head, changes if hard else [])


def restore(session: Session, source: SnapshotId, paths: list[bytes]) -> list[bytes]:
    """Make each of ``paths`` what it is in ``source``, rewriting only what
    differs below them; the rest is untouched. A path absent from ``source``
    is an error and nothing changes. Returns ``paths``. Raises BadPathError."""
    store, state = session.store, session.state
    if ROOT in paths:
        raise BadPathError(
            "cannot restore the whole workspace",
            hint="`snapws reset --hard REV` or `snapws checkout --discard REV` does that",
        )
    view = session.chain_view(source)
    missing = [p for p in paths if view.locate(p) is None]
    if missing:
        raise BadPathError(
            f"not in snapshot {source.short()}: " + ", ".join(display_path(p) for p in missing),
            hint="`snapws show REV --name-only` lists a snapshot's changed paths; "
            "check the spelling relative to the workspace root",
        )
    result, index, writer = scan_workspace(session)
    try:
        under = tuple(paths)
        between, view = snapshot_changes(session, state.head, source, under, index)
        todo = {c.path for c in between}
        todo |= {c.path for c in result.changes if any(is_under(c.path, u) for u in under)}
        for p in paths:
            # a restored path whose parents are gone, or are not directories
            q = p
            while q != ROOT:
                q = q.rsplit(b"/", 1)[0] if b"/" in q else ROOT
                if q == ROOT:
                    break
                loc = view.locate(q)
                if loc is None or loc.node.kind is not Kind.DIR:
                    raise BadPathError(
                        f"cannot restore {display_path(p)}: {display_path(q)} is not a directory",
                        hint=f"restore {display_path(q)} itself",
                    )
                if not os.path.isdir(join(os.fsencode(state.path), q)) or os.path.islink(
                    join(os.fsencode(state.path), q)
                ):
                    todo.add(q)
        check_writable(view, sorted(todo), is_root())
    except BaseException:
        refresh_index(index, writer)
        raise
    mine = [c for c in result.changes if any(is_under(c.path, u) for u in under)]
    j = _switch_journal(state, state, source, todo, _meta_only(between, mine), "", None)
    store.write_journal(j)
    crashpoint("plain-switch:journaled")
    finish_switch(store, j, index, writer, None, view)
    session.reload()
    return paths


def _meta_only(between: list[Change], uncommitted: list[Change]) -> set[bytes]:
    """Paths whose content is the same in the working tree and the target,
    only metadata differs: rewritten by chmod/chown/xattrs, not copied."""

    def meta(c: Change) -> bool:
        return c.type is ChangeType.MODIFIED and not {"content", "target", "rdev"} & set(c.what)

    a = {c.path: meta(c) for c in between}
    b = {c.path: meta(c) for c in uncommitted}
    return {p for p, m in a.items() if m and p not in b} | {
        p for p, m in b.items() if m and p not in a
    }


def _switch_journal(
    state: WorkspaceState,
    new_state: WorkspaceState,
    source: SnapshotId,
    paths: set[bytes],
    meta_only: set[bytes],
    who: str,
    message: str | None,
) -> dict[str, Any]:
    return {
        "op": "plain-switch",
        "ws": state.id.hex,
        "source": source.hex,
        "paths": [os.fsdecode(p) for p in sorted(paths)],
        "meta_only": [os.fsdecode(p) for p in sorted(meta_only)],
        "new_state": new_state.to_json(),
        "create_ref": None,
        "move_ref": None,
        "old_head": state.head.hex,
        "who": who,
        "time_ns": time.time_ns(),
        "message": message,
        "rewritten": False,
    }


def finish_switch(
    store: Store,
    j: dict[str, Any],
    index: Index | None = None,
    writer: IndexWriter | None = None,
    between: list[Change] | None = None,
    view: ChainView | None = None,
) -> None:
    """Complete a journaled plain checkout/reset/restore (idempotent; run by
    recovery too): rewrite the journaled paths from the source snapshot
    (unless the journal says it was done), move refs, log, update the
    index and the workspace state, clear the journal."""
    wid = WorkspaceId(j["ws"])
    state = store.read_workspace(wid)
    new_state = WorkspaceState.from_json(j["new_state"])
    source = SnapshotId(j["source"])
    old_head = SnapshotId(j["old_head"])
    paths = [os.fsencode(p) for p in j["paths"]]
    try:
        if not j.get("rewritten"):
            if view is None:
                view = ChainView([os.fsencode(p) for p in store.layer_trees(source)])
            rewrite_paths(
                os.fsencode(new_state.path),
                view,
                paths,
                is_root(),
                [os.fsencode(p) for p in j.get("meta_only", ())],
                halfway=lambda: crashpoint("plain-switch:rewriting"),
                keep=[os.fsencode(p) for p in j.get("keep", ())],
            )
            crashpoint("plain-switch:rewritten")
            j = {**j, "rewritten": True}
            store.write_journal(j)
        who, msg = j["who"], j["message"]
        if j["create_ref"]:
            name, sid = j["create_ref"]
            if store.read_ref("heads", name) is None:
                created = "branch: created at " + sid[:12]
                store.write_ref("heads", name, SnapshotId(sid), who, created)
        if j["move_ref"]:
            name, sid = j["move_ref"]
            if store.read_ref("heads", name) != SnapshotId(sid):
                store.write_ref("heads", name, SnapshotId(sid), who, msg)
        crashpoint("plain-switch:ref-moved")
        if msg is not None:  # checkout and reset (not restore) move HEAD
            store.append_reflog_once(
                f"workspaces/{wid.hex}/HEAD",
                old_head,
                new_state.head,
                who,
                msg,
                int(j.get("time_ns") or time.time_ns()),
            )
        crashpoint("plain-switch:logged")
        _index_after_switch(store, new_state, old_head, paths, index, writer, between)
        writer = None
        crashpoint("plain-switch:indexed")
        if state != new_state:
            store.write_workspace(new_state)
        crashpoint("plain-switch:state-written")
    finally:
        if writer is not None:
            writer.abort()
    store.clear_journal()


def _index_after_switch(
    store: Store,
    new_state: WorkspaceState,
    old_head: SnapshotId,
    paths: list[bytes],
    index: Index | None,
    writer: IndexWriter | None,
    between: list[Change] | None,
) -> None:
    """Move the index's HEAD tree to the new HEAD and forget what the last
    scan saw of the rewritten paths."""
    wsdir = store.workspace_dir(new_state.id)
    if index is None:
        index = load_index(wsdir, old_head)
    if index is None or index.head != old_head:
        if writer is not None:
            writer.abort()
        return  # done already (or missing: the next status rebuilds it)
    if new_state.head != old_head:
        if between is None:
            hashes = HashCache()
            differing = store.unshared_layers(old_head, new_state.head)
            seed_hashes(store, differing, hashes)
            between = diff_views(
                ChainView([os.fsencode(p) for p in store.layer_trees(old_head)], hashes),
                ChainView([os.fsencode(p) for p in store.layer_trees(new_state.head)], hashes),
                [os.fsencode(store.layer_tree(x)) for x in differing],
            )
        for c in sorted(between, key=lambda c: c.path):
            index.set_head(c.path, c.new)
        index.head = new_state.head
    index.invalidate(paths)
    save_index(wsdir, index, writer)
