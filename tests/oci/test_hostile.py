"""Hostile and damaged images: each is refused with BadImageError (or
UnsupportedError), nothing is written outside the store, and the store is
left as it was (no layer, snapshot, blob or staging dir remains)."""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from snapws.errors import BadImageError, SnapwsError, UnsupportedError
from snapws.store.store import Store

from .ocitools import Member, d, f, import_layout, make_layout, sha, store_listing, tar_of

ESCAPE = "escaped-here"  # a name no import may create next to the store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


def _check_refused(
    tmp_path: Path, store: Store, layout: Path, expect: str, error: type[SnapwsError]
) -> None:
    before = store_listing(store)
    with pytest.raises(error) as info:
        import_layout(store, layout)
    assert expect in str(info.value), str(info.value)
    assert store_listing(store) == before
    for place in (tmp_path, store.root, store.root / "staging", Path("/tmp")):
        assert not (place / ESCAPE).exists(), f"{place / ESCAPE} was written"


def _layout(tmp_path: Path, layers: list[bytes], **kw: Any) -> Path:
    path = tmp_path / "layout"
    make_layout(path, layers, **kw)
    return path


TAR_CASES: dict[str, tuple[list[Member], str]] = {
    "dotdot": ([f("../../../../" + ESCAPE, b"x")], "climbs out of the layer"),
    "dotdot-inside": ([d("a"), f("a/../../" + ESCAPE, b"x")], "climbs out of the layer"),
    "absolute": ([f("/tmp/" + ESCAPE, b"x")], "absolute path"),
    "absolute-after-root": ([d("/"), f("/tmp/" + ESCAPE, b"x")], "absolute path"),
    "absolute-dotdot": ([d("/.."), f("x", b"x")], "absolute path"),
    "symlink-escapes": (
        [d("a"), Member("a/l", tarfile.SYMTYPE, linkname="../../" + ESCAPE)],
        "leads out of the layer",
    ),
    "through-symlink": (
        [Member("l", tarfile.SYMTYPE, linkname="/tmp"), f("l/" + ESCAPE, b"x")],
        "extraction through a symlink",
    ),
    "through-inner-symlink": (
        [d("dir"), Member("l", tarfile.SYMTYPE, linkname="dir"), f("l/x", b"x")],
        "extraction through a symlink",
    ),
    "hardlink-absolute": (
        [Member("h", tarfile.LNKTYPE, linkname="/etc/passwd")],
        "absolute path",
    ),
    "hardlink-dotdot": (
        [Member("h", tarfile.LNKTYPE, linkname="../../../x")],
        "climbs out of the layer",
    ),
    "hardlink-forward": (
        [Member("h", tarfile.LNKTYPE, linkname="later"), f("later", b"x")],
        "does not name an earlier regular file",
    ),
    "hardlink-to-dir": (
        [d("dir"), Member("h", tarfile.LNKTYPE, linkname="dir")],
        "does not name an earlier regular file",
    ),
    "hardlink-to-symlink": (
        [Member("l", tarfile.SYMTYPE, linkname="x"), Member("h", tarfile.LNKTYPE, linkname="l")],
        "does not name an earlier regular file",
    ),
    "whiteout-dot": ([f(".wh..")], "names no deletable path"),
    "whiteout-dotdot": ([d("a"), f("a/.wh...")], "names no deletable path"),
    "whiteout-empty": ([f(".wh.")], "names no deletable path"),
    "duplicate-file": ([f("a", b"1"), f("a", b"2")], "duplicate entry"),
    "duplicate-dir": ([d("a"), d("a/")], "duplicate entry"),
    "file-then-dir": ([f("a", b"1"), d("a")], "duplicate entry"),
    "dir-after-children": ([f("a/b", b"1"), f("a", b"2")], "comes after entries below it"),
    "zero-zero-chardev": ([Member("c", tarfile.CHRTYPE)], "0/0 character device"),
    "overlay-xattr": (
        [d("a", pax={"SCHILY.xattr.trusted.overlay.opaque": "y"})],
        "overlayfs attribute",
    ),
    "overlay-redirect": (
        [d("a", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})],
        "overlayfs attribute",
    ),
    "userxattr-overlay": (
        [f("a", pax={"SCHILY.xattr.user.overlay.redirect": "/x"})],
        "overlayfs attribute",
    ),
    "huge-pax": ([f("a", pax={"comment": "x" * (2 << 20)})], "PAX header of"),
    "long-path": ([f("a/" * 33_000 + "b", b"x")], "longer than 65536"),
    "long-symlink-target": (
        [Member("a", tarfile.SYMTYPE, linkname="t" * 4096)],
        "longer than 4095",
    ),
    "long-component": ([f("x" * 300, b"x")], "longer than 255"),
    "absurd-size": ([f("a", pax={"size": str(1 << 41)})], "more than 1 TiB"),
    "bad-pax-mtime": ([f("a", pax={"mtime": "soon"})], "malformed PAX mtime"),
    "sparse": ([f("a", pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})], "sparse"),
}


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_hostile_layer_tar_is_refused(tmp_path: Path, store: Store, case: str) -> None:
    members, expect = TAR_CASES[case]
    layout = _layout(tmp_path, [tar_of(members)])
    _check_refused(tmp_path, store, layout, expect, BadImageError)


def test_gnu_long_name_over_the_cap_is_refused(tmp_path: Path, store: Store) -> None:
    raw = tar_of([f("n/" * 33_000 + "o", b"x")], tarfile.GNU_FORMAT)
    _check_refused(tmp_path, store, _layout(tmp_path, [raw]), "GNU long name", BadImageError)


def test_a_later_layer_failing_leaves_no_earlier_layer(tmp_path: Path, store: Store) -> None:
    good = tar_of([f("fine", b"ok")])
    bad = tar_of([f("../../" + ESCAPE, b"x")])
    _check_refused(tmp_path, store, _layout(tmp_path, [good, bad]), "climbs out", BadImageError)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


STREAM_CASES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated-tar-data": (lambda raw: gzip.compress(raw[:700], mtime=0), "truncated"),
    "tar-without-end": (lambda raw: gzip.compress(raw[:2560], mtime=0), "end-of-archive"),
    "corrupt-tar-header": (lambda raw: gzip.compress(_flip(raw, 20), mtime=0), "checksum"),
    "truncated-gzip": (lambda raw: gzip.compress(raw, mtime=0)[:-30], "gzip"),
    "corrupt-gzip": (lambda raw: _flip(gzip.compress(raw, mtime=0), 40), "gzip"),
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_damaged_stream_is_refused(tmp_path: Path, store: Store, case: str) -> None:
    compress, expect = STREAM_CASES[case]
    raw = tar_of([f("a", b"x" * 600), f("b", b"y" * 100)])
    layout = _layout(tmp_path, [raw], compress=compress)
    _check_refused(tmp_path, store, layout, expect, BadImageError)


def test_blob_not_matching_its_digest_is_refused(tmp_path: Path, store: Store) -> None:
    raw = tar_of([f("a", b"content")])
    layout = _layout(tmp_path, [raw])
    blob = gzip.compress(raw, mtime=0)
    path = layout / "blobs" / "sha256" / sha(blob)[7:]
    path.write_bytes(_flip(blob, 4))  # a valid gzip still (its mtime), other bytes
    _check_refused(tmp_path, store, layout, "does not match its descriptor", BadImageError)


def test_blob_longer_than_its_descriptor_is_refused(tmp_path: Path, store: Store) -> None:
    raw = tar_of([f("a", b"content")])
    layout = _layout(tmp_path, [raw])
    blob = gzip.compress(raw, mtime=0)
    path = layout / "blobs" / "sha256" / sha(blob)[7:]
    path.write_bytes(blob + b"\0" * 4096)
    _check_refused(tmp_path, store, layout, "longer than", BadImageError)


def test_manifest_pointing_at_a_missing_blob_is_refused(tmp_path: Path, store: Store) -> None:
    layout = _layout(tmp_path, [tar_of([f("a", b"x")])], skip_blobs=(0,))
    _check_refused(tmp_path, store, layout, "missing blob", BadImageError)


def test_missing_config_is_refused(tmp_path: Path, store: Store) -> None:
    def mutate(manifest: dict[str, Any], _cfg: dict[str, Any]) -> None:
        manifest["config"] = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + "0" * 64,
            "size": 10,
        }

    layout = _layout(tmp_path, [tar_of([f("a", b"x")])], mutate=mutate)
    _check_refused(tmp_path, store, layout, "missing blob", BadImageError)


def test_diff_id_mismatch_is_refused(tmp_path: Path, store: Store) -> None:
    def mutate(_manifest: dict[str, Any], cfg: dict[str, Any]) -> None:
        cfg["rootfs"]["diff_ids"] = ["sha256:" + "1" * 64]

    layout = _layout(tmp_path, [tar_of([f("a", b"x")])], mutate=mutate)
    _check_refused(tmp_path, store, layout, "diff_id", BadImageError)


def test_non_sha256_digest_is_refused(tmp_path: Path, store: Store) -> None:
    def mutate(manifest: dict[str, Any], _cfg: dict[str, Any]) -> None:
        manifest["layers"][0]["digest"] = "sha512:" + "a" * 128

    layout = _layout(tmp_path, [tar_of([f("a", b"x")])], mutate=mutate)
    _check_refused(tmp_path, store, layout, "is not sha256", BadImageError)


def test_device_node_when_not_root_is_refused(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = _layout(tmp_path, [tar_of([Member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)])])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    _check_refused(tmp_path, store, layout, "only root can create one", UnsupportedError)


def test_snapws_labels_that_lie_are_refused(tmp_path: Path, store: Store) -> None:
    """A snapws image whose layer does not hash to its annotated id."""
    from snapws.ids import LayerId
    from snapws.model import SnapshotRecord

    fake = LayerId("0" * 32)
    rec = SnapshotRecord((), fake, "m", "a", 1)
    labels = {
        "org.snapws.snapshot": rec.id.hex,
        "org.snapws.record": rec.canonical().decode(),
        "org.snapws.layers": fake.hex,
    }
    layout = _layout(
        tmp_path,
        [tar_of([d("./"), f("a", b"x")])],
        config={"config": {"Labels": labels}},
        layer_annotations=[{"org.snapws.layer": fake.hex}],
    )
    _check_refused(tmp_path, store, layout, "but the image says", BadImageError)


def test_snapws_record_not_matching_its_id_is_refused(tmp_path: Path, store: Store) -> None:
    from snapws.ids import LayerId
    from snapws.model import SnapshotRecord

    rec = SnapshotRecord((), LayerId("0" * 32), "m", "a", 1)
    labels = {
        "org.snapws.snapshot": "1" * 32,
        "org.snapws.record": rec.canonical().decode(),
        "org.snapws.layers": "0" * 32,
    }
    layout = _layout(tmp_path, [tar_of([f("a", b"x")])], config={"config": {"Labels": labels}})
    _check_refused(tmp_path, store, layout, "hashes to", BadImageError)


def test_truncated_and_corrupt_zstd_are_refused(tmp_path: Path, store: Store) -> None:
    zstandard = pytest.importorskip("zstandard")
    raw = tar_of([f("a", bytes(range(256)) * 400), f("b", b"y" * 100)])
    blob = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    for n, (damaged, expect) in enumerate(
        [(blob[:-40], "truncated"), (_flip(blob, len(blob) // 2), "zstd")]
    ):
        layout = tmp_path / f"z{n}"
        make_layout(layout, [raw], compress=lambda _raw, b=damaged: b)
        _check_refused(tmp_path, store, layout, expect, BadImageError)
