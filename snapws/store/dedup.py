"""Store-wide deduplication: a regular file whose content *and* metadata
equal those of a file in a published layer becomes a hardlink of that file,
so identical files are stored once across layers, branches and workspaces.

Metadata counts (mode, owner, mtime, xattrs), not only content: the names of
one inode share all of them, and manifests must stay true, so a layer's id
never changes through deduplication.

The index, ``<store>/dedup/index.sqlite`` (:mod:`snapws.store.dedupindex`;
SQLite, table ``entries(key TEXT PRIMARY KEY, data BLOB NOT NULL)``), maps a
key (XXH3-128 of a file's manifest line without path and hardlink fields:
content hash, size, mode, uid, gid, mtime, xattrs) to one file of a
published layer::

    dedup/index.sqlite       key -> {"key": ..., "layer": ..., "path": ..., "meta": {...}, "v": 1}
    dedup/tmp/               links being moved into a tree (swept at each run)

It is a cache, never trusted: an entry is used only if it parses, names its
own key, records the same metadata, its layer is published, and ``lstat``
and the xattrs of the file it names still match. Entries pointing at deleted
layers are dropped or replaced when met; :func:`prune_index` drops them all.
One run is one transaction, committed at its end without fsync
(``synchronous=OFF``): a crash loses the run's entries, which costs missed
links, nothing else. Any SQLite error makes the run do without the index (it
still repairs a tree a crashed run left torn); a database found damaged is
renamed ``index.sqlite.corrupt`` and the next run starts a new one.

Safety rules:

- Only trees about to be published are changed: the frozen, detached
  upperdir of a journaled commit (recovery only rolls it forward) or the
  staging tree of an init whose layer id is journaled. Overlay never writes
  to a lower layer (it copies a file up first), so a write through a
  workspace never reaches a shared inode. A workspace's live upperdir is
  never deduplicated: overlay writes to its files in place.
- Within one layer tree, names share an inode exactly when its manifest
  groups them (``hl``): a hardlink group is linked as a whole, and two
  groups of one layer never end up on one inode (the second keeps its own).
- An inode gets new links only while it stays ``LINK_HEADROOM`` below the
  filesystem's link limit (ext4: 65,000); beyond that a new inode starts and
  the index points at it.
- A file is replaced by linking the existing inode to ``dedup/tmp/`` and
  renaming that over the file (atomic); directory mtimes are restored from
  the manifest. Running again after a crash finishes the job.

Test-only crash injection (:mod:`snapws.crash`): ``SNAPWS_CRASH_AT=dedup:link:N``
(``dedup:rename:N``) SIGKILLs the process after the N-th link into
``dedup/tmp/`` (the N-th rename into the tree) of this process;
``dedup:commit:1`` just before the index transaction is committed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import xxhash

from snapws.crash import crashpoint
from snapws.deeppath import anchored, lstat, open_fd, reach
from snapws.ids import Digest, LayerId
from snapws.layers.entries import host_ids, list_xattrs
from snapws.model import ROOT, Entry, Kind, decode_manifest
from snapws.store.atomic import fsync_fd
from snapws.store.dedupindex import (
    INDEX_DB,
    DedupIndex,
    IndexCommit,
    IndexRecord,
    material,
    material_json,
    parse_entry,
)
from snapws.store.store import Store

INDEX_DIR = "dedup"
TMP_DIR = "tmp"
#: Links kept free below the filesystem's limit (flatten links every file of
#: the layers it merges once more).
LINK_HEADROOM = 1000
DEFAULT_LINK_MAX = 65000  # ext4, when pathconf cannot tell


@dataclass(slots=True)
class DedupStats:
    """What :func:`dedup_tree` did. A group is a file with all its hardlinks."""

    groups: int = 0  # regular-file groups considered (empty files are not)
    linked: int = 0  # groups now sharing an older layer's inode (this run)
    already: int = 0  # groups found sharing it already (a run before a crash)
    indexed: int = 0  # groups added to the index
    saved_bytes: int = 0  # disk usage freed (st_blocks * 512 of replaced inodes)


def dedup_key(e: Entry) -> str:
    """The index key of a regular file's manifest entry: 32 hex digits."""
    return Digest.of(material_json(e)).hex


def dedup_material(e: Entry) -> tuple[str, bytes]:
    """:func:`dedup_key` and the ``material_json`` it hashes, for a caller
    that makes the entries of a tree one by one (an import, as it unpacks)
    and passes them to :func:`dedup_tree` as ``keys``."""
    meta = material_json(e)
    return xxhash.xxh3_128_hexdigest(meta), meta  # Digest.of(meta).hex, unchecked


def index_root(store: Store) -> Path:
    return store.root / INDEX_DIR


def dedup_tree(
    store: Store,
    tree: Path,
    layer: LayerId,
    manifest: bytes | list[Entry],
    link_limit: int | None = None,
    known: Mapping[bytes, os.stat_result] | None = None,
    keys: Mapping[bytes, tuple[str, bytes]] | None = None,
) -> DedupStats:
    """:func:`start_dedup_tree`, waited for: replace files of ``tree`` by
    hardlinks of identical files of published layers, index the others."""
    return start_dedup_tree(store, tree, layer, manifest, link_limit, known, keys).wait()


@dataclass(slots=True)
class PendingDedup:
    """A :func:`start_dedup_tree` whose index transaction may still be
    committing: :meth:`wait` for it."""

    stats: DedupStats
    commit: IndexCommit | None = None

    def wait(self) -> DedupStats:
        """Wait for the index commit; the run's stats (``indexed`` 0 if the
        transaction was lost; complete only now: a first run on a store
        counts its groups in the background)."""
        if self.commit is not None:
            commit, self.commit = self.commit, None
            if not commit.wait():
                self.stats.indexed = 0
        return self.stats


def start_dedup_tree(
    store: Store,
    tree: Path,
    layer: LayerId,
    manifest: bytes | list[Entry],
    link_limit: int | None = None,
    known: Mapping[bytes, os.stat_result] | None = None,
    keys: Mapping[bytes, tuple[str, bytes]] | None = None,
) -> PendingDedup:
    """Replace files of ``tree`` by hardlinks of identical files (content and
    metadata) of published layers, and index the others.

    Preconditions: the caller holds the store lock exclusively; ``tree`` is
    the tree of the layer ``layer`` (described by ``manifest``: its bytes,
    or its decoded entries), on the store's filesystem, not published yet,
    and certain to be published (no mount uses it as an upperdir any more,
    and no rollback can hand it back
    to a workspace). The manifest does not change. ``link_limit``: the most
    links an inode may reach (default: the filesystem's limit less
    ``LINK_HEADROOM``). ``known``: the lstat of files of the tree (by path)
    that the caller took after it last changed them (an import that has just
    written them), not read again. ``keys``: :func:`dedup_material` of
    files of the tree (by path), computed already. Idempotent; safe to run
    again after a crash. Raises OSError only if the tree cannot be read or repaired.

    The tree is final (links made, directory renames durable) when this
    returns; the index transaction commits in a background thread
    (entries naming a layer not published yet are harmless: an entry is
    used only once its layer is published). Call ``wait()`` on the result
    before the store lock is released."""
    stats = DedupStats()
    entries = decode_manifest(manifest) if isinstance(manifest, bytes) else manifest
    by_path = {e.path: e for e in entries}
    groups: dict[bytes, list[bytes]] = {}
    for e in sorted(entries, key=_path_of):
        if e.kind is Kind.FILE and e.hash is not None and e.size > 0:
            groups.setdefault(e.link or e.path, []).append(e.path)
    if not groups:
        return PendingDedup(stats)
    root = os.fsencode(tree)
    try:
        run = _Run(store, root, layer, link_limit, known, keys)
    except OSError:
        return PendingDedup(stats)  # no usable dedup/ (full or read-only store): store as is
    if run.index.empty and not run.index.pending and _whole_groups(groups, run.known):
        # A first run on this store (an import into a new one): nothing to
        # link to, and every group is one inode (its files were just
        # written): the tree is final as it is. Its entries are made and
        # committed in the background while the caller makes it durable.
        try:
            with anchored():
                run.restore_dir_mtimes(by_path, groups)
        except BaseException:
            run.index.close(commit=False)
            raise
        fill = functools.partial(run.index_all, groups, by_path, stats)
        return PendingDedup(stats, run.index.commit_in_background(fill))
    try:
        with anchored():  # paths may be longer than PATH_MAX
            for leader, members in groups.items():
                lead = by_path.get(leader)
                if lead is None or lead.link is not None:
                    continue  # not a well-formed group: leave it alone
                stats.groups += 1
                run.group(lead, members, stats)
            run.restore_dir_mtimes(by_path, groups)
    except BaseException:
        run.index.close(commit=False)
        raise
    return PendingDedup(stats, run.index.commit_in_background())


def dedup_staging(
    store: Store, staging: Path, layer: LayerId, entries: list[Entry] | None = None
) -> DedupStats:
    """:func:`dedup_tree` on ``staging/tree``, with its manifest's
    ``entries`` if the caller has them decoded, else the manifest the staging
    directory holds (``manifest.pending``, or ``manifest`` once renamed)."""
    if entries is not None:
        return dedup_tree(store, staging / "tree", layer, entries)
    pending = staging / "manifest.pending"
    manifest = (pending if pending.exists() else staging / "manifest").read_bytes()
    return dedup_tree(store, staging / "tree", layer, manifest)


def prune_index(store: Store) -> int:
    """Drop every index entry that no longer names a matching file of a
    published layer, and leftover temporary links. Returns how many entries
    went. Precondition: the store lock is held exclusively."""
    base = index_root(store)
    if not base.is_dir():
        return 0
    _sweep_tmp(base)
    _remove_old_layout(base)
    if not (base / INDEX_DB).exists():
        return 0
    index = DedupIndex.open(base)
    if index.db is None:
        return 0
    published: dict[LayerId, bool] = {}
    doomed: list[str] = []
    try:
        for key, data in index.db.execute("SELECT key, data FROM entries"):
            rec = parse_entry(data, key) if isinstance(key, str) else None
            if rec is None or _check_candidate(store, rec, None, published) is None:
                doomed.append(key)
        index.db.executemany("DELETE FROM entries WHERE key = ?", ((k,) for k in doomed))
    except sqlite3.Error as e:
        index.fail(e)
        return 0
    return len(doomed) if index.close(commit=True) else 0


# ---- one run ------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        store: Store,
        root: bytes,
        layer: LayerId,
        limit: int | None,
        known: Mapping[bytes, os.stat_result] | None = None,
        keys: Mapping[bytes, tuple[str, bytes]] | None = None,
    ) -> None:
        self.store = store
        self.known = known or {}
        self.keys = keys or {}
        self.root = root
        self.layer = layer
        self.base = index_root(store)
        self.dev = os.lstat(root).st_dev
        self.limit = limit if limit is not None else _link_max(root) - LINK_HEADROOM
        self.used_keys: set[str] = set()
        self.claimed: set[int] = set()  # inodes holding a group of this tree
        self.touched: set[bytes] = set()  # directories renamed into
        self.tmp_count = 0
        (self.base / TMP_DIR).mkdir(parents=True, exist_ok=True)
        _sweep_tmp(self.base)
        _remove_old_layout(self.base)
        self.tmp_prefix = os.fsencode(self.base / TMP_DIR) + f"/{os.getpid()}-".encode()
        self.published: dict[LayerId, bool] = {}
        self.index = DedupIndex.open(self.base)  # last: nothing after it may raise

    def abspath(self, rel: bytes) -> bytes:
        return self.root if rel == ROOT else self.root + b"/" + rel

    def group(self, lead: Entry, members: list[bytes], stats: DedupStats) -> None:
        pre = self.keys.get(lead.path)
        key, meta_json = pre if pre is not None else dedup_material(lead)
        known = self.known
        sts = [known.get(p) or lstat(self.abspath(p)) for p in members]
        if key in self.used_keys:
            # a second group of this layer with the same key keeps its own inode
            self.claimed.add(self.unify(members, sts, avoid=None))
            return
        self.used_keys.add(key)
        rec = self.index.get(key)
        cand = None
        if rec is not None and rec.meta == material(lead) and rec.layer != self.layer:
            cand = _check_candidate(self.store, rec, lead, self.published)
        if cand is not None and cand[1].st_dev == self.dev and cand[1].st_ino not in self.claimed:
            cpath, cst = cand
            todo = [p for p, st in zip(members, sts, strict=True) if st.st_ino != cst.st_ino]
            if not todo:
                stats.already += 1
                self.claimed.add(cst.st_ino)
                return
            if cst.st_nlink + len(todo) <= self.limit:
                freed = _freed_bytes(members, sts, todo)
                try:
                    for p in todo:
                        self.relink(cpath, p)
                except OSError as e:
                    if e.errno not in (errno.EMLINK, errno.ENOENT, errno.EXDEV):
                        raise
                    # the candidate filled up or went away: the group keeps
                    # (or gets back) an inode of its own
                    sts = [lstat(self.abspath(p)) for p in members]
                    self.claimed.add(self.unify(members, sts, avoid=cst.st_ino))
                    self.index.drop(key)
                    return
                stats.linked += 1
                stats.saved_bytes += freed
                self.claimed.add(cst.st_ino)
                return
        ino = self.unify(members, sts, avoid=None)
        self.claimed.add(ino)
        nlink = sts[0].st_nlink if sts[0].st_ino == ino else 0
        if nlink == len(members):  # no name outside this tree (0: just relinked)
            if self.index.put(key, self.layer, members[0], meta_json):
                stats.indexed += 1
        elif rec is not None:
            self.index.drop(key)

    def index_all(
        self, groups: Mapping[bytes, list[bytes]], by_path: Mapping[bytes, Entry], stats: DedupStats
    ) -> None:
        """What :meth:`group` does for each group when the index holds
        nothing (no candidate) and every group is one inode whose lstat is
        known (:func:`_whole_groups`): index the first group of each key
        that has no name outside the tree."""
        keys, known, index, layer = self.keys, self.known, self.index, self.layer
        used = self.used_keys
        for leader, members in groups.items():
            lead = by_path.get(leader)
            if lead is None or lead.link is not None:
                continue  # not a well-formed group: leave it alone
            stats.groups += 1
            pre = keys.get(leader)
            key, meta_json = pre if pre is not None else dedup_material(lead)
            if key in used:
                continue  # a second group of this layer with the same key keeps its own inode
            used.add(key)
            first = members[0]
            if known[first].st_nlink == len(members) and index.put(key, layer, first, meta_json):
                stats.indexed += 1

    def unify(self, members: list[bytes], sts: list[os.stat_result], avoid: int | None) -> int:
        """Make all ``members`` (``sts``: their lstat) one inode (a crash, or
        a failed link, may have split a group): the first member's not
        ``avoid``. Returns it."""
        if len(members) == 1 and sts[0].st_ino != avoid:
            return sts[0].st_ino  # (most groups: nothing to do)
        target = next(
            (i for i, st in enumerate(sts) if st.st_ino != avoid),
            0,
        )
        ino = sts[target].st_ino
        for p, st in zip(members, sts, strict=True):
            if st.st_ino != ino:
                self.relink(self.abspath(members[target]), p)
        return ino

    def relink(self, src: bytes, rel: bytes) -> None:
        """Atomically replace ``rel`` of the tree by a hardlink of ``src``."""
        self.tmp_count += 1
        tmp = self.tmp_prefix + str(self.tmp_count).encode()
        with reach(src) as short:
            os.link(short, tmp)
        crashpoint("dedup:link", self.tmp_count)
        dst = self.abspath(rel)
        try:
            with reach(dst) as short:
                os.rename(tmp, short)
        except OSError:
            os.unlink(tmp)
            raise
        crashpoint("dedup:rename", self.tmp_count)
        self.touched.add(os.path.dirname(dst))

    def restore_dir_mtimes(
        self, by_path: Mapping[bytes, Entry], groups: Mapping[bytes, list[bytes]]
    ) -> None:
        """Give every directory holding a file its manifest mtime back (the
        renames changed them, maybe in a run that crashed), then make the
        renames durable."""
        parents = {_parent(p) for members in groups.values() for p in members}
        for rel in sorted(parents):
            e = by_path.get(rel)
            if e is None or e.kind is not Kind.DIR:
                continue
            path = self.abspath(rel)
            with reach(path) as short:
                st = os.lstat(short)
                if st.st_mtime_ns != e.mtime_ns:
                    os.utime(short, ns=(st.st_atime_ns, e.mtime_ns), follow_symlinks=False)
                self.touched.add(path)
        for path in sorted(self.touched):
            _fsync_dir(path)


# ---- helpers ------------------------------------------------------------------------


def _whole_groups(
    groups: Mapping[bytes, list[bytes]], known: Mapping[bytes, os.stat_result]
) -> bool:
    """Whether the lstat of every member of every group is known and shows
    each group on one inode (no earlier run left one split)."""
    for members in groups.values():
        st = known.get(members[0])
        if st is None:
            return False
        if len(members) > 1:
            for p in members[1:]:
                other = known.get(p)
                if other is None or other.st_ino != st.st_ino:
                    return False
    return True


def _check_candidate(
    store: Store, rec: IndexRecord, want: Entry | None, published: dict[LayerId, bool] | None = None
) -> tuple[bytes, os.stat_result] | None:
    """The file an entry names and its lstat, if its layer is published and
    the file still has the metadata the entry records (and ``want``'s).
    ``published`` caches :meth:`Store.has_layer` answers."""
    known = None if published is None else published.get(rec.layer)
    if known is None:
        known = store.has_layer(rec.layer)
        if published is not None:
            published[rec.layer] = known
    if not known:
        return None
    path = os.fsencode(store.layer_tree(rec.layer)) + b"/" + rec.path
    try:
        st = lstat(path)
        meta = rec.meta
        owner = host_ids(st.st_uid, st.st_gid)  # manifests record real ids (rootless)
        if (
            not stat.S_ISREG(st.st_mode)
            or stat.S_IMODE(st.st_mode) != meta.get("m")
            or owner != (meta.get("u"), meta.get("g"))
            or st.st_size != meta.get("s")
            or st.st_mtime_ns != meta.get("t")
        ):
            return None
        xattrs = {k: v.hex() for k, v in list_xattrs(path).items()}
        if xattrs != meta.get("x", {}):
            return None  # overlay bookkeeping or changed attributes: not ours
    except OSError:
        return None
    if want is not None and material(want) != meta:
        return None
    return path, st


def _freed_bytes(members: list[bytes], sts: list[os.stat_result], todo: list[bytes]) -> int:
    """Disk usage of the inodes that lose their last name when ``todo`` are relinked."""
    names: dict[int, int] = {}
    for p, st in zip(members, sts, strict=True):
        if p in todo:
            names[st.st_ino] = names.get(st.st_ino, 0) + 1
    out = 0
    seen: set[int] = set()
    for st in sts:
        if st.st_ino in names and st.st_ino not in seen and st.st_nlink == names[st.st_ino]:
            out += st.st_blocks * 512
            seen.add(st.st_ino)
    return out


def _sweep_tmp(base: Path) -> None:
    """Remove links a crashed run left in ``dedup/tmp/`` (lock held: no run
    is going on)."""
    tmp = base / TMP_DIR
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp / name)


def _remove_old_layout(base: Path) -> None:
    """Remove the shard directories (``dedup/<2 hex>/``) of the one file per
    entry index used before the database (never released)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if len(name) == 2 and all(c in "0123456789abcdef" for c in name):
            shutil.rmtree(base / name, ignore_errors=True)


def _link_max(path: bytes) -> int:
    try:
        n = os.pathconf(path, "PC_LINK_MAX")
    except (OSError, ValueError):
        return DEFAULT_LINK_MAX
    return n if n > 0 else DEFAULT_LINK_MAX


def _path_of(e: Entry) -> bytes:
    return e.path


def _parent(rel: bytes) -> bytes:
    i = rel.rfind(b"/")
    return ROOT if i < 0 else rel[:i]


def _fsync_dir(path: bytes) -> None:
    fd = open_fd(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)
