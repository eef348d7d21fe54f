"""Images snapws did not write: OCI layer semantics (whiteouts, opaque
directories, directories implied by their children, hardlinks) become the
same tree in overlay form. Read back through the layer trees (no mount)."""

from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from snapws.model import Kind
from snapws.store.store import Store

from .ocitools import Member, d, f, import_layout, make_layout, merged, sha, tar_of

BASE = [
    d("etc"),
    f("etc/passwd", b"root:x:0:0\n"),
    f("etc/hosts", b"127.0.0.1 localhost\n", mode=0o600, uid=5, gid=6),
    d("usr", mode=0o700, uid=7),
    d("usr/lib"),
    f("usr/lib/a.so", b"A"),
    f("usr/lib/b.so", b"B"),
    d("var"),
    d("var/cache"),
    f("var/cache/x", b"cached"),
    Member("bin", tarfile.SYMTYPE, linkname="usr/bin"),
    Member("etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"),
    f("hello", b"hi\n", mode=0o755),
    Member("hello-again", tarfile.LNKTYPE, linkname="hello"),
    Member("pipe", tarfile.FIFOTYPE, mode=0o640),
    Member("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "store")


def test_layers_apply_as_the_oci_spec_says(tmp_path: Path, store: Store) -> None:
    top = [
        f("etc/.wh.hosts"),  # deleted
        f("usr/lib/.wh..wh..opq"),  # everything below from lower layers hidden...
        f("usr/lib/c.so", b"C"),  # ...but this layer's children stay
        f("var/.wh.cache"),  # a directory deleted...
        d("var/cache"),  # ...and made again in the same layer: only the new one shows
        f("var/cache/y", b"new"),
        f("new/deep/file", b"implied parents"),  # no entries for new/ and new/deep/
        f("etc/passwd", b"root:x:0:0:changed\n", pax={"mtime": "1700000000.123456789"}),
    ]
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(BASE), tar_of(top)])
    sid = import_layout(store, layout)
    tree = merged(store, sid)
    names = sorted(p.decode() for p in tree)
    assert names == [
        ".",
        "bin",
        "etc",
        "etc/localtime",
        "etc/passwd",
        "hello",
        "hello-again",
        "new",
        "new/deep",
        "new/deep/file",
        "null",
        "pipe",
        "usr",
        "usr/lib",
        "usr/lib/c.so",
        "var",
        "var/cache",
        "var/cache/y",
    ]
    # a directory implied by a child keeps the lower layer's metadata
    assert (tree[b"usr"].mode, tree[b"usr"].uid) == (0o700, 7)
    assert tree[b"new"].mode == 0o755 and tree[b"new"].kind is Kind.DIR
    assert tree[b"bin"].target == b"usr/bin"
    assert tree[b"etc/localtime"].target == b"/usr/share/zoneinfo/UTC"  # absolute: allowed
    assert tree[b"null"].rdev == (1, 3) and tree[b"null"].mode == 0o666
    assert tree[b"pipe"].kind is Kind.FIFO and tree[b"pipe"].mode == 0o640
    assert tree[b"hello"].mode == 0o755
    assert tree[b"etc/passwd"].mtime_ns == 1_700_000_000_123_456_789
    # the hardlink is one inode in the layer, recorded as a group
    chain = store.chain(sid)
    base_tree = store.layer_tree(chain[0])
    assert (base_tree / "hello").stat().st_ino == (base_tree / "hello-again").stat().st_ino
    manifest = store.read_manifest(chain[0]).decode()
    assert '"hl":"hello"' in manifest
    # a foreign image: no parents, the message names the source
    rec = store.read_snapshot(sid)
    assert rec.parents == () and rec.message.startswith("import ")
    assert rec.time_ns == 1_714_979_289_500_000_000  # the config's created


def test_same_image_imports_to_the_same_snapshot(tmp_path: Path, store: Store) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(BASE)])
    first = import_layout(store, layout)
    layers = sorted(p.name for p in (store.root / "layers").iterdir())
    assert import_layout(store, layout) == first
    assert sorted(p.name for p in (store.root / "layers").iterdir()) == layers
    # a layer imported before is known by its chain id: its blob is not read
    base_blob = gzip.compress(tar_of(BASE), mtime=0)
    (layout / "blobs" / "sha256" / sha(base_blob)[7:]).unlink()
    assert import_layout(store, layout) == first
    more = tmp_path / "more"
    make_layout(more, [tar_of(BASE), tar_of([f("extra", b"x")])])
    (more / "blobs" / "sha256" / sha(base_blob)[7:]).unlink()
    tree = merged(store, import_layout(store, more))
    assert b"extra" in tree and b"hello" in tree


def test_opaque_root_hides_every_lower_path(tmp_path: Path, store: Store) -> None:
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(BASE), tar_of([f(".wh..wh..opq"), d("etc"), f("etc/only")])])
    tree = merged(store, import_layout(store, layout))
    assert sorted(p.decode() for p in tree) == [".", "etc", "etc/only"]


def test_xattrs_and_large_ids_come_through(tmp_path: Path, store: Store) -> None:
    layer = [
        d("./", mode=0o750),
        f("a", b"x", uid=3_000_000, gid=4_000_000, pax={"SCHILY.xattr.user.k": "v"}),
        f("caps", b"c", pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02" + "\0" * 16}),
    ]
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(layer)])
    tree = merged(store, import_layout(store, layout))
    assert tree[b"."].mode == 0o750
    assert (tree[b"a"].uid, tree[b"a"].gid) == (3_000_000, 4_000_000)
    assert dict(tree[b"a"].xattrs) == {"user.k": b"v"}
    assert "security.capability" in tree[b"caps"].xattrs


def test_uncompressed_and_zstd_layers_are_detected(tmp_path: Path, store: Store) -> None:
    zstandard = pytest.importorskip("zstandard")
    raw = tar_of([f("plain", b"p")])
    raw2 = tar_of([f("z", b"zz")])
    layout = tmp_path / "layout"
    blobs = iter([lambda b: b, lambda b: zstandard.ZstdCompressor().compress(b)])
    make_layout(layout, [raw, raw2], compress=lambda b: next(blobs)(b))
    tree = merged(store, import_layout(store, layout))
    assert {b"plain", b"z"} <= set(tree)


def test_choosing_among_several_images(tmp_path: Path, store: Store) -> None:
    import json

    from snapws.errors import AmbiguousRevisionError, RevisionNotFoundError

    one, two = tmp_path / "one", tmp_path / "two"
    make_layout(one, [tar_of([f("one")])], ref="v1")
    make_layout(two, [tar_of([f("two")])], ref="v2")
    for blob in (two / "blobs" / "sha256").iterdir():
        (one / "blobs" / "sha256" / blob.name).write_bytes(blob.read_bytes())
    index = json.loads((one / "index.json").read_text())
    index["manifests"] += json.loads((two / "index.json").read_text())["manifests"]
    (one / "index.json").write_text(json.dumps(index))
    with pytest.raises(AmbiguousRevisionError, match="2 images"):
        import_layout(store, one)
    with pytest.raises(RevisionNotFoundError, match="v3"):
        import_layout(store, one, "v3")
    assert b"two" in merged(store, import_layout(store, one, "v2"))
    assert b"one" in merged(store, import_layout(store, f"oci:{one}:v1"))


def test_manifests_equal_a_scan_of_the_unpacked_trees(tmp_path: Path, store: Store) -> None:
    """The manifest an import computes while unpacking (files described by
    their fstat, the rest read again) is the one a scan of the published
    tree gives: hardlink chains, xattrs, holes, set-id bits, big files,
    whiteouts and opaque directories included."""
    from snapws.layers.scan import entries_of, read_tree
    from snapws.model import encode_manifest

    big = bytes(range(256)) * 9000 + b"\0" * (3 << 20) + b"tail"  # a hole between data
    top = [
        f("etc/.wh.hosts"),
        f("usr/lib/.wh..wh..opq"),
        f("usr/lib/c.so", b"C"),
        f("big", big, mode=0o4755),
        f("sgid", b"g", mode=0o2711, uid=5, gid=6),
        Member("big2", tarfile.LNKTYPE, linkname="big"),
        Member("big3", tarfile.LNKTYPE, linkname="big2"),  # a link of a link
        f("x", b"attrs", pax={"SCHILY.xattr.user.k": "v"}),
        f("zeros", b"\0" * 5000),
    ]
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of(BASE), tar_of(top)])
    sid = import_layout(store, layout)
    for lid in store.chain(sid):
        tree = store.layer_tree(lid)
        scanned = encode_manifest(entries_of(read_tree(os.fsencode(tree))))
        assert store.read_manifest(lid) == scanned


@pytest.mark.parametrize("root", ["/", "./", "/./", "."])
def test_a_root_entry_as_umoci_and_docker_write_it(tmp_path: Path, store: Store, root: str) -> None:
    """``umoci insert ... /`` writes the root as "/", docker as "./": the
    root's entry, with its metadata. Absolute paths below it stay refused
    (tests/oci/test_hostile.py)."""
    layout = tmp_path / "layout"
    make_layout(layout, [tar_of([d(root, mode=0o751, uid=3), f("a", b"x")])])
    tree = merged(store, import_layout(store, layout))
    assert sorted(tree) == [b".", b"a"]
    assert (tree[b"."].mode, tree[b"."].uid) == (0o751, 3)


def test_a_layer_umoci_insert_wrote(tmp_path: Path, store: Store) -> None:
    """A real ``umoci insert --image L:t SRC /``: its layer starts with "/"."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("hi\n")
    layout = tmp_path / "img"
    for argv in (
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", f"{layout}:t"],
        ["umoci", "insert", "--image", f"{layout}:t", str(src), "/"],
    ):
        subprocess.run(argv, check=True, capture_output=True)
    tree = merged(store, import_layout(store, layout, "t"))
    assert {b"d", b"d/f"} <= set(tree)
