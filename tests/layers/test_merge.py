"""snapws.layers.merge: a contiguous run of layers merged into one.

The rules are checked on manifests first (whiteouts, opaque markers, hidden
entries, hardlink groups); then the property that matters, against the
kernel: for random stacks of 4-6 layers (hand-built trees in overlay form,
and layers made by real commits), and several runs [i..j] of each, a real
read-only overlay of the original stack shows exactly what an overlay of the
stack with the run replaced by its merged layer shows (paths, kinds,
contents, modes, owners, mtimes, user xattrs). The merged trees also match
their manifests, as a store check would verify.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import WorkspaceFactory
from robust.verify import tree_problems

from snapws.config import Config
from snapws.errors import MountError
from snapws.layers.merge import (
    BuildStep,
    KeyedLine,
    RunLayer,
    build_merged_tree,
    key_manifest,
    merge_entries,
    merge_manifest,
    plan_merged_tree,
)
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView
from snapws.model import Entry, Kind, decode_manifest, encode_manifest
from snapws.mounts.mounter import detach, mount_at, mount_overlay, unmount
from snapws.mounts.plan import MountPlan
from snapws.ops.session import open_session
from snapws.ops.worktree.commit import commit
from snapws.store.store import Store

# --------------------------------------------------------------------------- rules, on manifests


def d(path: str, opaque: bool = False, mode: int = 0o755) -> Entry:
    return Entry(path=path.encode(), kind=Kind.DIR, mode=mode, opaque=opaque)


def f(path: str, link: str | None = None) -> Entry:
    return Entry(
        path=path.encode(), kind=Kind.FILE, mode=0o644, link=link.encode() if link else None
    )


def wh(path: str) -> Entry:
    return Entry(path=path.encode(), kind=Kind.WHITEOUT)


def merged(
    layers: list[list[Entry]], bottom: bool = False
) -> dict[str, tuple[str, bool, int | None]]:
    """path -> (kind, opaque, source layer) of the merged entries."""
    out = {}
    for m in merge_entries(layers, bottom):
        out[m.entry.path.decode()] = (m.entry.kind.value, m.entry.opaque, m.source)
    return out


def test_topmost_wins_and_hidden_entries_are_dropped() -> None:
    top = [d("."), f("x"), d("dir"), f("dir/new")]
    low = [d("."), f("x"), f("y"), d("dir"), f("dir/old"), d("x2"), f("x2/in")]
    got = merged([top, low])
    assert got == {
        ".": ("d", False, None),
        "x": ("f", False, 0),
        "y": ("f", False, 1),
        "dir": ("d", False, None),
        "dir/new": ("f", False, 0),
        "dir/old": ("f", False, 1),
        "x2": ("d", False, None),
        "x2/in": ("f", False, 1),
    }


def test_whiteouts_stay_unless_the_run_is_the_bottom() -> None:
    top = [d("."), wh("gone"), wh("low")]
    low = [d("."), f("low")]
    assert merged([top, low]) == {
        ".": ("d", False, None),
        "gone": ("w", False, None),  # may exist below the run
        "low": ("w", False, None),  # deletes the run's own file and anything below
    }
    assert merged([top, low], bottom=True) == {".": ("d", False, None)}


def test_a_file_over_a_directory_hides_the_subtree() -> None:
    top = [d("."), f("p")]
    low = [d("."), d("p"), f("p/q"), wh("p/r")]
    assert merged([top, low]) == {".": ("d", False, None), "p": ("f", False, 0)}


def test_directory_replacing_older_content_becomes_opaque() -> None:
    top = [d("."), d("p"), f("p/new")]
    mid = [d("."), wh("p")]  # p deleted, then made again: must hide what is below
    low = [d("."), d("p"), f("p/old")]
    assert merged([top, mid, low]) == {
        ".": ("d", False, None),
        "p": ("d", True, None),
        "p/new": ("f", False, 0),
    }
    # a directory over a file of the run
    assert merged([[d("."), d("p"), f("p/a")], [d("."), f("p")]])["p"] == ("d", True, None)
    # nothing below a bottom run: no marker
    assert merged([top, mid, low], bottom=True)["p"] == ("d", False, None)


def test_opaque_directories_inside_the_run() -> None:
    top = [d("."), d("p"), f("p/a"), wh("p/gone")]
    mid = [d("."), d("p", opaque=True), f("p/b"), d("p/sub"), f("p/sub/s")]
    low = [d("."), d("p"), f("p/c")]
    got = merged([top, mid, low])
    # mid's opaque p hides low's p/c; the merged p hides what is below the run;
    # the whiteout is dropped (the opaque p hides everything below anyway)
    assert got == {
        ".": ("d", False, None),
        "p": ("d", True, None),
        "p/a": ("f", False, 0),
        "p/b": ("f", False, 1),
        "p/sub": ("d", False, None),  # no marker needed below an opaque parent
        "p/sub/s": ("f", False, 1),
    }


def test_opaque_topmost_directory_is_kept_opaque() -> None:
    top = [d("."), d("p", opaque=True), f("p/a")]
    low = [d("."), d("p"), f("p/b"), d("q"), wh("q/x")]
    assert merged([top, low]) == {
        ".": ("d", False, None),
        "p": ("d", True, None),
        "p/a": ("f", False, 0),
        "q": ("d", False, None),
        "q/x": ("w", False, None),
    }


def test_directory_attributes_come_from_the_topmost_layer() -> None:
    top = [d("."), d("p", mode=0o700)]
    low = [d(".", mode=0o711), d("p", mode=0o755), f("p/x")]
    out = {m.entry.path: m.entry for m in merge_entries([top, low], False)}
    assert out[b"p"].mode == 0o700
    assert out[b"."].mode == 0o755


def test_hardlink_groups_keep_surviving_members() -> None:
    top = [d("."), f("a")]  # replaces the group's leader
    low = [d("."), f("a"), f("b", link="a"), f("c", link="a"), f("z")]
    out = {m.entry.path: m.entry for m in merge_entries([top, low], False)}
    assert out[b"a"].link is None
    assert out[b"b"].link is None  # the new leader
    assert out[b"c"].link == b"b"
    assert out[b"z"].link is None


# --------------------------------------------------------------------------- against the kernel

Shown = dict[bytes, tuple[object, ...]]


def describe(abspath: bytes) -> tuple[object, ...]:
    st = os.lstat(abspath)
    kind = stat.S_IFMT(st.st_mode)
    content: bytes | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    if stat.S_ISREG(st.st_mode):
        with open(abspath, "rb") as fh:
            content = fh.read()
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(abspath)
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        names = sorted(n for n in os.listxattr(abspath) if n.startswith("user."))
        xattrs = tuple((n, os.getxattr(abspath, n)) for n in names)
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, content, xattrs)


def shown_tree(root: bytes) -> Shown:
    """What a user sees below ``root``: every path with kind, mode, owner,
    mtime, content (file bytes, symlink target) and user xattrs."""
    out: Shown = {b".": describe(root)}
    stack = [(b".", root)]
    while stack:
        rel, abspath = stack.pop()
        for name in sorted(os.listdir(abspath)):
            p = name if rel == b"." else rel + b"/" + name
            ap = abspath + b"/" + name
            try:
                out[p] = describe(ap)
            except FileNotFoundError:
                continue  # listed by readdir, denied by lookup (a whiteout)
            if stat.S_ISDIR(os.lstat(ap).st_mode):
                stack.append((p, ap))
    return out


@contextmanager
def overlay(target: Path, lowers: list[Path]) -> Iterator[bytes]:
    """A real read-only overlay of ``lowers`` (topmost first), unmounted after."""
    assert len(lowers) >= 2
    target.mkdir()
    try:
        mount_overlay(MountPlan(target, lowers=tuple(lowers)))
        yield os.fsencode(target)
    finally:
        for _ in range(5):
            info = mount_at(target)
            if info is None or info.mountpoint != Path(os.path.realpath(target)):
                break
            try:
                unmount(target)
            except MountError:
                detach(target)


def check_runs(
    base: Path, trees: list[Path], manifests: list[list[Entry]], runs: list[tuple[int, int]]
) -> int:
    """Merge each run ``(i, j)`` (topmost-first indices, inclusive) of the
    stack ``trees`` and compare the overlays. Returns the paths compared."""
    with overlay(base / "orig", trees) as root:
        expected = shown_tree(root)
    for i, j in runs:
        label = f"run [{i}..{j}] of {len(trees)} layers"
        dest = base / f"merged-{i}-{j}"
        bottom = j == len(trees) - 1
        layers = [
            RunLayer(os.fsencode(t), m)
            for t, m in zip(trees[i : j + 1], manifests[i : j + 1], strict=True)
        ]
        manifest = build_merged_tree(layers, os.fsencode(dest), bottom)
        entries = decode_manifest(manifest)
        assert tree_problems(dest, entries) == [], label
        # a plan given the run's manifest lines (kept for unchanged entries) writes the same bytes
        steps, planned = plan_merged_tree(layers, bottom)
        assert planned == manifest, label
        # planned by halves (a compaction job): the same manifest and inode groups
        merged, sources = merge_manifest([encode_manifest(m) for m in manifests[i : j + 1]], bottom)
        final, keyed = key_manifest([layer.tree for layer in layers], merged, sources)
        assert final == manifest, label
        assert by_halves(final, keyed) == in_one_go(steps), label
        # entries hidden within the run are gone: each one is what the run shows
        run_view = ChainView([os.fsencode(t) for t in trees[i : j + 1]])
        for e in entries:
            loc = run_view.locate(e.path)
            if e.kind is Kind.WHITEOUT:
                assert loc is None and not bottom, (label, e.path)
            else:
                assert loc is not None and loc.node.kind is e.kind, (label, e.path)
                assert not (bottom and e.opaque), (label, e.path)
        stack = [*trees[:i], dest, *trees[j + 1 :]]
        if len(stack) == 1:
            got = shown_tree(os.fsencode(dest))
        else:
            with overlay(base / f"mnt-{i}-{j}", stack) as root:
                got = shown_tree(root)
        assert got == expected, label
    return len(expected)


def in_one_go(steps: list[BuildStep]) -> set[tuple[frozenset[bytes], int, bool]]:
    """A plan's inode groups: the paths of each, its source layer, whether a copy."""
    groups: dict[int, list[BuildStep]] = {}
    for s in steps:
        if s.key >= 0:
            groups.setdefault(s.key, []).append(s)
    return {
        (frozenset(s.entry.path for s in g), -1 if g[0].source is None else g[0].source, g[0].alias)
        for g in groups.values()
    }


def by_halves(manifest: bytes, keyed: list[KeyedLine]) -> set[tuple[frozenset[bytes], int, bool]]:
    entries = decode_manifest(manifest)
    assert len(entries) == len(keyed)
    steps = [
        BuildStep(e, None if k.source < 0 else k.source, k.key, k.alias)
        for e, k in zip(entries, keyed, strict=True)
    ]
    assert all(k.is_dir == (e.kind is Kind.DIR) for e, k in zip(entries, keyed, strict=True))
    return in_one_go(steps)


def pick_runs(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """Several runs [i..j] of an n-layer stack: the bottom one, one in the
    middle, the top one, the whole stack, and a random one."""
    runs = {(n - 3, n - 1), (1, n - 2), (0, 1), (0, n - 1)}
    i = rng.randrange(n - 1)
    runs.add((i, rng.randrange(i + 1, n)))
    return sorted(runs)


NAMES = (b"a", b"b", b"c")
UIDS = (0, 1000, 1001)


def random_layer(rng: random.Random, root: Path, layer: int) -> Path:
    """A random layer tree in overlay form: few names and many directories
    (so layers overlap at every depth), whiteouts, opaque directories,
    symlinks, fifos, hardlinks, and random modes, owners, mtimes, xattrs."""
    top = os.fsencode(root)
    os.makedirs(top)
    files: list[bytes] = []
    dirs: list[bytes] = [top]

    def fill(path: bytes, depth: int) -> None:
        for name in NAMES:
            p = path + b"/" + name
            r = rng.random()
            if r < 0.15:
                continue
            if depth < 3 and r < 0.6:
                os.mkdir(p)
                if rng.random() < 0.2:
                    os.setxattr(p, "trusted.overlay.opaque", b"y")
                fill(p, depth + 1)
                dirs.append(p)
            elif r < 0.75:
                if files and rng.random() < 0.2:
                    os.link(rng.choice(files), p)
                else:
                    with open(p, "wb") as fh:
                        fh.write(b"L%d:%s\n" % (layer, p[len(top) :]))
                    files.append(p)
            elif r < 0.88:
                os.mknod(p, stat.S_IFCHR | 0o600, 0)
            elif r < 0.95:
                os.symlink(b"t%d-%s" % (layer, name), p)
                os.lchown(p, rng.choice(UIDS), rng.choice(UIDS))
                os.utime(p, ns=(1, rng.randrange(10**18)), follow_symlinks=False)
            else:
                os.mkfifo(p, rng.choice((0o600, 0o644)))

    fill(top, 1)
    for p in files:
        os.chmod(p, rng.choice((0o644, 0o600, 0o755, 0o4755)))
        os.chown(p, rng.choice(UIDS), rng.choice(UIDS))
        if rng.random() < 0.3:
            os.setxattr(p, "user.tag", b"%d" % rng.randrange(3))
        os.utime(p, ns=(1, rng.randrange(10**18)))
    for p in reversed(dirs):  # children first: their mtimes set, then the parent's
        os.chown(p, rng.choice(UIDS), rng.choice(UIDS))
        os.chmod(p, rng.choice((0o755, 0o700, 0o750, 0o1777)))
        if rng.random() < 0.3:
            os.setxattr(p, "user.dir", b"%d" % layer)
        os.utime(p, ns=(1, rng.randrange(10**18)))
    return root


def layer_manifest(tree: Path) -> list[Entry]:
    return entries_of(read_tree(os.fsencode(tree)), threads=1)


@pytest.mark.root
def test_merged_runs_match_the_kernel_on_random_stacks(mount_guard: Path) -> None:
    rng = random.Random(20250611)
    compared = 0
    whiteouts = opaque = 0
    for it in range(14):
        base = mount_guard / f"it{it}"
        n = rng.choice((4, 5, 6))
        trees = [random_layer(rng, base / f"L{k}", k) for k in range(n)]
        manifests = [layer_manifest(t) for t in trees]
        compared += check_runs(base, trees, manifests, pick_runs(rng, n))
        for m in merge_entries(manifests[: n - 1], bottom=False):
            whiteouts += m.entry.kind is Kind.WHITEOUT
            opaque += m.entry.opaque
        shutil.rmtree(base)
    assert compared > 14 * 5  # the stacks were not empty
    assert whiteouts and opaque  # the interesting cases happened


# --------------------------------------------------------------------------- layers of real commits


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def random_edit(rng: random.Random, root: Path, step: int) -> None:
    """A few random changes of a workspace's tree: files written and
    replaced, directories removed, recreated (opaque in the upperdir),
    replaced by files and the reverse; modes, xattrs and symlinks."""
    for _ in range(rng.randrange(2, 6)):
        top = root / rng.choice(("src", "doc", "x"))
        p = top / rng.choice(("a", "b", "sub", "ln"))
        r = rng.random()
        if not top.is_dir() or top.is_symlink():  # a file, or gone: a directory again
            _remove(top)
            top.mkdir()
            (top / "b").write_text(f"dir again {step}\n")
        elif r < 0.3:
            _remove(p)
            p.write_text(f"{step}:{p.name}\n")
        elif r < 0.45:
            shutil.rmtree(top)
            if rng.random() < 0.5:
                (top / "again").mkdir(parents=True)
                (top / "again" / "f").write_text(f"again {step}\n")
        elif r < 0.55:
            shutil.rmtree(top)
            top.write_text(f"dir became a file {step}\n")
        elif r < 0.7:
            if p.is_file() and not p.is_symlink():
                os.chmod(p, rng.choice((0o600, 0o755)))
                os.setxattr(p, "user.step", b"%d" % step)
        elif r < 0.8:
            _remove(p)
            os.symlink(f"target-{step}", p)
        else:
            (top / f"n{step}").write_text(f"new {step}\n")
    (root / "counter").write_text(f"{step}\n")  # every commit changes something


@pytest.mark.root
def test_merged_runs_match_the_kernel_on_real_commits(
    make_workspace: WorkspaceFactory, mount_guard: Path
) -> None:
    config = Config(author="merge-test <t@example.org>", lock_timeout=30, max_depth=400)
    spec = {
        "src": {"a": "a0\n", "b": "b0\n", "sub": {"s": "s0\n", "t": {"deep": "d\n"}}},
        "doc": {"a": "doc a\n", "sub": {"x": "x\n"}},
        "x": "plain file\n",
        "counter": "0\n",
    }
    compared = 0
    for it in range(4):
        rng = random.Random(1000 + it)
        ws = make_workspace(name=f"ws{it}", spec=spec, store=mount_guard / f"store{it}")
        n = rng.choice((4, 5, 6))
        for step in range(1, n):
            random_edit(rng, ws.path, step)
            with open_session(ws.path, config) as session:
                made = commit(session, f"step {step}", config.author)
            assert made.snapshot is not None
        store = Store.open(ws.store)
        with open_session(ws.path, config, exclusive=False) as session:
            head = session.state.head
        chain = store.chain_layers(head)
        assert len(chain) == n
        trees = [store.layer_tree(lid) for lid in reversed(chain)]
        manifests = [decode_manifest(store.read_manifest(lid)) for lid in reversed(chain)]
        base = mount_guard / f"cmp{it}"
        base.mkdir()
        compared += check_runs(base, trees, manifests, pick_runs(rng, n))
        # the workspace itself shows what the original stack shows
        with overlay(base / "again", trees) as root:
            assert shown_tree(root) == shown_tree(os.fsencode(ws.path))
    assert compared > 4 * 8
