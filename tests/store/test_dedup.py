"""snapws.store.dedup: identical files shared between layers, on a store
built without mounts (layers staged and published as commit and init do)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import File, Spec, gen
from robust.verify import tree_problems

from snapws.ids import LayerId
from snapws.layers.materialise import materialise
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView
from snapws.model import Entry, decode_manifest, encode_manifest, manifest_id
from snapws.store import dedup
from snapws.store.dedup import DedupStats, dedup_key, dedup_tree, prune_index
from snapws.store.store import Store

T = 1_700_000_000_123_456_789  # a fixed mtime: identical metadata
DATA = b"shared data\n" * 1000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


class Staged:
    """A layer tree in staging, with its manifest, not published yet."""

    def __init__(self, store: Store, spec: Spec) -> None:
        self.store = store
        self.staging = store.new_staging("test")
        self.tree = self.staging / "tree"
        gen(self.tree, spec)
        os.utime(self.tree, ns=(T, T))
        self.manifest = encode_manifest(entries_of(read_tree(os.fsencode(self.tree)), threads=1))
        self.lid = manifest_id(self.manifest)
        store.write_pending_manifest(self.staging, self.manifest)

    def dedup(self, **kw: int) -> DedupStats:
        return dedup_tree(self.store, self.tree, self.lid, self.manifest, **kw)

    def publish(self) -> LayerId:
        assert tree_problems(self.tree, decode_manifest(self.manifest)) == []
        got = self.store.publish_pending(self.staging)
        assert got == self.lid  # the manifest, hence the layer id, did not change
        return got


def layer(store: Store, spec: Spec, **kw: int) -> tuple[LayerId, DedupStats]:
    """Stage ``spec``, deduplicate it, publish it (as commit does)."""
    staged = Staged(store, spec)
    stats = staged.dedup(**kw)
    return staged.publish(), stats


def ino(store: Store, lid: LayerId, path: str) -> int:
    return os.lstat(store.layer_tree(lid) / path).st_ino


def f(content: bytes = DATA, **kw: object) -> File:
    kw.setdefault("mtime_ns", T)
    kw.setdefault("mode", 0o644)
    return File(content, **kw)  # type: ignore[arg-type]


def index_files(store: Store) -> list[Path]:
    base = store.root / "dedup"
    return sorted(p for p in base.glob("??/*") if not p.name.startswith("."))


def entry_of(store: Store, lid: LayerId, path: str) -> Entry:
    (e,) = (e for e in decode_manifest(store.read_manifest(lid)) if e.path == path.encode())
    return e


# --------------------------------------------------------------------------- sharing


def test_identical_file_in_two_layers_is_one_inode(store: Store) -> None:
    a, sa = layer(store, {"big.bin": f(), "a-only": "a\n"})
    b, sb = layer(store, {"dir": {"copy.bin": f()}, "b-only": "b\n"})
    assert ino(store, a, "big.bin") == ino(store, b, "dir/copy.bin")
    assert os.lstat(store.layer_tree(a) / "big.bin").st_nlink == 2
    assert (sa.indexed, sa.linked) == (2, 0)
    assert (sb.linked, sb.indexed) == (1, 1)
    assert sb.saved_bytes >= len(DATA)
    # a third layer links the same inode again; the index still names layer a
    c, sc = layer(store, {"third.bin": f()})
    assert ino(store, c, "third.bin") == ino(store, a, "big.bin")
    assert sc.linked == 1
    key = dedup_key(entry_of(store, a, "big.bin"))
    rec = json.loads((store.root / "dedup" / key[:2] / key[2:]).read_bytes())
    assert (rec["layer"], rec["path"]) == (a.hex, "big.bin")


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(f(mtime_ns=T + 1), id="mtime"),
        pytest.param(f(mode=0o755), id="mode"),
        pytest.param(f(owner=(1000, 1000)), id="owner"),
        pytest.param(f(xattrs={"user.tag": b"x"}), id="xattr"),
        pytest.param(f(DATA[:-1] + b"?"), id="content"),
    ],
)
def test_different_metadata_or_content_is_not_shared(store: Store, other: File) -> None:
    a, _ = layer(store, {"x": f()})
    b, stats = layer(store, {"x": other})
    assert ino(store, a, "x") != ino(store, b, "x")
    assert stats.linked == 0 and stats.indexed == 1


def test_same_xattrs_are_shared(store: Store) -> None:
    xa = {"user.tag": b"blue", "user.more": b"\x00\x01"}
    a, _ = layer(store, {"x": f(xattrs=xa)})
    b, _ = layer(store, {"y": f(xattrs=dict(reversed(xa.items())))})
    assert ino(store, a, "x") == ino(store, b, "y")


def test_empty_files_are_left_alone(store: Store) -> None:
    a, sa = layer(store, {"e": f(b"")})
    b, _ = layer(store, {"e": f(b""), "b": "b\n"})
    assert ino(store, a, "e") != ino(store, b, "e")
    assert sa.groups == 0
    assert len(index_files(store)) == 1  # the file "b" only


def test_two_files_of_one_layer_never_become_one_inode(store: Store) -> None:
    """Names of one layer share an inode only when its manifest says they are
    hardlinks: two equal files stay two inodes (the first may be shared)."""
    a, _ = layer(store, {"one": f()})
    b, stats = layer(store, {"p": f(), "q": f(), "r": f()})
    assert ino(store, b, "p") == ino(store, a, "one")
    assert len({ino(store, b, n) for n in ("p", "q", "r")}) == 3
    assert stats.linked == 1
    # the same holds when nothing older matches
    c, _ = layer(store, {"u": f(b"new\n"), "v": f(b"new\n")})
    assert ino(store, c, "u") != ino(store, c, "v")


def test_a_hardlink_group_is_linked_as_a_whole(store: Store) -> None:
    a, _ = layer(store, {"orig": f()})
    staged = Staged(store, {"d": {"h1": f()}, "solo": "s\n"})
    os.link(staged.tree / "d" / "h1", staged.tree / "h2")
    os.utime(staged.tree, ns=(T, T))
    os.utime(staged.tree / "d", ns=(T, T))
    staged.manifest = encode_manifest(entries_of(read_tree(os.fsencode(staged.tree)), threads=1))
    staged.lid = manifest_id(staged.manifest)
    staged.store.write_pending_manifest(staged.staging, staged.manifest)
    assert entry_of_manifest(staged.manifest, "h2").link == b"d/h1"
    stats = staged.dedup()
    b = staged.publish()
    shared = ino(store, a, "orig")
    assert ino(store, b, "d/h1") == ino(store, b, "h2") == shared
    assert os.lstat(store.layer_tree(a) / "orig").st_nlink == 3
    assert stats.linked == 1
    # a new layer with a single copy links it once more
    c, _ = layer(store, {"again": f()})
    assert ino(store, c, "again") == shared


def entry_of_manifest(manifest: bytes, path: str) -> Entry:
    (e,) = (e for e in decode_manifest(manifest) if e.path == path.encode())
    return e


def test_directory_mtimes_are_kept(store: Store) -> None:
    layer(store, {"x": f()})
    staged = Staged(store, {"d": {"x": f(), "other": "o\n"}})
    before = {p: os.lstat(staged.tree / p).st_mtime_ns for p in (".", "d")}
    assert staged.dedup().linked == 1
    assert {p: os.lstat(staged.tree / p).st_mtime_ns for p in (".", "d")} == before
    staged.publish()


def test_a_file_linked_from_outside_the_tree_is_not_indexed(store: Store, tmp_path: Path) -> None:
    staged = Staged(store, {"x": f()})
    os.link(staged.tree / "x", tmp_path / "outside-name")
    os.utime(staged.tree, ns=(T, T))
    stats = staged.dedup()
    staged.publish()
    assert stats.indexed == 0 and index_files(store) == []


# --------------------------------------------------------------------------- the index is a cache


def test_a_stale_entry_of_a_deleted_layer_is_ignored_and_replaced(store: Store) -> None:
    a, _ = layer(store, {"x": f()})
    shutil.rmtree(store.layer_dir(a))  # as gc would delete it
    b, stats = layer(store, {"x": f(), "b": "b\n"})
    assert stats.linked == 0 and stats.indexed == 2
    assert os.lstat(store.layer_tree(b) / "x").st_nlink == 1
    c, _ = layer(store, {"y": f()})
    assert ino(store, c, "y") == ino(store, b, "x")


def test_an_entry_of_an_unpublished_layer_is_ignored(store: Store) -> None:
    staged = Staged(store, {"x": f()})
    staged.dedup()  # indexed, then never published (a crash, rolled back)
    b, stats = layer(store, {"x": f(), "other": "o\n"})
    assert stats.linked == 0
    assert os.lstat(store.layer_tree(b) / "x").st_nlink == 1


@pytest.mark.parametrize(
    "damage",
    ["empty", "garbage", "truncated", "other-key", "wrong-path", "wrong-meta", "escape"],
)
def test_a_damaged_entry_never_breaks_a_commit(store: Store, damage: str) -> None:
    a, _ = layer(store, {"x": f(), "y": f(b"different\n")})
    key = dedup_key(entry_of(store, a, "x"))
    path = store.root / "dedup" / key[:2] / key[2:]
    good = path.read_bytes()
    obj = json.loads(good)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(200))
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "other-key":
        other = dedup_key(entry_of(store, a, "y"))
        path.write_bytes((store.root / "dedup" / other[:2] / other[2:]).read_bytes())
    elif damage == "wrong-path":
        path.write_bytes(good.replace(b'"path":"x"', b'"path":"y"'))
    elif damage == "wrong-meta":
        obj["meta"]["t"] += 1
        path.write_text(json.dumps(obj))
    else:
        obj["path"] = "../../../../etc/passwd"
        path.write_text(json.dumps(obj))
    b, stats = layer(store, {"x": f(), "new": "n\n"})
    if damage == "wrong-path":
        # names the right layer but a file with other content and mtime: refused
        assert ino(store, b, "x") != ino(store, a, "y")
    assert ino(store, b, "x") != ino(store, a, "x")
    assert ino(store, a, "y") != ino(store, b, "x")
    assert stats.linked == 0
    # the entry was replaced by a good one: the next layer shares again
    c, _ = layer(store, {"z": f()})
    assert ino(store, c, "z") == ino(store, b, "x")


@pytest.mark.parametrize("where", ["index", "shard", "tmp"])
def test_an_unusable_index_never_breaks_a_commit(store: Store, where: str) -> None:
    a, _ = layer(store, {"x": f()})
    key = dedup_key(entry_of(store, a, "x"))
    victim = {
        "index": store.root / "dedup",
        "shard": store.root / "dedup" / key[:2],
        "tmp": store.root / "dedup" / "tmp",
    }[where]
    shutil.rmtree(victim)
    victim.write_bytes(b"not a directory")
    b, stats = layer(store, {"x": f(), "b": "b\n"})
    assert stats.linked == 0
    assert ino(store, a, "x") != ino(store, b, "x")


def test_a_candidate_changed_on_disk_is_refused(store: Store) -> None:
    """A layer file whose metadata no longer matches (damage) or that carries
    overlay bookkeeping is never linked."""
    a, _ = layer(store, {"x": f(), "y": f(b"yy\n")})
    os.utime(store.layer_tree(a) / "x", ns=(T + 5, T + 5))
    os.setxattr(store.layer_tree(a) / "y", "trusted.overlay.origin", b"junk")
    b, stats = layer(store, {"x": f(), "y": f(b"yy\n"), "b": "b\n"})
    assert stats.linked == 0
    assert ino(store, a, "x") != ino(store, b, "x")
    assert ino(store, a, "y") != ino(store, b, "y")


def test_prune_index_drops_stale_entries(store: Store) -> None:
    a, _ = layer(store, {"x": f(), "y": f(b"y\n")})
    b, _ = layer(store, {"z": f(b"z\n")})
    (store.root / "dedup" / "tmp" / "left-over").write_bytes(b"")
    (store.root / "dedup" / "ab").mkdir(exist_ok=True)
    (store.root / "dedup" / "ab" / ".cd.tmp").write_bytes(b"torn")
    assert len(index_files(store)) == 3
    shutil.rmtree(store.layer_dir(a))
    assert prune_index(store) == 3  # two of layer a, one torn temporary file
    assert len(index_files(store)) == 1
    assert os.listdir(store.root / "dedup" / "tmp") == []
    assert prune_index(store) == 0
    c, _ = layer(store, {"again": f(b"z\n")})
    assert ino(store, c, "again") == ino(store, b, "z")


# --------------------------------------------------------------------------- link limit


def test_a_new_inode_starts_near_the_link_limit(store: Store) -> None:
    lids = [layer(store, {f"n{i}": f(), "i": f"{i}\n"}, link_limit=3)[0] for i in range(7)]
    inos = [ino(store, lid, f"n{i}") for i, lid in enumerate(lids)]
    # 3 names per inode at most, then the index points at a fresh one
    assert inos[0] == inos[1] == inos[2]
    assert inos[3] == inos[4] == inos[5] != inos[0]
    assert inos[6] != inos[3]
    for i in inos:
        names = [lid for n, lid in enumerate(lids) if inos[n] == i]
        assert os.lstat(store.layer_tree(names[0]) / f"n{lids.index(names[0])}").st_nlink <= 3


def test_the_default_limit_leaves_headroom() -> None:
    assert dedup.LINK_HEADROOM > 0
    assert dedup._link_max(b"/") - dedup.LINK_HEADROOM > 1000


# --------------------------------------------------------------------------- crash and re-run

CRASHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from snapws.ids import LayerId
    from snapws.store.store import Store
    from snapws.store.dedup import dedup_tree
    store, tree, lid, manifest = sys.argv[1:5]
    dedup_tree(Store.open(Path(store)), Path(tree), LayerId(lid), Path(manifest).read_bytes())
    """
)


@pytest.mark.parametrize("at", ["link:1", "rename:1", "link:2", "rename:2", "rename:3"])
def test_sigkill_mid_run_then_run_again(store: Store, tmp_path: Path, at: str) -> None:
    a, _ = layer(store, {"x": f(), "y": f(b"yyy\n" * 99)})
    staged = Staged(store, {"d": {"x": f(), "y": f(b"yyy\n" * 99)}, "k": "k\n"})
    os.link(staged.tree / "d" / "y", staged.tree / "y2")  # a group of two
    os.utime(staged.tree, ns=(T, T))
    os.utime(staged.tree / "d", ns=(T, T))
    staged.manifest = encode_manifest(entries_of(read_tree(os.fsencode(staged.tree)), threads=1))
    staged.lid = manifest_id(staged.manifest)
    store.write_pending_manifest(staged.staging, staged.manifest)
    manifest_file = tmp_path / "manifest"
    manifest_file.write_bytes(staged.manifest)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, store.root, staged.tree, staged.lid.hex, manifest_file],
        env={**os.environ, dedup.CRASH_ENV: at},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the interrupted state may be torn (a group split, a directory mtime
    # changed, a link left in dedup/tmp): running again repairs it
    stats = staged.dedup()
    b = staged.publish()
    assert os.listdir(store.root / "dedup" / "tmp") == []
    assert ino(store, b, "d/x") == ino(store, a, "x")
    assert ino(store, b, "d/y") == ino(store, b, "y2") == ino(store, a, "y")
    assert stats.linked + stats.already == 2


# --------------------------------------------------------------------------- readers


def test_materialise_keeps_files_of_different_layers_apart(store: Store, tmp_path: Path) -> None:
    """Two paths of a merged view on one (shared) inode are not hardlinks:
    restoring them gives two files."""
    a, _ = layer(store, {"dir": {"one": f()}})
    b, _ = layer(store, {"dir": {"two": f()}})
    assert ino(store, a, "dir/one") == ino(store, b, "dir/two")
    view = ChainView([store.layer_tree(b), store.layer_tree(a)])
    dest = tmp_path / "out"
    dest.mkdir()
    materialise([loc.node for loc in view.walk(b"dir")], os.fsencode(dest))
    one, two = os.lstat(dest / "dir" / "one"), os.lstat(dest / "dir" / "two")
    assert one.st_ino != two.st_ino and one.st_nlink == two.st_nlink == 1
    assert (dest / "dir" / "two").read_bytes() == DATA
