"""Checking a store for consistency (until ``snapws verify`` exists).

:func:`store_problems` lists every violation it finds, :func:`assert_store_ok`
fails a test with the list. What a valid, quiescent store is:

- every snapshot record hashes to its name, has a chain, and its parents exist
  (or were forgotten by ``snapws prune``: a tombstone ``forgotten/<id>``);
- every chain names layers that exist (with a manifest that verifies);
- every branch, tag and workspace HEAD points at an existing snapshot;
- every layer's manifest hashes to the layer's name, and its tree (overlay
  form: whiteouts are 0/0 character devices, opaque directories carry
  trusted.overlay.opaque=y) holds exactly the manifest's entries, with the same
  kind, mode, uid, gid, size, XXH3-128 content hash, and everything else the
  manifest records (mtime, symlink target, device numbers, xattrs, opaque
  mark, hardlink leader);
- no journal is left, staging/ and trash/ are empty, and each workspace
  folder holds only its state, its current upper and its current work dir.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.layers.scan import entries_of, read_tree
from snapws.model import Entry, SnapshotRecord, WorkspaceState, decode_manifest, manifest_id
from snapws.store.store import EMPTY_LAYER, MARKER

#: Entry fields compared between a manifest and its tree, in report order.
_FIRST = ("kind", "mode", "uid", "gid", "size", "hash")
COMPARED = (*_FIRST, *(f.name for f in fields(Entry) if f.name not in ("path", *_FIRST)))


def store_problems(root: Path) -> list[str]:
    """Every inconsistency of the store at ``root`` (empty: it verifies)."""
    problems: list[str] = []
    if not (root / MARKER).is_file():
        return [f"{root} has no store marker {MARKER}"]
    layers = _check_layers(root, problems)
    snapshots = _check_snapshots(root, layers, problems)
    _check_refs(root, snapshots, problems)
    _check_workspaces(root, snapshots, problems)
    if (root / "journal.json").exists():
        problems.append("journal.json is left (an operation was not finished)")
    for sub in ("staging", "trash"):
        left = sorted(p.name for p in (root / sub).iterdir())
        if left:
            problems.append(f"{sub}/ is not empty: {left}")
    return problems


def assert_store_ok(root: Path) -> None:
    problems = store_problems(root)
    assert not problems, "the store does not verify:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------- layers


def _check_layers(root: Path, problems: list[str]) -> set[LayerId]:
    ok: set[LayerId] = set()
    for d in sorted((root / "layers").iterdir()):
        try:
            lid = LayerId(d.name)
        except ValueError:
            problems.append(f"layers/{d.name} is not named by a layer id")
            continue
        try:
            manifest = (d / "manifest").read_bytes()
        except OSError as e:
            problems.append(f"layer {lid.short()} has no readable manifest: {e}")
            continue
        if manifest_id(manifest) != lid:
            problems.append(f"layer {lid.short()}: its manifest does not hash to its name")
            continue
        if not (d / "tree").is_dir():
            problems.append(f"layer {lid.short()} has no tree/")
            continue
        before = len(problems)
        problems.extend(
            f"layer {lid.short()}: {p}"
            for p in tree_problems(d / "tree", decode_manifest(manifest))
        )
        if len(problems) == before:
            ok.add(lid)
    if EMPTY_LAYER not in ok:
        problems.append("the empty layer is missing")
    return ok


def tree_problems(tree: Path, manifest: list[Entry]) -> list[str]:
    """Differences between a layer tree on disk and its manifest entries."""
    if not manifest:  # the empty layer: an empty tree
        left = os.listdir(tree)
        return [f"the empty layer's tree is not empty: {left}"] if left else []
    on_disk = {e.path: e for e in entries_of(read_tree(os.fsencode(tree)), threads=1)}
    recorded = {e.path: e for e in manifest}
    out = []
    for path in sorted(recorded.keys() - on_disk.keys()):
        out.append(f"{path!r} is in the manifest but not in the tree")
    for path in sorted(on_disk.keys() - recorded.keys()):
        out.append(f"{path!r} is in the tree but not in the manifest")
    for path in sorted(recorded.keys() & on_disk.keys()):
        want, have = recorded[path], on_disk[path]
        for name in COMPARED:
            a, b = getattr(want, name), getattr(have, name)
            if name == "xattrs":
                a, b = dict(a), dict(b)
            if a != b:
                out.append(f"{path!r}: {name} is {b!r} in the tree, {a!r} in the manifest")
    return out


# --------------------------------------------------------------------------- snapshots


def _check_snapshots(root: Path, layers: set[LayerId], problems: list[str]) -> set[SnapshotId]:
    records: dict[SnapshotId, SnapshotRecord] = {}
    for p in sorted((root / "snapshots").iterdir()):
        try:
            sid = SnapshotId(p.name.removesuffix(".json"))
        except ValueError:
            problems.append(f"snapshots/{p.name} is not named by a snapshot id")
            continue
        try:
            rec = SnapshotRecord.from_canonical(p.read_bytes())
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"snapshot {sid.short()} is unreadable: {e}")
            continue
        if rec.id != sid:
            problems.append(f"snapshot {sid.short()} does not hash to its name")
            continue
        records[sid] = rec
    for sid, rec in records.items():
        for parent in rec.parents:
            if parent not in records and not (root / "forgotten" / parent.hex).is_file():
                problems.append(f"snapshot {sid.short()}: parent {parent.short()} is missing")
        chain_path = root / "chains" / f"{sid.hex}.json"
        try:
            chain = [LayerId(x) for x in json.loads(chain_path.read_bytes())]
        except (OSError, ValueError, TypeError) as e:
            problems.append(f"snapshot {sid.short()} has no readable chain: {e}")
            continue
        for lid in chain:
            if lid not in layers:
                problems.append(f"chain of {sid.short()}: layer {lid.short()} is missing or bad")
    for p in sorted((root / "chains").iterdir()):
        try:
            sid = SnapshotId(p.name.removesuffix(".json"))
        except ValueError:
            problems.append(f"chains/{p.name} is not named by a snapshot id")
            continue
        if sid not in records:
            problems.append(f"chains/{p.name} belongs to no snapshot")
    return set(records)


# --------------------------------------------------------------------------- refs


def _check_refs(root: Path, snapshots: set[SnapshotId], problems: list[str]) -> None:
    namespaces = [root / "refs"]  # the root namespace, then every other (refs/ns/<ns>)
    if (root / "refs" / "ns").is_dir():
        namespaces += sorted((root / "refs" / "ns").iterdir())
    for refs, kind in ((r, k) for r in namespaces for k in ("heads", "tags")):
        base = refs / kind
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                path = Path(dirpath) / f
                name = path.relative_to(root / "refs")
                if f.startswith("."):
                    problems.append(f"refs/{name}: a temporary file is left")
                    continue
                try:
                    sid = SnapshotId.parse(path.read_text())
                except (OSError, ValueError) as e:
                    problems.append(f"refs/{name} is unreadable: {e}")
                    continue
                if sid not in snapshots:
                    problems.append(f"refs/{name} points at a missing snapshot")


def _check_workspaces(root: Path, snapshots: set[SnapshotId], problems: list[str]) -> None:
    for d in sorted((root / "workspaces").iterdir()):
        try:
            wid = WorkspaceId(d.name)
        except ValueError:
            problems.append(f"workspaces/{d.name} is not named by a workspace id")
            continue
        try:
            state = WorkspaceState.from_json(json.loads((d / "state.json").read_bytes()))
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"workspace {wid.short()} has no readable state: {e}")
            continue
        if state.head not in snapshots:
            problems.append(f"workspace {wid.short()}: HEAD points at a missing snapshot")
        if state.branch is not None:
            refs = root / "refs" / "ns" / state.namespace if state.namespace else root / "refs"
            branch = refs / "heads" / state.branch
            if not branch.is_file():
                problems.append(f"workspace {wid.short()} is on a missing branch")
        for name in (state.upper, state.work):
            if not (d / name).is_dir():
                problems.append(f"workspace {wid.short()}: {name} is missing")
        extra = sorted(
            p.name
            for p in d.iterdir()
            if p.name not in ("state.json", "hashes", "held-clean", state.upper, state.work)
        )
        if extra:
            problems.append(f"workspace {wid.short()} has leftovers: {extra}")
