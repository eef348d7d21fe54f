"""What a remote tag names, and whether moving it loses anything.

A push is safe when it is a fast-forward: the snapshot the remote tag names
is the pushed one or one of its ancestors, so nothing the remote had is
dropped. :func:`check_push` decides (as git's push does, with ``--force``
and ``--force-with-lease``); :func:`classify_move` names how a
remote-tracking ref moved for fetch and pull to show it.

Pure decisions over the store's records: nothing here writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from snapws.errors import PushRejectedError
from snapws.ids import BlobDigest, SnapshotId
from snapws.oci.image import LABEL_SNAPSHOT
from snapws.remote.base import Manifest, Remote
from snapws.store.store import Store


class Move(Enum):
    """How a ref moves (git's words in its push and fetch output)."""

    NEW = "new"  # the ref did not exist
    UP_TO_DATE = "up-to-date"  # it already names the snapshot
    FAST_FORWARD = "fast-forward"  # its snapshot is an ancestor of the new one
    FORCED = "forced"  # anything else: the old snapshot is no longer reachable from it


@dataclass(frozen=True, slots=True)
class RemoteTip:
    """What a remote tag names: its manifest digest (None: no such tag) and
    the snapws snapshot the manifest says it holds (None: none, or a
    foreign image)."""

    digest: BlobDigest | None
    snapshot: SnapshotId | None
    manifest: bytes | None = None  # the tag's manifest, as read

    @property
    def exists(self) -> bool:
        return self.digest is not None


@dataclass(frozen=True, slots=True)
class Lease:
    """``--force-with-lease``: the remote tag must still name ``expected``
    (None: the tag must not exist) for a forced push to go on."""

    expected: SnapshotId | None


def snapshot_of_manifest(data: bytes) -> SnapshotId | None:
    """The snapshot a snapws image manifest is annotated with (None when it
    has no valid ``org.snapws.snapshot`` annotation)."""
    try:
        text = json.loads(data).get("annotations", {}).get(LABEL_SNAPSHOT, "")
        return SnapshotId(str(text))
    except (ValueError, AttributeError, TypeError):
        return None


def tip_of(manifest: Manifest | None) -> RemoteTip:
    """The :class:`RemoteTip` of a tag's manifest (None: the tag is absent)."""
    if manifest is None:
        return RemoteTip(None, None)
    return RemoteTip(manifest.digest, snapshot_of_manifest(manifest.data), manifest.data)


def read_tip(remote: Remote, tag: str) -> RemoteTip:
    """What ``tag`` names on ``remote`` now. Raises RemoteError, AuthError."""
    return tip_of(remote.get_manifest(tag))


def is_ancestor(store: Store, old: SnapshotId, new: SnapshotId, limit: int = 1_000_000) -> bool:
    """True if ``old`` is ``new`` or one of its ancestors the store knows
    (the walk stops at snapshots the store lacks or forgot)."""
    seen: set[SnapshotId] = set()
    todo = [new]
    while todo and len(seen) < limit:
        sid = todo.pop()
        if sid == old:
            return True
        if sid in seen or not store.has_snapshot(sid):
            continue
        seen.add(sid)
        todo.extend(store.read_snapshot(sid).parents)
    return False


def classify_move(store: Store, old: SnapshotId | None, new: SnapshotId) -> Move:
    """How a ref moves from ``old`` (None: it did not exist) to ``new``."""
    if old is None:
        return Move.NEW
    if old == new:
        return Move.UP_TO_DATE
    if is_ancestor(store, old, new):
        return Move.FAST_FORWARD
    return Move.FORCED


def check_push(
    store: Store,
    where: str,
    tip: RemoteTip,
    ours: SnapshotId,
    force: bool = False,
    lease: Lease | None = None,
) -> Move:
    """How pushing ``ours`` moves the remote tag ``where`` (``host/repo:tag``)
    that names ``tip`` now. Without ``force`` or ``lease`` only a new tag, the
    same snapshot or a fast-forward is allowed: the tip's snapshot must be in
    this store and an ancestor of ``ours``. With ``lease`` the tip must name
    exactly what the lease expects, then anything goes; ``force`` alone
    allows anything. Raises PushRejectedError."""
    if lease is not None:
        if tip.snapshot != lease.expected or (lease.expected is None and tip.exists):
            seen = lease.expected.short() if lease.expected else "no tag"
            now = _tip_text(tip)
            raise PushRejectedError(
                f"push to {where} rejected (stale info): it names {now}, "
                f"not {seen} as expected by --force-with-lease",
                hint="someone pushed since you fetched: `snapws fetch`, look at their "
                "snapshots (`snapws log REMOTE/TAG`), then decide again",
            )
        return _move(store, tip, ours)
    if force:
        return _move(store, tip, ours)
    if not tip.exists:
        return Move.NEW
    if tip.snapshot is None:
        raise PushRejectedError(
            f"push to {where} rejected: the tag names an image that is not a snapws snapshot "
            f"({str(tip.digest or '')[:19]})",
            hint="push under another tag (--tag), or replace it with --force",
        )
    if tip.snapshot == ours:
        return Move.UP_TO_DATE
    if not store.has_snapshot(tip.snapshot):
        raise PushRejectedError(
            f"push to {where} rejected: the remote names {tip.snapshot.short()}, "
            "which this store does not have (fetch first)",
            hint="`snapws fetch` it, then check out the remote's snapshot, re-apply your "
            "changes, commit and push again (or push with --force to replace it)",
        )
    if is_ancestor(store, tip.snapshot, ours):
        return Move.FAST_FORWARD
    raise PushRejectedError(
        f"push to {where} rejected (non-fast-forward): {ours.short()} does not contain "
        f"the remote's {tip.snapshot.short()}",
        hint="`snapws fetch`, check out the remote's snapshot, re-apply your changes, "
        "commit and push again; or replace it with --force (--force-with-lease keeps "
        "it from overwriting what you have not seen)",
    )


def _move(store: Store, tip: RemoteTip, ours: SnapshotId) -> Move:
    if not tip.exists:
        return Move.NEW
    if tip.snapshot is None:
        return Move.FORCED
    return classify_move(store, tip.snapshot, ours)


def _tip_text(tip: RemoteTip) -> str:
    if not tip.exists:
        return "no tag"
    if tip.snapshot is None:
        return f"a foreign image ({str(tip.digest or '')[:19]})"
    return tip.snapshot.short()
