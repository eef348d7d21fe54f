"""Finishing or rolling back an operation interrupted by a crash.

Every mutating operation writes ``journal.json`` before its first
irreversible step; the next snapws command (under the exclusive lock) reads
it here and completes the operation, or undoes it where nothing was
published yet."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from snapws.errors import (
    ForeignFilesError,
    MountError,
    PermissionDeniedError,
    SnapwsError,
    StoreCorruptError,
    StoreFullError,
    StorePermissionError,
    StoreUnwritableError,
    UnsafePathError,
    UnsupportedError,
    environment_error,
    unfinished_operation,
    user_name,
)
from snapws.ops.journals import CommitJournal, InitJournal, SwitchJournal, parse
from snapws.store.lock import foreign_entry
from snapws.store.store import Store


def recover(store: Store) -> str | None:
    """Complete or roll back the journaled operation, if any. Returns a short
    description of what was done (None: nothing to do).

    Precondition: the caller holds the store lock exclusively. Raises
    UnfinishedOperationError when finishing fails for a cause that stays
    (a file this user may not change, a full or read-only store...): it
    names the operation and the cause, and says how to give it up."""
    j = store.read_journal()
    if j is None:
        with _naming_foreign_files(store):
            _sweep(store)
        return None
    store = store.in_namespace(store.journal_namespace(j))  # refs of the journal's workspace
    with finishing(store, j, interrupted=True):
        done = _finish(store, j)
    with _naming_foreign_files(store):
        _sweep(store)
    return done


def foreign_files_error(store: Store, e: BaseException) -> ForeignFilesError | None:
    """When ``e`` (or its cause) is a permission error and the store holds a
    file or directory of another user (:func:`snapws.store.lock.foreign_entry`:
    root's, left by a command root ran in this user's store), the error that
    names it and the chown that gives it back; else None."""
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if not any(
        isinstance(x, PermissionError | PermissionDeniedError | StorePermissionError) for x in chain
    ):
        return None
    named = next(
        (
            os.fsdecode(x.filename)
            for x in chain
            if isinstance(x, OSError) and isinstance(x.filename, str | bytes)
        ),
        None,
    )
    found = foreign_entry(store.root, named)
    if found is None:
        return None
    path, uid = found
    me = os.geteuid()
    try:
        import pwd

        name = pwd.getpwuid(me).pw_name
    except KeyError:
        name = str(me)
    return ForeignFilesError(
        f"permission denied: the store {store.root} holds {path}, owned by {user_name(uid)}, "
        f"not by the store's owner {user_name(me)} (left by a snapws command run as that "
        "user in this store); snapws cannot change or remove it",
        hint=f"give the store's files back: `sudo chown -R {name} {store.root}`, then run the "
        "command again",
    )


@contextmanager
def _naming_foreign_files(store: Store) -> Iterator[None]:
    """Within: a permission error caused by another user's file in the
    store becomes the ForeignFilesError naming it."""
    try:
        yield
    except (OSError, PermissionDeniedError, StorePermissionError) as e:
        named = foreign_files_error(store, e)
        if named is None:
            raise
        raise named from e


#: Errors that finishing a journal hits again on every try until their cause
#: is removed (reported as UnfinishedOperationError, naming the operation).
UNFINISHABLE = (
    PermissionDeniedError,
    StoreUnwritableError,
    StoreFullError,
    UnsupportedError,
    MountError,
    UnsafePathError,
)


@contextmanager
def finishing(store: Store, j: dict[str, Any], interrupted: bool = False) -> Iterator[None]:
    """Around the finish of the journaled operation ``j`` (a command's own,
    or, ``interrupted``, a later command's recovery): an error that would
    stop every later try too (see :data:`UNFINISHABLE`) becomes an
    UnfinishedOperationError saying that the journal is pending and what
    to do."""
    try:
        yield
    except OSError as e:
        cause = foreign_files_error(store, e) or environment_error(e)
        if cause is None:
            raise
        raise _unfinished(store, j, cause, interrupted) from e
    except UNFINISHABLE as e:
        raise _unfinished(store, j, foreign_files_error(store, e) or e, interrupted) from e


def _unfinished(
    store: Store, j: dict[str, Any], cause: SnapwsError, interrupted: bool
) -> SnapwsError:
    since = journal_since(store) if interrupted else ""
    return unfinished_operation(journal_operation(j), since, give_up(store, j), cause, interrupted)


def give_up(store: Store, j: dict[str, Any]) -> str:
    """How to abandon the journaled operation ``j`` by hand, in words: the
    journal moved out (nothing is deleted), the store checked and mended;
    for a switch that moved a branch (reset), that branch put back on the
    snapshot the workspace still shows (its record keeps the old HEAD)."""
    steps = (
        f"move {_journal(store)} out of the store (nothing is deleted), then run "
        "`snapws verify` and `snapws verify --repair`"
    )
    old, state = j.get("old_head"), j.get("new_state")
    if isinstance(old, str) and isinstance(state, dict) and j.get("move_ref") is not None:
        where = state.get("path")
        inside = f" in {where}" if isinstance(where, str) else ""
        steps += (
            f", and `snapws reset {old[:12]}`{inside}: it puts the branch back on the "
            "snapshot the workspace still shows (changes already made to its files stay, "
            "as uncommitted changes)"
        )
    return steps


def journal_operation(j: dict[str, Any]) -> str:
    """The command a journal ``j`` is of, for messages ("commit", "reset
    --hard"...)."""
    op = j.get("op")
    if op == "switch":
        message = j.get("message")
        word = message.split(":", 1)[0] if isinstance(message, str) else ""
        return {"settle": "remount", "repair": "verify --repair"}.get(word, word or "checkout")
    if op == "plain-commit":
        return "commit"
    return str(op)


def _journal(store: Store) -> Path:
    return store.root / "journal.json"


def journal_since(store: Store) -> str:
    """When the journal was written (UTC), or "an unknown time"."""
    try:
        t = _journal(store).stat().st_mtime
    except OSError:
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _finish(store: Store, j: dict[str, Any]) -> str:
    """Finish or roll back the journaled operation ``j``; what was done."""
    op = j.get("op")
    if op == "plain-commit" and j.get("layer") is None:  # an earlier snapws, staging
        j = {"op": "rolled-back", "staging": j.get("staging")}
    typed = parse(j, store.root / "journal.json")
    if op == "plain-commit" and typed is None:
        store.clear_journal()  # its staging directory goes with the sweep below
        done = "rolled back an interrupted commit"
    elif isinstance(typed, InitJournal):
        from snapws.ops.worktree.init import finish_init, rollback_init

        if typed.layer is None and typed.snapshot is None:
            rollback_init(store, typed)
            done = "rolled back an interrupted init"
        else:
            finish_init(store, typed)
            done = "finished an interrupted init"
    elif isinstance(typed, CommitJournal):
        from snapws.ops.worktree.commit import finish_commit

        finish_commit(store, typed)
        done = "finished an interrupted commit"
    elif isinstance(typed, SwitchJournal):
        from snapws.ops.worktree.checkout import finish_switch

        finish_switch(store, typed)
        done = "finished an interrupted checkout/reset"
    elif op == "prune":
        from snapws.ops.maintenance.prune import finish_forget

        finish_forget(store, j)
        done = "finished an interrupted prune"
    elif op == "eject":
        from snapws.ops.worktree.eject import recover_eject

        done = recover_eject(store, j)
    elif op == "gc":
        from snapws.ops.maintenance.gc import finish_gc

        finish_gc(store, j)
        done = "finished an interrupted gc"
    else:
        raise StoreCorruptError(f"the store's journal names an unknown operation {op!r}")
    return done


def _sweep(store: Store) -> None:
    """Remove leftovers no journal refers to: staging and trash."""
    store.empty_trash()
    for p in store.iter_staging():
        if not p.name.startswith("compact-"):  # a merge spread over commits: ops.compaction
            store.discard(p)
