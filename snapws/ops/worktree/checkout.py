"""``snapws checkout`` and ``snapws reset``: show another snapshot; one flow
for every backend. Both are one "switch": quiesce the working tree, find
its changes, refuse what would lose or clash with them, let the backend
plan how to show the target, journal, then an idempotent finish
(:func:`finish_switch`: refs, the backend's :meth:`show`, HEAD's reflog,
the state, then the new state shown, without a gap for a mount)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache

from snapws.backends import backend_for
from snapws.backends.base import NO_REWRITE, WorkChanges
from snapws.crash import crashpoint
from snapws.errors import NameExistsError, UncommittedChangesError, WorkspaceBusyError
from snapws.ids import SnapshotId
from snapws.interrupts import deferred_signals
from snapws.model import Change, WorkspaceState, display_path
from snapws.ops.journals import SwitchJournal, mark_shown
from snapws.ops.recovery import finishing
from snapws.ops.worktree.diff import snapshot_changes
from snapws.refnames import validate_ref_name
from snapws.session import Session
from snapws.store.store import Store


@dataclass(frozen=True, slots=True)
class SwitchResult:
    head: SnapshotId
    branch: str | None
    previous: SnapshotId
    discarded: list[Change]


#: What a refused switch says it was refused for (a busy workspace).
ACTION = "switch snapshots"


def uncommitted(session: Session) -> list[Change]:
    """The working tree's changes against HEAD (ignored paths are none)."""
    return backend_for(session.state).changes(session).changes


def refuse(changes: list[Change], action: str, hint: str | None = None) -> UncommittedChangesError:
    """The error for ``action`` (e.g. "check out") refused because of
    uncommitted ``changes``: lists up to 20 of them."""
    shown = [display_path(c.path) for c in changes]
    listing = "\n".join(f"  {c.type.value} {p}" for c, p in zip(changes[:20], shown, strict=False))
    more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
    return UncommittedChangesError(
        f"cannot {action}: the workspace has {len(changes)} uncommitted change(s):\n"
        f"{listing}{more}",
        shown,
        hint=hint,
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

    ``create_branch`` makes a new branch at ``target`` first. Uncommitted
    changes are carried over, as git's checkout carries them, unless one of
    them touches a path that differs between HEAD and ``target``: then
    UncommittedChangesError, nothing changed. ``discard`` throws them away
    instead. Raises NameExistsError, BadNameError, WorkspaceBusyError,
    UnsupportedError (a path this user cannot write), MountError."""
    store, state = session.store, session.state
    if create_branch is not None:
        validate_ref_name("branch", create_branch)
        if store.read_ref("heads", create_branch) is not None:
            raise NameExistsError(f"a branch named {create_branch!r} already exists")
        branch = create_branch
    message = f"checkout: moving from {_name(state)} to {label or target.short()}"

    def journal(work: WorkChanges, between: Callable[[], list[Change]]) -> SwitchJournal:
        keep = bool(work.changes) and not discard
        if keep:
            _refuse_clash(work, between(), label or target.short(), "check out")
        backend = backend_for(state)
        return SwitchJournal(
            ws=state.id,
            old_head=state.head,
            new_state=backend.next_state(state, target, branch, keep=keep, work=work),
            who=who,
            message=message,
            time_ns=time.time_ns(),
            create_ref=(create_branch, target) if create_branch else None,
            part=backend.plan_switch(session, work, target, between, keep=keep),
        )

    def clashes(work: WorkChanges, between: Callable[[], list[Change]]) -> None:
        if work.changes and not discard:
            _refuse_clash(work, between(), label or target.short(), "check out")

    rewrites = target != state.head or discard
    work = _switch(session, target, journal, rewrites, clashes)
    return SwitchResult(target, branch, state.head, work.changes if discard else [])


def reset(
    session: Session, target: SnapshotId, hard: bool, who: str = "", label: str = ""
) -> SwitchResult:
    """Move the current branch (or detached HEAD) to ``target``.

    ``hard``: the working tree becomes exactly ``target`` (uncommitted changes
    are discarded). Otherwise uncommitted changes are kept on top of
    ``target`` (git's ``reset --keep``), and the reset is refused if one of
    them touches a path that differs between HEAD and ``target``. Raises
    UncommittedChangesError, WorkspaceBusyError, MountError."""
    state = session.state

    def journal(work: WorkChanges, between: Callable[[], list[Change]]) -> SwitchJournal:
        if not hard and work.changes:
            _refuse_clash(work, between(), label or target.short(), "reset")
        backend = backend_for(state)
        return SwitchJournal(
            ws=state.id,
            old_head=state.head,
            new_state=backend.next_state(state, target, state.branch, keep=not hard, work=work),
            who=who,
            message=f"reset: moving to {label or target.short()}",
            time_ns=time.time_ns(),
            move_ref=(state.branch, target) if state.branch else None,
            part=backend.plan_switch(session, work, target, between, keep=not hard),
        )

    def clashes(work: WorkChanges, between: Callable[[], list[Change]]) -> None:
        if work.changes and not hard:
            _refuse_clash(work, between(), label or target.short(), "reset")

    work = _switch(session, target, journal, target != state.head or hard, clashes)
    return SwitchResult(target, state.branch, state.head, work.changes if hard else [])


def _refuse_clash(work: WorkChanges, between: list[Change], target: str, action: str) -> None:
    """Refuse a switch that keeps the uncommitted changes (``reset`` without
    ``--hard``, ``checkout``) when one of them touches a path that differs
    between HEAD and the target: the same path, one below the other, or one
    below what the working tree hides (a deleted path, a non-directory, an
    opaque directory), as git refuses "Your local changes would be
    overwritten". Raises UncommittedChangesError."""
    moved = {c.path for c in between}
    moved_dirs = {a for q in moved for a in _ancestors(q)}
    clash = [
        c.path
        for c in work.changes
        if c.path in moved or c.path in moved_dirs or any(a in moved for a in _ancestors(c.path))
    ]
    # a path that differs, below what the working tree hides: the hiding path
    # (a deletion, a file in place of a directory, a directory made again)
    clash += [a for q in moved for a in (q, *_ancestors(q)) if a in work.hiding]
    clash = sorted(set(clash))
    if clash:
        discard = "`snapws reset --hard`" if action == "reset" else "`--discard`"
        raise UncommittedChangesError(
            f"cannot {action}: uncommitted changes touch paths that differ between "
            f"HEAD and {target}: " + ", ".join(display_path(p) for p in clash[:10]),
            [display_path(p) for p in clash],
            hint=f"commit them first, or use {discard} to discard them",
        )


def _switch(
    session: Session,
    target: SnapshotId,
    plan: Callable[[WorkChanges, Callable[[], list[Change]]], SwitchJournal],
    rewrites: bool = True,
    clashes: Callable[[WorkChanges, Callable[[], list[Change]]], None] | None = None,
) -> WorkChanges:
    """Quiesce, find the changes, ``plan`` the journal (which refuses what
    it must: then nothing changed), write it and finish. Returns the
    changes found. ``rewrites`` False: no path of the working tree is
    rewritten (the target is HEAD, the changes stay), so a held workspace
    is not frozen (:data:`~snapws.backends.base.NO_REWRITE`). ``clashes``
    (the refusal ``plan`` makes): for a workspace that running programs
    hold, tried first on the live tree, so that a switch it refuses never
    freezes their tree (``plan`` checks again once it is quiesced)."""
    store, state = session.store, session.state
    backend = backend_for(state)
    between = cache(lambda: snapshot_changes(session, state.head, target))
    if clashes is not None and rewrites and backend.holds(store, state):
        early = backend.changes(session)
        try:
            clashes(early, between)
        finally:
            backend.release(store, state, early)
    work = None
    # from the journal on, an interrupt waits for the switch to be finished
    with ExitStack() as critical:
        try:
            action = ACTION if rewrites else NO_REWRITE
            backend.quiesce(store, state, action)  # (release thaws only what is frozen)
            work = backend.changes(session, hold=True)
            j = plan(work, between)
            critical.enter_context(deferred_signals(f"the {_verb(j)} was finished first"))
            store.write_journal(j.to_json())
        except BaseException:
            backend.release(store, state, work)
            raise
        crashpoint("checkout:journaled")
        with finishing(store, j.to_json()):  # a failure says the journal is pending
            finish_switch(store, j, work)
        session.reload()
    return work


def _verb(j: SwitchJournal) -> str:
    """The command a switch journal is of, for messages: "reset" or "checkout"."""
    return "reset" if j.message.startswith("reset:") else "checkout"


def _ancestors(path: bytes) -> list[bytes]:
    out = []
    while b"/" in path:
        path = path.rsplit(b"/", 1)[0]
        out.append(path)
    return out


def _name(state: WorkspaceState) -> str:
    return state.branch or state.head.short()


def remount_journal(state: WorkspaceState, who: str, message: str) -> SwitchJournal:
    """The journal of a switch to the same HEAD, keeping the uncommitted
    changes, on an equivalent chain (flatten, repair): no ref moves and
    HEAD's reflog gets no entry. Finish it with :func:`finish_switch` once
    the workspace is quiesced."""
    backend = backend_for(state)
    return SwitchJournal(
        ws=state.id,
        old_head=state.head,
        new_state=backend.next_state(state, state.head, state.branch, keep=True),
        who=who,
        message=message,
        time_ns=time.time_ns(),
        log=False,
    )


def settle(store: Store, state: WorkspaceState) -> WorkspaceState:
    """Show a workspace in the cheaper form its backend has for it now, if
    any (:meth:`~snapws.backends.base.Backend.settle`: an overlay workspace
    changed through its live mount while programs held it, none holding it
    now, is mounted again on HEAD's chain with an upperdir of only the
    uncommitted changes). Journaled as a switch to the same HEAD without a
    reflog entry. Returns the state now recorded; a workspace a writer
    keeps busy is left as it is. Precondition: the store lock is held
    exclusively. Raises MountError."""
    backend = backend_for(state)
    part = backend.settle(store, state)
    if part is None:
        return state
    j = SwitchJournal(
        ws=state.id,
        old_head=state.head,
        new_state=backend.next_state(state, state.head, state.branch, keep=False),
        who="",
        message="settle",
        time_ns=time.time_ns(),
        log=False,
        part=part,
    )
    with deferred_signals("the workspace's remount was finished first"):
        store.write_journal(j.to_json())
        try:
            backend.quiesce(store, state, "settle the workspace")
        except WorkspaceBusyError:
            store.clear_journal()
            return state
        crashpoint("checkout:journaled")
        finish_switch(store, j)
    return j.new_state


def finish_switch(store: Store, j: SwitchJournal, work: WorkChanges | None = None) -> None:
    """Complete a journaled switch (idempotent, run by recovery too).
    ``work``: what the switching process's backend found (None in
    recovery)."""
    state = store.read_workspace(j.ws)
    backend = backend_for(state)
    new = j.new_state
    if j.create_ref is not None:
        name, sid = j.create_ref
        if store.read_ref("heads", name) is None:
            store.write_ref("heads", name, sid, j.who, "branch: created at " + sid.hex[:12])
    if j.move_ref is not None:
        name, sid = j.move_ref
        if store.read_ref("heads", name) != sid:
            store.write_ref("heads", name, sid, j.who, j.message)
    crashpoint("checkout:ref-moved")
    if not j.shown:
        backend.show(store, state, new, j.part, work, lambda: mark_shown(store, j))
    if j.log:
        store.append_reflog_once(
            f"workspaces/{j.ws.hex}/HEAD",
            j.old_head,
            new.head,
            j.who,
            j.message,
            j.time_ns or time.time_ns(),
        )
    crashpoint("checkout:logged")
    if state != new:
        store.write_workspace(new)
    crashpoint("checkout:state-written")
    backend.ensure_shown(store, new, crash_step="checkout:beneath")
    crashpoint("checkout:shown")
    backend.sweep(store, new)  # while the journal is there (see finish_commit)
    store.clear_journal()
