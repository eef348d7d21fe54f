"""rewrite_chains: the cost is the snapshots that share the merged run, not the history."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from snapws.ids import LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.ops.maintenance.flatten import rewrite_chains
from snapws.store.store import Store


def _lid() -> LayerId:
    return LayerId(secrets.token_hex(16))


def _snap(
    store: Store, parents: tuple[SnapshotId, ...], chain: list[LayerId], n: int
) -> SnapshotId:
    rec = SnapshotRecord(parents, chain[-1], f"s{n}", "t", n)
    return store.write_snapshot(rec, chain)


def test_rewrites_the_tip_and_its_ancestors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.create(tmp_path / "store")
    a, b, c, d = _lid(), _lid(), _lid(), _lid()
    s1 = _snap(store, (), [a, b], 1)
    s2 = _snap(store, (s1,), [a, b, c], 2)
    s3 = _snap(store, (s2,), [a, b, c, d], 3)
    store.write_ref("heads", "main", s3, "t", "test")
    unrelated = [_snap(store, (), [_lid()], 100 + i) for i in range(200)]
    store.write_ref("tags", "old", unrelated[0], "t", "test")
    reads: list[SnapshotId] = []
    real_chain = Store.chain

    def counting_chain(self: Store, sid: SnapshotId) -> list[LayerId]:
        reads.append(sid)
        return real_chain(self, sid)

    monkeypatch.setattr(Store, "chain", counting_chain)
    merged = _lid()
    assert rewrite_chains(store, [a, b, c], merged, 0) == 2
    monkeypatch.undo()
    assert store.chain(s3) == [merged, d]
    assert store.chain(s2) == [merged]
    assert store.chain(s1) == [a, b]  # shorter than the run: untouched
    assert len(reads) <= 5  # s3, s2, s1 and the tag's tip, not 200 unrelated snapshots


def test_a_resumed_rewrite_goes_on_below_a_rewritten_tip(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "store")
    a, b, c, d = _lid(), _lid(), _lid(), _lid()
    s1 = _snap(store, (), [a, b], 1)
    s2 = _snap(store, (s1,), [a, b, c], 2)
    s3 = _snap(store, (s2,), [a, b, c, d], 3)
    store.write_ref("heads", "main", s3, "t", "test")
    merged = _lid()
    store.write_chain(s3, [a, merged, d])  # a crash after the first rewrite
    assert rewrite_chains(store, [a, b, c], merged, 1) == 1
    assert store.chain(s2) == [a, merged]
    assert store.chain(s3) == [a, merged, d]
