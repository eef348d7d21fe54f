"""snapws.store.dedup: the index transaction of a run commits in a thread
of its own (start_dedup_tree) while the caller makes the layer durable;
the tree is final before, the entries are there after ``wait()``."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from snapws.layers.scan import entries_of, read_tree
from snapws.model import encode_manifest, manifest_id
from snapws.store import dedupindex
from snapws.store.dedup import start_dedup_tree
from snapws.store.store import Store

from .test_dedup import Staged, T, f, index_rows, ino, layer


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


def test_the_index_commits_in_another_thread_after_the_links(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = layer(store, {"x": f()})
    staged = Staged(store, {"x": f(), "new": f(b"new\n")})
    closed_in: list[threading.Thread] = []
    release = threading.Event()
    real_close = dedupindex.DedupIndex.close

    def close(self: dedupindex.DedupIndex, commit: bool) -> bool:
        closed_in.append(threading.current_thread())
        release.wait()
        return real_close(self, commit)

    monkeypatch.setattr(dedupindex.DedupIndex, "close", close)
    before = set(index_rows(store))
    pending = start_dedup_tree(store, staged.tree, staged.lid, staged.manifest)
    # the links are made while the commit waits in its thread
    assert ino(store, a, "x") == os.lstat(staged.tree / "x").st_ino
    assert set(index_rows(store)) == before
    release.set()
    stats = pending.wait()
    assert closed_in and closed_in[0] is not threading.main_thread()
    assert stats.linked == 1 and stats.indexed == 1
    assert len(index_rows(store)) == len(before) + 1
    staged.publish()


def known_stats(staged: Staged) -> dict[bytes, os.stat_result]:
    """The lstat of every file of the staged tree, by path (as an import
    passes the fstat it took)."""
    out = {}
    for root, _dirs, names in os.walk(staged.tree):
        for n in names:
            p = Path(root) / n
            out[os.fsencode(p.relative_to(staged.tree))] = os.lstat(p)
    return out


def test_a_first_run_indexes_in_the_background_and_changes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = Staged(
        store, {"a": f(), "b": f(), "c": f(b"other\n"), "d": {"e": f(b"deep\n")}, "z": f(b"")}
    )
    before = {p: (st.st_ino, st.st_mtime_ns) for p, st in known_stats(staged).items()}
    put_in: list[threading.Thread] = []
    real_put = dedupindex.DedupIndex.put

    def put(self: dedupindex.DedupIndex, *a: object) -> bool:
        put_in.append(threading.current_thread())
        return real_put(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(dedupindex.DedupIndex, "put", put)
    pending = start_dedup_tree(
        store, staged.tree, staged.lid, staged.manifest, known=known_stats(staged)
    )
    stats = pending.wait()
    assert put_in and all(t is not threading.main_thread() for t in put_in)
    # a and b share a key: the first is indexed, the second keeps its own inode
    assert (stats.groups, stats.linked, stats.indexed) == (4, 0, 3)
    assert {p: (st.st_ino, st.st_mtime_ns) for p, st in known_stats(staged).items()} == before
    rows = [json.loads(v) for v in index_rows(store).values()]
    assert sorted(r["path"] for r in rows) == ["a", "c", "d/e"]
    assert {r["layer"] for r in rows} == {staged.lid.hex}
    staged.publish()


def test_a_first_run_on_a_split_group_makes_it_one_inode(store: Store) -> None:
    """An empty index, but a group whose names are two inodes (as a run
    that crashed midway leaves it): the group is made whole, as ever."""
    staged = Staged(store, {"a": f(), "b": f(b"x\n")})
    os.unlink(staged.tree / "b")
    os.link(staged.tree / "a", staged.tree / "b")
    os.utime(staged.tree, ns=(T, T))
    staged.manifest = encode_manifest(entries_of(read_tree(os.fsencode(staged.tree)), threads=1))
    staged.lid = manifest_id(staged.manifest)
    store.write_pending_manifest(staged.staging, staged.manifest)
    known = known_stats(staged)
    os.unlink(staged.tree / "b")  # split: b its own copy, as a crash between link and rename
    shutil.copy2(staged.tree / "a", staged.tree / "b")
    os.utime(staged.tree, ns=(T, T))
    known[b"b"] = os.lstat(staged.tree / "b")
    stats = start_dedup_tree(store, staged.tree, staged.lid, staged.manifest, known=known).wait()
    assert stats.groups == 1
    assert os.lstat(staged.tree / "a").st_ino == os.lstat(staged.tree / "b").st_ino
    staged.publish()
