"""Finishing or rolling back an operation interrupted by a crash.

Every mutating operation writes ``journal.json`` before its first
irreversible step; the next snapws command (under the exclusive lock) reads
it here and completes the operation, or undoes it where nothing was
published yet."""

from __future__ import annotations

from snapws.errors import StoreCorruptError
from snapws.ops.journals import CommitJournal, InitJournal, SwitchJournal, parse
from snapws.store.store import Store


def recover(store: Store) -> str | None:
    """Complete or roll back the journaled operation, if any. Returns a short
    description of what was done (None: nothing to do).

    Precondition: the caller holds the store lock exclusively."""
    j = store.read_journal()
    if j is None:
        _sweep(store)
        return None
    store = store.in_namespace(store.journal_namespace(j))  # refs of the journal's workspace
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
    _sweep(store)
    return done


def _sweep(store: Store) -> None:
    """Remove leftovers no journal refers to: staging and trash."""
    store.empty_trash()
    for p in store.iter_staging():
        if not p.name.startswith("compact-"):  # a merge spread over commits: ops.compaction
            store.discard(p)
