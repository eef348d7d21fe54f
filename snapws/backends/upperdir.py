"""The workspace's upperdir U, as the overlay backends (kernel, rootless,
fuse) keep it: naming and making U and its work directory, the mount plan
of a state, carrying ignored paths from one U into the next (so that they
stay where they are, as git's ignored files do), turning a frozen U into a
layer tree, and sweeping old ones."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from snapws.crash import crashpoint
from snapws.deeppath import anchored, lexists, lstat, open_fd, reach
from snapws.errors import LayerRejectedError
from snapws.ids import SnapshotId
from snapws.layers import fuseform
from snapws.layers.entries import (
    Node,
    join,
    list_xattrs,
    opaque_xattr,
    parent_of,
    read_node,
    user_xattrs,
)
from snapws.layers.ignore import IgnoreRules, ignored_in_tree
from snapws.layers.scan import prune_upper, strip_known_overlay_xattrs, strip_overlay_xattrs
from snapws.layers.view import ChainView
from snapws.model import (
    Entry,
    Kind,
    WorkspaceState,
    decode_manifest,
    dir_name_problem,
    display_path,
)
from snapws.mounts import mounter
from snapws.mounts.plan import MountPlan
from snapws.store.atomic import drop_torn_copies
from snapws.store.store import EMPTY_LAYER, Store


def new_dir_names() -> tuple[str, str]:
    """Fresh names for an upperdir and its work directory."""
    token = os.urandom(4).hex()
    return f"upper-{token}", f"work-{token}"


def plan_mount(store: Store, state: WorkspaceState, readonly: bool = False) -> MountPlan:
    """The mount that shows ``state``: the chain below its upperdir (HEAD's,
    or the base's of a held workspace)."""
    lowers = store.layer_trees(state.mounted_head) or [store.layer_tree(EMPTY_LAYER)]
    wsdir = store.workspace_dir(state.id)
    return MountPlan(
        target=Path(state.path),
        lowers=tuple(lowers),
        upper=wsdir / state.upper,
        work=wsdir / state.work,
        userxattr=store.xattr_form == "user",
        readonly=readonly,
    )


def make_upper(store: Store, state: WorkspaceState, root_from: Path) -> None:
    """Create ``state``'s empty upper and work dirs (idempotent). The upper's
    root takes mode, owner and xattrs of ``root_from`` (the merged root), since
    overlay shows the upper root as the workspace root."""
    wsdir = store.workspace_dir(state.id)
    upper = wsdir / state.upper
    work = wsdir / state.work
    wsdir.mkdir(parents=True, exist_ok=True)
    if not upper.exists():
        tmp = wsdir / f".{state.upper}.tmp"
        if tmp.exists():
            os.rmdir(tmp)
        tmp.mkdir()
        copy_dir_meta(root_from, tmp)
        os.rename(tmp, upper)
    work.mkdir(exist_ok=True)


def copy_dir_meta(src: Path | bytes, dst: Path | bytes) -> None:
    """Mode, owner, user xattrs and mtime of directory ``src`` onto ``dst``
    (either however deep)."""
    st = lstat(os.fsencode(src))
    xattrs = user_xattrs(list_xattrs(os.fsencode(src)))
    with reach(os.fsencode(dst)) as short:
        os.chown(short, st.st_uid, st.st_gid)
        os.chmod(short, st.st_mode & 0o7777)
        for name, value in xattrs.items():
            os.setxattr(short, name, value, follow_symlinks=False)
        os.utime(short, ns=(st.st_atime_ns, st.st_mtime_ns))


def top_root(store: Store, sid: SnapshotId) -> Path:
    """The directory whose metadata is the root of ``sid``'s tree."""
    trees = store.layer_trees(sid)
    return trees[0] if trees else store.layer_tree(EMPTY_LAYER)


def sweep_workspace_dir(store: Store, state: WorkspaceState) -> None:
    """Discard old upper/work dirs that ``state`` no longer names, staging
    mount points a crash left, and temporary copies of the workspace record
    a killed write left (the record is written only under the exclusive
    lock, which the caller holds)."""
    wsdir = store.workspace_dir(state.id)
    if not wsdir.is_dir():
        return
    drop_torn_copies(wsdir / "state.json")
    for p in wsdir.iterdir():
        if p.name in (state.upper, state.work, "state.json"):
            continue
        if p.name.startswith(".state.json.tmp-"):
            continue  # (dropped below)
        if p.name.startswith(("upper-", "work-", ".upper-")):
            with suppress(OSError):
                store.discard(p, durable=False)  # undone by a power loss: swept again
        elif p.name.startswith(".mnt-"):  # a staging mount point left by a crash
            with suppress(OSError):
                if mounter.mount_at(p) is not None:
                    mounter.detach(p)
                os.rmdir(p)


# ---- ignored paths ---------------------------------------------------------


def fits(view: ChainView, path: bytes) -> bool:
    """Whether an ignored ``path`` can be carried onto ``view`` (the new
    chain) unchanged: the view has nothing there and no non-directory above
    it. Otherwise the view's tracked path wins, as git's checkout overwrites
    ignored files."""
    if view.locate(path) is not None:
        return False
    while b"/" in path:
        path = path[: path.rfind(b"/")]
        loc = view.locate(path)
        if loc is not None:
            return loc.node.kind is Kind.DIR
    return True


def carriable(upper: bytes, tops: list[bytes], view: ChainView) -> list[bytes]:
    """The ignored paths of upperdir ``upper`` (``tops``, topmost) that can
    go onto ``view`` (:func:`fits`); of an ignored directory the view has a
    directory at, the entries below that fit, at any depth. Raises OSError."""
    out = []
    todo = list(tops)
    while todo:
        p = todo.pop()
        if fits(view, p):
            out.append(p)
            continue
        loc = view.locate(p)
        src = upper + b"/" + p
        try:
            is_dir = stat.S_ISDIR(lstat(src).st_mode)
        except OSError:
            is_dir = False
        if loc is not None and loc.node.kind is Kind.DIR and is_dir:
            fd = open_fd(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                todo.extend(p + b"/" + os.fsencode(name) for name in os.listdir(fd))
            finally:
                os.close(fd)
    return sorted(out)


def carry_ignored(src: Path, dst: Path, paths: list[str]) -> None:
    """Move each of ``paths`` (relative) from upperdir ``src`` to upperdir
    ``dst`` (both on one filesystem, ``dst`` existing), making its
    directories in ``dst`` with the metadata of those in ``src``; both
    parents keep their mtimes. Idempotent: a path gone from ``src`` was
    moved already (a run after a crash; crash step ``carry:moved:N`` after
    the N-th move). Raises OSError."""
    moved = 0
    with anchored():  # paths may be longer than PATH_MAX
        for rel in paths:
            source = os.fsencode(src / rel)
            if not lexists(source):
                continue
            target = os.fsencode(dst / rel)
            _make_parents(os.fsencode(src), os.fsencode(dst), parent_of(os.fsencode(rel)))
            times = [
                lstat(parent_of(source)).st_mtime_ns,
                lstat(parent_of(target)).st_mtime_ns,
            ]
            with reach(source) as short_source, reach(target) as short_target:
                os.rename(short_source, short_target)
            for d, t in ((parent_of(source), times[0]), (parent_of(target), times[1])):
                with reach(d) as short:
                    os.utime(short, ns=(t, t), follow_symlinks=False)
            moved += 1
            crashpoint("carry:moved", moved)


def _make_parents(src: bytes, dst: bytes, rel: bytes) -> None:
    """Make directory ``dst/rel`` and its missing parents as copies of the
    directories of ``src``."""
    missing = []
    d = rel
    while d != b"." and not _is_dir(dst + b"/" + d):
        missing.append(d)
        d = parent_of(d)
    for d in reversed(missing):
        # made whole under a temporary name, then renamed: a crash never
        # leaves a directory without its metadata (a mode change to show)
        up = parent_of(d)
        name = d[d.rfind(b"/") + 1 :]
        tmp = join(dst, up) + b"/." + name + b".snapws-tmp"
        with reach(tmp) as short:
            if os.path.lexists(short):
                os.rmdir(short)
            os.mkdir(short)
        copy_dir_meta(src + b"/" + d, tmp)
        with reach(tmp) as short_tmp, reach(dst + b"/" + d) as short_dst:
            os.rename(short_tmp, short_dst)


def _is_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(lstat(path).st_mode)
    except OSError:
        return False


# ---- a frozen upperdir becomes a layer -----------------------------------------


def refuse_foreign_opaque(nodes: list[Node], upper_form: str, xattr_form: str) -> None:
    """Refuse (LayerRejectedError) an opaque marker of the other xattr form in
    an overlay upperdir: anyone who can write the workspace can set
    ``user.overlay.opaque=y`` through a trusted-form mount; the kernel ignores
    it, so recording the directory as opaque would make the layer differ from
    what the mount showed. (fuse-overlayfs's form is made canonical apart.)"""
    if upper_form == fuseform.FORM:
        return
    own = opaque_xattr(xattr_form)
    for node in nodes:
        foreign = [name for name, _ in node.overlay if name.endswith(".opaque") and name != own]
        if foreign:
            raise LayerRejectedError(
                f"{display_path(node.path)} carries {foreign[0]}, an opaque marker this "
                f"workspace's mounts ignore (they use {own}): refusing to record it",
                hint=f"remove it (setfattr -x {foreign[0]} PATH), then commit again",
            )


def prepare_layer_tree(
    upper: Path,
    prune: list[bytes],
    manifest: bytes,
    upper_form: str,
    xattr_form: str,
    read: Sequence[Node] | None = None,
) -> None:
    """Make the frozen upperdir equal to its manifest: drop no-op copy-ups,
    strip overlay bookkeeping, restore directory mtimes changed by pruning.
    An upperdir of fuse-overlayfs (``upper_form`` "fuse") first loses its
    ``.wh.`` bookkeeping and opaque markers the manifest does not record, and
    its opaque directories get the marker of the store's ``xattr_form``.
    ``read``: the manifest's nodes as the commit's scan read them from this
    upperdir, frozen since (their overlay attributes are not listed again);
    None (a commit finished after a crash), or anything else: they are read.
    Idempotent."""
    root = os.fsencode(upper)
    entries = decode_manifest(manifest)
    if upper_form == fuseform.FORM:
        fuseform.canonicalise_upper(root, entries)
    prune_upper(root, prune)
    with anchored():  # paths may be longer than PATH_MAX
        if read is not None and _same_nodes(read, entries, root, upper_form):
            strip_known_overlay_xattrs(read)
        else:
            nodes = [read_node(e.path, join(root, e.path)) for e in entries]
            strip_overlay_xattrs(nodes, xattr_form if upper_form == fuseform.FORM else None)
        for e in entries:
            if e.kind is Kind.DIR:
                with reach(join(root, e.path)) as short:
                    os.utime(short, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


def _same_nodes(read: Sequence[Node], entries: Sequence[Entry], root: bytes, form: str) -> bool:
    """Whether ``read`` are whole nodes of ``root`` (the kernel's form: fuse's
    is rewritten first) with exactly the paths of ``entries``."""
    if form == fuseform.FORM or len(read) != len(entries):
        return False
    if {n.path for n in read} != {e.path for e in entries}:
        return False
    return all(not n.partial and n.abspath == join(root, n.path) for n in read)


# ---- a new workspace's directory, and a damaged record ---------------------------


def adopt_entries(path: Path, tree: Path, ignore: Sequence[str]) -> tuple[str, list[str]]:
    """Move the entries of the directory ``path`` into the new layer tree
    ``tree`` (renames: one filesystem), then its ignored paths
    (``.snapwsignore``, ``ignore``) on into a directory beside the staging
    one: they are in no layer. Returns that directory's name (in staging/)
    and the ignored paths moved (none: nothing was). Raises OSError."""
    tree.mkdir()
    copy_dir_meta(path, tree)
    src, dst = os.fsencode(path), os.fsencode(tree)
    for name in os.listdir(src):
        os.rename(src + b"/" + name, dst + b"/" + name)
    copy_dir_meta(path, tree)  # renames changed the mtimes
    tops = ignored_in_tree(dst, IgnoreRules.for_tree(dst, ignore))
    if not tops:
        return "", []
    side = _ignored_side(tree)
    side.mkdir()
    copy_dir_meta(tree, side)
    carry_ignored(tree, side, [os.fsdecode(p) for p in tops])
    return side.name, [os.fsdecode(p) for p in tops]


def return_entries(path: Path, tree: Path) -> None:
    """Undo :func:`adopt_entries`: every entry goes back into ``path``
    (ignored ones too). Idempotent."""
    for src in (tree, _ignored_side(tree)):
        if src.is_dir():
            _merge_back(src, path)


def rebuild_names(
    wsdir: Path, recorded: tuple[object, object], mounted: tuple[str, str] | None
) -> tuple[str, str]:
    """For a damaged workspace record: the upper and work directory names
    to record: the mounted upperdir, else the recorded one if it exists,
    else the newest ``upper-*``, else a new one; its work directory, made if
    missing. Raises OSError."""
    uppers = sorted(
        (p for p in wsdir.iterdir() if p.name.startswith("upper-") and p.is_dir()),
        key=lambda p: p.stat().st_mtime_ns,
    )
    rec_upper, rec_work = recorded
    if mounted is not None:
        upper, work = mounted
    elif _valid_name(rec_upper) and (wsdir / str(rec_upper)).is_dir():
        upper, work = str(rec_upper), str(rec_work) if _valid_name(rec_work) else ""
    elif uppers:
        upper, work = uppers[-1].name, ""  # the newest
    else:
        upper, work = new_dir_names()
        (wsdir / upper).mkdir()
    if not (_valid_name(work) and (wsdir / work).is_dir()):
        work = "work-" + upper[len("upper-") :] if upper.startswith("upper-") else ""
        if not _valid_name(work) or ((wsdir / work).exists() and not (wsdir / work).is_dir()):
            work = new_dir_names()[1]
        (wsdir / work).mkdir(exist_ok=True)
    return upper, work


def _ignored_side(tree: Path) -> Path:
    """Where an init's ignored paths wait (beside its staging directory,
    which becomes the layer)."""
    return tree.parent.with_name(tree.parent.name + "-ignored")


def _merge_back(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst``, into directories that
    exist there already; ``src``'s emptied directories are removed."""
    for name in os.listdir(src):
        s, d = src / name, dst / name
        if s.is_dir() and not s.is_symlink() and d.is_dir() and not d.is_symlink():
            _merge_back(s, d)
            os.rmdir(s)
        else:
            os.rename(s, d)


def _valid_name(v: object) -> bool:
    return isinstance(v, str) and dir_name_problem(v) is None
