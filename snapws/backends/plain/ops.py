"""The verbs of a plain workspace (no mount; any user, any POSIX filesystem).

Each is called by its generic counterpart in :mod:`snapws.ops` when the
workspace's backend is ``plain``, with the same arguments and results:

- :func:`init_plain`: copy the directory into a base layer (the directory
  is left as it is), journal ``init`` (with ``"backend": "plain"``), finish;
- :func:`status` / :func:`diff`: the scan of :mod:`.scan` against HEAD;
- :func:`commit`: stage the changes (:mod:`.stage`), journal
  ``plain-commit``, then :func:`finish_commit` (publish, snapshot, ref,
  reflog, index, state);
- :func:`checkout`, :func:`reset`, :func:`restore`: journal
  ``plain-switch`` with the paths to rewrite, then :func:`finish_switch`
  (rewrite, refs, reflog, index, state).

The finish steps are idempotent and run again by recovery after a crash
(``SNAPWS_CRASH_AT`` names in :data:`CRASH_STEPS`). The working directory is
the uncommitted work: commit only reads it; checkout and restore change
only the paths the journal names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapws.crash import STEPS

if TYPE_CHECKING:
    from snapws.config import Config
    from snapws.ids import SnapshotId
    from snapws.model import Change, WorkspaceState
    from snapws.ops.checkout import SwitchResult
    from snapws.ops.commit import CommitResult
    from snapws.ops.diff import DiffResult
    from snapws.ops.workspace import Session
    from snapws.store.store import Store

#: Crash-test steps of the plain backend (``SNAPWS_CRASH_AT``), in order:
#: the ``plain-*`` steps of :data:`snapws.crash.STEPS`.
CRASH_STEPS = tuple(s for s in STEPS if s.startswith("plain-"))


# Each verb imports its module when called: ``snapws status`` loads only
# what status needs.


def init_plain(
    path: Path,
    store_root: Path,
    config: Config,
    branch: str | None = None,
    message: str = "initial snapshot",
    progress: Callable[[int], None] | None = None,
) -> tuple[Store, WorkspaceState]:
    """:func:`snapws.backends.plain.init.init_plain`."""
    from snapws.backends.plain.init import init_plain as run

    return run(path, store_root, config, branch, message, progress)


def status(session: Session) -> list[Change]:
    """:func:`snapws.backends.plain.status.status`."""
    from snapws.backends.plain.status import status as run

    return run(session)


def uncommitted(session: Session) -> list[Change]:
    """The working directory's changes against HEAD (as :func:`status`)."""
    return status(session)


def diff(session: Session, old: SnapshotId | None, paths: tuple[bytes, ...] = ()) -> DiffResult:
    """:func:`snapws.backends.plain.status.diff`."""
    from snapws.backends.plain.status import diff as run

    return run(session, old, paths)


def commit(session: Session, message: str, author: str, allow_empty: bool = False) -> CommitResult:
    """:func:`snapws.backends.plain.commit.commit`."""
    from snapws.backends.plain.commit import commit as run

    return run(session, message, author, allow_empty)


def checkout(
    session: Session,
    target: SnapshotId,
    branch: str | None,
    create_branch: str | None = None,
    discard: bool = False,
    who: str = "",
    label: str = "",
) -> SwitchResult:
    """:func:`snapws.backends.plain.switch.checkout`."""
    from snapws.backends.plain.switch import checkout as run

    return run(session, target, branch, create_branch, discard, who, label)


def reset(
    session: Session, target: SnapshotId, hard: bool, who: str = "", label: str = ""
) -> SwitchResult:
    """:func:`snapws.backends.plain.switch.reset`."""
    from snapws.backends.plain.switch import reset as run

    return run(session, target, hard, who, label)


def restore(session: Session, source: SnapshotId, paths: list[bytes]) -> list[bytes]:
    """:func:`snapws.backends.plain.switch.restore`."""
    from snapws.backends.plain.switch import restore as run

    return run(session, source, paths)


def recover_journal(store: Store, j: dict[str, Any]) -> str | None:
    """Finish (or roll back) a journaled plain operation; None if ``j`` is
    not one. Called by :func:`snapws.ops.recovery.recover` under the
    exclusive lock."""
    op = j.get("op")
    if op == "init" and j.get("backend") == "plain":
        from snapws.backends.plain.init import finish_init

        finish_init(store, j)
        return "finished an interrupted init"
    if op == "plain-commit":
        from snapws.backends.plain.commit import finish_commit, rollback_commit

        if j.get("layer") is None:
            rollback_commit(store, j)
            return "rolled back an interrupted commit"
        finish_commit(store, j)
        return "finished an interrupted commit"
    if op == "plain-switch":
        from snapws.backends.plain.switch import finish_switch

        finish_switch(store, j)
        return "finished an interrupted checkout/reset/restore"
    return None
