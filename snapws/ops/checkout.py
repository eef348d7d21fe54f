"""``snapws checkout`` and ``snapws reset``: remount the workspace on another
snapshot's chain. Both are one "switch": freeze, journal, then an idempotent
finish (move refs, new upperdir or the kept one with a new work dir, ignored
paths carried into a new upperdir, write the state, put the new mount in
place of the frozen one without a gap, drop the discarded upperdir)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from snapws.backends import backend_for
from snapws.crash import crashpoint
from snapws.errors import NameExistsError, UncommittedChangesError
from snapws.ids import SnapshotId, WorkspaceId
from snapws.layers.diff import diff_views
from snapws.layers.scan import ignored_in_upper, plan_upper, prune_upper
from snapws.model import Change, Kind, WorkspaceState, display_path
from snapws.ops.ignoring import carriable, carry_ignored, ignore_rules
from snapws.ops.workspace import (
    Session,
    ensure_mounted,
    make_upper,
    new_dir_names,
    sweep_workspace_dir,
    top_root,
)
from snapws.refnames import validate_ref_name
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class SwitchResult:
    head: SnapshotId
    branch: str | None
    previous: SnapshotId
    discarded: list[Change]


def uncommitted(session: Session) -> list[Change]:
    """The working tree's changes against HEAD (ignored paths are none)."""
    if session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.uncommitted(session)
    return plan_upper(
        os.fsencode(session.upper),
        session.chain_view(session.state.head),
        session.upper_form,
        ignore_rules(session),
    ).changes


def _refuse(changes: list[Change], action: str) -> UncommittedChangesError:
    shown = [display_path(c.path) for c in changes]
    listing = "\n".join(f"  {c.type.value} {p}" for c, p in zip(changes[:20], shown, strict=False))
    more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
    return UncommittedChangesError(
        f"cannot {action}: the workspace has {len(changes)} uncommitted change(s):\n"
        f"{listing}{more}",
        shown,
    )


def checkout(
    session: Session,
    target: SnapshotId,
    branch: str | None,
    create_branch: str | None = None,
    discard: bool = False,
    who: str = "",
    label: str = "",
) -> SwitchResult:
    """Switch the workspace to ``target`` (on ``branch``, or detached if None).

    ``create_branch`` makes a new branch at ``target`` first. Refuses with
    UncommittedChangesError when U holds changes, unless ``discard``."""
    if session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.checkout(session, target, branch, create_branch, discard, who, label)
    store = session.store
    if create_branch is not None:
        validate_ref_name("branch", create_branch)
        if store.read_ref("heads", create_branch) is not None:
            raise NameExistsError(f"a branch named {create_branch!r} already exists")
        branch = create_branch
    changes = uncommitted(session)
    if changes and not discard:
        raise _refuse(changes, "check out")
    state = session.state
    new_upper, new_work = new_dir_names()
    new_state = replace(state, head=target, branch=branch, upper=new_upper, work=new_work)
    j = {
        "op": "switch",
        "ws": state.id.hex,
        "old_upper": state.upper,
        "keep_upper": False,
        "new_state": new_state.to_json(),
        "create_ref": [create_branch, target.hex] if create_branch else None,
        "move_ref": None,
        "old_head": state.head.hex,
        "who": who,
        "time_ns": time.time_ns(),
        "message": f"checkout: moving from {_name(state)} to {label or target.short()}",
    }
    _switch(session, j, refuse_changes=not discard)
    return SwitchResult(target, branch, state.head, changes)


def reset(
    session: Session, target: SnapshotId, hard: bool, who: str = "", label: str = ""
) -> SwitchResult:
    """Move the current branch (or detached HEAD) to ``target``.

    ``hard``: the working tree becomes exactly ``target`` (uncommitted changes
    are discarded). Otherwise uncommitted changes are kept on top of
    ``target`` (git's ``reset --keep``), and the reset is refused if one of
    them touches a path that differs between HEAD and ``target``."""
    if session.state.backend == "plain":
        from snapws.backends.plain import ops as plain_ops

        return plain_ops.reset(session, target, hard, who, label)
    store = session.store
    state = session.state
    plan = plan_upper(
        os.fsencode(session.upper),
        session.chain_view(state.head),
        session.upper_form,
        ignore_rules(session),
    )
    changes = plan.changes
    if not hard and changes:
        unshared = store.unshared_layers(state.head, target)
        dirs = [os.fsencode(store.layer_tree(x)) for x in unshared]
        between = diff_views(session.chain_view(state.head), session.chain_view(target), dirs)
        moved = {c.path for c in between}
        moved_dirs = {a for q in moved for a in _ancestors(q)}
        # a clash: the same path, or one below the other (an uncommitted
        # deletion or replacement of d hides what REV changes below d)
        clash = [
            c.path
            for c in changes
            if c.path in moved
            or c.path in moved_dirs
            or any(a in moved for a in _ancestors(c.path))
        ]
        # what stays of U (copy-ups that changed nothing are pruned by the
        # switch): its whiteouts, opaque directories and non-directories hide
        # what REV adds below them
        hiding = {n.path for n in plan.keep if n.kind is not Kind.DIR or n.opaque}
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
    if hard:
        new_upper, new_work = new_dir_names()
    else:
        new_upper, new_work = state.upper, new_dir_names()[1]
    new_state = replace(state, head=target, upper=new_upper, work=new_work)
    j = {
        "op": "switch",
        "ws": state.id.hex,
        "old_upper": state.upper,
        "keep_upper": not hard,
        "new_state": new_state.to_json(),
        "create_ref": None,
        "move_ref": [state.branch, target.hex] if state.branch else None,
        "old_head": state.head.hex,
        "who": who,
        "time_ns": time.time_ns(),
        "message": f"reset: moving to {label or target.short()}",
    }
    _switch(session, j)
    return SwitchResult(target, state.branch, state.head, changes if hard else [])


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        out.append(path)
    return out


def _name(state: WorkspaceState) -> str:
    return state.branch or state.head.short()


def _switch(session: Session, j: dict[str, Any], refuse_changes: bool = False) -> None:
    """Freeze, journal ``j`` and finish the switch. ``refuse_changes``: the
    upperdir is discarded, so check again, frozen, that it holds no change
    (a program may have written since the caller's check): refuse with
    UncommittedChangesError, thawed and changed nothing, if it does."""
    store = session.store
    target = session.path
    backend = backend_for(session.state)
    backend.freeze(target, "switch snapshots")
    try:
        if refuse_changes and not j["keep_upper"]:
            late = uncommitted(session)
            if late:
                raise _refuse(late, "check out")
        rules = ignore_rules(session)
        head_view = session.chain_view(session.state.head)
        if j["keep_upper"]:
            # copy-ups that changed nothing would show HEAD's content over the
            # target's; ignored paths stay where they are, in the kept upperdir
            plan = plan_upper(os.fsencode(session.upper), head_view, session.upper_form, rules)
            j["prune"] = [os.fsdecode(p) for p in plan.prune_around_ignored()]
        else:
            # ignored paths go into the new upperdir, unless the target has
            # something there (its tracked path wins, as in git)
            upper = os.fsencode(session.upper)
            tops = ignored_in_upper(upper, head_view, session.upper_form, rules)
            target_view = session.chain_view(WorkspaceState.from_json(j["new_state"]).head)
            j["carry"] = [os.fsdecode(p) for p in carriable(upper, tops, target_view)]
        store.write_journal(j)
    except BaseException:
        backend.thaw(target)
        raise
    crashpoint("checkout:journaled")
    finish_switch(store, j)
    session.reload()


def remount_journal(state: WorkspaceState, who: str, message: str) -> dict[str, Any]:
    """The journal of a switch to the same HEAD and upperdir on an equivalent
    chain (flatten, repair): a new work dir tells the new mount from the old
    one; no ref moves and HEAD's reflog gets no entry. Finish it with
    :func:`finish_switch` once the workspace is frozen."""
    new_state = replace(state, work=new_dir_names()[1])
    return {
        "op": "switch",
        "ws": state.id.hex,
        "old_upper": state.upper,
        "keep_upper": True,
        "new_state": new_state.to_json(),
        "create_ref": None,
        "move_ref": None,
        "old_head": state.head.hex,
        "who": who,
        "message": message,
        "log": False,
    }


def finish_switch(store: Store, j: dict[str, Any]) -> None:
    """Complete a journaled checkout/reset (idempotent, run by recovery too)."""
    wid = WorkspaceId(j["ws"])
    state = store.read_workspace(wid)
    new_state = WorkspaceState.from_json(j["new_state"])
    who, msg = j["who"], j["message"]
    if j["create_ref"]:
        name, sid = j["create_ref"]
        if store.read_ref("heads", name) is None:
            store.write_ref("heads", name, SnapshotId(sid), who, "branch: created at " + sid[:12])
    if j["move_ref"]:
        name, sid = j["move_ref"]
        if store.read_ref("heads", name) != SnapshotId(sid):
            store.write_ref("heads", name, SnapshotId(sid), who, msg)
    crashpoint("checkout:ref-moved")
    if state != new_state:
        if j.get("prune"):
            _prune_kept_upper(store.workspace_dir(wid) / new_state.upper, j["prune"])
        make_upper(store, new_state, top_root(store, new_state.head))
        if j.get("carry"):
            wsdir = store.workspace_dir(wid)
            carry_ignored(wsdir / j["old_upper"], wsdir / new_state.upper, j["carry"])
        if j.get("log", True):  # flatten's remount moves no HEAD
            store.append_reflog_once(
                f"workspaces/{wid.hex}/HEAD",
                SnapshotId(j["old_head"]),
                new_state.head,
                who,
                msg,
                int(j.get("time_ns") or time.time_ns()),
            )
        crashpoint("checkout:logged")
        store.write_workspace(new_state)
    crashpoint("checkout:state-written")
    ensure_mounted(store, new_state, crash_step="checkout:beneath")
    crashpoint("checkout:mounted")
    store.clear_journal()
    sweep_workspace_dir(store, new_state)


def _prune_kept_upper(upper: Path, prune: list[str]) -> None:
    """Drop no-op copy-ups (deepest first) from a detached upperdir that a
    reset keeps; kept directories keep their mtimes. Idempotent."""
    prune_upper(os.fsencode(upper), [os.fsencode(p) for p in prune])
