"""The plain backend's file-system watcher (``plain_watch = true``): a status
looks only at the directories the watcher names and replays the others
from their records. Every way of changing the tree must still be seen: an
edit, a new or removed entry, a new directory (and what was made in it
before its watch), a moved directory, a changed ignore file, a file written
through another of its links, lost events (the queue overflowed), a HEAD
that moved without an event."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace

from snapws.backends.plain.dirtimes import dir_times_reliable
from snapws.backends.plain.fswatch import (
    IDLE_ENV,
    IN_CREATE,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    SOCKET_NAME,
    Daemon,
    WatchAnswer,
    WatchState,
    ask_watcher,
    stop_watcher,
)
from snapws.backends.plain.index import Index
from snapws.backends.plain.scan import ScanResult, scan
from snapws.backends.plain.workentry import WorkRules
from snapws.layers.ignore import IGNORE_FILE, IgnoreRules

from .conftest import PlainFactory
from .test_untracked_cache import wait_for_the_clock

SPEC = {
    "top.txt": "top\n",
    "d": {"x": "x\n", "y": "y\n", "sub": {"z": "z\n"}},
    "e": {"f": "f\n", "g": {"h": "h\n"}},
    "k": {"m": "m\n"},
}


# ---- the daemon's bookkeeping alone ---------------------------------------------------


def test_an_event_names_its_directory_and_later_tokens_do_not_see_it() -> None:
    st = WatchState("gen")
    st.paths = {1: b".", 2: b"d", 3: b"d/sub"}
    first = st.answer(None)
    assert first.dirs is None  # no token yet: everything
    st.event(3, IN_MODIFY, b"z")
    st.event(1, IN_MODIFY, b"top.txt")
    got = st.answer(first.token)
    assert got.dirs == {b"d/sub", b"."}
    assert st.answer(got.token).dirs == frozenset()
    assert st.answer(("other", got.token[1])).dirs is None  # another daemon's token


def test_lost_events_make_every_older_token_see_everything() -> None:
    st = WatchState("gen")
    st.paths = {1: b".", 2: b"d"}
    token = st.answer(None).token
    assert st.event(-1, IN_Q_OVERFLOW, b"") == ("rewatch", b"")
    assert st.answer(token).dirs is None
    after = st.answer(None).token
    st.event(2, IN_MODIFY, b"x")
    assert st.answer(after).dirs == {b"d"}  # a token from after the loss is good


def test_a_moved_directory_or_an_ignore_file_makes_everything_changed() -> None:
    st = WatchState("gen")
    st.paths = {1: b".", 2: b"d"}
    token = st.answer(None).token
    assert st.event(1, IN_MOVED_TO | IN_ISDIR, b"n") == ("rewatch", b"")
    assert st.answer(token).dirs is None
    token = st.answer(None).token
    st.event(2, IN_CREATE, IGNORE_FILE)
    assert st.answer(token).dirs is None
    token = st.answer(None).token
    assert st.event(2, IN_CREATE | IN_ISDIR, b"new") == ("add", b"d/new")


def test_a_root_that_cannot_be_watched_makes_every_answer_full(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")  # (watches do not follow symlinks)
    daemon = Daemon(os.fsencode(tmp_path / "link"), os.fsencode(tmp_path))
    try:
        daemon.watch_tree(b".")
        token = daemon.state.answer(None).token
        assert daemon.state.answer(token).dirs is None
    finally:
        os.close(daemon.ino.fd)


def test_the_index_keeps_the_token() -> None:
    from snapws.backends.plain.index import MAGIC
    from snapws.ids import SnapshotId

    index = Index(SnapshotId("ab" * 16), 5, 0)
    index.watch = ("gen", 7, "*.o", (b"d",))
    back = Index.decode(index.encode())
    assert back is not None and back.watch == ("gen", 7, "*.o", (b"d",))
    index.set_head(b"f", None)  # (any change of the index but a scan's drops it)
    assert index.watch is None
    form7 = index.encode().replace(MAGIC, b"snapws-plain-index 7\n", 1)
    old = Index.decode(form7)
    assert old is not None and old.watch is None and not old.older_form


# ---- a real watcher ----------------------------------------------------------------------


class Watched:
    """A plain workspace whose statuses use its watcher."""

    def __init__(self, ws: Workspace, config: Path) -> None:
        self.ws = ws
        self.env = {"SNAPWS_CONFIG": str(config), IDLE_ENV: "120"}
        (self.index_path,) = ws.store.glob("workspaces/*/index")
        self.wsdir = os.fsencode(self.index_path.parent)

    def porcelain(self) -> list[str]:
        return self.ws.run("status", "--porcelain", env=self.env).stdout.splitlines()

    def index(self) -> Index:
        index = Index.decode(self.index_path.read_bytes())
        assert index is not None
        return index

    def scan(self, watched: bool) -> ScanResult:
        """A scan in this process (the index read, not written): with the
        watcher's answer to the index's token, or looking at everything."""
        index = self.index()
        root = os.fsencode(self.ws.path)
        answer = None
        if watched:
            assert index.watch is not None
            answer = ask_watcher(self.wsdir, index.watch[:2])
            assert answer is not None
        rules = WorkRules.for_workspace(root)
        key = "" if watched else None
        return scan(
            index, root, rules, 1, IgnoreRules.for_tree(root), dir_times_reliable(root), key, answer
        )

    def settle(self) -> None:
        """Statuses until the watcher answers and the index holds its token,
        every stat older than the clock (not racy)."""
        deadline = time.monotonic() + 20
        while True:
            wait_for_the_clock(self.ws.outside)
            self.porcelain()
            if self.index().watch is not None:
                return
            assert time.monotonic() < deadline, "the watcher did not answer"
            time.sleep(0.05)

    def check(self, replays: bool = True) -> list[str]:
        """The watched scan finds what a scan that looks at everything
        finds (and, if ``replays``, did not look at everything); returns
        the watched status (which records the watcher's new token)."""
        watched = self.scan(True)
        full = self.scan(False)
        assert [(c.path, c.type) for c in watched.changes] == [
            (c.path, c.type) for c in full.changes
        ]
        self.last = watched
        assert (watched.replayed > 0) == replays
        return self.porcelain()


@pytest.fixture
def watched(make_plain: PlainFactory, tmp_path: Path) -> Iterator[Watched]:
    config = tmp_path / "watch.toml"
    config.write_text("plain_watch = true\n")
    w = Watched(make_plain(spec=SPEC), config)
    try:
        w.settle()
        yield w
    finally:
        assert stop_watcher(w.wsdir)
        deadline = time.monotonic() + 10
        while watchers_of(w.wsdir) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watchers_of(w.wsdir, end=True) == [], "the watcher did not stop"
        assert not os.path.exists(os.path.join(w.wsdir, SOCKET_NAME.encode()))


def watchers_of(wsdir: bytes, end: bool = False) -> list[int]:
    """The watcher processes of ``wsdir`` still running (with ``end``,
    each is ended: none outlives its test)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"snapws.backends.plain.fswatch" in argv and wsdir in argv:
            if end:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGTERM)
            found.append(int(proc.name))
    return found


def test_a_clean_tree_is_replayed(watched: Watched) -> None:
    got = watched.scan(True)
    assert (got.changes, got.listed, got.reused) == ([], 0, 0)
    assert got.replayed == 6  # ., d, d/sub, e, e/g, k (the root only stat'ed)


def test_edits_in_a_replayed_tree_are_seen(watched: Watched) -> None:
    p = watched.ws.path
    (p / "d" / "sub" / "z").write_text("z2\n")
    assert watched.check() == [" M d/sub/z"]
    assert watched.last.listed == 1  # d/sub only: its parent d was replayed
    (p / "d" / "sub" / "new").write_text("n\n")  # in a directory whose parent is replayed
    assert watched.check() == [" M d/sub/z", "?? d/sub/new"]
    (p / "k" / "m").unlink()
    os.chmod(p / "e" / "f", 0o600)
    assert watched.check() == [" M d/sub/z", " M e/f", " D k/m", "?? d/sub/new"]


def test_new_and_removed_directories_are_seen(watched: Watched) -> None:
    p = watched.ws.path
    new = ["?? e/n1/", "?? e/n1/n2/", "?? e/n1/n2/f"]
    (p / "e" / "n1" / "n2").mkdir(parents=True)  # made faster than a watch is added
    (p / "e" / "n1" / "n2" / "f").write_text("f\n")
    assert watched.check() == new
    (p / "e" / "n1" / "n2" / "later").write_text("l\n")  # under its watch now
    assert watched.check() == [*new, "?? e/n1/n2/later"]
    shutil.rmtree(p / "d" / "sub")
    assert " D d/sub/z" in watched.check()
    (p / "d" / "sub").mkdir()
    (p / "d" / "sub" / "z").write_text("z\n")
    assert watched.check() == [*new, "?? e/n1/n2/later"]


def test_a_moved_directory_is_seen(watched: Watched) -> None:
    p = watched.ws.path
    os.rename(p / "d", p / "d2")
    os.rename(p / "k", p / "d")  # a directory of another name where d was
    watched.settle()
    (p / "d2" / "sub" / "z").write_text("z3\n")  # the watch moved with it
    (p / "d" / "m").write_text("m2\n")
    out = watched.check()
    assert "?? d2/" in out and " D d/x" in out and "?? d/m" in out


def test_a_changed_ignore_file_is_seen(watched: Watched) -> None:
    p = watched.ws.path
    (p / "e" / "g" / "junk.o").write_text("o\n")
    assert watched.check() == ["?? e/g/junk.o"]
    (p / IGNORE_FILE.decode()).write_text("*.o\n")  # in another directory than the file
    assert watched.check(replays=False) == ["?? .snapwsignore"]


def test_a_file_written_through_another_link_is_seen(watched: Watched) -> None:
    p = watched.ws.path
    os.link(p / "d" / "x", p / "k" / "x-link")
    assert watched.check(replays=False) == ["?? k/x-link"]  # (a new file with two links)
    watched.settle()
    (p / "k" / "x-link").write_text("x2\n")  # no event in d
    assert watched.check() == [" M d/x", "?? k/x-link"]


def test_a_commit_moves_head_without_an_event(watched: Watched) -> None:
    p = watched.ws.path
    (p / "d" / "x").write_text("x2\n")
    assert watched.check() == [" M d/x"]
    watched.ws.commit("x2")  # HEAD moves, no file does
    assert watched.index().watch is None  # the records changed: the token is dropped
    assert watched.porcelain() == []
    watched.settle()
    (p / "d" / "x").write_text("x3\n")
    assert watched.check() == [" M d/x"]


def test_lost_events_make_a_full_scan(watched: Watched) -> None:
    """A daemon whose queue overflowed (more events than
    max_queued_events before it read them) answers every older token
    with "everything"."""
    root = os.fsencode(watched.ws.path)
    daemon = Daemon(root, watched.wsdir)
    try:
        daemon.watch_tree(b".")
        token = daemon.state.answer(None).token
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        if limit > 200_000:
            pytest.skip(f"max_queued_events is {limit}")
        spam = watched.ws.path / "e" / "spam"
        for i in range(limit // 2 + 10):  # two events each, none merged
            fd = os.open(str(spam) + f"{i}", os.O_CREAT | os.O_WRONLY)
            os.close(fd)
            os.unlink(str(spam) + f"{i}")
        daemon.pump()
        assert daemon.state.answer(token).dirs is None
        # and it watches the whole tree again
        assert set(daemon.state.paths.values()) == {b".", b"d", b"d/sub", b"e", b"e/g", b"k"}
    finally:
        os.close(daemon.ino.fd)


def test_the_answer_holds_what_happened_before_the_question(watched: Watched) -> None:
    """The daemon reads every queued event before it answers (inotify
    queues an event before the call that made it returns)."""
    daemon = Daemon(os.fsencode(watched.ws.path), watched.wsdir)
    try:
        daemon.watch_tree(b".")
        token = daemon.state.answer(None).token
        (watched.ws.path / "e" / "g" / "h").write_text("h2\n")
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.sendall(b"Q %s %d\n" % (token[0].encode(), token[1]))
            daemon.reply(theirs)  # (no pump before)
            assert ours.recv(1000).split(b"\n")[1] == b"e/g"
    finally:
        os.close(daemon.ino.fd)


def test_a_record_without_its_changes_is_compared(watched: Watched) -> None:
    """A directory whose record lost its replayable changes (HEAD's
    entries moved) is compared, even where the watcher saw nothing."""
    (watched.ws.path / "d" / "x").write_text("x2\n")
    assert watched.check() == [" M d/x"]
    index = watched.index()
    token = index.watch
    assert token is not None
    index.drop_replays([b"d/x"])
    index.watch = token  # (as if the token had stayed)
    root = os.fsencode(watched.ws.path)
    rules = WorkRules.for_workspace(root)
    answer = WatchAnswer(token[:2], frozenset())
    got = scan(index, root, rules, 1, IgnoreRules.for_tree(root), True, "", answer)
    assert [(c.path, c.type.value) for c in got.changes] == [(b"d/x", "M")]


def test_without_an_answer_everything_is_looked_at(watched: Watched) -> None:
    """The control of the tests above: a scan given an answer that names
    nothing misses an edit (so they show that the answer is used)."""
    (watched.ws.path / "d" / "x").write_text("x2\n")
    index = watched.index()
    assert index.watch is not None
    root = os.fsencode(watched.ws.path)
    rules = WorkRules.for_workspace(root)
    wrong = WatchAnswer(index.watch[:2], frozenset())
    got = scan(index, root, rules, 1, IgnoreRules.for_tree(root), True, "", wrong)
    assert got.changes == []
    assert watched.porcelain() == [" M d/x"]
