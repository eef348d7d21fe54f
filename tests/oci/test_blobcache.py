"""The store's blob cache: a layer is compressed once, damaged entries are
rebuilt, imports of snapws images record their blobs (without keeping
them), gc's pruning empties it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Workspace

from snapws.ids import BlobDigest, SnapshotId
from snapws.oci.blobcache import blob_path, cached_layer, known_layer, prune_blob_cache
from snapws.oci.export import build_image
from snapws.oci.image import layer_ids_of
from snapws.oci.layout import write_layout_dir
from snapws.store.store import EMPTY_LAYER, Store

from .ocitools import d, f, import_layout, make_layout, tar_of


def _store_with_image(tmp_path: Path) -> tuple[Store, SnapshotId]:
    store = Store.create(tmp_path / "store")
    layout = tmp_path / "foreign"
    make_layout(layout, [tar_of([d("./"), f("a", b"1" * 5000)]), tar_of([f("b", b"2")])])
    return store, import_layout(store, layout)


def test_a_layer_is_compressed_once(tmp_path: Path) -> None:
    store, sid = _store_with_image(tmp_path)
    with store.lock(False, 10):
        first = build_image(store, sid)
        inodes = [os.stat(b.path).st_ino for b in first.layers]
        second = build_image(store, sid)
    assert second.manifest_digest == first.manifest_digest
    assert [os.stat(b.path).st_ino for b in second.layers] == inodes  # not written again
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    assert layer_ids_of(first.manifest) == chain
    # a damaged blob is not used: the layer is compressed again, same bytes
    victim = first.layers[0].path
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as fh:
        fh.truncate(10)
    assert cached_layer(store, chain[0], "gzip") is None
    with store.lock(False, 10):
        third = build_image(store, sid)
    assert third.manifest_digest == first.manifest_digest


def test_import_of_a_snapws_image_records_its_blobs_without_keeping_them(
    tmp_path: Path,
) -> None:
    """An import notes which blob each layer came from (known_layer) but
    keeps no copy (cached_layer: none); a build told that the remote holds
    those blobs takes them as they are (no file, nothing compressed), the
    same image; a build for a remote without them compresses them again,
    to the same bytes."""
    store, sid = _store_with_image(tmp_path)
    with store.lock(False, 10):
        image = build_image(store, sid)
    write_layout_dir(image, tmp_path / "export")
    other = Store.create(tmp_path / "other")
    assert import_layout(other, tmp_path / "export") == sid
    chain = [lid for lid in other.chain(sid) if lid != EMPTY_LAYER]
    digests = {b.descriptor.digest for b in image.layers}
    for lid, blob in zip(chain, image.layers, strict=True):
        assert cached_layer(other, lid, "gzip") is None
        known = known_layer(other, lid, "gzip")
        assert known is not None and known.digest == blob.descriptor.digest
        assert not blob_path(other, known.digest).exists()
    asked: list[BlobDigest] = []

    def remote_has(digest: BlobDigest) -> bool:
        asked.append(digest)
        return True

    with other.lock(False, 10):
        held = build_image(other, sid, have=remote_has)
    assert held.manifest_digest == image.manifest_digest
    assert set(asked) == digests
    assert not any(b.path.exists() for b in held.layers)  # nothing was compressed
    with other.lock(False, 10):
        made = build_image(other, sid, have=lambda d: False)
    assert made.manifest_digest == image.manifest_digest
    assert all(b.path.exists() for b in made.layers)
    assert all(cached_layer(other, lid, "gzip") is not None for lid in chain)


def test_prune_blob_cache_keeps_only_live_layers(tmp_path: Path) -> None:
    store, sid = _store_with_image(tmp_path)
    with store.lock(False, 10):
        image = build_image(store, sid)
    chain = [lid for lid in store.chain(sid) if lid != EMPTY_LAYER]
    with store.lock(True, 10):
        young = prune_blob_cache(store, chain, grace=3600)
        assert young.blobs == [] and image.config.path.exists()  # too young to go
        done = prune_blob_cache(store, chain)
        assert [p for p, _n in done.blobs] == [image.config.path]  # the config blob
        assert done.bytes_freed > 0
        assert cached_layer(store, chain[0], "gzip") is not None
        assert not image.config.path.exists()
        assert len(prune_blob_cache(store, chain[1:]).blobs) == 1
        assert cached_layer(store, chain[0], "gzip") is None
        assert not blob_path(store, image.layers[0].descriptor.digest).exists()
        assert blob_path(store, image.layers[1].descriptor.digest).exists()


def test_gc_prunes_the_blob_cache_of_the_layers_it_deletes(
    workspace: Workspace, tmp_path: Path
) -> None:
    """`snapws gc` deletes an abandoned layer, then its cached blob (and the
    image config nothing names); the kept layer's blob stays; the freed
    bytes count the blobs (a dry run announces the same)."""
    ws = workspace
    ws.gen({"keep": os.urandom(50_000)})
    ws.commit("keep")
    ws.run("checkout", "-b", "exp")
    ws.gen({"big.bin": os.urandom(300_000)})
    ws.commit("experiment")
    ws.run("export", "HEAD", "-o", tmp_path / "out")  # caches both layers' blobs
    store = Store.open(ws.store)
    chain = [lid for lid in store.chain(SnapshotId(ws.head())) if lid != EMPTY_LAYER]
    kept_blob = cached_layer(store, chain[-2], "gzip")
    gone_blob = cached_layer(store, chain[-1], "gzip")
    assert kept_blob is not None and gone_blob is not None
    ws.run("checkout", "main")
    ws.run("branch", "-D", "exp")  # not merged: -D
    ws.gen({"later": "x"})
    ws.commit("later")  # the newest snapshot: prune --keep-last 1 keeps it (and main)
    ws.run("prune", "--keep-last", "1")
    young = json.loads(ws.run("gc", "--json").stdout)  # within the grace period
    assert young["blob_cache"]["blobs_removed"] == 0
    dry = json.loads(ws.run("gc", "--grace", "0", "--dry-run", "--json").stdout)
    assert dry["blob_cache"]["blobs_removed"] == 2  # the layer's blob and the config
    assert blob_path(store, gone_blob.digest).exists()
    done = json.loads(ws.run("gc", "--grace", "0", "--json").stdout)
    assert [r["name"] for r in done["removed"]] == [chain[-1].hex]
    assert done["blob_cache"] == dry["blob_cache"]
    assert done["blob_cache"]["bytes_freed"] >= gone_blob.size
    assert done["bytes_freed"] == dry["bytes_freed"] > 300_000 + gone_blob.size
    assert not blob_path(store, gone_blob.digest).exists()
    assert cached_layer(store, chain[-1], "gzip") is None
    assert cached_layer(store, chain[-2], "gzip") == kept_blob
