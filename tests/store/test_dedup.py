"""snapws.store.dedup: identical files shared between layers, on a store
built without mounts (layers staged and published as commit and init do)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import File, Spec, gen
from robust.verify import tree_problems

from snapws.ids import LayerId
from snapws.layers.materialise import materialise
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView
from snapws.model import Entry, decode_manifest, encode_manifest, manifest_id
from snapws.store import dedup, dedupindex
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


def db_path(store: Store) -> Path:
    return store.root / "dedup" / "index.sqlite"


@contextlib.contextmanager
def database(store: Store) -> Iterator[sqlite3.Connection]:
    """The index database, committed and closed on leaving."""
    db = sqlite3.connect(db_path(store))
    try:
        with db:
            yield db
    finally:
        db.close()


def index_rows(store: Store) -> dict[str, Any]:
    """key -> data of every index entry."""
    if not db_path(store).exists():
        return {}
    with database(store) as db:
        return dict(db.execute("SELECT key, data FROM entries"))


def set_row(store: Store, key: str, data: object) -> None:
    with database(store) as db:
        db.execute("INSERT OR REPLACE INTO entries (key, data) VALUES (?, ?)", (key, data))


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
    rec = json.loads(index_rows(store)[key])
    assert (rec["layer"], rec["path"]) == (a.hex, "big.bin")


def test_index_rows_hold_canonical_json(store: Store) -> None:
    """One row per indexed file, in the database (no file per entry), its
    data the canonical JSON of the entry."""
    a, _ = layer(store, {"x": f(), "d": {"y": f(b"y\n")}, "\u00e9t\u00e9": f(b"e\n")})
    rows = index_rows(store)
    assert len(rows) == 3
    for key, data in rows.items():
        assert isinstance(data, bytes)
        obj = json.loads(data)
        assert obj["key"] == key and obj["layer"] == a.hex and obj["v"] == 1
        assert data == dedupindex.canonical(obj)
        assert dedupindex.parse_entry(data, key) is not None
    assert sorted(json.loads(d)["path"] for d in rows.values()) == ["d/y", "x", "\u00e9t\u00e9"]
    assert sorted(os.listdir(store.root / "dedup")) == ["index.sqlite", "tmp"]


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
    assert len(index_rows(store)) == 1  # the file "b" only


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
    assert stats.indexed == 0 and index_rows(store) == {}


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
    [
        "empty",
        "garbage",
        "truncated",
        "text",
        "null",
        "other-key",
        "wrong-path",
        "wrong-meta",
        "escape",
    ],
)
def test_a_damaged_entry_never_breaks_a_commit(store: Store, damage: str) -> None:
    a, _ = layer(store, {"x": f(), "y": f(b"different\n")})
    key = dedup_key(entry_of(store, a, "x"))
    good = index_rows(store)[key]
    obj = json.loads(good)
    bad: object
    if damage == "empty":
        bad = b""
    elif damage == "garbage":
        bad = os.urandom(200)
    elif damage == "truncated":
        bad = good[: len(good) // 2]
    elif damage == "text":
        bad = good.decode()  # a TEXT value, not the BLOB written
    elif damage == "null":
        with database(store) as db:  # a table made without NOT NULL
            db.execute("DROP TABLE entries")
            db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
        bad = None
    elif damage == "other-key":
        bad = index_rows(store)[dedup_key(entry_of(store, a, "y"))]
    elif damage == "wrong-path":
        bad = good.replace(b'"path":"x"', b'"path":"y"')
    elif damage == "wrong-meta":
        obj["meta"]["t"] += 1
        bad = json.dumps(obj).encode()
    else:
        obj["path"] = "../../../../etc/passwd"
        bad = json.dumps(obj).encode()
    set_row(store, key, bad)
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


@pytest.mark.parametrize("where", ["dedup", "tmp"])
def test_an_unusable_index_directory_never_breaks_a_commit(store: Store, where: str) -> None:
    a, _ = layer(store, {"x": f()})
    victim = {"dedup": store.root / "dedup", "tmp": store.root / "dedup" / "tmp"}[where]
    shutil.rmtree(victim)
    victim.write_bytes(b"not a directory")
    b, stats = layer(store, {"x": f(), "b": "b\n"})
    assert stats.linked == 0 and stats.indexed == 0
    assert ino(store, a, "x") != ino(store, b, "x")


def test_a_database_that_cannot_be_opened_never_breaks_a_commit(store: Store) -> None:
    """index.sqlite is a directory: each run does without the index, and
    leaves the directory alone (it is no damaged database)."""
    a, _ = layer(store, {"x": f()})
    db_path(store).unlink()
    (db_path(store) / "sub").mkdir(parents=True)
    b, stats = layer(store, {"x": f(), "b": "b\n"})
    assert (stats.linked, stats.indexed) == (0, 0)
    assert ino(store, a, "x") != ino(store, b, "x")
    assert (db_path(store) / "sub").is_dir()
    assert prune_index(store) == 0
    _, stats = layer(store, {"x": f(), "c": "c\n"})
    assert (stats.linked, stats.indexed) == (0, 0)
    # once it is gone, a new index starts
    shutil.rmtree(db_path(store))
    d, stats = layer(store, {"x": f(), "d": "d\n"})
    assert stats.indexed == 2
    e, stats = layer(store, {"x": f(), "e": "e\n"})
    assert stats.linked == 1 and ino(store, e, "x") == ino(store, d, "x")


def damage_pages(path: Path) -> None:
    """Overwrite every page of an SQLite file but the first (the header and
    the schema): the table is garbage, found only when read."""
    size = path.stat().st_size
    assert size >= 3 * 4096
    with open(path, "r+b") as fh:
        fh.seek(4096)
        fh.write(b"\xa5" * (size - 4096))


@pytest.mark.parametrize(
    "damage", ["garbage-file", "garbage-pages", "foreign", "other-format", "other-schema"]
)
def test_a_damaged_database_is_moved_aside_and_recreated(store: Store, damage: str) -> None:
    """A run that finds the database damaged (when opening it, or at the
    first lookup) does without it, and moves it aside: the next run starts a
    new index, the one after shares again."""
    spec = {f"f{i:03}": f(f"{i}\n".encode() * 50) for i in range(300)}
    a, _ = layer(store, {**spec, "x": f()})
    path = db_path(store)
    if damage == "garbage-file":
        path.write_bytes(os.urandom(8192))
    elif damage == "garbage-pages":
        damage_pages(path)
    elif damage == "foreign":
        path.unlink()
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE entries (k, v)")
    elif damage == "other-format":
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("PRAGMA user_version = 99")
    else:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("ALTER TABLE entries RENAME COLUMN data TO payload")
    b, stats = layer(store, {"x": f(), "b": "b\n"})
    assert (stats.linked, stats.indexed) == (0, 0)
    assert ino(store, a, "x") != ino(store, b, "x")
    assert (store.root / "dedup" / "index.sqlite.corrupt").is_file()
    assert not path.exists()
    c, stats = layer(store, {"x": f(), "c": "c\n"})
    assert (stats.linked, stats.indexed) == (0, 2)
    d, stats = layer(store, {"x": f(), "d": "d\n"})
    assert stats.linked == 1 and ino(store, d, "x") == ino(store, c, "x")
    with database(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_prune_index_on_a_damaged_database(store: Store) -> None:
    spec = {f"f{i:03}": f(f"{i}\n".encode() * 50) for i in range(300)}
    layer(store, spec)
    damage_pages(db_path(store))
    assert prune_index(store) == 0
    assert (store.root / "dedup" / "index.sqlite.corrupt").is_file()
    _, stats = layer(store, {"x": f()})
    assert stats.indexed == 1


class FailingConnection(sqlite3.Connection):
    """Fails a statement like a full disk (the commit) or a damaged page (a
    lookup)."""

    fail_at = ""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_at == "commit":
            raise sqlite3.OperationalError("database or disk is full")
        if sql.startswith("SELECT data") and self.fail_at == "lookup":
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().execute(sql, *args)


def failing_connections(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    real = sqlite3.connect

    def connect(*args: Any, **kw: Any) -> sqlite3.Connection:
        return real(*args, factory=FailingConnection, **kw)

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(FailingConnection, "fail_at", at)


def test_an_error_at_commit_loses_the_run_entries_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = layer(store, {"x": f()})
    failing_connections(monkeypatch, "commit")
    b, stats = layer(store, {"x": f(), "y": f(b"y\n")})
    assert stats.linked == 1 and stats.indexed == 0  # the links are made all the same
    assert ino(store, b, "x") == ino(store, a, "x")
    monkeypatch.undo()
    assert len(index_rows(store)) == 1  # rolled back, not damaged: kept
    assert not (store.root / "dedup" / "index.sqlite.corrupt").exists()
    _, stats = layer(store, {"y": f(b"y\n"), "z": "z\n"})
    assert (stats.linked, stats.indexed) == (0, 2)  # b's "y" was never indexed


def test_damage_found_mid_run(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup that finds the database damaged: the run goes on without it
    (no lookup, nothing indexed), the database is moved aside."""
    a, _ = layer(store, {"x": f(), "y": f(b"y\n")})
    failing_connections(monkeypatch, "lookup")
    b, stats = layer(store, {"x": f(), "y": f(b"y\n"), "z": "z\n"})
    assert (stats.groups, stats.linked, stats.indexed) == (3, 0, 0)
    assert ino(store, b, "x") != ino(store, a, "x")
    monkeypatch.undo()
    assert (store.root / "dedup" / "index.sqlite.corrupt").is_file()
    assert not db_path(store).exists()
    c, stats = layer(store, {"x": f(), "c": "c\n"})
    assert stats.indexed == 2
    d, _ = layer(store, {"x": f()})
    assert ino(store, d, "x") == ino(store, c, "x")


def test_old_layout_shards_are_removed(store: Store) -> None:
    """The one-file-per-entry layout (never released) is deleted, not read."""
    a, _ = layer(store, {"x": f()})
    key = dedup_key(entry_of(store, a, "x"))
    good = index_rows(store)[key]
    db_path(store).unlink()
    shard = store.root / "dedup" / key[:2]
    shard.mkdir()
    (shard / key[2:]).write_bytes(good + b"\n")
    _, stats = layer(store, {"x": f(), "b": "b\n"})
    assert (stats.linked, stats.indexed) == (0, 2)
    assert not shard.exists()
    shard.mkdir()
    (shard / key[2:]).write_bytes(good + b"\n")
    prune_index(store)
    assert not shard.exists()


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
    set_row(store, "ab" * 16, b"torn")
    assert len(index_rows(store)) == 4
    shutil.rmtree(store.layer_dir(a))
    assert prune_index(store) == 3  # two of layer a, one torn
    assert list(index_rows(store)) == [dedup_key(entry_of(store, b, "z"))]
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


@pytest.mark.parametrize("at", ["link:1", "rename:1", "link:2", "rename:2", "rename:3", "commit:1"])
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
        env={**os.environ, "SNAPWS_CRASH_AT": "dedup:" + at},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the interrupted state may be torn (a group split, a directory mtime
    # changed, a link left in dedup/tmp, the index transaction not
    # committed): running again repairs it
    stats = staged.dedup()
    b = staged.publish()
    assert os.listdir(store.root / "dedup" / "tmp") == []
    assert ino(store, b, "d/x") == ino(store, a, "x")
    assert ino(store, b, "d/y") == ino(store, b, "y2") == ino(store, a, "y")
    assert stats.linked + stats.already == 2
    assert stats.indexed == 1  # "k"
    assert not (store.root / "dedup" / "index.sqlite.corrupt").exists()
    with database(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(index_rows(store)) == 3


def test_sigkill_before_commit_loses_the_run_entries(store: Store, tmp_path: Path) -> None:
    a, _ = layer(store, {"x": f()})
    staged = Staged(store, {"x": f(), "new": f(b"new\n")})
    manifest_file = tmp_path / "manifest"
    manifest_file.write_bytes(staged.manifest)
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, store.root, staged.tree, staged.lid.hex, manifest_file],
        env={**os.environ, "SNAPWS_CRASH_AT": "dedup:commit:1"},
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ino(store, a, "x") == os.lstat(staged.tree / "x").st_ino  # the link was made
    assert list(index_rows(store)) == [dedup_key(entry_of(store, a, "x"))]
    staged.publish()


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
