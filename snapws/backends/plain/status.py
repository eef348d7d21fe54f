"""The scan of a plain workspace's directory against HEAD
(:mod:`snapws.backends.plain.scan`), and saving what it learnt into the
index."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from snapws.backends.plain.dirtimes import dir_times_reliable
from snapws.backends.plain.index import Index
from snapws.backends.plain.indexfile import IndexWriter, load_index
from snapws.backends.plain.scan import ScanResult, scan
from snapws.backends.plain.workentry import WorkRules
from snapws.errors import BadPathError
from snapws.layers.ignore import IgnoreRules
from snapws.session import Session

if TYPE_CHECKING:
    from snapws.backends.plain.fswatch import WatchAnswer


def scan_workspace(
    session: Session, write: bool = True
) -> tuple[ScanResult, Index, IndexWriter | None]:
    """Scan the working tree against HEAD. The index writer (if the store
    is writable) is opened first: its timestamp is the racy reference of the
    stats this scan records."""
    state = session.state
    writer = IndexWriter.begin(session.wsdir, session.path) if write else None
    try:
        index = load_index(session.wsdir, state.head)
        if index is None:
            from snapws.backends.plain.headtree import rebuild_index

            index = rebuild_index(session.store, state.head)
        root = os.fsencode(state.path)
        if not os.path.isdir(root):
            raise BadPathError(
                f"the workspace directory {state.path} is gone",
                hint=f"make it again (mkdir {state.path}), then `snapws reset --hard HEAD` "
                "brings HEAD back into it",
            )
        watch_key, watch = None, None
        if session.config.plain_watch:
            watch_key, watch = _ask_watcher(index, root, os.fsencode(session.wsdir), session)
        result = scan(
            index,
            root,
            WorkRules.for_workspace(os.fsencode(state.path)),
            session.config.hash_threads,
            IgnoreRules.for_tree(root, session.config.ignore),
            dir_times_reliable(root),
            watch_key,
            watch,
        )
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        index.ref_ns, index.slack_ns = writer.ref_ns, writer.slack_ns
    return result, index, writer


def _ask_watcher(
    index: Index, root: bytes, wsdir: bytes, session: Session
) -> tuple[str, WatchAnswer | None]:
    """The workspace's watcher's answer to the index's token (started if
    none answers: this scan then looks at everything), and the key of the
    settings its tokens hold for (the ignore settings)."""
    from snapws.backends.plain.fswatch import ask_watcher, start_watcher

    key = "\0".join(session.config.ignore)
    old = index.watch
    since = (old[0], old[1]) if old is not None and old[2] == key else None
    answer = ask_watcher(wsdir, since)
    if answer is None:
        start_watcher(root, wsdir)
    return key, answer


def refresh_index(index: Index, writer: IndexWriter | None) -> None:
    """Write the index back if the scan learnt something (a cache: a failure
    to write it costs the next status time, nothing else)."""
    if writer is None:
        return
    if not index.modified:
        writer.abort()
        return
    try:
        writer.commit(index)
    except OSError:
        writer.abort()
