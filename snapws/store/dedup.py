"""Store-wide deduplication: a regular file whose content *and* metadata
equal those of a file in a published layer becomes a hardlink of that file,
so identical files are stored once across layers, branches and workspaces.

Metadata counts (mode, owner, mtime, xattrs), not only content: the names of
one inode share all of them, and manifests must stay true, so a layer's id
never changes through deduplication.

The index, ``<store>/dedup/``, maps a key (XXH3-128 of a file's manifest
line without path and hardlink fields: content hash, size, mode, uid, gid,
mtime, xattrs) to one file of a published layer::

    dedup/<2 hex>/<30 hex>   {"key": ..., "layer": ..., "path": ..., "meta": {...}}
    dedup/tmp/               links being moved into a tree (swept at each run)

It is a cache, never trusted: an entry is used only if it parses, names its
own key, records the same metadata, its layer is published, and ``lstat``
and the xattrs of the file it names still match. Entries pointing at deleted
layers are dropped or replaced when met; :func:`prune_index` drops them all.
Entries are written atomically (temporary name, rename) but not fsynced: a
lost or torn entry costs a missed link, nothing else.

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

Test-only crash injection: ``SNAPWS_DEDUP_CRASH_AT=link:N`` (``rename:N``)
SIGKILLs the process after the N-th link into ``dedup/tmp/`` (the N-th
rename into the tree) of this process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapws.ids import Digest, LayerId
from snapws.layers.entries import list_xattrs
from snapws.model import ROOT, Entry, Kind, decode_manifest, path_to_text, text_to_path
from snapws.store.store import Store

INDEX_DIR = "dedup"
TMP_DIR = "tmp"
FORMAT = 1
#: Links kept free below the filesystem's limit (flatten links every file of
#: the layers it merges once more).
LINK_HEADROOM = 1000
DEFAULT_LINK_MAX = 65000  # ext4, when pathconf cannot tell
CRASH_ENV = "SNAPWS_DEDUP_CRASH_AT"


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
    return Digest.of(_canonical(_material(e))).hex


def index_root(store: Store) -> Path:
    return store.root / INDEX_DIR


def dedup_tree(
    store: Store,
    tree: Path,
    layer: LayerId,
    manifest: bytes,
    link_limit: int | None = None,
) -> DedupStats:
    """Replace files of ``tree`` by hardlinks of identical files (content and
    metadata) of published layers, and index the others.

    Preconditions: the caller holds the store lock exclusively; ``tree`` is
    the tree of the layer ``layer`` (described by ``manifest``), on the
    store's filesystem, not published yet, and certain to be published (no
    mount uses it as an upperdir any more, and no rollback can hand it back
    to a workspace). The manifest does not change. ``link_limit``: the most
    links an inode may reach (default: the filesystem's limit less
    ``LINK_HEADROOM``). Idempotent; safe to run again after a crash. Raises
    OSError only if the tree cannot be read or repaired."""
    stats = DedupStats()
    entries = decode_manifest(manifest)
    by_path = {e.path: e for e in entries}
    groups: dict[bytes, list[bytes]] = {}
    for e in sorted(entries, key=lambda e: e.path):
        if e.kind is Kind.FILE and e.hash is not None and e.size > 0:
            groups.setdefault(e.link or e.path, []).append(e.path)
    if not groups:
        return stats
    root = os.fsencode(tree)
    try:
        run = _Run(store, root, layer, link_limit)
    except OSError:
        return stats  # no usable index (full or read-only store): store as is
    for leader, members in groups.items():
        lead = by_path.get(leader)
        if lead is None or lead.link is not None:
            continue  # not a well-formed group: leave it alone
        stats.groups += 1
        run.group(lead, members, stats)
    run.restore_dir_mtimes(by_path, groups)
    return stats


def dedup_staging(store: Store, staging: Path, layer: LayerId) -> DedupStats:
    """:func:`dedup_tree` on ``staging/tree``, with the manifest the staging
    directory holds (``manifest.pending``, or ``manifest`` once renamed)."""
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
    dropped = 0
    for shard in sorted(base.iterdir()):
        if shard.name == TMP_DIR or not shard.is_dir():
            continue
        for p in sorted(shard.iterdir()):
            key = shard.name + p.name
            rec = _read_entry(p, key)
            if rec is None or _check_candidate(store, rec, None) is None:
                p.unlink(missing_ok=True)
                dropped += 1
    return dropped


# ---- one run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    """A parsed index entry."""

    key: str
    layer: LayerId
    path: bytes
    meta: dict[str, Any]


class _Run:
    def __init__(self, store: Store, root: bytes, layer: LayerId, limit: int | None) -> None:
        self.store = store
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
        self.base_b = os.fsencode(self.base)
        self.tmp_prefix = self.base_b + f"/{TMP_DIR}/{os.getpid()}-".encode()
        self.shards: set[str] = set()  # shard directories known to exist
        self.published: dict[LayerId, bool] = {}

    def abspath(self, rel: bytes) -> bytes:
        return self.root if rel == ROOT else self.root + b"/" + rel

    def group(self, lead: Entry, members: list[bytes], stats: DedupStats) -> None:
        material = _material(lead)
        key = Digest.of(_canonical(material)).hex
        sts = [os.lstat(self.abspath(p)) for p in members]
        if key in self.used_keys:
            # a second group of this layer with the same key keeps its own inode
            self.claimed.add(self.unify(members, sts, avoid=None))
            return
        self.used_keys.add(key)
        rec = _read_entry(self._entry_path(key), key)
        cand = None
        if rec is not None and rec.meta == material and rec.layer != self.layer:
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
                    sts = [os.lstat(self.abspath(p)) for p in members]
                    self.claimed.add(self.unify(members, sts, avoid=cst.st_ino))
                    self._drop(key)
                    return
                stats.linked += 1
                stats.saved_bytes += freed
                self.claimed.add(cst.st_ino)
                return
        ino = self.unify(members, sts, avoid=None)
        self.claimed.add(ino)
        nlink = sts[0].st_nlink if sts[0].st_ino == ino else 0
        if nlink == len(members):  # no name outside this tree (0: just relinked)
            if self._write_entry(key, members[0], material):
                stats.indexed += 1
        elif rec is not None:
            self._drop(key)

    def unify(self, members: list[bytes], sts: list[os.stat_result], avoid: int | None) -> int:
        """Make all ``members`` (``sts``: their lstat) one inode (a crash, or
        a failed link, may have split a group): the first member's not
        ``avoid``. Returns it."""
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
        os.link(src, tmp)
        _crash_hook("link", self.tmp_count)
        dst = self.abspath(rel)
        try:
            os.rename(tmp, dst)
        except OSError:
            os.unlink(tmp)
            raise
        _crash_hook("rename", self.tmp_count)
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
            st = os.lstat(path)
            if st.st_mtime_ns != e.mtime_ns:
                os.utime(path, ns=(st.st_atime_ns, e.mtime_ns), follow_symlinks=False)
                self.touched.add(path)
        for path in sorted(self.touched):
            _fsync_dir(path)

    # -- the index --------------------------------------------------------------------

    def _entry_path(self, key: str) -> bytes:
        return self.base_b + f"/{key[:2]}/{key[2:]}".encode()

    def _write_entry(self, key: str, rel: bytes, material: dict[str, Any]) -> bool:
        obj = {
            "v": FORMAT,
            "key": key,
            "layer": self.layer.hex,
            "path": path_to_text(rel),
            "meta": material,
        }
        data = _canonical(obj) + b"\n"
        final = self._entry_path(key)
        tmp = self.base_b + f"/{key[:2]}/.{key[2:]}.tmp".encode()
        try:
            if key[:2] not in self.shards:
                os.makedirs(self.base_b + b"/" + key[:2].encode(), exist_ok=True)
                self.shards.add(key[:2])
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except OSError:
            return False  # a cache: a missing entry costs a missed link
        return True

    def _drop(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._entry_path(key))


# ---- helpers ------------------------------------------------------------------------


def _material(e: Entry) -> dict[str, Any]:
    """What must be equal for two files to share an inode: the manifest
    line without the path and the hardlink leader."""
    obj = e.to_json()
    obj.pop("p", None)
    obj.pop("hl", None)
    return obj


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _read_entry(path: bytes | Path, key: str) -> _Record | None:
    """The entry at ``path`` if it is well formed and names ``key``."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
        meta = obj["meta"]
        if (
            obj.get("v") != FORMAT
            or obj["key"] != key
            or not isinstance(meta, dict)
            or Digest.of(_canonical(meta)).hex != key
        ):
            return None
        rel = text_to_path(obj["path"])
        if not rel or rel == ROOT or rel.startswith(b"/") or b".." in rel.split(b"/"):
            return None
        return _Record(key, LayerId(obj["layer"]), rel, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_candidate(
    store: Store, rec: _Record, want: Entry | None, published: dict[LayerId, bool] | None = None
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
        st = os.lstat(path)
        meta = rec.meta
        if (
            not stat.S_ISREG(st.st_mode)
            or stat.S_IMODE(st.st_mode) != meta.get("m")
            or st.st_uid != meta.get("u")
            or st.st_gid != meta.get("g")
            or st.st_size != meta.get("s")
            or st.st_mtime_ns != meta.get("t")
        ):
            return None
        xattrs = {k: v.hex() for k, v in list_xattrs(path).items()}
        if xattrs != meta.get("x", {}):
            return None  # overlay bookkeeping or changed attributes: not ours
    except OSError:
        return None
    if want is not None and _material(want) != meta:
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


def _link_max(path: bytes) -> int:
    try:
        n = os.pathconf(path, "PC_LINK_MAX")
    except (OSError, ValueError):
        return DEFAULT_LINK_MAX
    return n if n > 0 else DEFAULT_LINK_MAX


def _parent(rel: bytes) -> bytes:
    i = rel.rfind(b"/")
    return ROOT if i < 0 else rel[:i]


def _fsync_dir(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_hook(what: str, n: int) -> None:
    if os.environ.get(CRASH_ENV) == f"{what}:{n}":
        os.kill(os.getpid(), signal.SIGKILL)
