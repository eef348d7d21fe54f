"""Checking published layers for ``snapws verify``: each layer's tree
against its manifest, then the content of its files against the manifest's
hashes.

The *scan* (:func:`check_layer`) walks a layer tree (overlay form, as
:mod:`snapws.layers.entries` reads it) and compares each node's metadata and
size with the manifest; it costs one lstat per node and queues the files
whose size matched (all, or those a :class:`DataSubset` selects). The *hash
pass* (:func:`hash_pass`) then reads the queued files, each inode once, in
the shared :class:`snapws.layers.hashing.HashPool`.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from snapws.deeppath import anchored, open_fd
from snapws.ids import ContentHash, LayerId
from snapws.layers.entries import (
    Node,
    Tops,
    child,
    node_entry,
    planted_overlay_xattrs,
    read_node,
)
from snapws.layers.hashing import HashPool, HashProgress
from snapws.model import ROOT, Entry, Kind, decode_manifest, manifest_id
from snapws.ops.maintenance.verifyreport import DataSubset, Findings, Progress, ProgressFn


@dataclass(slots=True)
class HashJob:
    """One inode to read, and the manifest entries (layer, path, hash) it backs."""

    abspath: bytes
    size: int
    expect: list[tuple[LayerId, bytes, ContentHash | None]]


#: The files the hash pass reads, one job per inode (device, inode number).
HashJobs = dict[tuple[int, int], HashJob]


def check_layer(run: Findings, lid: LayerId, subset: DataSubset | None, jobs: HashJobs) -> None:
    """Compare the tree of layer ``lid`` with its manifest, adding what
    differs to ``run``; queue in ``jobs`` the files to hash. Reads only."""
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
    folded = Tops(root_covers=False)  # paths whose subtree is reported as a whole
    for path, e in expected.items():
        if folded.below(path):
            continue
        node = actual.get(path)
        if node is None:
            below = _count_below(path, expected_paths)
            more = _below_note(below)
            run.add("missing", f"in the manifest, not on disk{more}", lid, path)
            folded.add(path)
            continue
        _compare(run, lid, e, node, links.get(path), subset, jobs)
        if node.kind is not e.kind:
            folded.add(path)
    for path, node in actual.items():
        if path in expected or folded.below(path):
            continue
        if path == ROOT:
            continue  # an empty manifest records no root
        below = _count_below(path, actual_paths) if node.kind is Kind.DIR else 0
        more = _below_note(below)
        run.add("extra", f"not in the manifest: {node.kind.name.lower()}{more}", lid, path)
        folded.add(path)


def _check_overlay_xattrs(run: Findings, lid: LayerId, nodes: list[Node]) -> None:
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


def _read_tree_tolerant(run: Findings, lid: LayerId, root: bytes) -> list[Node] | None:
    """Nodes of a layer tree as :func:`snapws.layers.scan.read_tree` reads
    them, but an unreadable directory is a problem, not an abort."""
    try:
        nodes = [read_node(ROOT, root)]
    except OSError as e:
        run.add("missing", f"the layer's tree is unreadable: {e.strerror}", lid, ROOT)
        return None
    stack = [(ROOT, root)] if nodes[0].kind is Kind.DIR else []
    with anchored():  # paths may be longer than PATH_MAX
        while stack:
            rel, abspath = stack.pop()
            try:
                fd = open_fd(abspath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    names = sorted(os.fsencode(n) for n in os.listdir(fd))
                    listed = [(n, _lstat_at(fd, n)) for n in names]
                finally:
                    os.close(fd)
            except OSError as e:
                run.add("unreadable", f"cannot list the directory: {e.strerror}", lid, rel)
                continue
            dirs = []
            for name, st in listed:
                p = child(rel, name)
                try:
                    if isinstance(st, OSError):
                        raise st
                    node = read_node(p, abspath + b"/" + name, st)
                except OSError as e:
                    run.add("unreadable", f"cannot read: {e.strerror}", lid, p)
                    continue
                nodes.append(node)
                if node.kind is Kind.DIR:
                    dirs.append((p, node.abspath))
            stack.extend(reversed(dirs))
    return nodes


def _lstat_at(dirfd: int, name: bytes) -> os.stat_result | OSError:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as e:
        return e


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


def _count_below(path: bytes, sorted_paths: list[bytes]) -> int:
    """How many of ``sorted_paths`` lie strictly below ``path``."""
    return bisect.bisect_left(sorted_paths, path + b"0") - bisect.bisect_left(
        sorted_paths, path + b"/"
    )


def _compare(
    run: Findings,
    lid: LayerId,
    e: Entry,
    node: Node,
    link: bytes | None,
    subset: DataSubset | None,
    jobs: HashJobs,
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
    job = jobs.get(key)
    if job is None:
        jobs[key] = HashJob(node.abspath, got.size, [(lid, e.path, e.hash)])
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


def hash_pass(
    run: Findings,
    jobs: HashJobs,
    threads: int,
    deadline: float | None,
    progress: ProgressFn | None,
) -> None:
    """Hash the queued files and report those that differ from their
    manifests (or cannot be read). ``deadline`` (a :func:`time.monotonic`
    reading) stops it early: ``complete`` is then False. A KeyboardInterrupt
    stops the workers and propagates."""
    report = run.report
    todo = list(jobs.values())
    report.files_to_hash = len(todo)
    report.bytes_to_hash = sum(j.size for j in todo)

    def tell(p: HashProgress) -> None:
        if progress is not None:
            progress(Progress("hash", p.files_done, p.files_total, p.bytes_done, p.bytes_total))

    pool = HashPool(threads, tell)
    done = pool.hash(
        [j.abspath for j in todo], [j.size for j in todo], keep_errors=True, deadline=deadline
    )
    for job, outcome in zip(todo, done.outcomes, strict=True):
        if outcome is not None:
            _settle(run, job, outcome)
    report.files_hashed = done.files_done
    report.bytes_hashed = done.bytes_done
    report.complete = done.complete


def _settle(run: Findings, job: HashJob, outcome: ContentHash | OSError) -> None:
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
