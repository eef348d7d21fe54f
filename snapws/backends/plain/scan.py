"""Status of a plain workspace: the working directory against HEAD's tree.

One walk (``os.scandir`` with ``lstat``) over the directory. A directory
whose names and stats equal its scan record, and whose record is not racy,
costs two byte-string comparisons; its recorded differences from HEAD (if
any) are replayed. Other directories are compared child by child: a child
whose stat is unchanged and not racy keeps its recorded state, the others
are read (xattrs, link target) and regular files hashed, then compared with
HEAD's entry exactly as the other backends compare (:func:`classify`), so a
touch or a chmod to the same mode is no change.

On trees big enough to pay for it, the walk runs in several processes
(:mod:`snapws.backends.plain.parallelwalk`).

With a file-system watcher (:mod:`snapws.backends.plain.fswatch`, opt-in),
a directory in which nothing happened since the index's token is not even
stat'ed: its record is replayed and its subdirectories are taken from it;
only the directories the watcher names are listed and compared (and those
holding a file with several links, whose other names may be written to
without an event here).
"""

from __future__ import annotations

import marshal
import os
import stat
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snapws.backends.plain.index import Index
from snapws.backends.plain.parallelwalk import walk_parallel, walking_procs
from snapws.backends.plain.records import (
    NFIELDS,
    RECORD_SIZE,
    VIRTUAL,
    ZERO_RECORD,
    EntryTuple,
    ScanRecord,
    changes_blob,
    changes_from,
    child_path,
    entry_tuple,
    join_names,
    pack_stats,
    split_names,
    tuple_entry,
)
from snapws.backends.plain.workentry import WorkRules, work_entry
from snapws.deeppath import anchored, open_fd
from snapws.errors import BadPathError
from snapws.ids import ContentHash
from snapws.layers.ignore import IGNORE_FILE, IgnoreRules, drop_ignored
from snapws.model import ROOT, Change, ChangeType, Entry, Kind, classify

if TYPE_CHECKING:
    from snapws.backends.plain.fswatch import WatchAnswer

_DIR = Kind.DIR.value
#: The byte of a child's packed stats (little-endian) that holds its mode's
#: file type bits (0o170000), and a table that maps it to 1 for a directory.
_MODE_TYPE_BYTE = 8 * (NFIELDS - 1) + 1
_DIR_FLAGS = bytes(int(b & 0xF0 == stat.S_IFDIR >> 8) for b in range(256))
_INO, _INO_END = 24, 32  # the inode field in a child's packed stats
#: A directory to walk: (relative path, absolute path, whether its stat is
#: the one its parent's record holds, and not racy).
Unit = tuple[bytes, bytes, bool]


@dataclass(slots=True)
class ScanResult:
    """Uncommitted changes (sorted by path), directories that exist in
    both HEAD and the working tree but were deleted and made again (their
    inode changed): commit writes them as opaque directories, and the
    topmost ignored paths (sorted; in no change)."""

    changes: list[Change] = field(default_factory=list)
    recreated: set[bytes] = field(default_factory=set)
    ignored: list[bytes] = field(default_factory=list)
    listed: int = 0  # directories the scan read
    reused: int = 0  # directories it did not read (their recorded names were current)
    replayed: int = 0  # directories it did not look at (the watcher saw nothing there)


class _Pending:
    """A directory compared child by child; finished once files are hashed."""

    __slots__ = (
        "changed",
        "dirty",
        "full",
        "maxtime",
        "names",
        "old",
        "out",
        "packed",
        "recreated",
        "rel",
        "zero",
    )

    def __init__(
        self, rel: bytes, names: list[bytes], packed: bytes, old: ScanRecord | None, full: bool
    ) -> None:
        self.rel = rel
        self.full = full  # names is the whole listing
        self.recreated: list[bytes] = []  # children deleted and made again
        self.names = names
        self.packed = packed  # the children's stats as listed
        self.old = old
        self.zero: list[int] = []  # children left unverified
        self.maxtime = 0
        self.dirty: dict[bytes, EntryTuple] = {}
        self.changed = False
        self.out: list[Change] = []  # this directory's changes


class Walker:
    """Walks (part of) a working tree against an index (read only: it
    collects new scan records, changes, recreated directories and ignored
    paths). With ``ignore``, untracked entries the rules exclude are left
    out of everything (an ignored directory is not entered). With
    ``trust_dirs`` (see :mod:`snapws.backends.plain.dirtimes`), a directory
    whose stat is unchanged is not read (see :meth:`walk`)."""

    def __init__(
        self,
        index: Index,
        root: bytes,
        rules: WorkRules,
        hash_threads: int,
        ignore: IgnoreRules | None = None,
        trust_dirs: bool = False,
        watching: bool = False,
        changed_dirs: frozenset[bytes] | None = None,
    ) -> None:
        self.index = index
        self.trust_dirs = trust_dirs
        # with a watcher: directories holding files with several links are
        # noted; with its answer, the others it does not name are replayed
        self.watching = watching
        self.changed_dirs = changed_dirs
        old = index.watch
        self.known_multilink = frozenset(old[3]) if old is not None else frozenset()
        self.multilink: list[bytes] = []
        self.needs_full = False  # a new file with several links: scan everything
        self.replayed = 0
        self.root = root
        self.rules = rules
        self.hash_threads = hash_threads
        self.ignore = ignore
        self.racy = index.racy_from
        self.changes: list[Change] = []
        self.records: dict[bytes, ScanRecord] = {}
        self.visited: list[bytes] = []
        self.recreated: list[bytes] = []
        self.ignored: list[bytes] = []
        self.listed = 0  # directories read
        self.reused = 0  # directories whose recorded names were taken for their listing
        self._excluded: set[bytes] = set()  # excluded (tracked) directories
        self._pending: list[_Pending] = []
        # (pending dir, child index, path, abspath, stat, head tuple)
        self._todo: list[tuple[_Pending, int, bytes, bytes, os.stat_result, Any]] = []

    def abspath(self, path: bytes) -> bytes:
        return self.root if path == ROOT else self.root + b"/" + path

    # -- walking ----------------------------------------------------------------
    def walk_root(self) -> list[Unit]:
        """Compare the root itself (the virtual parent's only child); returns
        [(b".", root, same)] if the root is a directory to walk."""
        st = os.lstat(self.root)
        vals = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode]
        self.visited.append(VIRTUAL)
        trusted = self._compare(VIRTUAL, [ROOT], vals, [st], True)
        if not stat.S_ISDIR(st.st_mode):
            return []
        return [(ROOT, self.root, trusted is None or ROOT in trusted)]

    def walk(self, units: Sequence[Unit], recurse: bool = True) -> list[Unit]:
        """Walk the directories ``units`` ((relative path, absolute path,
        whether its stat equals the one its parent's record holds and is not
        racy)); with ``recurse`` their whole subtrees, else only them
        (returning their subdirectories). Each directory is opened without
        following a symlink; one whose stat is unchanged and whose record
        holds its whole listing is not read: its recorded names are lstat'ed
        through its descriptor (git's untracked cache); any other is listed
        through it (short lookups, however deep)."""
        isdir = stat.S_ISDIR
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        trust = self.trust_dirs
        changed_dirs = self.changed_dirs
        found: list[Unit] = []
        stack = list(units)
        while stack:
            rel, ab, same = stack.pop()
            if changed_dirs is not None:
                if rel in changed_dirs:
                    same = False  # (its own stat may have moved: list it)
                elif same and self._replay(rel, ab, found if not recurse else stack):
                    continue
            try:
                fd = open_fd(ab, flags)  # (however deep)
            except PermissionError:
                raise _unreadable(ab) from None
            except OSError:
                continue  # removed or replaced while we walked: the next scan sees it
            try:
                listing = self._recorded_listing(rel, fd, ab) if same and trust else None
                if listing is None:
                    listing = self._read_listing(fd, ab)
                    self.listed += 1
            finally:
                os.close(fd)
            names, vals, sts = listing
            if self.watching:
                self._note_links(rel, sts)
            full = True
            if self.ignore is not None:
                full = self._drop_ignored(rel, names, vals, sts)
            self.visited.append(rel)
            trusted = self._compare(rel, names, vals, sts, full)
            prefix = b"" if rel == ROOT else rel + b"/"
            kids = [
                (prefix + n, ab + b"/" + n, trusted is None or n in trusted)
                for n, mode in zip(names, vals[NFIELDS - 1 :: NFIELDS], strict=True)
                if isdir(mode)
            ]
            if recurse:
                stack += kids
            else:
                found += kids
        return found

    def _replay(self, rel: bytes, ab: bytes, into: list[Unit]) -> bool:
        """Take directory ``rel`` as its record says, without looking at
        it (the watcher saw nothing happen in it, and its parent found it
        unchanged or was replayed too): replay its recorded changes and add
        its subdirectories to ``into``. False (nothing done) if the record
        cannot stand for it: none, not the whole listing, racy, without
        replayable changes, or the directory holds a file with several links."""
        scan = self.index.scan_record(rel)
        if (
            scan is None
            or not scan.full
            or scan.maxtime >= self.racy
            or (scan.changed and scan.changes is None)
            or rel in self.known_multilink
        ):
            return False
        names = split_names(scan.names)
        # one byte per child, 1 for a directory (from the second byte of its mode)
        dirs = bytes(scan.stats)[_MODE_TYPE_BYTE::RECORD_SIZE].translate(_DIR_FLAGS)
        if len(dirs) != len(names):
            return False
        prefix = b"" if rel == ROOT else rel + b"/"
        kids = []
        i = dirs.find(1)
        while i >= 0:
            kids.append(names[i])
            i = dirs.find(1, i + 1)
        ignore = self.ignore
        if ignore is not None:
            ignore.listed(rel, IGNORE_FILE in names)
            if ignore.applies(rel):  # excluded directories (tracked: the listing is whole)
                parent_excluded = rel in self._excluded
                for n in kids:
                    if parent_excluded or ignore.match(prefix + n, True):
                        self._excluded.add(prefix + n)
        self.visited.append(rel)
        self.replayed += 1
        if scan.changes is not None:
            self.changes += changes_from(scan.changes)
        if scan.recreated:
            self.recreated += [child_path(rel, n) for n in split_names(scan.recreated)]
        into += [(prefix + n, ab + b"/" + n, True) for n in kids]
        return True

    def _note_links(self, rel: bytes, sts: list[os.stat_result]) -> None:
        """Note whether directory ``rel`` holds a regular file with several
        links (another name, perhaps outside it, may be written to without
        an event in it); one the index did not know of makes a scan that
        replays directories start again, replaying none."""
        isreg = stat.S_ISREG
        if any(s.st_nlink > 1 and isreg(s.st_mode) for s in sts):
            self.multilink.append(rel)
            if rel not in self.known_multilink:
                self.needs_full = True

    def _read_listing(
        self, fd: int, ab: bytes
    ) -> tuple[list[bytes], list[int], list[os.stat_result]]:
        """The names of the directory open as ``fd``, in the order it lists
        them, their packed-stat values and stats."""
        texts: list[str] = []
        vals: list[int] = []
        sts: list[os.stat_result] = []
        with os.scandir(fd) as it:
            for de in it:
                try:
                    s = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except PermissionError:
                    raise _unreadable(ab) from None
                texts.append(de.name)
                sts.append(s)
                vals += (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode)
        names = os.fsencode("\0".join(texts)).split(b"\0") if texts else []
        return names, vals, sts

    def _recorded_listing(
        self, rel: bytes, fd: int, ab: bytes
    ) -> tuple[list[bytes], list[int], list[os.stat_result]] | None:
        """Like :meth:`_read_listing`, from the names of ``rel``'s record,
        if they are its whole listing (the caller found the directory's own
        stat unchanged and not racy, so no entry came or went); None if
        there is no such record or a recorded name is gone (the directory
        changed after all: list it)."""
        scan = self.index.scan_record(rel)
        if scan is None or not scan.full:
            return None
        names = split_names(scan.names)
        vals: list[int] = []
        sts: list[os.stat_result] = []
        lstat = os.stat
        try:
            for n in names:
                s = lstat(n, dir_fd=fd, follow_symlinks=False)
                sts.append(s)
                vals += (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            raise _unreadable(ab) from None
        self.reused += 1
        return names, vals, sts

    def _drop_ignored(
        self,
        rel: bytes,
        names: list[bytes],
        vals: list[int],
        sts: list[os.stat_result],
    ) -> bool:
        """Take the ignored entries of directory ``rel`` out of its listing
        (in place), noting them and the excluded directories that stay.
        False if it took any out (the listing is not whole)."""
        ignore = self.ignore
        assert ignore is not None
        ignore.listed(rel, IGNORE_FILE in names)
        if not ignore.applies(rel):
            return True
        parent_excluded = rel in self._excluded
        heads: dict[bytes, Any] | None = None
        drop: list[int] = []
        for i, name in enumerate(names):
            path = name if rel == ROOT else rel + b"/" + name
            is_dir = stat.S_ISDIR(sts[i].st_mode)
            if not parent_excluded and not ignore.match(path, is_dir):
                continue
            if heads is None:
                heads = self.index.head_map(rel)
            if name in heads:
                if is_dir:
                    self._excluded.add(path)
                continue
            drop.append(i)
            self.ignored.append(path)
        if not drop:
            return True
        gone = set(drop)
        names[:] = [n for i, n in enumerate(names) if i not in gone]
        sts[:] = [s for i, s in enumerate(sts) if i not in gone]
        vals[:] = [v for i, v in enumerate(vals) if i // NFIELDS not in gone]
        return False

    def _compare(
        self,
        rel: bytes,
        names: list[bytes],
        vals: list[int],
        sts: list[os.stat_result],
        full: bool,
    ) -> Container[bytes] | None:
        """Compare directory ``rel``'s listing with its record; returns the
        names of the children whose stat is unchanged and not racy (None:
        all of them)."""
        scan = self.index.scan_record(rel)
        packed = pack_stats(vals)
        if (
            scan is not None
            and scan.maxtime < self.racy
            and scan.full == full
            and (not scan.changed or scan.changes is not None)  # (else: compare again)
            and scan.matches(join_names(names), packed)
        ):
            if scan.changes is not None:
                self.changes += changes_from(scan.changes)
            if scan.recreated:
                self.recreated += [child_path(rel, n) for n in split_names(scan.recreated)]
            return None
        return self._slow(rel, names, sts, packed, scan, full)

    def _slow(
        self,
        rel: bytes,
        names: list[bytes],
        sts: list[os.stat_result],
        packed: bytes,
        scan: ScanRecord | None,
        full: bool,
    ) -> set[bytes]:
        heads = self.index.head_map(rel)
        size = RECORD_SIZE
        if scan is not None:
            ob = bytes(scan.stats)
            old = {n: ob[k * size : (k + 1) * size] for k, n in enumerate(split_names(scan.names))}
            dirty_old = scan.dirty_map()
            made_again = set(split_names(scan.recreated)) if scan.recreated else set()
        else:
            old, dirty_old, made_again = {}, {}, set()
        pend = _Pending(rel, names, packed, scan, full)
        racy = self.racy
        maxtime = 0
        trusted: set[bytes] = set()
        for i, name in enumerate(names):
            st = sts[i]
            newest = st.st_mtime_ns if st.st_mtime_ns > st.st_ctime_ns else st.st_ctime_ns
            if newest > maxtime:
                maxtime = newest
            h = heads.get(name)
            o = old.get(name)
            path = child_path(rel, name)
            if (
                h is not None
                and h[0] == _DIR
                and stat.S_ISDIR(st.st_mode)
                and o is not None
                and o != ZERO_RECORD
                and (
                    name in made_again
                    or o[_INO:_INO_END] != packed[i * size + _INO : i * size + _INO_END]
                )
            ):
                # deleted and made again (its inode moved, now or since HEAD)
                self.recreated.append(path)
                pend.recreated.append(name)
            if o is not None and newest < racy and o == packed[i * size : (i + 1) * size]:
                trusted.add(name)
                w = dirty_old.get(name)
                if w is not None:
                    if self._emit(pend, path, h, w):
                        pend.dirty[name] = w
                    continue
                if h is not None:
                    continue  # clean
            self._todo.append((pend, i, path, self.abspath(path), st, h))
        pend.maxtime = maxtime
        present = set(names)
        for name, h in heads.items():
            if name not in present:
                pend.changed = True
                self._emit(pend, child_path(rel, name), h, None)
        self._pending.append(pend)
        return trusted

    def _emit(
        self, pend: _Pending, path: bytes, h: EntryTuple | None, w: EntryTuple | Entry | None
    ) -> bool:
        """Record in ``pend`` the change from HEAD's ``h`` to the working
        ``w`` (and, if a HEAD directory is gone, the deletion of its
        subtree). True if there is a change at ``path`` itself."""
        old = tuple_entry(path, h) if h is not None else None
        new = w if isinstance(w, Entry) or w is None else tuple_entry(path, w)
        c = classify(path, old, new)
        if c is not None:
            pend.out.append(c)
        if h is not None and h[0] == _DIR and (new is None or new.kind is not Kind.DIR):
            for p, t in self.index.head_subtree(path):
                pend.out.append(Change(p, ChangeType.DELETED, tuple_entry(p, t), None))
        return c is not None

    # -- finishing ------------------------------------------------------------------
    def finish(self) -> None:
        """Hash what needs it, compare, and build the new scan records."""
        files = [t for t in self._todo if stat.S_ISREG(t[4].st_mode)]
        digests: dict[bytes, ContentHash | None] = {}
        if files:
            from snapws.layers.hashing import hash_files

            paths = [t[3] for t in files]
            try:
                got: list[ContentHash | None] = list(hash_files(paths, self.hash_threads))
            except OSError:
                got = [_try_hash(p) for p in paths]
            digests = dict(zip(paths, got, strict=True))
        for pend, i, path, ab, st, h in self._todo:
            name = pend.names[i]
            try:
                digest = digests.get(ab)
                if stat.S_ISREG(st.st_mode) and digest is None:
                    raise FileNotFoundError(ab)
                w = work_entry(path, ab, st, h, digest, self.rules)
            except PermissionError:
                raise _unreadable(ab) from None
            except (FileNotFoundError, NotADirectoryError):
                # gone since it was listed: show it as absent
                pend.zero.append(i)
                pend.changed = True
                self._emit(pend, path, h, None)
                continue
            if self._emit(pend, path, h, w):
                pend.dirty[name] = entry_tuple(w)
        for pend in self._pending:
            self.changes += pend.out
            stats = pend.packed
            if pend.zero:
                buf = bytearray(stats)
                for i in pend.zero:
                    buf[i * RECORD_SIZE : (i + 1) * RECORD_SIZE] = ZERO_RECORD
                stats = bytes(buf)
            changed = pend.changed or bool(pend.dirty)
            rec = ScanRecord(
                join_names(pend.names),
                stats,
                pend.maxtime,
                marshal.dumps(pend.dirty) if pend.dirty else None,
                changed,
                changes_blob(pend.out) if changed and not pend.zero else None,
                pend.full,
                join_names(pend.recreated) if pend.recreated else None,
            )
            if not rec.same(pend.old):
                self.records[pend.rel] = rec
        self._todo.clear()
        self._pending.clear()

    def drop_pending(self) -> None:
        """Forget directories walked but not finished (a forked child's copy
        of its parent's work)."""
        self._todo.clear()
        self._pending.clear()

    # -- results across processes -----------------------------------------------------
    def export(self) -> bytes:
        """This walker's results as marshal bytes (for the parent process)."""
        records = {d: r.to_tuple() for d, r in self.records.items()}
        return marshal.dumps(
            (
                changes_blob(self.changes),
                records,
                self.visited,
                self.recreated,
                self.ignored,
                self.listed,
                self.reused,
                self.multilink,
            )
        )

    def absorb(self, data: bytes) -> None:
        """Add the results :meth:`export` produced in another process."""
        changes, records, visited, recreated, ignored, listed, reused, multilink = marshal.loads(
            data
        )
        self.multilink += multilink
        self.listed += listed
        self.reused += reused
        self.changes += changes_from(changes)
        for d, t in records.items():
            self.records[d] = ScanRecord(*t)
        self.visited += visited
        self.recreated += recreated
        self.ignored += ignored


def _try_hash(path: bytes) -> ContentHash | None:
    from snapws.layers.hashing import hash_file

    try:
        return hash_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise _unreadable(path) from None


def _unreadable(path: bytes) -> BadPathError:
    return BadPathError(
        f"cannot read {os.fsdecode(path)} in the workspace: permission denied",
        hint="give yourself read access (chmod u+r, or u+rx for a directory), "
        "or run snapws as the user who can read it",
    )


def scan(
    index: Index,
    root: bytes,
    rules: WorkRules,
    hash_threads: int = 8,
    ignore: IgnoreRules | None = None,
    trust_dirs: bool = False,
    watch_key: str | None = None,
    watch: WatchAnswer | None = None,
) -> ScanResult:
    """Compare the working tree at ``root`` with ``index``'s HEAD, and put
    what this scan saw into ``index`` (its ``modified`` flag tells whether
    the index should be written back). With ``ignore``, ignored paths are
    skipped (see :class:`Walker`) and reported apart; with ``trust_dirs``,
    unchanged directories are not read (:meth:`Walker.walk`).

    ``watch_key`` (the ignore settings, as a string) says that a watcher
    is in use: ``watch`` is its answer to the index's token (None: no
    watcher answered). When it names the directories that changed since
    (and the index's token has the same ``watch_key``), only they are
    looked at; the others are replayed from their records. The index
    takes the answer's token. Raises OSError if the root is unreadable."""
    changed_dirs = None
    old = index.watch
    if watch is not None and watch.dirs is not None and old is not None and old[2] == watch_key:
        changed_dirs = watch.dirs
    w = _walk(index, root, rules, hash_threads, ignore, trust_dirs, watch_key, changed_dirs)
    if w.needs_full and changed_dirs is not None:  # (the walker changed nothing yet)
        w = _walk(index, root, rules, hash_threads, ignore, trust_dirs, watch_key, None)
    visited = set(w.visited)
    for d, rec in w.records.items():
        index.set_scan(d, rec)
    for d in [d for d, r in index.dirs.items() if r[1] is not None and d not in visited]:
        index.set_scan(d, None)  # no longer a directory of the working tree
    if watch_key is not None and watch is not None:
        token = (watch.token[0], watch.token[1], watch_key, tuple(sorted(set(w.multilink))))
        if old is None or old[0] != token[0] or old[2:] != token[2:]:
            index.modified = True  # (else the old token stays: it asks for a little more)
        elif changed_dirs is not None and len(changed_dirs) > _TOKEN_AGE_DIRS:
            index.modified = True
        index.watch = token
    changes = sorted(w.changes, key=lambda c: c.path)
    changes, ignored = drop_ignored(changes, w.ignored)
    return ScanResult(changes, set(w.recreated), ignored, w.listed, w.reused, w.replayed)


#: A scan that had to look at more directories than this since the index's
#: token writes the index (with the new token) even if its records stayed.
_TOKEN_AGE_DIRS = 64


def _walk(
    index: Index,
    root: bytes,
    rules: WorkRules,
    hash_threads: int,
    ignore: IgnoreRules | None,
    trust_dirs: bool,
    watch_key: str | None,
    changed_dirs: frozenset[bytes] | None,
) -> Walker:
    """One walk of the working tree (:func:`scan`), finished."""
    w = Walker(
        index, root, rules, hash_threads, ignore, trust_dirs, watch_key is not None, changed_dirs
    )
    units = w.walk_root()
    procs = walking_procs(index) if changed_dirs is None else 1
    with anchored():  # paths may be longer than PATH_MAX
        if procs > 1 and units:
            walk_parallel(w, units, procs)
        else:
            w.walk(units)
            w.finish()
    return w
