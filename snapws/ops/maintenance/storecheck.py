"""Checks of the store's records that do not read layer trees: what
``snapws verify`` adds to its layer checks, and what ``snapws doctor``
reports about a store (docs/format.md lists the rules).

Read-only; never raises for damage it finds (it returns it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from snapws.backends import get_backend
from snapws.errors import SnapwsError, StoreCorruptError
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.oci.blobcache import OCI_DIR, digest_hex
from snapws.store.store import EMPTY_LAYER, Store


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """One damaged record: ``kind`` as verify names it, the message (naming
    the file), and the ref or workspace HEAD it concerns."""

    kind: str
    message: str
    ref: str | None = None
    path: Path | None = None


def workspace_problems(store: Store) -> list[RecordProblem]:
    """Workspace records: a valid id as directory name, a readable record
    (types, ids, ``upper``/``work`` single names in its directory), and its
    upperdir present (kernel, rootless and fuse backends)."""
    out = []
    base = store.root / "workspaces"
    for p in sorted(base.iterdir()):
        ref = f"workspaces/{p.name}/HEAD"
        try:
            wid = WorkspaceId(p.name)
        except ValueError:
            out.append(RecordProblem("bad-workspace", f"{p} is not named by a workspace id", ref))
            continue
        if not (p / "state.json").exists():
            if any(c.name.startswith("upper-") for c in p.iterdir()):
                missing = f"workspace record {p / 'state.json'} is missing"
                out.append(RecordProblem("bad-workspace", missing, ref))
            continue
        try:
            state = store.read_workspace(wid)
        except StoreCorruptError as e:
            out.append(RecordProblem("bad-workspace", e.message, ref))
            continue
        for problem in get_backend(state.backend).check_dirs(store, state):
            out.append(RecordProblem("bad-workspace", problem, ref))
    return out


def journal_problems(store: Store) -> list[RecordProblem]:
    try:
        store.read_journal()
    except StoreCorruptError as e:
        return [RecordProblem("bad-journal", e.message)]
    return []


def remotes_problems(store: Store) -> list[RecordProblem]:
    from snapws.ops.transfer.remotes import read_remotes

    out = []
    try:
        namespaces = store.namespaces()
    except SnapwsError:
        namespaces = [""]  # a damaged refs/ns: reported with the refs
    for ns in namespaces:  # each branch namespace has its remotes
        try:
            read_remotes(store.in_namespace(ns))
        except SnapwsError as e:
            out.append(RecordProblem("bad-remotes", e.message))
    return out


def cache_problems(store: Store) -> list[RecordProblem]:
    """Entries of the blob cache's maps (``oci/layers``, ``oci/chains``) that
    do not parse. Snapws ignores and rewrites them; ``--repair`` drops them."""
    out = []
    for sub, fields in (("layers", ("digest", "diff_id")), ("chains", ("layer",))):
        base = store.root / OCI_DIR / sub
        if not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if p.name.startswith(".") or not p.name.endswith(".json"):
                continue
            if cache_entry_problem(p.read_bytes() if p.is_file() else b"", fields) is not None:
                out.append(RecordProblem("bad-cache", f"blob cache entry {p} is damaged", path=p))
    return out


def cache_entry_problem(data: bytes, fields: tuple[str, ...]) -> str | None:
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            return "not an object"
        for f in fields:
            value = obj[f]
            if f == "layer":
                LayerId(value)
            else:
                digest_hex(value)
        if "size" in obj or "digest" in fields:
            size = obj["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                return "bad size"
    except (ValueError, KeyError, TypeError):
        return "unparsable"
    return None


def other_record_problems(store: Store) -> list[RecordProblem]:
    """Workspace records, the journal, the remotes file and the blob cache."""
    return [
        *journal_problems(store),
        *workspace_problems(store),
        *remotes_problems(store),
        *cache_problems(store),
    ]


def store_damage(store: Store) -> list[str]:
    """Every damaged record of the store, without reading layer trees
    (``snapws doctor``): the records above, snapshot records, chains, and
    layers that chains name but the store lacks."""
    out = [p.message for p in other_record_problems(store)]
    missing: dict[LayerId, list[SnapshotId]] = {}
    for sid in store.snapshot_ids():
        try:
            store.read_snapshot(sid)
            chain = store.chain(sid)
        except StoreCorruptError as e:
            out.append(e.message)
            continue
        for lid in chain:
            if lid != EMPTY_LAYER and not store.layer_tree(lid).is_dir():
                missing.setdefault(lid, []).append(sid)
    for lid, sids in missing.items():
        out.append(
            f"layer {lid.short()} is missing ({store.layer_dir(lid)}); "
            f"{len(sids)} snapshot(s) use it: {', '.join(s.short() for s in sids[:5])}"
        )
    return out
