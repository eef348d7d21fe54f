"""The fences of big manifests (snapws.layers.fences), cached in the store
(snapws.store.manifests): made at the first lookup, used after, made again
when damaged or of another manifest, dropped with their layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapws.layers import fences as fence_form
from snapws.layers.manifestdiff import SMALL_MANIFEST
from snapws.model import SnapshotRecord
from snapws.store.manifests import fences_dir, manifest_chain, prune_fences
from snapws.store.store import Store
from store.test_store import manifest_for, staged

FILES = {f"d{i % 7}/f{i:05}.txt": "x" * (i % 50) for i in range(3000)}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


def _big_snapshot(store: Store) -> tuple[SnapshotRecord, Path]:
    files = {name.replace("/", "-"): text for name, text in FILES.items()}
    manifest = manifest_for(files)
    assert len(manifest) > SMALL_MANIFEST
    lid = store.publish_layer(staged(store, {}), manifest)  # (the tree is not looked at)
    rec = SnapshotRecord((), lid, "big", "me", 1_700_000_000_000_000_000, 0)
    store.write_snapshot(rec, [lid])
    return rec, fences_dir(store) / lid.hex


def _check_lookups(store: Store, rec: SnapshotRecord) -> int:
    chain = manifest_chain(store, rec.id)
    m = chain.layers[0][1]
    for name in FILES:
        path = name.replace("/", "-").encode()
        loc = chain.locate(path)
        assert loc is not None and loc[1].path == path
        assert chain.locate(path + b"x") is None
    assert chain.locate(b"") is None and chain.locate(b"\xff") is None
    fences = m._fences
    assert fences is not None
    return len(fences.offsets)


def test_a_big_manifest_is_looked_up_through_fences_it_keeps(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, cached = _big_snapshot(store)
    assert not cached.exists()
    assert _check_lookups(store, rec) > 10
    assert cached.is_file()  # kept for the next command
    made: list[int] = []
    real = fence_form.compute

    def counted(*args: object) -> object:
        made.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("snapws.layers.manifestdiff.compute_fences", counted)
    _check_lookups(store, rec)
    assert made == []  # read from the cache, not computed again


@pytest.mark.parametrize("damage", ["torn", "flipped", "other size", "garbage", "empty"])
def test_damaged_fences_are_not_used_and_are_made_again(store: Store, damage: str) -> None:
    rec, cached = _big_snapshot(store)
    _check_lookups(store, rec)
    good = cached.read_bytes()
    bad = {
        "torn": good[: len(good) // 2],
        "flipped": good[:-40] + bytes([good[-40] ^ 1]) + good[-39:],
        "other size": good[:16] + (1).to_bytes(8, "little") + good[24:],
        "garbage": b"snapws-fences-1\n" + b"\0" * 100,
        "empty": b"",
    }[damage]
    cached.write_bytes(bad)
    assert _check_lookups(store, rec) > 10
    assert cached.read_bytes() == good


def test_fences_of_a_layer_gc_deleted_go_too(store: Store) -> None:
    rec, cached = _big_snapshot(store)
    _check_lookups(store, rec)
    stray = cached.parent / f".{rec.layer.hex}.tmp-999999999"
    stray.write_bytes(b"half")
    assert prune_fences(store) == 1  # the stray copy; the layer is there
    assert cached.exists() and not stray.exists()
    store.delete_layer(rec.layer)
    assert prune_fences(store) == 1
    assert not cached.exists()


def test_a_store_that_cannot_keep_them_still_finds_every_path(store: Store) -> None:
    rec, cached = _big_snapshot(store)
    cached.parent.parent.mkdir(parents=True)
    cached.parent.write_bytes(b"")  # cache/fences is a file: nothing can be kept
    assert _check_lookups(store, rec) > 10
    assert not cached.exists()
