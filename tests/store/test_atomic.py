"""snapws.store.atomic: durable batches defer fsyncs to one syncfs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from snapws.store import atomic
from snapws.store.atomic import append_durable, durable_batch, rename_durable, write_atomic
from snapws.store.store import EMPTY_LAYER, Store

from .test_store import manifest_for, record, staged


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count os.fsync calls and the batches' syncfs calls (which still run)."""
    counts = {"fsync": 0, "syncfs": 0}
    real_fsync, real_syncfs = os.fsync, atomic.syncfs

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        real_fsync(fd)

    def syncfs(path: Path) -> None:
        counts["syncfs"] += 1
        real_syncfs(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(atomic, "syncfs", syncfs)
    return counts


def test_outside_a_batch_every_write_is_fsynced(tmp_path: Path, syncs: dict[str, int]) -> None:
    write_atomic(tmp_path / "a", b"1")
    assert syncs == {"fsync": 2, "syncfs": 0}  # the file, then its directory


def test_a_batch_ends_with_one_syncfs_and_no_fsync(tmp_path: Path, syncs: dict[str, int]) -> None:
    with durable_batch(tmp_path) as batch:
        write_atomic(tmp_path / "a", b"1")
        append_durable(tmp_path / "log", b"line")
        rename_durable(tmp_path / "a", tmp_path / "b")
        assert syncs == {"fsync": 0, "syncfs": 0}
    assert syncs == {"fsync": 0, "syncfs": 1}
    assert batch.syncs == 1 and batch.skipped == 4
    assert (tmp_path / "b").read_bytes() == b"1"
    assert (tmp_path / "log").read_bytes() == b"line\n"
    assert atomic.active_batch() is None


def test_a_barrier_syncs_in_the_middle(tmp_path: Path, syncs: dict[str, int]) -> None:
    with durable_batch(tmp_path) as batch:
        write_atomic(tmp_path / "a", b"1")
        batch.barrier()
        write_atomic(tmp_path / "b", b"2")
    assert syncs == {"fsync": 0, "syncfs": 2}


def test_nested_batches_each_end_with_a_sync(tmp_path: Path, syncs: dict[str, int]) -> None:
    with durable_batch(tmp_path) as outer:
        with durable_batch(tmp_path) as inner:
            write_atomic(tmp_path / "a", b"1")
        assert atomic.active_batch() is outer
        write_atomic(tmp_path / "b", b"2")
    assert syncs == {"fsync": 0, "syncfs": 2}
    assert (inner.skipped, outer.skipped) == (2, 2)


def test_writes_on_another_filesystem_are_fsynced(
    tmp_path: Path, syncs: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    with durable_batch(tmp_path) as batch:
        monkeypatch.setattr(batch, "dev", -1)  # as if tmp_path were elsewhere
        write_atomic(tmp_path / "a", b"1")
    assert syncs == {"fsync": 2, "syncfs": 1}


def test_a_failing_block_still_syncs_and_raises_its_error(
    tmp_path: Path, syncs: dict[str, int]
) -> None:
    with pytest.raises(KeyError), durable_batch(tmp_path):
        write_atomic(tmp_path / "a", b"1")
        raise KeyError("boom")
    assert syncs == {"fsync": 0, "syncfs": 1}
    assert atomic.active_batch() is None


def test_syncfs_reports_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic.syncfs(tmp_path / "missing")


def test_syncfs_syncs_the_filesystem_of_a_directory_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    atomic.syncfs(tmp_path)
    atomic.syncfs(tmp_path / "f")


def test_syncfs_reports_a_failing_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    atomic.syncfs(tmp_path)  # binds libc's syncfs
    monkeypatch.setattr(atomic, "_syncfs", lambda fd: errno.EIO)
    with pytest.raises(OSError) as caught:
        atomic.syncfs(tmp_path)
    assert caught.value.errno == errno.EIO
    assert caught.value.filename == str(tmp_path)


def test_a_commit_s_records_in_a_store_batch_cost_one_syncfs(
    tmp_path: Path, syncs: dict[str, int]
) -> None:
    """The writes a commit makes (layer, snapshot, ref, reflog, workspace
    journal) cost one syncfs in a batch, where each costs fsyncs outside."""
    store = Store.create(tmp_path / "store")
    files = {"f": "text"}

    def publish(message: str) -> None:
        staging = staged(store, files | {"m": message})
        store.write_pending_manifest(staging, manifest_for(files | {"m": message}))
        store.write_journal({"op": "test", "staging": staging.name})
        lid = store.publish_pending(staging)
        sid = store.write_snapshot(record(message), [EMPTY_LAYER, lid])
        store.write_ref("heads", "main", sid, "me", message)
        store.clear_journal()

    publish("unbatched")
    unbatched = dict(syncs)
    syncs.update(fsync=0, syncfs=0)
    with store.durable_batch():
        publish("batched")
    assert unbatched["fsync"] >= 10 and unbatched["syncfs"] == 0
    assert syncs == {"fsync": 0, "syncfs": 1}
    assert store.read_ref("heads", "main") == record("batched").id


def test_write_synced_writes_everything_then_fsyncs(
    tmp_path: Path, syncs: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(
        os, "write", lambda fd, data: real_write(fd, bytes(data[:3]))
    )  # short writes
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        atomic.write_synced(fd, b"0123456789")
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"0123456789"
    assert syncs == {"fsync": 1, "syncfs": 0}
