"""snapws.store.store: the on-disk store, written without a workspace."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snapws.errors import (
    BadNameError,
    ExitCode,
    NameExistsError,
    StoreCorruptError,
    StoreNotFoundError,
)
from snapws.ids import LayerId, SnapshotId, WorkspaceId
from snapws.model import Entry, Kind, SnapshotRecord, WorkspaceState, encode_manifest, manifest_id
from snapws.store.store import EMPTY_LAYER, FORMAT, MARKER, Store

SUBDIRS = (
    "layers",
    "snapshots",
    "chains",
    "refs/heads",
    "refs/tags",
    "logs",
    "workspaces",
    "staging",
    "trash",
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


def record(message: str = "m", parents: tuple[SnapshotId, ...] = ()) -> SnapshotRecord:
    return SnapshotRecord(parents, EMPTY_LAYER, message, "me", 1_700_000_000_000_000_000, 60)


def sid(n: int) -> SnapshotId:
    return record(str(n)).id


def staged(store: Store, files: dict[str, str]) -> Path:
    staging = store.new_staging()
    tree = staging / "tree"
    tree.mkdir()
    for name, text in files.items():
        (tree / name).write_text(text)
    return staging


def manifest_for(files: dict[str, str]) -> bytes:
    from snapws.ids import ContentHash

    return encode_manifest(
        [Entry(b".", Kind.DIR, mode=0o755)]
        + [
            Entry(n.encode(), Kind.FILE, mode=0o644, size=len(t), hash=ContentHash.of(t.encode()))
            for n, t in files.items()
        ]
    )


# --------------------------------------------------------------------------- create / open


def test_create_lays_out_the_store(tmp_path: Path) -> None:
    root = tmp_path / "a" / "store"
    store = Store.create(root)
    assert store.root == root
    assert json.loads((root / MARKER).read_text()) == {"format": FORMAT, "xattrs": "trusted"}
    for sub in SUBDIRS:
        assert (root / sub).is_dir(), sub
    assert store.has_layer(EMPTY_LAYER)
    assert store.read_manifest(EMPTY_LAYER) == b""
    assert store.layer_tree(EMPTY_LAYER).is_dir()
    assert list(store.layer_tree(EMPTY_LAYER).iterdir()) == []
    assert store.layer_ids() == [EMPTY_LAYER]
    assert list(store.iter_staging()) == []


def test_create_again_opens(store: Store) -> None:
    again = Store.create(store.root)
    assert again.root == store.root
    assert again.layer_ids() == [EMPTY_LAYER]


def test_open(store: Store, tmp_path: Path) -> None:
    assert Store.open(store.root).root == store.root
    with pytest.raises(StoreNotFoundError) as info:
        Store.open(tmp_path / "nothing")
    assert info.value.exit_code is ExitCode.NOT_A_WORKSPACE
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreNotFoundError):
        Store.open(tmp_path / "plain")


def test_open_relative_path_is_made_absolute(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(store.root.parent)
    assert Store.open(Path(store.root.name)).root == store.root


@pytest.mark.parametrize(
    ("marker", "hint"),
    [(b'{"format": 2}', "upgrade snapws"), (b"{not json", None), (b"{}", "upgrade snapws")],
)
def test_open_bad_marker(store: Store, marker: bytes, hint: str | None) -> None:
    (store.root / MARKER).write_bytes(marker)
    with pytest.raises(StoreCorruptError) as info:
        Store.open(store.root)
    assert info.value.exit_code is ExitCode.STORE_CORRUPT
    assert str(store.root) in str(info.value)
    if hint is not None:
        assert info.value.hint == hint


# --------------------------------------------------------------------------- layers


def test_publish_layer(store: Store) -> None:
    files = {"f": "hello"}
    manifest = manifest_for(files)
    staging = staged(store, files)
    lid = store.publish_layer(staging, manifest)
    assert lid == manifest_id(manifest)
    assert not staging.exists()
    assert store.has_layer(lid)
    assert store.read_manifest(lid) == manifest
    assert stat.S_IMODE(os.stat(store.layer_dir(lid) / "manifest").st_mode) == 0o444
    assert (store.layer_tree(lid) / "f").read_text() == "hello"
    assert store.layer_ids() == sorted([EMPTY_LAYER, lid])


def test_publish_layer_is_idempotent(store: Store) -> None:
    files = {"f": "hello"}
    lid = store.publish_layer(staged(store, files), manifest_for(files))
    second = staged(store, files)
    assert store.publish_layer(second, manifest_for(files)) == lid
    assert second.exists()  # left for the caller to discard
    assert not (second / "manifest").exists()
    assert (store.layer_tree(lid) / "f").read_text() == "hello"


def test_read_missing_manifest(store: Store) -> None:
    with pytest.raises(StoreCorruptError, match="manifest"):
        store.read_manifest(LayerId("0" * 32))


def test_layer_ids_ignore_strangers(store: Store) -> None:
    (store.root / "layers" / "not-a-layer").mkdir()
    assert store.layer_ids() == [EMPTY_LAYER]


def test_publish_pending(store: Store) -> None:
    files = {"g": "pending"}
    manifest = manifest_for(files)
    staging = staged(store, files)
    store.write_pending_manifest(staging, manifest)
    assert (staging / "manifest.pending").read_bytes() == manifest
    lid = store.publish_pending(staging)
    assert lid == manifest_id(manifest)
    assert not staging.exists()
    assert store.read_manifest(lid) == manifest
    assert not (store.layer_dir(lid) / "manifest.pending").exists()


def test_publish_pending_resumes_after_manifest_rename(store: Store) -> None:
    """A crash between renaming manifest.pending and renaming the directory."""
    files = {"g": "pending"}
    manifest = manifest_for(files)
    staging = staged(store, files)
    store.write_pending_manifest(staging, manifest)
    os.rename(staging / "manifest.pending", staging / "manifest")
    lid = store.publish_pending(staging)
    assert store.read_manifest(lid) == manifest
    assert (store.layer_tree(lid) / "g").read_text() == "pending"


def test_publish_pending_twice_for_same_content(store: Store) -> None:
    files = {"g": "x"}
    manifest = manifest_for(files)
    first = staged(store, files)
    store.write_pending_manifest(first, manifest)
    lid = store.publish_pending(first)
    second = staged(store, files)
    store.write_pending_manifest(second, manifest)
    assert store.publish_pending(second) == lid
    assert second.exists()  # the sweep discards it
    assert store.read_manifest(lid) == manifest


# --------------------------------------------------------------------------- snapshots


def test_write_and_read_snapshot(store: Store) -> None:
    rec = record("first")
    child = record("second", parents=(rec.id,))
    assert store.write_snapshot(rec, [EMPTY_LAYER]) == rec.id
    store.write_snapshot(child, [EMPTY_LAYER, EMPTY_LAYER])
    assert store.has_snapshot(rec.id)
    assert store.read_snapshot(rec.id) == rec
    assert store.read_snapshot(child.id) == child
    assert store.chain(child.id) == [EMPTY_LAYER, EMPTY_LAYER]
    assert store.snapshot_ids() == sorted([rec.id, child.id])
    assert store.ids_with_prefix(rec.id.hex[:6]) == [rec.id]
    assert store.ids_with_prefix("") == sorted([rec.id, child.id])
    path = store.root / "snapshots" / f"{rec.id.hex}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert path.read_bytes() == rec.canonical()


def test_write_snapshot_again_keeps_the_chain(store: Store) -> None:
    rec = record()
    store.write_snapshot(rec, [EMPTY_LAYER, EMPTY_LAYER])
    store.write_chain(rec.id, [EMPTY_LAYER])  # flattened
    store.write_snapshot(rec, [EMPTY_LAYER, EMPTY_LAYER])  # a replayed commit
    assert store.chain(rec.id) == [EMPTY_LAYER]
    assert store.read_snapshot(rec.id) == rec


@pytest.mark.parametrize("data", [b"", b"{", b"5", b'["zz"]', b"[1]"])
def test_unreadable_chain_is_corrupt(store: Store, data: bytes) -> None:
    rec = record()
    store.write_snapshot(rec, [EMPTY_LAYER])
    (store.root / "chains" / f"{rec.id.hex}.json").write_bytes(data)
    with pytest.raises(StoreCorruptError, match="chain"):
        store.chain(rec.id)


def test_snapshot_not_hashing_to_its_name_is_corrupt(store: Store) -> None:
    rec, other = record("real"), record("forged")
    store.write_snapshot(rec, [EMPTY_LAYER])
    path = store.root / "snapshots" / f"{rec.id.hex}.json"
    path.write_bytes(other.canonical())  # root ignores the 0444 mode
    with pytest.raises(StoreCorruptError, match="does not hash to its name"):
        store.read_snapshot(rec.id)


@pytest.mark.parametrize("data", [b"", b"{not json", b"{}", b"[]", b'{"parents": 5}', b"null"])
def test_unreadable_snapshot_is_corrupt(store: Store, data: bytes) -> None:
    rec = record()
    store.write_snapshot(rec, [EMPTY_LAYER])
    (store.root / "snapshots" / f"{rec.id.hex}.json").write_bytes(data)
    with pytest.raises(StoreCorruptError):
        store.read_snapshot(rec.id)


def test_missing_snapshot_and_chain(store: Store) -> None:
    with pytest.raises(StoreCorruptError, match="missing"):
        store.read_snapshot(sid(1))
    with pytest.raises(StoreCorruptError, match="chain"):
        store.chain(sid(1))
    assert not store.has_snapshot(sid(1))


def test_snapshot_ids_ignore_strangers(store: Store) -> None:
    (store.root / "snapshots" / "README.txt").write_text("x")
    (store.root / "snapshots" / "zz.json").write_text("x")
    assert store.snapshot_ids() == []


# --------------------------------------------------------------------------- refs


def test_refs_with_slashes(store: Store) -> None:
    store.write_ref("heads", "main", sid(1), "me", "init")
    store.write_ref("heads", "feature/deep/name", sid(2), "me", "branch")
    store.write_ref("tags", "v1.0", sid(1), "me", "tag")
    assert store.read_ref("heads", "feature/deep/name") == sid(2)
    assert store.read_ref("heads", "feature") is None  # a directory, not a ref
    assert store.read_ref("heads", "nope") is None
    assert store.list_refs("heads") == {"feature/deep/name": sid(2), "main": sid(1)}
    assert store.list_refs("tags") == {"v1.0": sid(1)}
    assert (store.root / "refs" / "heads" / "feature" / "deep" / "name").read_text() == sid(
        2
    ).hex + "\n"


def test_ref_moves_are_logged(store: Store) -> None:
    store.write_ref("heads", "main", sid(1), "me", "first")
    store.write_ref("heads", "main", sid(2), "you", "second")
    store.write_ref("heads", "main", sid(2), "you", "no move")
    log = store.read_reflog("refs/heads/main")
    assert [(e.old, e.new, e.who, e.message) for e in log] == [
        (None, sid(1), "me", "first"),
        (sid(1), sid(2), "you", "second"),
    ]
    assert all(e.ref == "refs/heads/main" for e in log)


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a"), ("x/y", "x/y/z/w")])
def test_ref_clashes(store: Store, first: str, second: str) -> None:
    store.write_ref("heads", first, sid(1), "me", "m")
    with pytest.raises(NameExistsError) as info:
        store.write_ref("heads", second, sid(2), "me", "m")
    assert f"cannot create branch {second!r}" in str(info.value)
    assert info.value.exit_code is ExitCode.BAD_NAME
    assert store.list_refs("heads") == {first: sid(1)}
    leftovers = list((store.root / "refs").rglob(".*"))
    assert leftovers == []  # no temp file left by the failed write


def test_corrupt_ref(store: Store) -> None:
    (store.root / "refs" / "heads" / "bad").write_text("garbage\n")
    with pytest.raises(StoreCorruptError, match="bad"):
        store.read_ref("heads", "bad")


def test_delete_ref_cleans_empty_dirs(store: Store) -> None:
    store.write_ref("heads", "x/y/z", sid(1), "me", "m")
    store.write_ref("heads", "x/w", sid(2), "me", "m")
    assert store.delete_ref("heads", "x/y/z", "me", "gone") == sid(1)
    heads = store.root / "refs" / "heads"
    assert not (heads / "x" / "y").exists()
    assert (heads / "x").is_dir()  # still holds x/w
    assert store.delete_ref("heads", "x/w", "me", "gone") == sid(2)
    assert list(heads.iterdir()) == []
    assert heads.is_dir()
    assert store.list_refs("heads") == {}
    log = store.read_reflog("refs/heads/x/y/z")
    assert [(e.old, e.new, e.message) for e in log] == [(None, sid(1), "m"), (sid(1), None, "gone")]
    assert store.read_reflog("refs/heads/x") == []  # a directory of logs, not a log
    assert store.read_reflog("refs/heads/x/y/z/deeper") == []  # below a log
    # the name is free again
    store.write_ref("heads", "x", sid(3), "me", "m")
    assert store.read_ref("heads", "x") == sid(3)


@pytest.mark.parametrize(("first", "second"), [("x/y", "x"), ("x", "x/y"), ("x", "x/y/z")])
def test_deleted_ref_frees_its_name_and_log(store: Store, first: str, second: str) -> None:
    """Once "x/y" is deleted, "x" can be created (and the reverse), although
    the deleted ref's reflog would clash with the new one's."""
    store.write_ref("heads", first, sid(1), "me", "create")
    store.delete_ref("heads", first, "me", "delete")
    store.write_ref("heads", second, sid(2), "me", "again")
    assert store.list_refs("heads") == {second: sid(2)}
    log = store.read_reflog(f"refs/heads/{second}")
    assert [(e.old, e.new, e.message) for e in log] == [(None, sid(2), "again")]
    assert list((store.root / "trash").iterdir()) == []


def test_delete_missing_ref(store: Store) -> None:
    assert store.delete_ref("tags", "nope", "me", "m") is None
    assert store.read_reflog("refs/tags/nope") == []


# ----------------------------------------------------------------- ref names and damaged refs


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store holding a file with a valid snapshot id."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text(sid(9).hex + "\n")
    return d


@pytest.mark.parametrize("kind", ["heads", "tags", "remotes"])
def test_a_name_that_is_a_path_outside_is_no_ref(store: Store, outside: Path, kind: str) -> None:
    victim = outside / "victim"
    rel = os.path.relpath(victim, store.root / "refs" / kind)
    for name in (str(victim), rel, "x/../../" + rel, "x" * 100_000):
        assert store.read_ref(kind, name) is None  # not read: it cannot be a ref
        assert store.delete_ref(kind, name, "me", "m") is None
        with pytest.raises(BadNameError) as info:
            store.write_ref(kind, name, sid(1), "me", "m")
        assert info.value.exit_code is ExitCode.BAD_NAME
    assert victim.read_text() == sid(9).hex + "\n"
    assert store.list_refs(kind) == {}
    assert not (store.root / "logs" / "refs" / kind).exists()


def test_a_remote_tracking_name_with_dot_dot_is_refused(store: Store, outside: Path) -> None:
    """fetch and push make refs/remotes/<remote>/<tag> from what a remote says."""
    for name in ("origin/../../heads/main", "origin/a..b", "/origin/x", "origin/x.lock"):
        with pytest.raises(BadNameError):
            store.write_ref("remotes", name, sid(1), "me", "fetch: x")
    assert store.read_ref("heads", "main") is None
    assert list((store.root / "refs").rglob("*")) == [
        store.root / "refs" / "heads",
        store.root / "refs" / "tags",
    ]


def test_reflog_names_outside_the_logs_are_not_read(store: Store, outside: Path) -> None:
    (outside / "log").write_text('{"junk": 1}\n')
    rel = os.path.relpath(outside / "log", store.root / "logs")
    for ref in (rel, f"refs/heads/../../{rel}", str(outside / "log"), "workspaces/x/HEAD"):
        assert store.read_reflog(ref) == []
        assert store.last_reflog(ref) is None
        with pytest.raises(ValueError):
            store.append_reflog(ref, None, sid(1), "me", "m")


def test_a_ref_that_is_a_symlink_is_damage_never_followed(store: Store, outside: Path) -> None:
    link = store.root / "refs" / "heads" / "evil"
    link.symlink_to(outside / "victim")
    with pytest.raises(StoreCorruptError, match=f"{link} is a symbolic link") as info:
        store.read_ref("heads", "evil")
    assert info.value.exit_code is ExitCode.STORE_CORRUPT
    with pytest.raises(StoreCorruptError, match="symbolic link"):
        store.list_refs("heads")
    with pytest.raises(StoreCorruptError, match="symbolic link"):
        store.write_ref("heads", "evil", sid(1), "me", "m")
    with pytest.raises(StoreCorruptError, match="symbolic link"):
        store.delete_ref("heads", "evil", "me", "m")
    assert (outside / "victim").read_text() == sid(9).hex + "\n"
    assert link.is_symlink()


def test_a_symlinked_directory_of_refs_is_damage(store: Store, outside: Path) -> None:
    (store.root / "refs" / "heads" / "team").symlink_to(outside)
    with pytest.raises(StoreCorruptError, match="team is a symbolic link"):
        store.read_ref("heads", "team/victim")
    with pytest.raises(StoreCorruptError, match="team is a symbolic link"):
        store.write_ref("heads", "team/new", sid(1), "me", "m")
    with pytest.raises(StoreCorruptError, match="team is a symbolic link"):
        store.list_refs("heads")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert (outside / "victim").read_text() == sid(9).hex + "\n"


def test_a_symlinked_refs_directory_is_damage(store: Store, outside: Path) -> None:
    refs = store.root / "refs"
    refs.rename(store.root / "refs.real")
    (outside / "heads").mkdir()
    (outside / "heads" / "main").write_text(sid(9).hex + "\n")
    refs.symlink_to(outside)
    with pytest.raises(StoreCorruptError, match="refs is a symbolic link"):
        store.read_ref("heads", "main")
    with pytest.raises(StoreCorruptError, match="refs is a symbolic link"):
        store.write_ref("heads", "main", sid(1), "me", "m")
    assert (outside / "heads" / "main").read_text() == sid(9).hex + "\n"


def test_a_ref_replaced_by_a_directory_is_damage(store: Store) -> None:
    store.write_ref("heads", "main", sid(1), "me", "init")
    path = store.root / "refs" / "heads" / "main"
    path.unlink()
    path.mkdir()
    with pytest.raises(StoreCorruptError, match=f"{path} is a directory"):
        store.read_ref("heads", "main")
    with pytest.raises(StoreCorruptError, match="is a directory"):
        store.list_refs("heads")
    with pytest.raises(StoreCorruptError, match="is a directory"):
        store.write_ref("heads", "main", sid(2), "me", "commit")


def test_a_directory_of_refs_is_not_damage(store: Store) -> None:
    """ "a/" holding "a/b" is no ref, even after "a" itself was deleted."""
    store.write_ref("heads", "a", sid(1), "me", "m")
    store.delete_ref("heads", "a", "me", "m")
    store.write_ref("heads", "a/b", sid(2), "me", "m")
    assert store.read_ref("heads", "a") is None
    assert store.list_refs("heads") == {"a/b": sid(2)}


@pytest.mark.parametrize("make", [os.mkfifo, lambda p: p.write_bytes(b"0" * 1_000_000)])
def test_a_ref_that_is_no_small_regular_file_is_damage(store: Store, make: object) -> None:
    path = store.root / "refs" / "tags" / "odd"
    make(path)  # type: ignore[operator]
    with pytest.raises(StoreCorruptError, match=str(path)):
        store.read_ref("tags", "odd")  # a FIFO is not waited on


def test_bad_names_found_in_the_store_are_skipped(store: Store) -> None:
    store.write_ref("heads", "main", sid(1), "me", "m")
    heads = store.root / "refs" / "heads"
    (heads / "bad name").write_text(sid(2).hex + "\n")
    (heads / "x.lock").write_text(sid(2).hex + "\n")
    (heads / ".hidden").write_text(sid(2).hex + "\n")
    (heads / "new\nline").write_text(sid(2).hex + "\n")
    assert store.list_refs("heads") == {"main": sid(1)}
    assert store.ref_entries("heads") == ["bad name", "main", "new\nline", "x.lock"]


# --------------------------------------------------------------------------- reflog


def test_reflog_skips_torn_last_line(store: Store) -> None:
    store.append_reflog("HEAD", None, sid(1), "me", "one")
    store.append_reflog("HEAD", sid(1), sid(2), "me", "two")
    path = store.root / "logs" / "HEAD"
    whole = path.read_bytes().splitlines(keepends=True)[1]
    with open(path, "ab") as fh:
        fh.write(whole[: len(whole) // 2])  # a crash mid-append
    log = store.read_reflog("HEAD")
    assert [e.message for e in log] == ["one", "two"]
    # the next append starts on a line of its own
    store.append_reflog("HEAD", sid(2), sid(3), "me", "three")
    assert [e.message for e in store.read_reflog("HEAD")][-1] == "three"


def test_reflog_missing(store: Store) -> None:
    assert store.read_reflog("refs/heads/none") == []


# --------------------------------------------------------------------------- journal


def test_journal(store: Store) -> None:
    assert store.read_journal() is None
    lid = "0123456789abcdef0123456789abcdef"
    store.write_journal({"op": "gc", "layers": [lid], "grace": 1.5})
    assert store.read_journal() == {"op": "gc", "layers": [lid], "grace": 1.5}
    store.write_journal({"op": "prune", "forget": []})
    assert store.read_journal() == {"op": "prune", "forget": []}
    store.clear_journal()
    assert store.read_journal() is None
    store.clear_journal()  # no journal: nothing to do
    assert not (store.root / "journal.json").exists()


def test_corrupt_journal(store: Store) -> None:
    (store.root / "journal.json").write_bytes(b'{"op": "comm')
    with pytest.raises(StoreCorruptError, match="journal"):
        store.read_journal()


# --------------------------------------------------------------------------- workspaces


def test_workspace_records(store: Store) -> None:
    wid = WorkspaceId("a" * 32)
    state = WorkspaceState(wid, "/srv/ws", sid(1), "main", "upper-1", "work-1")
    store.write_workspace(state)
    (store.workspace_dir(wid) / "upper-1").mkdir()
    assert store.read_workspace(wid) == state
    assert store.workspaces() == [state]
    store.remove_workspace_record(wid)
    assert store.workspaces() == []
    assert not store.workspace_dir(wid).exists()
    assert list((store.root / "trash").iterdir()) == []
    with pytest.raises(StoreCorruptError):
        store.read_workspace(wid)


# --------------------------------------------------------------------------- deletion


def test_discard(store: Store) -> None:
    d = store.new_staging("x")
    (d / "sub").mkdir()
    (d / "sub" / "f").write_text("x")
    os.symlink("/etc/passwd", d / "link")  # never followed
    f = store.root / "staging" / "loose-file"
    f.write_text("y")
    store.discard(d)
    store.discard(f)
    assert not d.exists()
    assert not f.exists()
    assert list((store.root / "trash").iterdir()) == []
    assert Path("/etc/passwd").exists()


def test_discard_a_tree_deeper_than_path_max_with_few_descriptors(store: Store) -> None:
    """5,000 levels (paths of 10,000 bytes), under a descriptor limit far
    below one per level."""
    import resource

    d = store.new_staging("deep")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    for n in range(5000):
        os.mkdir("d", dir_fd=fd)
        if n % 1000 == 0:
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 200, hard))
    try:
        store.discard(d)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not d.exists()
    assert list((store.root / "trash").iterdir()) == []


def hostile_tree(base: Path) -> None:
    """A tree that only its owner with chmod can remove: mode 000 dirs."""
    (base / "a" / "b").mkdir(parents=True)
    (base / "a" / "b" / "f").write_text("x")
    (base / "a" / "g").write_text("y")
    (base / "c").mkdir()
    os.chmod(base / "a" / "b", 0)
    os.chmod(base / "a", 0)
    os.chmod(base / "c", 0)
    os.chmod(base, 0o500)


def test_empty_trash_with_mode_000_dirs(store: Store) -> None:
    hostile_tree(store.root / "trash" / "leftover")
    (store.root / "trash" / "file").write_text("z")
    store.empty_trash()
    assert list((store.root / "trash").iterdir()) == []


# Drop every capability (uid stays 0): the process is then an ordinary owner,
# whom mode 000 directories stop, as a rootless snapws would be.
DROP_CAPS_AND_EMPTY = textwrap.dedent(
    """
    import ctypes, sys
    from pathlib import Path
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        sys.exit("capset failed: %d" % ctypes.get_errno())
    trash = Path(sys.argv[1]) / "trash"
    try:
        list((trash / "leftover" / "a").iterdir())
    except PermissionError:
        print("blocked", flush=True)
    from snapws.store.store import Store
    Store(Path(sys.argv[1])).empty_trash()
    print(sorted(p.name for p in trash.iterdir()))
    """
)


def test_empty_trash_without_privileges(store: Store) -> None:
    hostile_tree(store.root / "trash" / "leftover")
    out = subprocess.run(
        [sys.executable, "-c", DROP_CAPS_AND_EMPTY, str(store.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["blocked", "[]"]
