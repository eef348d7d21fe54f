"""``snapws verify``: re-hash layers against their manifests and check that
the store's records hang together.

Two passes. The *scan* walks every chosen layer tree (overlay form, as
:mod:`snapws.layers.entries` reads it) and compares each node's metadata and
size with the layer's manifest; it costs one lstat per node. The *hash* pass
then reads the files whose size matched (all of them, or a deterministic
subset) in parallel, each inode once. Structural checks cover the records:
a snapshot record hashes to its name, its chain and parents exist, refs and
workspace HEADs point at snapshots, a manifest hashes to its layer id.

Read-only: the caller holds the store lock (shared is enough).
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import xxhash

from snapws.errors import StoreCorruptError
from snapws.ids import ContentHash, LayerId, SnapshotId, WorkspaceId
from snapws.layers.entries import Node, child, node_entry, planted_overlay_xattrs, read_node
from snapws.layers.equivalence import covers
from snapws.layers.hashing import CHUNK, DEFAULT_THREADS
from snapws.model import (
    ROOT,
    Entry,
    Kind,
    SnapshotRecord,
    decode_manifest,
    manifest_id,
    path_to_text,
)
from snapws.refnames import ref_name_problem, shown
from snapws.store.reffiles import REF_KINDS
from snapws.store.store import EMPTY_LAYER, Store

# ---- choosing the files to hash (restic's --read-data-subset) ---------------


@dataclass(frozen=True, slots=True)
class DataSubset:
    """Which files the hash pass reads: slice ``n`` of ``m`` (``n/m``) or a
    fraction (``p%``). A file belongs to a slice by the hash of its layer id
    and path, so the slices ``1/m`` .. ``m/m`` cover every file exactly once
    and a given ``p%`` picks the same files on every run."""

    text: str
    slice_no: int = 1
    slices: int = 1
    permille: int | None = None  # parts per million when given as p%

    @classmethod
    def parse(cls, text: str) -> DataSubset:
        """``"n/m"`` (1 <= n <= m) or ``"p%"`` (0 < p <= 100). Raises ValueError."""
        t = text.strip()
        if t.endswith("%"):
            try:
                pct = float(t[:-1])
            except ValueError:
                raise ValueError(f"{text!r} is not a percentage (e.g. 10%)") from None
            if not 0 < pct <= 100:
                raise ValueError(f"{text!r}: the percentage must be above 0 and at most 100")
            return cls(t, permille=round(pct * 10_000))
        n, sep, m = t.partition("/")
        if not sep or not n.isdigit() or not m.isdigit():
            raise ValueError(f"{text!r} is neither N/M (e.g. 1/5) nor N% (e.g. 10%)")
        if not 1 <= int(n) <= int(m):
            raise ValueError(f"{text!r}: N/M needs 1 <= N <= M")
        return cls(t, slice_no=int(n), slices=int(m))

    def selects(self, lid: LayerId, path: bytes) -> bool:
        h = xxhash.xxh3_64_intdigest(lid.hex.encode() + b"/" + path)
        if self.permille is not None:
            return h % 1_000_000 < self.permille
        return h % self.slices == self.slice_no - 1


# ---- results -------------------------------------------------------------------

#: Problem kinds, for people and for --json. File problems name a layer and a path.
FILE_KINDS = (
    "corrupted",
    "truncated",
    "grown",
    "missing",
    "extra",
    "metadata",
    "unreadable",
    "overlay-xattr",  # an overlayfs attribute snapws never writes (a redirect...)
)
RECORD_KINDS = (
    "bad-snapshot",  # record unreadable or not hashing to its name
    "bad-chain",  # chain file unreadable
    "chain-mismatch",  # the chain's top neither is nor holds the record's layer
    "missing-layer",  # a chain names a layer the store lacks
    "missing-parent",
    "bad-ref",  # unreadable ref or workspace record
    "dangling-ref",  # a ref or workspace HEAD names a missing snapshot
    "bad-manifest",  # missing, unparsable, or not hashing to its layer id
    "bad-workspace",  # workspace record unreadable, breaking the format, or its upperdir gone
    "bad-journal",  # journal.json unparsable or breaking the format
    "bad-remotes",  # remotes.json unparsable or breaking the format
    "bad-cache",  # a blob cache entry that does not parse (rebuilt when used)
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the store. ``affected`` lists the snapshots whose
    chain uses ``layer``; ``what`` names the metadata that differs."""

    kind: str
    message: str
    layer: LayerId | None = None
    path: bytes | None = None
    snapshot: SnapshotId | None = None
    ref: str | None = None
    what: tuple[str, ...] = ()
    affected: tuple[SnapshotId, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "layer": self.layer.hex if self.layer else None,
            "path": path_to_text(self.path) if self.path is not None else None,
            "snapshot": self.snapshot.hex if self.snapshot else None,
            "ref": self.ref,
            "what": list(self.what),
            "affected": [s.hex for s in self.affected],
        }


@dataclass(slots=True)
class VerifyReport:
    """What verify checked and found. ``complete`` is False when
    ``max_duration`` stopped the hash pass early."""

    problems: list[Problem] = field(default_factory=list)
    snapshots_checked: int = 0
    layers_checked: int = 0
    entries_checked: int = 0
    files_checked: int = 0  # regular files whose metadata and size were checked
    files_to_hash: int = 0
    bytes_to_hash: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    complete: bool = True
    subset: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def bytes_per_second(self) -> float:
        return self.bytes_hashed / self.seconds if self.seconds > 0 else 0.0

    def files_per_second(self) -> float:
        return self.files_checked / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "subset": self.subset,
            "problems": [p.to_json() for p in self.problems],
            "snapshots_checked": self.snapshots_checked,
            "layers_checked": self.layers_checked,
            "entries_checked": self.entries_checked,
            "files_checked": self.files_checked,
            "files_to_hash": self.files_to_hash,
            "bytes_to_hash": self.bytes_to_hash,
            "files_hashed": self.files_hashed,
            "bytes_hashed": self.bytes_hashed,
            "seconds": round(self.seconds, 3),
            "throughput": {
                "mb_per_s": round(self.bytes_per_second() / 1e6, 1),
                "files_per_s": round(self.files_per_second(), 1),
            },
        }


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported to the caller's callback: ``phase`` is ``scan`` (counting
    layers) or ``hash`` (counting files and bytes)."""

    phase: str
    done: int
    total: int
    bytes_done: int = 0
    bytes_total: int = 0


ProgressFn = Callable[[Progress], None]


# ---- the check -------------------------------------------------------------------


@dataclass(slots=True)
class _HashJob:
    """One inode to read, and the manifest entries (layer, path, hash) it backs."""

    abspath: bytes
    size: int
    expect: list[tuple[LayerId, bytes, ContentHash | None]]


@dataclass(slots=True)
class _Run:
    store: Store
    report: VerifyReport
    users: dict[LayerId, list[SnapshotId]]
    jobs: dict[tuple[int, int], _HashJob] = field(default_factory=dict)

    def add(
        self,
        kind: str,
        message: str,
        layer: LayerId | None = None,
        path: bytes | None = None,
        **kw: Any,
    ) -> None:
        affected = tuple(self.users.get(layer, ())) if layer is not None else ()
        self.report.problems.append(Problem(kind, message, layer, path, affected=affected, **kw))


def verify(
    store: Store,
    snapshots: list[SnapshotId] | None = None,
    subset: DataSubset | None = None,
    max_duration: float | None = None,
    threads: int = DEFAULT_THREADS,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check the layers of ``snapshots``' chains (None: every layer, every
    record and every ref of the store) and return what is wrong.

    ``subset`` limits which files are re-hashed (metadata and sizes of all
    are checked); ``max_duration`` (seconds from the start) stops the hash
    pass early, leaving ``complete`` False. Precondition: the caller holds the
    store lock. Reads only; never raises for damage it finds (it reports it);
    raises OSError only if the store's directories cannot be listed."""
    started = time.monotonic()
    report = VerifyReport(subset=subset.text if subset else None)
    run = _Run(store, report, {})
    everything = snapshots is None
    all_sids = store.snapshot_ids()
    check = set(all_sids if everything else snapshots or ())
    chains = _read_chains(run, all_sids, check)
    for sid, chain in chains.items():
        for lid in chain:
            run.users.setdefault(lid, []).append(sid)
    _check_snapshots(run, chains, check)
    if everything:
        _check_refs(run)
        _check_other_records(run)
        layers = sorted(set(store.layer_ids()) | {lid for c in chains.values() for lid in c})
    else:
        layers = _unique(lid for sid in snapshots or () for lid in chains.get(sid, ()))
    layers = [lid for lid in layers if (store.layer_dir(lid)).is_dir()]
    for n, lid in enumerate(layers, 1):
        _check_layer(run, lid, subset)
        if progress is not None:
            progress(Progress("scan", n, len(layers)))
    report.layers_checked = len(layers)
    report.snapshots_checked = len(all_sids) if everything else len(snapshots or ())
    deadline = started + max_duration if max_duration is not None else None
    _hash_pass(run, threads, deadline, progress)
    report.problems.sort(key=_problem_order)
    report.seconds = time.monotonic() - started
    return report


def _unique(items: Iterable[LayerId]) -> list[LayerId]:
    return list(dict.fromkeys(items))


def _problem_order(p: Problem) -> tuple[str, bytes, str]:
    return (p.layer.hex if p.layer else "", p.path or b"", p.kind)


def _read_chains(
    run: _Run, all_sids: list[SnapshotId], check: set[SnapshotId]
) -> dict[SnapshotId, list[LayerId]]:
    """Chains of every snapshot whose chain is readable (problems for those
    in ``check`` whose chain is not)."""
    chains: dict[SnapshotId, list[LayerId]] = {}
    for sid in all_sids:
        try:
            chains[sid] = run.store.chain(sid)
        except StoreCorruptError as e:
            if sid in check:
                run.add("bad-chain", e.message, snapshot=sid)
    return chains


def _check_snapshots(
    run: _Run, chains: dict[SnapshotId, list[LayerId]], check: set[SnapshotId]
) -> None:
    """Records of the snapshots in ``check``: readable, hashing to their
    name, with existing parents and chain layers."""
    store = run.store
    for sid in sorted(check):
        try:
            rec = store.read_snapshot(sid)
        except StoreCorruptError as e:
            run.add("bad-snapshot", e.message, snapshot=sid)
            continue
        for parent in rec.parents:
            if not store.has_snapshot(parent) and not store.is_forgotten(parent):
                run.add(
                    "missing-parent",
                    f"snapshot {sid.short()} names parent {parent.short()}, which is missing",
                    snapshot=sid,
                )
        for lid in chains.get(sid, ()):
            if not store.has_layer(lid) and not store.layer_dir(lid).is_dir():
                run.add(
                    "missing-layer",
                    f"the chain of snapshot {sid.short()} names layer {lid.short()}, "
                    "which is missing",
                    layer=lid,
                    snapshot=sid,
                )
        _check_chain_matches(run, sid, rec, chains.get(sid))


def _check_chain_matches(
    run: _Run, sid: SnapshotId, rec: SnapshotRecord, chain: list[LayerId] | None
) -> None:
    """The chain shows the record's layer on top: its top layer is that
    layer, or a merged layer (compaction) that holds it (:func:`covers`).
    Skipped while a layer or manifest is missing or unreadable (reported
    elsewhere), and when the record's layer is gone (a gc older than the rule
    that keeps it): nothing then says what the top should hold."""
    store = run.store
    ch = [lid for lid in chain or () if lid != EMPTY_LAYER]
    top = ch[-1] if ch else EMPTY_LAYER
    if chain is None or rec.layer in (top, EMPTY_LAYER) or not store.has_layer(rec.layer):
        return
    try:
        top_entries = decode_manifest(store.read_manifest(top))
        own = decode_manifest(store.read_manifest(rec.layer))
    except (StoreCorruptError, ValueError):
        return
    if not covers(top_entries, own, len(ch) == 1):
        run.add(
            "chain-mismatch",
            f"the chain of snapshot {sid.short()} does not show its record's layer "
            f"{rec.layer.short()}: its top layer {top.short()} lacks or changes entries of it",
            layer=top,
            snapshot=sid,
        )


def _check_refs(run: _Run) -> None:
    store = run.store
    for kind in REF_KINDS:
        try:
            names = store.ref_entries(kind)
        except StoreCorruptError as e:
            run.add("bad-ref", e.message, ref=f"refs/{kind}")
            continue
        for name in names:
            ref = f"refs/{kind}/{name}"
            problem = ref_name_problem(name)
            if problem is not None:  # never read: snapws ignores it
                run.add("bad-ref", f"{shown(ref)} is not a valid ref name: {problem}", ref=ref)
                continue
            try:
                sid = store.read_ref(kind, name)
            except StoreCorruptError as e:
                run.add("bad-ref", e.message, ref=ref)
                continue
            if sid is not None and not store.has_snapshot(sid):
                run.add("dangling-ref", f"{ref} points to missing snapshot {sid.short()}", ref=ref)
    for p in sorted((store.root / "workspaces").iterdir()):
        if not (p / "state.json").is_file():
            continue
        ref = f"workspaces/{p.name}/HEAD"
        try:
            state = store.read_workspace(WorkspaceId(p.name))
        except (StoreCorruptError, ValueError):
            continue  # reported by _check_other_records
        if not store.has_snapshot(state.head):
            run.add(
                "dangling-ref",
                f"the HEAD of workspace {state.path} points to missing snapshot "
                f"{state.head.short()}",
                ref=ref,
            )


def _check_other_records(run: _Run) -> None:
    """Workspace records, journal, remotes and blob cache (ops.storecheck)."""
    from snapws.ops.storecheck import other_record_problems

    for p in other_record_problems(run.store):
        run.add(p.kind, p.message, ref=p.ref)


def _check_layer(run: _Run, lid: LayerId, subset: DataSubset | None) -> None:
    """Compare one layer's tree with its manifest; queue files to hash."""
    store = run.store
    try:
        data = (store.layer_dir(lid) / "manifest").read_bytes()
    except OSError as err:
        run.add("bad-manifest", f"layer {lid.short()} has no readable manifest: {err}", lid)
        return
    if manifest_id(data) != lid:
        run.add(
            "bad-manifest",
            f"the manifest of layer {lid.short()} does not hash to the layer's id "
            f"(it hashes to {manifest_id(data).short()})",
            lid,
        )
    try:
        expected = {e.path: e for e in decode_manifest(data)}
    except ValueError as err:
        run.add("bad-manifest", f"the manifest of layer {lid.short()} is unreadable: {err}", lid)
        return
    root = os.fsencode(store.layer_tree(lid))
    nodes = _read_tree_tolerant(run, lid, root)
    if nodes is None:
        return
    _check_overlay_xattrs(run, lid, nodes)
    actual = {n.path: n for n in nodes}
    run.report.entries_checked += len(expected)
    links = _link_leaders(nodes)
    expected_paths = sorted(expected)
    actual_paths = sorted(actual)
    folded: set[bytes] = set()  # paths whose subtree is reported as a whole
    for path, e in expected.items():
        if _under_any(path, folded):
            continue
        node = actual.get(path)
        if node is None:
            below = _count_below(path, expected_paths)
            more = _below_note(below)
            run.add("missing", f"in the manifest, not on disk{more}", lid, path)
            folded.add(path)
            continue
        _compare(run, lid, e, node, links.get(path), subset)
        if node.kind is not e.kind:
            folded.add(path)
    for path, node in actual.items():
        if path in expected or _under_any(path, folded):
            continue
        if path == ROOT:
            continue  # an empty manifest records no root
        below = _count_below(path, actual_paths) if node.kind is Kind.DIR else 0
        more = _below_note(below)
        run.add("extra", f"not in the manifest: {node.kind.name.lower()}{more}", lid, path)
        folded.add(path)


def _check_overlay_xattrs(run: _Run, lid: LayerId, nodes: list[Node]) -> None:
    """Every overlayfs attribute in a layer except the store's opaque marker
    (``y`` on a directory) is a problem: snapws never publishes one, and a
    mount would act on it (a ``redirect`` shows another directory's content,
    a ``whiteout`` hides a path), whatever the manifest says."""
    for node in nodes:
        planted = planted_overlay_xattrs(node, run.store.xattr_form)
        if planted:
            names = ", ".join(planted)
            run.add(
                "overlay-xattr",
                f"carries the overlayfs attribute {names}, which snapws never writes "
                "into a layer (planted, or left by a mount snapws did not make): "
                "a mount would act on it",
                lid,
                node.path,
                what=planted,
            )


def _read_tree_tolerant(run: _Run, lid: LayerId, root: bytes) -> list[Node] | None:
    """Nodes of a layer tree as :func:`snapws.layers.scan.read_tree` reads
    them, but an unreadable directory is a problem, not an abort."""
    try:
        nodes = [read_node(ROOT, root)]
    except OSError as e:
        run.add("missing", f"the layer's tree is unreadable: {e.strerror}", lid, ROOT)
        return None
    stack = [(ROOT, root)] if nodes[0].kind is Kind.DIR else []
    while stack:
        rel, abspath = stack.pop()
        try:
            with os.scandir(abspath) as it:
                ents = sorted(it, key=lambda d: d.name)
            dirs = []
            for de in ents:
                p = child(rel, de.name)
                try:
                    node = read_node(p, de.path, de.stat(follow_symlinks=False))
                except OSError as e:
                    run.add("unreadable", f"cannot read: {e.strerror}", lid, p)
                    continue
                nodes.append(node)
                if node.kind is Kind.DIR:
                    dirs.append((p, de.path))
        except OSError as e:
            run.add("unreadable", f"cannot list the directory: {e.strerror}", lid, rel)
            continue
        stack.extend(reversed(dirs))
    return nodes


def _link_leaders(nodes: list[Node]) -> dict[bytes, bytes]:
    """Hardlink followers -> their leader (the group's smallest path), as
    :func:`snapws.layers.scan.entries_of` records them."""
    groups: dict[tuple[int, int], list[bytes]] = {}
    for n in nodes:
        if n.kind is Kind.FILE and n.st.st_nlink > 1:
            groups.setdefault((n.st.st_dev, n.st.st_ino), []).append(n.path)
    out: dict[bytes, bytes] = {}
    for paths in groups.values():
        lead = min(paths)
        out.update((p, lead) for p in paths if p != lead)
    return out


def _below_note(n: int) -> str:
    if not n:
        return ""
    return f" (and {n} {'entry' if n == 1 else 'entries'} below it)"


def _under_any(path: bytes, tops: set[bytes]) -> bool:
    if not tops:
        return False
    p = path
    while True:
        i = p.rfind(b"/")
        if i < 0:
            return False
        p = p[:i]
        if p in tops:
            return True


def _count_below(path: bytes, sorted_paths: list[bytes]) -> int:
    """How many of ``sorted_paths`` lie strictly below ``path``."""
    return bisect.bisect_left(sorted_paths, path + b"0") - bisect.bisect_left(
        sorted_paths, path + b"/"
    )


def _compare(
    run: _Run,
    lid: LayerId,
    e: Entry,
    node: Node,
    link: bytes | None,
    subset: DataSubset | None,
) -> None:
    if node.kind is Kind.FILE:
        run.report.files_checked += 1
    if node.kind is not e.kind:
        run.add(
            "metadata",
            f"is a {node.kind.name.lower()}, the manifest says {e.kind.name.lower()}",
            lid,
            e.path,
            what=("kind",),
        )
        return
    if e.kind is Kind.WHITEOUT:
        return
    got = node_entry(node, e.hash)
    what = list(e.meta_differences(got))
    if e.target != got.target:
        what.append("target")
    if e.rdev != got.rdev:
        what.append("rdev")
    if e.opaque != got.opaque:
        what.append("opaque")
    if e.mtime_ns != got.mtime_ns:  # directories too: the manifest records them
        what.append("mtime")
    if e.kind is Kind.FILE and e.link != link:
        what.append("link")
    if what:
        run.add("metadata", _meta_message(e, got, link, what), lid, e.path, what=tuple(what))
    if e.kind is not Kind.FILE:
        return
    if got.size != e.size:
        kind = "truncated" if got.size < e.size else "grown"
        run.add(kind, f"size {got.size} bytes, the manifest says {e.size}", lid, e.path)
        return
    if subset is not None and not subset.selects(lid, e.path):
        return
    key = (node.st.st_dev, node.st.st_ino)
    job = run.jobs.get(key)
    if job is None:
        run.jobs[key] = _HashJob(node.abspath, got.size, [(lid, e.path, e.hash)])
    else:
        job.expect.append((lid, e.path, e.hash))


def _meta_message(e: Entry, got: Entry, link: bytes | None, what: list[str]) -> str:
    parts = []
    for w in what:
        if w == "mode":
            parts.append(f"mode {got.mode:04o}, the manifest says {e.mode:04o}")
        elif w == "owner":
            parts.append(f"owner {got.uid}:{got.gid}, the manifest says {e.uid}:{e.gid}")
        elif w == "mtime":
            parts.append(f"mtime {got.mtime_ns}, the manifest says {e.mtime_ns}")
        elif w == "target":
            tgt = os.fsdecode(got.target or b"")
            parts.append(f"target {tgt!r}, the manifest says {os.fsdecode(e.target or b'')!r}")
        elif w == "link":
            now = os.fsdecode(link) if link else "none"
            was = os.fsdecode(e.link) if e.link else "none"
            parts.append(f"hardlink of {now}, the manifest says {was}")
        else:
            parts.append(f"{w} differ" if w == "xattrs" else f"{w} differs")
    return "; ".join(parts)


# ---- the hash pass ---------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def _hash_until(path: bytes, stop: threading.Event, counter: _Counter) -> ContentHash | None:
    """XXH3-128 of a file (as :func:`snapws.layers.hashing.hash_file`), or
    None if ``stop`` was set before the end. Raises OSError."""
    h = xxhash.xxh3_128()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            if stop.is_set():
                return None
            buf = os.read(fd, CHUNK)
            if not buf:
                break
            h.update(buf)
            counter.add(len(buf))
    finally:
        os.close(fd)
    return ContentHash(h.hexdigest())


#: A task hashes up to this many files or bytes: one future per small file
#: costs more in thread hand-offs than hashing it (see hashing.hash_files).
BATCH_FILES = 256
BATCH_BYTES = 16 << 20

_Outcome = ContentHash | OSError | None  # None: stopped before the end


def _batches(jobs: list[_HashJob]) -> list[list[_HashJob]]:
    out: list[list[_HashJob]] = []
    batch: list[_HashJob] = []
    nbytes = 0
    for job in jobs:
        if batch and (len(batch) >= BATCH_FILES or nbytes + job.size > BATCH_BYTES):
            out.append(batch)
            batch, nbytes = [], 0
        batch.append(job)
        nbytes += job.size
    if batch:
        out.append(batch)
    return out


def _hash_batch(batch: list[_HashJob], stop: threading.Event, counter: _Counter) -> list[_Outcome]:
    out: list[_Outcome] = []
    for job in batch:
        try:
            out.append(_hash_until(job.abspath, stop, counter))
        except OSError as e:
            out.append(e)
    return out


def _hash_pass(
    run: _Run, threads: int, deadline: float | None, progress: ProgressFn | None
) -> None:
    report = run.report
    jobs = list(run.jobs.values())
    report.files_to_hash = len(jobs)
    report.bytes_to_hash = sum(j.size for j in jobs)
    stop = threading.Event()
    counter = _Counter()
    threads = max(1, threads)
    pending: dict[Future[list[_Outcome]], list[_HashJob]] = {}
    it = iter(_batches(jobs))
    done_files = 0

    def tell() -> None:
        if progress is not None:
            progress(Progress("hash", done_files, len(jobs), counter.value, report.bytes_to_hash))

    tell()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    stop.set()
                while not stop.is_set() and len(pending) < 2 * threads:
                    batch = next(it, None)
                    if batch is None:
                        break
                    pending[pool.submit(_hash_batch, batch, stop, counter)] = batch
                if not pending:
                    break
                timeout = 0.2
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - time.monotonic()))
                finished, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for fut in finished:
                    batch = pending.pop(fut)
                    for job, outcome in zip(batch, fut.result(), strict=True):
                        if outcome is not None:
                            _settle(run, job, outcome)
                            done_files += 1
                tell()
        except BaseException:
            stop.set()
            raise
    report.files_hashed = done_files
    report.bytes_hashed = counter.value
    report.complete = done_files == len(jobs)


def _settle(run: _Run, job: _HashJob, outcome: ContentHash | OSError) -> None:
    """Record the outcome of one hash."""
    if isinstance(outcome, OSError):
        for lid, path, _h in job.expect:
            run.add("unreadable", f"cannot read: {outcome.strerror}", lid, path)
        return
    for lid, path, want in job.expect:
        if outcome != want:
            run.add(
                "corrupted",
                "content does not match the manifest's hash "
                f"({outcome.hex[:12]}, the manifest says {want.hex[:12] if want else 'none'})",
                lid,
                path,
            )
