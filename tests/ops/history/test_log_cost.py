"""``log -n N`` reads N snapshots and their parents, never the whole history,
never a layer, a chain or a tree."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from snapws.ids import LayerId, SnapshotId
from snapws.model import SnapshotRecord
from snapws.ops.history.log import log
from snapws.store.store import Store


def test_log_limit_reads_only_what_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.create(tmp_path / "store")
    sids: list[SnapshotId] = []
    for n in range(300):  # a merge every 10: two parents to follow
        parents = tuple(sids[-1:]) + (tuple(sids[-7:-6]) if n % 10 == 9 else ())
        lid = LayerId(secrets.token_hex(16))
        sids.append(store.write_snapshot(SnapshotRecord(parents, lid, f"s{n}", "t", n), [lid]))
    store.write_ref("heads", "main", sids[-1], "t", "test")
    reads: list[SnapshotId] = []
    real_read = Store.read_snapshot

    def counting_read(self: Store, sid: SnapshotId) -> SnapshotRecord:
        reads.append(sid)
        return real_read(self, sid)

    def no_chain(self: Store, sid: SnapshotId) -> list[LayerId]:
        raise AssertionError("log read a chain")

    monkeypatch.setattr(Store, "read_snapshot", counting_read)
    monkeypatch.setattr(Store, "chain", no_chain)
    entries = log(store, [sids[-1]], 20)
    assert [e.id for e in entries] == list(reversed(sids))[:20]
    assert len(reads) <= 20 + 3, len(reads)  # what it shows, and the next parents
    reads.clear()
    assert len(log(store, [sids[-1]], 300)) == 300
    assert len(reads) == 300
