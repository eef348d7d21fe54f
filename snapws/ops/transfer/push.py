"""``snapws push``: send a snapshot to a remote as an OCI image.

Compute, then act: :func:`plan_push` builds the image (layer blobs are
cached in the store, so a layer is compressed once; a layer whose blob an
import recorded but did not keep is compressed again only when the remote
lacks that blob) under the store lock; :func:`send_image` then talks to the
remote without holding the lock:

1. HEAD every blob; the ones the remote has are skipped;
2. upload the missing ones (layers, then the config), each verified by the
   registry against its digest;
3. PUT the manifest under the tag, last.

So a push killed at any point never leaves a tag naming missing blobs, and
the next push sends only what is still missing. :func:`push` runs the
three phases for a command: choose and build under the shared store lock,
send without the lock, record the remote-tracking ref under the exclusive
lock.

A push never drops what the remote tag names unless told to: the tag is
read before anything is sent and again just before the manifest is PUT,
and :func:`snapws.ops.history.fastforward.check_push` refuses anything but a new
tag or a fast-forward (``force``: anything; a ``lease``: only while the tag
still names what the lease expects). The registry API has no conditional
PUT, so two pushes racing between that last read and their PUT can still
both pass: the window is one request long.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from snapws.config import Config
from snapws.crash import crashpoint, steps_of
from snapws.errors import (
    BadImageError,
    BadNameError,
    MissingArgumentError,
    NotAWorkspaceError,
    RemoteError,
)
from snapws.ids import BlobDigest, SnapshotId
from snapws.model import WorkspaceState
from snapws.oci.export import build_image
from snapws.oci.history import HistoryPlan, plan_history, read_remote_history, with_history
from snapws.oci.image import Blob, Image
from snapws.ops.history.fastforward import Lease, Move, RemoteTip, check_push, read_tip
from snapws.ops.history.revs import branch_named, resolve_rev
from snapws.ops.transfer.remotes import (
    DEFAULT_REMOTE,
    RemoteEntry,
    TransferSettings,
    get_remote,
    open_remote,
    read_remotes,
)
from snapws.refnames import ref_name_problem
from snapws.remote.base import OCI_MANIFEST, Remote, TransferStats, is_tag
from snapws.store.store import Store

#: Named steps for crash tests (SNAPWS_CRASH_AT).
CRASH_STEPS = steps_of("push")

#: progress callback: (phase, bytes done, bytes total or None)
PushProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class PushPlan:
    """What a push sends: ``image`` of ``snapshot`` to ``remote`` as ``tag``."""

    remote: RemoteEntry
    snapshot: SnapshotId
    tag: str
    image: Image  # without its history layers: they depend on the remote's
    #: the ancestors' records and older layers it may carry (None: none)
    history: HistoryPlan | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    remote: str
    url: str
    tag: str
    snapshot: SnapshotId
    manifest_digest: BlobDigest
    blobs: int  # blobs in the image (layers + config)
    image_bytes: int  # their total size
    stats: TransferStats
    previous: SnapshotId | None = None  # what the tag named before (None: new, or foreign)
    move: Move = Move.NEW

    def to_json(self) -> dict[str, object]:
        return {
            "remote": self.remote,
            "url": self.url,
            "tag": self.tag,
            "id": self.snapshot.hex,
            "manifest": str(self.manifest_digest),
            "blobs": self.blobs,
            "image_bytes": self.image_bytes,
            "previous": self.previous.hex if self.previous else None,
            "update": self.move.value,
            **self.stats.to_json(),
        }


def tag_for(branch: str | None, local_tag: str | None, sid: SnapshotId) -> str:
    """The remote tag a push uses when given none: the branch's name (``/``
    becomes ``-``), else the local tag's, else ``snap-<id>``. Raises
    BadNameError when the name cannot be an OCI tag."""
    name = branch or local_tag
    if name is None:
        return f"snap-{sid.hex}"
    tag = name.replace("/", "-")
    if not is_tag(tag):
        raise BadNameError(
            f"{name!r} cannot be a registry tag",
            hint="give one with --tag TAG (letters, digits, '_', '.', '-'; at most 128)",
        )
    return tag


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid OCI tag; raises BadNameError otherwise."""
    if not is_tag(tag):
        raise BadNameError(
            f"invalid tag {tag!r}",
            hint="tags are letters, digits, '_', '.' and '-' (at most 128), "
            "not starting with '.' or '-'",
        )
    return tag


def plan_push(
    store: Store,
    remote: RemoteEntry,
    sid: SnapshotId,
    tag: str,
    compression: str = "gzip",
    progress: Callable[[int, int | None], None] | None = None,
    history: bool = True,
    have: Callable[[BlobDigest], bool] | None = None,
) -> PushPlan:
    """Build (or take from the cache) the image of ``sid`` and, when
    ``history``, plan its history: the records of every ancestor the store
    has and the older layers they need (snapws.oci.history: a fetch brings
    them back; :func:`send_image` sends those the remote lacks).
    ``have(digest)``: whether the remote holds a blob (:func:`remote_holds`);
    a layer blob an import recorded without keeping it is then taken as it
    is when the remote holds it, else made again. The caller holds the store
    lock. Raises what build_image raises."""
    check_tag(tag)
    image = build_image(store, sid, compression=compression, progress=progress, have=have)
    planned = plan_history(store, image, sid, compression, have) if history else None
    return PushPlan(remote, sid, tag, image, planned)


def remote_holds(remote: Remote) -> Callable[[BlobDigest], bool]:
    """``remote.has_blob``, asked once per digest (for :func:`plan_push`)."""
    answers: dict[BlobDigest, bool] = {}

    def have(digest: BlobDigest) -> bool:
        if digest not in answers:
            answers[digest] = remote.has_blob(digest)
        return answers[digest]

    return have


def send_image(
    store: Store,
    plan: PushPlan,
    settings: TransferSettings | None = None,
    progress: PushProgress | None = None,
    remote: Remote | None = None,
    *,
    force: bool = False,
    lease: Lease | None = None,
) -> PushResult:
    """Send ``plan``'s blobs the remote lacks, then its manifest (last),
    when the tag's move passes :func:`check_push` (checked before sending
    and again before the manifest). Needs no store lock (image blobs are
    immutable; records are only read). A ``remote`` given is used (and
    left open); otherwise one is opened for ``plan.remote``. Raises
    PushRejectedError, RemoteError, AuthError; a failure leaves the tag as
    it was."""
    owned = remote is None
    remote = remote or open_remote(store, plan.remote, push=True, settings=settings)
    where = f"{remote.display}:{plan.tag}"
    work = tempfile.TemporaryDirectory(prefix="snapws-push-")  # new history and config blobs
    try:
        tip = read_tip(remote, plan.tag)
        first = check_push(store, where, tip, plan.snapshot, force, lease)
        image, known = _with_history(plan, remote, tip, first, Path(work.name))
        blobs: list[Blob] = [*image.layers, image.config]
        to_check = [*blobs, *_extra_to_check(plan, image, known)]
        missing = []
        for i, blob in enumerate(to_check):
            if progress is not None:
                progress("checking", i, len(to_check))
            if remote.has_blob(blob.descriptor.digest):
                remote.stats.blobs_skipped += 1
            else:
                missing.append(blob)
        total = sum(b.descriptor.size for b in missing)
        done = 0
        for blob in missing:
            d = blob.descriptor
            if not blob.path.exists():  # planned as held by the remote: it lost it since
                raise RemoteError(
                    f"{remote.display} no longer has blob {d.digest}, which this store "
                    "does not keep (it was planned to be skipped)",
                    hint="push again: the layer is then compressed and sent",
                )

            def bar(n: int, _total: int | None, base: int = done) -> None:
                if progress is not None:
                    progress("sending", base + n, total)

            remote.put_blob(d.digest, d.size, blob.path, bar, check=False)
            done += d.size
            crashpoint("push:blob-sent")
        tip = read_tip(remote, plan.tag)  # again: someone may have pushed meanwhile
        move = check_push(store, where, tip, plan.snapshot, force, lease)
        media_type = _media_type(image.manifest)
        digest = remote.put_manifest(plan.tag, image.manifest, media_type)
        crashpoint("push:manifest-sent")
        return PushResult(
            plan.remote.name,
            remote.display,
            plan.tag,
            plan.snapshot,
            digest,
            len(blobs),
            sum(b.descriptor.size for b in blobs),
            remote.stats,
            tip.snapshot,
            move,
        )
    finally:
        if owned:
            remote.close()
        work.cleanup()


def _with_history(
    plan: PushPlan, remote: Remote, tip: RemoteTip, move: Move, workdir: Path
) -> tuple[Image, set[SnapshotId]]:
    """``plan``'s image with its history layers, and the snapshots the
    remote already has with their layers. On a fast-forward (or the same
    snapshot) the remote tag's history layers are kept and one more carries
    the records they lack; otherwise one carries them all. A remote
    history layer that cannot be read is not kept."""
    if plan.history is None:
        return plan.image, set()
    reuse = None
    if move in (Move.FAST_FORWARD, Move.UP_TO_DATE) and tip.manifest is not None:
        try:
            reuse = read_remote_history(
                tip.manifest, lambda d: remote.open_blob(d.digest, d.size), workdir
            )
        except (BadImageError, RemoteError):
            reuse = None
    image = with_history(plan.image, plan.history, reuse, workdir)
    known: set[SnapshotId] = set()
    if reuse is not None and tip.snapshot is not None:
        known = {tip.snapshot, *reuse.snapshots}
    return image, known


def _extra_to_check(plan: PushPlan, image: Image, known: set[SnapshotId]) -> list[Blob]:
    """The extra blobs (older snapshots' layers) worth asking the remote
    about: those of snapshots the remote does not have yet (``known``: the
    tag's snapshot and those its history layers hold), once each."""
    if plan.history is None:
        return []
    inside = {b.descriptor.digest for b in image.layers}
    out: dict[BlobDigest, Blob] = {}
    for owner, blob in plan.history.extra:
        d = blob.descriptor.digest
        if owner not in known and d not in inside:
            out.setdefault(d, blob)
    return list(out.values())


def _media_type(manifest: bytes) -> str:
    try:
        mt = json.loads(manifest).get("mediaType")
    except (ValueError, AttributeError):
        mt = None
    return mt if isinstance(mt, str) else OCI_MANIFEST


def record_pushed(store: Store, result: PushResult, who: str) -> None:
    """Point ``refs/remotes/<remote>/<tag>`` at the pushed snapshot (as git
    does after a push), unless ``<remote>/<tag>`` is not a valid ref name (a
    registry tag such as ``x.lock``): nothing is recorded then, as for fetch.
    The caller holds the store's exclusive lock."""
    ref = f"{result.remote}/{result.tag}"
    if ref_name_problem(ref) is not None:
        return
    if store.read_ref("remotes", ref) != result.snapshot:
        store.write_ref("remotes", ref, result.snapshot, who, f"push: {result.tag}")


# ---- the push command: choose, build, send, record -------------------------------


@dataclass(frozen=True, slots=True)
class PushRequest:
    """What ``snapws push`` is asked: send ``rev`` (None: HEAD) to ``remote``
    (None: origin; a lone argument that names no remote is the revision) as
    ``tag`` (None: :func:`tag_for`), new layer blobs compressed with
    ``compression``. ``force``: move the tag whatever it names. ``lease``
    (``--force-with-lease``): None for none; ``""`` for what REMOTE/TAG names
    in this store (no tag when it never saw one); else the revision the tag
    must still name."""

    remote: str | None = None
    rev: str | None = None
    tag: str | None = None
    compression: str = "gzip"
    force: bool = False
    lease: str | None = None


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A request resolved against the store: what goes where."""

    remote: RemoteEntry
    snapshot: SnapshotId
    tag: str
    lease: Lease | None


def split_remote_arg(store: Store, first: str | None, second: str | None) -> tuple[str, str | None]:
    """``[REMOTE] [X]`` of push, fetch and pull: a lone argument is the remote
    if one has that name, else X (with the default remote)."""
    if first is not None and second is None and first not in read_remotes(store):
        return DEFAULT_REMOTE, first
    return first or DEFAULT_REMOTE, second


def choose_target(store: Store, state: WorkspaceState | None, request: PushRequest) -> PushTarget:
    """Resolve ``request`` in ``store`` (``state``: the workspace the
    command runs in, None outside one): the remote, the snapshot, the tag
    (:func:`tag_for` the branch pushed, else the local tag, else the id)
    and the lease. Only reads the store (the caller holds its lock).
    Raises RemoteNotFoundError, RevisionNotFoundError, BadNameError,
    MissingArgumentError (outside a workspace with no revision)."""
    remote, rev, lease = request.remote, request.rev, request.lease
    if lease and rev is None and lease in read_remotes(store):
        # `--force-with-lease origin [REV]`: the value is written with "=" (as
        # git's); a remote's name after the bare option is the REMOTE argument
        remote, rev, lease = lease, remote, ""
    remote_name, rev = split_remote_arg(store, remote, rev)
    entry = get_remote(store, remote_name)
    head = state.head if state is not None else None
    if rev is None and state is None:
        raise MissingArgumentError(
            "outside a workspace, name the revision to push", hint="see `snapws push --help`"
        )
    sid = resolve_rev(store, head, "HEAD" if rev is None else rev)  # '' is refused
    if rev is None or rev in ("HEAD", "@"):
        branch = state.branch if state is not None else None
        local_tag = None
    else:
        branch = branch_named(store, rev)
        local_tag = rev if store.read_ref("tags", rev) is not None else None
    tag = request.tag or tag_for(branch, local_tag, sid)
    lease_of = None
    if lease is not None:
        expected = (
            resolve_rev(store, head, lease)
            if lease
            else store.read_ref("remotes", f"{remote_name}/{tag}")
        )
        lease_of = Lease(expected)
    return PushTarget(entry, sid, tag, lease_of)


@contextmanager
def workspace_or_store(
    cwd: Path, config: Config, store_path: Path | None, exclusive: bool
) -> Iterator[tuple[Store, WorkspaceState | None]]:
    """The store of the workspace around ``cwd`` and its state, locked
    (shared or ``exclusive``; the workspace is not mounted); outside a
    workspace the store ``store_path`` (``--store``) or ``config.store``
    names, with no state. Raises NotAWorkspaceError (neither),
    StoreNotFoundError, StoreLockedError."""
    from snapws.ops.session import open_session
    from snapws.ops.workspace import find_workspace, open_named_store

    try:
        find_workspace(cwd, config, store_path)
    except NotAWorkspaceError:
        root = store_path or config.store
        if root is None:
            raise
        store = open_named_store(root, config)
        with store.lock(exclusive, config.lock_timeout):
            yield store, None
        return
    with open_session(cwd, config, store_path, exclusive, mount=False) as s:
        yield s.store, s.state


def push(
    cwd: Path,
    config: Config,
    store_path: Path | None,
    request: PushRequest,
    who: str,
    settings: TransferSettings | None = None,
    progress: PushProgress | None = None,
) -> PushResult:
    """``snapws push``: resolve ``request`` (:func:`choose_target`) and build
    the image (:func:`plan_push`; progress phase ``building image``) under
    the shared store lock of the workspace around ``cwd`` (outside one: the
    store ``store_path`` or ``config.store`` names); send it without the
    lock (:func:`send_image`: phases ``checking`` (in blobs) and
    ``sending``); then, under the exclusive lock, point the
    remote-tracking ref at it (:func:`record_pushed`). Raises what those
    raise (PushRejectedError when the tag's move is refused); a failure
    before the manifest leaves the remote tag as it was."""

    def built(done: int, total: int | None) -> None:
        if progress is not None:
            progress("building image", done, total)

    with workspace_or_store(cwd, config, store_path, exclusive=False) as (store, state):
        target = choose_target(store, state, request)
        remote = open_remote(store, target.remote, push=True, settings=settings)
        try:
            plan = plan_push(
                store,
                target.remote,
                target.snapshot,
                target.tag,
                request.compression,
                built,
                have=remote_holds(remote),
            )
        except BaseException:
            remote.close()
            raise
    try:
        result = send_image(
            store, plan, settings, progress, remote, force=request.force, lease=target.lease
        )
    finally:
        remote.close()
    with store.lock(True, config.lock_timeout):
        record_pushed(store, result, who)
    return result
