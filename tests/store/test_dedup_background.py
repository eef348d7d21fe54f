"""snapws.store.dedup: the index transaction of a run commits in a thread
of its own (start_dedup_tree) while the caller makes the layer durable;
the tree is final before, the entries are there after ``wait()``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from snapws.store import dedupindex
from snapws.store.dedup import start_dedup_tree
from snapws.store.store import Store

from .test_dedup import Staged, f, index_rows, ino, layer


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
