"""The helper process that writes small files while a layer is unpacked
(snapws.oci.filewriter): an import gives the same snapshot with it as
without it, hostile tars are refused as before, its errors reach the
importer, and an import goes on without it when it cannot start."""

from __future__ import annotations

import errno
import functools
import io
import os
import random
import signal
import tarfile
from pathlib import Path

import pytest
import xxhash

from snapws.errors import BadImageError, UnsupportedError
from snapws.layers.scan import entries_of, read_tree
from snapws.model import encode_manifest
from snapws.oci import filewriter
from snapws.oci.extractedlayer import discard_extracted, extract_layer
from snapws.oci.tarextractor import LayerExtractor
from snapws.oci.tarformat import TarReader
from snapws.store.dedup import dedup_key, dedup_material
from snapws.store.store import EMPTY_LAYER, Store

from .ocitools import Member, d, f, import_layout, make_layout, merged, store_listing, tar_of
from .test_hostile import TAR_CASES, _check_refused

_RNG = random.Random(14)


@functools.cache
def _members() -> list[Member]:
    out = [d("a"), d("a/b")]
    out += [f(f"a/f{i}", _RNG.randbytes(i * 37)) for i in range(40)]  # f0: empty
    out += [
        f("a/b/zeros", bytes(5000)),  # a hole
        f("a/b/setuid", b"#!/bin/sh\n", mode=0o4755),  # chmod after open
        f("a/b/owned", b"x", uid=1234, gid=5678),  # chown
        f("big", _RNG.randbytes(filewriter.SMALL + 1)),  # written by the importer itself
        Member("a/link", tarfile.LNKTYPE, linkname="a/f7"),  # to a file the helper wrote
        Member("sym", tarfile.SYMTYPE, linkname="a/f3"),
        f("a/b/last", b"last"),
    ]
    return out


def _import(tmp_path: Path, name: str, after: int | None, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", after)
    store = Store.create(tmp_path / name)
    layout = tmp_path / "layout"
    if not layout.exists():
        make_layout(layout, [tar_of(_members())])
    sid = import_layout(store, layout)
    store.sid = sid  # type: ignore[attr-defined]
    return store


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")
def test_helper_gives_the_same_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _import(tmp_path, "here", None, monkeypatch)
    helped = _import(tmp_path, "helped", 0, monkeypatch)
    late = _import(tmp_path, "late", 10, monkeypatch)  # started midway
    sid = here.sid  # type: ignore[attr-defined]
    assert helped.sid == sid and late.sid == sid  # type: ignore[attr-defined]
    assert merged(helped, sid) == merged(here, sid)
    lid = [x for x in helped.chain(sid) if x != EMPTY_LAYER][-1]
    tree = helped.layer_tree(lid)
    members = {m.name: m for m in _members()}
    for i in (0, 7, 39):
        assert (tree / f"a/f{i}").read_bytes() == members[f"a/f{i}"].data
    assert os.stat(tree / "a/link").st_ino == os.stat(tree / "a/f7").st_ino
    assert os.stat(tree / "a/b/zeros").st_blocks == 0  # left as a hole
    assert os.stat(tree / "a/b/setuid").st_mode & 0o7777 == 0o4755
    st = os.stat(tree / "a/b/owned")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


@pytest.mark.parametrize("case", sorted(TAR_CASES))
def test_hostile_tars_are_refused_with_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", 0)
    store = Store.create(tmp_path / "store")
    members, expect = TAR_CASES[case]
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(members)])
    _check_refused(tmp_path, store, layout, expect, BadImageError)


def test_import_goes_on_when_the_helper_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(root: bytes) -> filewriter.FileWriterChild:
        raise filewriter.ChildFailed("no")

    monkeypatch.setattr(filewriter, "FileWriterChild", broken)
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", 0)
    store = Store.create(tmp_path / "store")
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of([d("a"), *(f(f"a/{i}", b"%d" % i) for i in range(5))])])
    sid = import_layout(store, layout)
    assert sorted(p for p in merged(store, sid) if p.startswith(b"a/")) == [
        b"a/%d" % i for i in range(5)
    ]


def test_helper_reports_its_first_error_and_stops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    child = filewriter.FileWriterChild(os.fsencode(root))
    try:
        child.add(b"d/one", b"1", 0o644, 0o644, 0, 0, 0, filewriter.STAT)
        ((rel, digest, st),) = map(child.result, child.sync())
        assert rel == b"d/one" and st is not None and st.st_size == 1 and len(digest) == 32
        child.add(b"missing/two", b"2", 0o644, 0o644, 0, 0, 0, 0)
        child.add(b"d/three", b"3", 0o644, 0o644, 0, 0, 0, 0)
        with pytest.raises(FileNotFoundError) as info:
            child.sync()
        assert info.value.filename == "missing/two"
        assert info.value.failed_step == "create"  # type: ignore[attr-defined]
        assert not (root / "d/three").exists()  # nothing more after an error
    finally:
        child.close()
    assert (root / "d/one").read_bytes() == b"1"


class _FailingHelper:
    """A helper whose writes fail as ``error`` says (or that dies: ChildFailed)."""

    error: BaseException = OSError()

    def __init__(self, root: bytes) -> None:
        self.sent: list[bytes] = []

    def add(self, rel: bytes, *args: object) -> None:
        self.sent.append(rel)

    def busy(self, size: int) -> bool:
        return False

    def collect(self) -> list[filewriter.Record]:
        return []

    def sync(self) -> list[filewriter.Record]:
        raise self.error

    def close(self) -> None:
        pass


def _eperm() -> OSError:
    e = OSError(errno.EPERM, "Operation not permitted")
    e.filename = "a/0"
    e.failed_step = "set the owner of"  # type: ignore[attr-defined]
    return e


@pytest.mark.parametrize(
    ("error", "expect"),
    [
        (_eperm(), UnsupportedError),
        (filewriter.ChildFailed("the file writer died"), OSError),
    ],
)
def test_a_helper_failure_fails_the_import_and_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    expect: type[BaseException],
) -> None:
    monkeypatch.setattr(_FailingHelper, "error", error)
    monkeypatch.setattr(filewriter, "FileWriterChild", _FailingHelper)
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", 0)
    store = Store.create(tmp_path / "store")
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of([d("a"), *(f(f"a/{i}", b"%d" % i) for i in range(3))])])
    before = store_listing(store)
    with pytest.raises(expect) as info:
        import_layout(store, layout)
    if expect is UnsupportedError:
        assert "cannot set the owner of a/0" in str(info.value)
    assert store_listing(store) == before


def test_results_come_while_files_are_sent_and_none_is_lost(tmp_path: Path) -> None:
    """The child reports results in frames as it writes; the parent takes
    them with collect() while it sends, and sync() gives the rest, each
    file once, in order, even when the parent sent far more than both pipes
    hold without reading (the child then waits for its reports to be read)."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    child = filewriter.FileWriterChild(os.fsencode(root))
    n = 6 * filewriter.REPORT
    data = [_RNG.randbytes(3000 + i) for i in range(n)]
    got: list[filewriter.Record] = []
    try:
        signal.alarm(60)  # a deadlock fails the test instead of hanging it
        for i in range(n // 2):
            child.add(b"d/%d" % i, data[i], 0o644, 0o644, 0, 0, 0, filewriter.STAT)
            got += child.collect()
        got += child.sync()
        assert 0 < len(got) == n // 2
        for i in range(n // 2, n):  # 9 MB, more than both pipes: nothing collected
            child.add(b"d/%d" % i, data[i], 0o644, 0o644, 0, 0, 0, filewriter.STAT)
        got += child.sync()
    finally:
        signal.alarm(0)
        child.close()
    assert [r[0] for r in got] == [b"d/%d" % i for i in range(n)]
    for i in (0, n // 2, n - 1):
        rel, digest, st = filewriter.FileWriterChild.result(got[i])
        assert digest == xxhash.xxh3_128_hexdigest(data[i])
        assert st is not None and st.st_size == len(data[i])
        assert st.st_ino == os.lstat(root / os.fsdecode(rel)).st_ino


def test_the_ring_wraps_and_fills_without_losing_data(tmp_path: Path) -> None:
    """File data goes through a ring of shared memory: with a small ring
    it wraps many times, busy() says when it is full (the caller then
    writes the file itself), and every file sent gets its own bytes."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    ring = 64 << 10
    child = filewriter.FileWriterChild(os.fsencode(root), ring_size=ring)
    data = [_RNG.randbytes(_RNG.randrange(1, 20_000)) for _ in range(400)]
    data.append(bytes(ring + 1))  # never fits: always busy
    sent: list[int] = []
    busy = 0
    got: list[filewriter.Record] = []
    try:
        signal.alarm(60)
        for i, blob in enumerate(data):
            if child.busy(len(blob)):
                busy += 1
                got += child.sync()  # all written: room again (unless it can never fit)
                if child.busy(len(blob)):
                    continue
            child.add(b"d/%d" % i, blob, 0o644, 0o644, 0, 0, 0, 0)
            sent.append(i)
            got += child.collect()
        got += child.sync()
    finally:
        signal.alarm(0)
        child.close()
    assert busy >= 1 and len(data) - 1 not in sent
    assert sum(len(data[i]) for i in sent) > 4 * ring  # wrapped
    assert [r[0] for r in got] == [b"d/%d" % i for i in sent]
    for i in sent:
        assert (root / f"d/{i}").read_bytes() == data[i]


@pytest.mark.parametrize("after", [None, 0, 10])
def test_entries_made_while_unpacking_are_those_a_scan_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int | None
) -> None:
    """The manifest entries made as files are written (by the importer or
    the helper, from their fstat) are byte for byte those read_tree and
    entries_of give for the tree afterwards, so layer ids do not change;
    so are the dedup keys made with them."""
    monkeypatch.setattr(LayerExtractor, "HELPER_AFTER", after)
    members = [
        *_members()[:-1],
        Member("a/link2", tarfile.LNKTYPE, linkname="big"),  # a file written here, linked
        f("a/b/empty"),
        f("a/b/x", b"with an xattr", pax={"SCHILY.xattr.user.k": "v"}),
        f("a/b/last", b"last"),
    ]
    store = Store.create(tmp_path / "store")
    data = io.BytesIO(tar_of(members))
    layer = extract_layer(store, TarReader(data.read, "layer 1"), [], dedup=True)
    try:
        tree = os.fsencode(layer.staging / "tree")
        scanned = entries_of(read_tree(tree))
        assert layer.manifest == encode_manifest(scanned)
        assert layer.entries == sorted(scanned, key=lambda e: e.path)
        assert any(e.link for e in layer.entries)
        # and the dedup keys made on the way are those dedup would compute
        by_path = {e.path: e for e in scanned}
        assert len(layer.keys) >= 30
        for rel, pre in layer.keys.items():
            assert pre == dedup_material(by_path[rel])
            assert pre[0] == dedup_key(by_path[rel])
    finally:
        discard_extracted(store, layer)
