"""``snapws gc``: delete the layers nothing uses any more, and old leftovers
in staging/ and trash/.

A layer is *in use*, and never deleted, when it is in the chain of a
snapshot of the store, is a lower layer of a mounted overlay (any mount of
this machine whose ``lowerdir`` names it: a workspace still mounted on an
older, equivalent chain keeps its layers), is named by an interrupted
operation's journal (directly, or through a snapshot it names), or is the
empty layer. A layer changed less than the *grace period* ago (newest
mtime/ctime of its directory and manifest, as git's ``gc.pruneExpire``) is
kept too, so a gc can never delete what a writer is about to publish or
reference; staging/ and trash/ entries follow the same rule.

Compute, then act: :func:`plan_gc` reads the store and the mount table and
returns a :class:`GcPlan` (with the bytes it would free); :func:`collect`
deletes, under a journal: each layer is renamed into trash/ (atomic), then
removed. A crash is finished by the next command (:func:`finish_gc`), which
checks again that no listed layer came into use.

Bytes freed are real disk usage (``st_blocks * 512``): an inode counts only
if every link to it is going away (flatten hardlinks files of old layers
into the merged one, so deleting an old layer frees only what it alone holds).

The store's OCI blob cache (compressed layer tars kept by export, push and
import, :mod:`snapws.oci.blobcache`) is pruned too, once the layers are
gone: entries of layers that no longer exist, and blobs no entry names
(older than the grace period), count in the bytes freed.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapws.crash import crashpoint, steps_of
from snapws.ids import HEX_LEN, LayerId, SnapshotId
from snapws.mounts import mounter
from snapws.oci.blobcache import BlobPrune, plan_blob_prune, prune_blob_cache
from snapws.store.store import EMPTY_LAYER, Store

#: Named steps for crash tests (SNAPWS_CRASH_AT), in order.
CRASH_STEPS = steps_of("gc")

DEFAULT_GRACE = 3600.0

_GRACE_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_GRACE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_grace(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m`` (minutes), ``1h30m``, ``2d``,
    ``1w``, ``0`` or ``now``. Raises ValueError."""
    t = text.strip().lower()
    if t == "now":
        return 0.0
    total = 0.0
    pos = 0
    if not t:
        raise ValueError("empty duration")
    while pos < len(t):
        m = _GRACE_PART.match(t, pos)
        if m is None or (not m.group(2) and (pos or m.end() != len(t))):
            raise ValueError(
                f"bad duration {text!r}: use seconds or units s, m (minutes), h, d, w "
                "(e.g. 90, 30m, 1h30m, 2d) or 'now'"
            )
        total += float(m.group(1)) * _GRACE_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_grace(seconds: float) -> str:
    """``1h``, ``30m``, ``90s``, ``0s``."""
    s = int(seconds)
    if s != seconds:
        return f"{seconds:g}s"
    for unit, n in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s and s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


# ---- what is in use ------------------------------------------------------------


def journal_strings(store: Store) -> list[str]:
    """Every string in an interrupted operation's journal (not gc's or
    prune's own lists of things to delete)."""
    j = store.read_journal()
    if j is None or j.get("op") in ("gc", "prune"):
        return []
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(j)
    return out


def journal_ids(store: Store) -> set[str]:
    """Ids (32 hex digits) that an interrupted operation's journal names."""
    pattern = re.compile(f"[0-9a-f]{{{HEX_LEN}}}")
    return {x for text in journal_strings(store) for x in pattern.findall(text)}


def _mounted_layers(store: Store) -> dict[LayerId, str]:
    """Layers that a mounted overlay stacks (its ``lowerdir`` names their
    trees), and those a fuse-overlayfs server holds open."""
    layers_dir = os.path.realpath(store.root / "layers") + "/"
    out: dict[LayerId, str] = {}
    for info in mounter.read_mountinfo():
        if info.fstype != "overlay":
            continue
        values: list[str] = []
        for key in ("lowerdir+", "lowerdir", "datadir+"):
            for v in info.super_values(key):
                if v:
                    values.extend(v.split(":") if key == "lowerdir" else [v])
        for v in values:
            if not v.startswith(layers_dir):
                continue
            name = v[len(layers_dir) :].split("/", 1)[0]
            try:
                lid = LayerId(name)
            except ValueError:
                continue
            out.setdefault(lid, f"mounted at {info.mountpoint}")
    # fuse-overlayfs mounts (attached or detached) hold their layers open
    from snapws.mounts import fuse

    for server in fuse.servers():
        for d in server.dirs:
            v = str(d)
            if not v.startswith(layers_dir):
                continue
            try:
                lid = LayerId(v[len(layers_dir) :].split("/", 1)[0])
            except ValueError:
                continue
            out.setdefault(lid, f"used by fuse-overlayfs (pid {server.pid})")
    return out


def layers_in_use(store: Store) -> dict[LayerId, str]:
    """Every layer gc must keep whatever its age, with why: ``used by a
    snapshot``, ``the layer of a snapshot's record``, ``mounted at PATH``,
    ``interrupted operation``, ``the empty layer``. Raises StoreCorruptError
    if a chain or record is unreadable (then nobody can tell what is
    garbage), MountError if /proc is not readable."""
    out: dict[LayerId, str] = {EMPTY_LAYER: "the empty layer"}
    for sid in store.snapshot_ids():
        for lid in store.chain(sid):
            out.setdefault(lid, "used by a snapshot")
    for lid, why in _mounted_layers(store).items():
        out.setdefault(lid, why)
    for hexid in sorted(journal_ids(store)):
        sid = SnapshotId(hexid)
        if store.has_snapshot(sid):
            for lid in store.chain(sid):
                out.setdefault(lid, "interrupted operation")
        out.setdefault(LayerId(hexid), "interrupted operation")
    for sid in store.snapshot_ids():
        # a snapshot's own layer, even once compaction merged it away: an
        # export needs its manifest to prove a merged top (snapws.oci.image)
        out.setdefault(store.read_snapshot(sid).layer, "the layer of a snapshot's record")
    return out


# ---- the plan --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Doomed:
    """A layer, staging or trash entry gc deletes, and the bytes that frees."""

    kind: str  # layer | staging | trash
    name: str  # layer id, or the entry's name in staging/ or trash/
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "bytes": self.bytes}


@dataclass(slots=True)
class GcPlan:
    """What gc deletes (``doomed``) and what it keeps, with reasons."""

    grace: float
    doomed: list[Doomed] = field(default_factory=list)
    kept: dict[LayerId, str] = field(default_factory=dict)
    young: list[str] = field(default_factory=list)  # staging/trash entries within grace
    blob_cache: BlobPrune = field(default_factory=lambda: BlobPrune([], []))

    @property
    def layers(self) -> list[LayerId]:
        return [LayerId(d.name) for d in self.doomed if d.kind == "layer"]

    @property
    def bytes_freed(self) -> int:
        return sum(d.bytes for d in self.doomed) + self.blob_cache.bytes_freed

    def kept_counts(self) -> dict[str, int]:
        """How many layers are kept for each kind of reason."""
        out: dict[str, int] = {}
        for why in self.kept.values():
            key = why.split(" at ")[0]
            out[key] = out.get(key, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "grace_seconds": self.grace,
            "removed": [d.to_json() for d in self.doomed],
            "removed_layers": len(self.layers),
            "bytes_freed": self.bytes_freed,
            "kept_layers": len(self.kept),
            "kept": {lid.hex: why for lid, why in sorted(self.kept.items())},
            "young_leftovers": list(self.young),
            "blob_cache": {
                "entries_removed": len(self.blob_cache.entries),
                "blobs_removed": len(self.blob_cache.blobs),
                "bytes_freed": self.blob_cache.bytes_freed,
            },
        }


def _age_stamp(paths: Iterable[Path]) -> float | None:
    """The newest mtime/ctime of ``paths`` (None: none exists)."""
    newest: float | None = None
    for p in paths:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        stamp = max(st.st_mtime, st.st_ctime)
        newest = stamp if newest is None else max(newest, stamp)
    return newest


def _walk_inodes(top: bytes) -> Iterable[tuple[tuple[int, int], int, int, bool]]:
    """``((dev, ino), bytes, nlink, is_dir)`` of ``top`` and all below it."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return
    is_dir = stat.S_ISDIR(st.st_mode)
    yield (st.st_dev, st.st_ino), st.st_blocks * 512, st.st_nlink, is_dir
    stack = [top] if is_dir else []
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for de in it:
                st = de.stat(follow_symlinks=False)
                is_dir = de.is_dir(follow_symlinks=False)
                yield (st.st_dev, st.st_ino), st.st_blocks * 512, st.st_nlink, is_dir
                if is_dir:
                    stack.append(os.fsencode(de.path))


def freed_bytes(trees: list[Path]) -> list[int]:
    """For each of ``trees`` (deleted together), the bytes that deleting
    them frees: an inode counts when all its links lie in ``trees`` (a
    directory always), once, for the first tree holding it."""
    seen: dict[tuple[int, int], list[int]] = {}  # key -> [links seen, bytes, nlink, tree]
    for n, tree in enumerate(trees):
        for key, nbytes, nlink, is_dir in _walk_inodes(os.fsencode(tree)):
            got = seen.get(key)
            if got is None:
                seen[key] = [1, nbytes, 1 if is_dir else nlink, n]
            else:
                got[0] += 1
    out = [0] * len(trees)
    for links, nbytes, nlink, n in seen.values():
        if links >= nlink:
            out[n] += nbytes
    return out


def plan_gc(store: Store, grace: float = DEFAULT_GRACE, now: float | None = None) -> GcPlan:
    """What gc would delete. Reads only. ``now`` (default: the clock) is
    compared with the grace period. Raises StoreCorruptError, MountError."""
    now = time.time() if now is None else now
    plan = GcPlan(grace)
    in_use = layers_in_use(store)
    journal = set(journal_strings(store))
    candidates: list[tuple[str, str, Path]] = []
    for lid in store.layer_ids():
        if lid in in_use:
            plan.kept[lid] = in_use[lid]
            continue
        d = store.layer_dir(lid)
        stamp = _age_stamp([d, d / "manifest"])
        if stamp is not None and now - stamp < grace:
            plan.kept[lid] = f"younger than {format_grace(grace)}"
            continue
        candidates.append(("layer", lid.hex, d))
    for kind in ("staging", "trash"):
        for p in sorted((store.root / kind).iterdir()):
            stamp = _age_stamp([p])
            if p.name in journal or (stamp is not None and now - stamp < grace):
                plan.young.append(f"{kind}/{p.name}")
                continue
            candidates.append((kind, p.name, p))
    sizes = freed_bytes([p for _k, _n, p in candidates])
    for (kind, name, _p), nbytes in zip(candidates, sizes, strict=True):
        plan.doomed.append(Doomed(kind, name, nbytes))
    gone = set(plan.layers)
    live = [lid for lid in store.layer_ids() if lid not in gone]
    plan.blob_cache = plan_blob_prune(store, live, grace, now)
    return plan


# ---- acting ------------------------------------------------------------------------


def collect(store: Store, plan: GcPlan, progress: Callable[[int, int], None] | None = None) -> int:
    """Delete what ``plan`` lists. Returns the bytes freed.

    Precondition: the caller holds the store lock exclusively, after
    recovery, and made ``plan`` under that lock. Journaled: each layer is
    renamed into trash/ (atomic), then everything trashed is removed; a
    crash is finished by the next command. Then the blob cache loses what
    belonged to the deleted layers (:func:`snapws.oci.blobcache.prune_blob_cache`:
    not journaled, a crash there leaves only entries that are ignored and
    blobs the next gc deletes). ``progress(done, total)`` follows the
    removals."""
    if not plan.doomed:
        prune_blob_cache(store, plan=plan.blob_cache)
        return plan.blob_cache.bytes_freed
    store.write_journal(
        {"op": "gc", "layers": [lid.hex for lid in plan.layers], "grace": plan.grace}
    )
    crashpoint("gc:journaled")
    trashed: list[Path] = []
    for i, lid in enumerate(plan.layers):
        if store.layer_dir(lid).exists():
            trashed.append(store.trash(store.layer_dir(lid)))
        if i == 0:
            crashpoint("gc:layer-trashed")
    for d in plan.doomed:
        if d.kind == "staging" and (store.root / "staging" / d.name).exists():
            trashed.append(store.trash(store.root / "staging" / d.name))
        elif d.kind == "trash" and (store.root / "trash" / d.name).exists():
            trashed.append(store.root / "trash" / d.name)
    for i, p in enumerate(trashed):
        store.purge(p)
        if progress is not None:
            progress(i + 1, len(trashed))
    crashpoint("gc:removed")
    store.clear_journal()
    from snapws.store.dedup import prune_index
    from snapws.store.manifests import prune_fences

    if plan.layers:
        prune_index(store)  # entries pointing into deleted layers
        prune_fences(store)  # and the cached fences of their manifests
    prune_blob_cache(store, plan=plan.blob_cache)  # after the layers: never a blob of a kept one
    return plan.bytes_freed


def finish_gc(store: Store, j: dict[str, Any]) -> None:
    """Complete a journaled gc (run by recovery, under the exclusive lock):
    delete the listed layers that are still there and still unused."""
    in_use = layers_in_use(store)
    for text in j.get("layers", []):
        lid = LayerId(text)
        if lid not in in_use:
            store.delete_layer(lid)
    store.clear_journal()
