"""``snapws fetch`` and ``snapws pull``.

fetch: read a tag's manifest from a remote and import the image into the
store (:func:`snapws.oci.image.import_image` downloads only the layers the
store lacks, each verified against its sha256), then point the
remote-tracking ref ``refs/remotes/<remote>/<tag>`` at the snapshot.

pull: fetch, then bring the workspace there: the branch named like the tag
moves when that is a fast-forward (or is created when it does not exist
locally), and the workspace checks it out. Uncommitted changes make it
refuse (exit 5), as does a branch that has diverged from the remote.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from snapws.errors import (
    BadImageError,
    BadNameError,
    InvalidOperationError,
    RemoteNotFoundError,
    UncommittedChangesError,
)
from snapws.ids import BlobDigest, SnapshotId
from snapws.model import ROOT, Change, decode_manifest, display_path
from snapws.oci.history import history_descriptors, import_history, read_histories
from snapws.oci.image import LABEL_SNAPSHOT, Descriptor
from snapws.oci.importer import import_image
from snapws.oci.platform import INDEX_TYPES, Platform, choose_manifest
from snapws.ops.history.fastforward import Move, classify_move, is_ancestor
from snapws.ops.history.refs import checked_out_in
from snapws.ops.transfer.remotes import RemoteEntry, TransferSettings, open_remote
from snapws.ops.worktree.checkout import checkout, reset, uncommitted
from snapws.refnames import validate_ref_name
from snapws.remote.base import Manifest, Remote, TransferStats
from snapws.session import Session
from snapws.store.store import Store

#: progress callback: (phase, bytes done, bytes total or None)
FetchProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class FetchedTag:
    tag: str
    snapshot: SnapshotId
    previous: SnapshotId | None  # where refs/remotes/<remote>/<tag> pointed before
    manifest_digest: BlobDigest
    move: Move = Move.NEW  # how the remote-tracking ref moved (git's fetch output)


@dataclass(slots=True)
class FetchResult:
    remote: str
    url: str
    fetched: list[FetchedTag] = field(default_factory=list)
    stats: TransferStats = field(default_factory=TransferStats)

    def to_json(self) -> dict[str, object]:
        return {
            "remote": self.remote,
            "url": self.url,
            "tags": [
                {
                    "tag": f.tag,
                    "id": f.snapshot.hex,
                    "previous": f.previous.hex if f.previous else None,
                    "manifest": str(f.manifest_digest),
                }
                for f in self.fetched
            ],
            **self.stats.to_json(),
        }


def fetch(
    store: Store,
    entry: RemoteEntry,
    tags: list[str] | None,
    who: str,
    settings: TransferSettings | None = None,
    progress: FetchProgress | None = None,
    remote: Remote | None = None,
    depth: int | None = None,
    platform: Platform | None = None,
) -> FetchResult:
    """Import ``tags`` (None: every tag of the remote) with the history
    their images carry (``depth``: at most that many snapshots from each
    tip, counting it; None: all; see :func:`snapws.oci.history.import_history`),
    and record remote-tracking refs. The caller holds the store's exclusive
    lock. A tag naming an image index gives its image for ``platform``
    (None: the host's, as docker and skopeo choose). Raises
    RemoteNotFoundError (no such tag), RemoteError, AuthError,
    BadImageError (also: no image for the platform)."""
    owned = remote is None
    remote = remote or open_remote(store, entry, push=False, settings=settings)
    result = FetchResult(entry.name, remote.display, stats=remote.stats)
    try:
        if tags is None:
            tags = remote.list_tags()
        for tag in tags:
            manifest = remote.get_manifest(tag)
            if manifest is None:
                raise RemoteNotFoundError(
                    f"{remote.display} has no tag {tag!r}",
                    hint=f"`snapws remote list` shows the remotes; tags there: "
                    f"{', '.join(remote.list_tags()[:10]) or 'none'}",
                )
            tagged = manifest.digest
            manifest = _platform_image(remote, manifest, f"{remote.display}:{tag}", platform)

            def open_blob(d: Descriptor, r: Remote = remote) -> BinaryIO:
                def bar(done: int, total: int | None) -> None:
                    if progress is not None:
                        progress(f"fetching {d.digest.short()}", done, total)

                return r.stream_blob(d.digest, d.size, bar)

            sid = _known_snapshot(store, manifest.data)
            if sid is None:
                sid = import_image(store, manifest.data, open_blob)
                mark_shallow(store, sid)
            if history_descriptors(manifest.data) and not _history_complete(store, sid, depth):
                history = read_histories(open_blob, manifest.data)
                if history is not None:
                    import_history(store, sid, history, depth, open_blob)
            ref = f"{entry.name}/{tag}"
            previous = None
            try:
                validate_ref_name("branch", ref)
            except BadNameError:  # a tag git's rules refuse as a ref name: not tracked
                ref = ""
            if ref:
                previous = store.read_ref("remotes", ref)
                if previous != sid:
                    store.write_ref("remotes", ref, sid, who, f"fetch: {tag}")
            move = classify_move(store, previous, sid)
            result.fetched.append(FetchedTag(tag, sid, previous, tagged, move))
    finally:
        if owned:
            remote.close()
    return result


def _platform_image(
    remote: Remote, manifest: Manifest, where: str, platform: Platform | None
) -> Manifest:
    """``manifest`` itself, or for an image index the image it has for
    ``platform`` (None: the host's), fetched by digest and checked against
    it. Raises BadImageError (no image for the platform: the message lists
    those there are; nested too deep; a manifest not matching its digest)."""
    for _ in range(4):  # an index may name an index
        if manifest.media_type not in INDEX_TYPES and b'"manifests"' not in manifest.data:
            return manifest
        desc = choose_manifest(manifest.data, where, platform)
        chosen = remote.get_manifest(str(desc.digest))
        if chosen is None or BlobDigest.of(chosen.data) != desc.digest:
            raise BadImageError(
                f"{where}: the index names {desc.digest}, which is missing or damaged"
            )
        manifest = Manifest(chosen.data, desc.media_type, desc.digest)
    raise BadImageError(f"{where}: image indexes nested too deep")


def _known_snapshot(store: Store, manifest: bytes) -> SnapshotId | None:
    """The snapshot a snapws image's manifest names, if the store has it
    whole already (then nothing needs downloading, not even the config).
    A lying annotation can only point a remote-tracking ref at a snapshot
    the store already has."""
    try:
        text = json.loads(manifest).get("annotations", {}).get(LABEL_SNAPSHOT, "")
        sid = SnapshotId(str(text))
    except (ValueError, AttributeError):
        return None
    if not store.has_snapshot(sid):
        return None
    if all(store.has_layer(lid) for lid in store.chain(sid)):
        return sid
    return None


def _history_complete(store: Store, sid: SnapshotId, depth: int | None) -> bool:
    """True when the store has every ancestor of ``sid`` down to ``depth``
    snapshots (None: down to the first): a fetch then needs no history."""
    level, generation, seen = [sid], 1, {sid}
    while level and (depth is None or generation < depth):
        nxt = []
        for s in level:
            for p in store.read_snapshot(s).parents:
                if not store.has_snapshot(p):
                    return False
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        level, generation = nxt, generation + 1
    return True


def mark_shallow(store: Store, sid: SnapshotId) -> list[SnapshotId]:
    """A fetched snapshot's parents that are not in the store get a
    tombstone (as ``snapws prune`` leaves): history then ends there, as in
    a shallow clone, instead of naming records that are missing. Returns
    the parents marked."""
    marked = []
    for parent in store.read_snapshot(sid).parents:
        if not store.has_snapshot(parent) and not store.is_forgotten(parent):
            store.delete_snapshot(parent)  # writes the tombstone only
            marked.append(parent)
    return marked


# ---- pull -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PullResult:
    fetch: FetchResult
    branch: str
    snapshot: SnapshotId
    previous: SnapshotId | None  # the branch's snapshot before (None: created)
    action: str  # "up-to-date", "ahead", "fast-forward", "created"

    def to_json(self) -> dict[str, object]:
        return {
            **self.fetch.to_json(),
            "branch": self.branch,
            "id": self.snapshot.hex,
            "previous": self.previous.hex if self.previous else None,
            "action": self.action,
        }


def is_empty_root(store: Store, sid: SnapshotId) -> bool:
    """True for a first snapshot of an empty tree (``snapws init`` of an
    empty directory): pulling may replace it, as git fills an unborn branch."""
    if store.read_snapshot(sid).parents:
        return False
    for lid in store.chain_layers(sid):
        if any(e.path != ROOT for e in decode_manifest(store.read_manifest(lid))):
            return False
    return True


def pull(
    session: Session,
    entry: RemoteEntry,
    tag: str | None,
    who: str,
    settings: TransferSettings | None = None,
    progress: FetchProgress | None = None,
    remote: Remote | None = None,
    depth: int | None = None,
    platform: Platform | None = None,
) -> PullResult:
    """Fetch ``tag`` (default: the current branch's name) and check it out
    on the branch of that name. Session: exclusive. Raises
    UncommittedChangesError, InvalidOperationError (diverged),
    BadNameError, and what :func:`fetch` raises."""
    store = session.store
    current = session.state.branch
    if tag is None:
        if current is None:
            raise InvalidOperationError(
                "HEAD is detached: name the tag to pull",
                hint="snapws pull REMOTE TAG (`snapws remote list --json` shows the tags "
                "fetched so far)",
            )
        tag = current.replace("/", "-")
        branch = current
    else:
        branch = current if current is not None and current.replace("/", "-") == tag else tag
    validate_ref_name("branch", branch)
    changes = uncommitted(session)
    if changes:
        raise _refuse_changes(changes)
    fetched = fetch(store, entry, [tag], who, settings, progress, remote, depth, platform)
    target = fetched.fetched[0].snapshot
    local = store.read_ref("heads", branch)
    label = f"{entry.name}/{tag}"
    if local is None:
        checkout(session, target, None, create_branch=branch, who=who, label=label)
        return PullResult(fetched, branch, target, None, "created")
    if local == target:
        action = "up-to-date"
    elif is_ancestor(store, target, local):
        action = "ahead"  # the local branch already contains the remote's
    elif (
        is_ancestor(store, local, target)
        or local == fetched.fetched[0].previous
        or is_empty_root(store, local)
    ):
        # the remote's tag moved on from what we last saw there and the
        # branch holds nothing newer (a history cut short by --depth, or
        # whose older layers are gone, can stop the ancestry walk short)
        action = "fast-forward"
    else:
        raise InvalidOperationError(
            f"cannot pull {label}: branch {branch!r} ({local.short()}) and the remote's "
            f"({target.short()}) have diverged",
            hint=f"look at it with `snapws log {label}`; take it with "
            f"`snapws reset --hard {label}`, or push yours under another tag (--tag)",
        )
    if branch == current:
        if action == "fast-forward":
            reset(session, target, hard=True, who=who, label=label)
    else:
        if action == "fast-forward":
            users = checked_out_in(store, branch)
            if users:
                raise InvalidOperationError(
                    f"cannot move branch {branch!r}: it is checked out in {', '.join(users)}",
                    hint="pull there instead",
                )
            store.write_ref("heads", branch, target, who, f"pull: fast-forward to {label}")
        tip = store.read_ref("heads", branch)
        assert tip is not None
        checkout(session, tip, branch, who=who, label=branch)
    return PullResult(fetched, branch, target, local, action)


def _refuse_changes(changes: list[Change]) -> UncommittedChangesError:
    shown = [display_path(c.path) for c in changes]
    listing = "\n".join(f"  {c.type.value} {p}" for c, p in zip(changes[:20], shown, strict=False))
    more = f"\n  ... and {len(changes) - 20} more" if len(changes) > 20 else ""
    return UncommittedChangesError(
        f"cannot pull: the workspace has {len(changes)} uncommitted change(s):\n{listing}{more}",
        shown,
        hint="commit them (`snapws commit -m MSG`) or throw them away "
        "(`snapws reset --hard HEAD`), then pull again",
    )
