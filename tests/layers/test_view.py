"""snapws.layers.view: the merged view of layer trees, read without mounting.

Layer trees are built by hand in overlay form: a whiteout is a 0/0 character
device, an opaque directory carries ``trusted.overlay.opaque=y``. The last
test compares ChainView with what the kernel shows for the same layers.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from snapws.errors import MountError
from snapws.ids import ContentHash
from snapws.layers.view import ChainView, HashCache
from snapws.model import Kind
from snapws.mounts.mounter import detach, mount_at, mount_overlay, unmount
from snapws.mounts.plan import MountPlan

from . import FIFO, WH, Link, Opaque, Spec, build


def chain(tmp_path: Path, *specs: Spec) -> ChainView:
    """A view of layers built from ``specs``, topmost first."""
    return ChainView([build(tmp_path / f"L{i}", s) for i, s in enumerate(specs)])


def names(view: ChainView, path: bytes = b".") -> list[bytes]:
    return list(view.listdir(path))


def walked(view: ChainView) -> list[bytes]:
    return [loc.node.path for loc in view.walk()]


def content(view: ChainView, path: bytes) -> bytes:
    loc = view.locate(path)
    assert loc is not None, path
    return Path(os.fsdecode(loc.node.abspath)).read_bytes()


# --------------------------------------------------------------------------- lookup rules


def test_top_layer_wins(tmp_path: Path) -> None:
    v = chain(tmp_path, {"f": "top", "d": {"g": "top"}}, {"f": "low", "d": {"g": "low"}})
    loc = v.locate(b"f")
    assert loc is not None
    assert loc.layer == 0
    assert loc.node.kind is Kind.FILE
    assert content(v, b"f") == b"top"
    assert content(v, b"d/g") == b"top"


def test_lower_only_paths_show_through(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": {"a": "0"}}, {"d": {"b": "1"}, "x": "1"}, {"d": {"c": "2"}})
    assert names(v) == [b"d", b"x"]
    assert names(v, b"d") == [b"a", b"b", b"c"]
    layers = {p: loc.layer for p, loc in v.listdir(b"d").items()}
    assert layers == {b"a": 0, b"b": 1, b"c": 2}
    loc = v.locate(b"d/c")
    assert loc is not None
    assert loc.layer == 2
    assert loc.node.path == b"d/c"


def test_missing_paths(tmp_path: Path) -> None:
    v = chain(tmp_path, {"f": "x"}, {"d": {}})
    assert v.locate(b"nope") is None
    assert v.locate(b"d/nope") is None
    assert v.locate(b"f/below") is None  # below a file
    assert v.listdir(b"f") == {}
    assert v.listdir(b"nope") == {}
    assert list(v.walk(b"nope")) == []
    assert v.entry(b"nope") is None


def test_root(tmp_path: Path) -> None:
    v = chain(tmp_path, {"a": "1"}, {"b": "2"})
    loc = v.locate(b".")
    assert loc is not None
    assert loc.layer == 0
    assert loc.node.kind is Kind.DIR
    assert loc.node.path == b"."
    assert ChainView([]).locate(b".") is None


def test_whiteout_hides_file(tmp_path: Path) -> None:
    v = chain(tmp_path, {"f": WH}, {"f": "old", "g": "old"})
    assert v.locate(b"f") is None
    assert names(v) == [b"g"]
    assert b"f" not in walked(v)


def test_whiteout_hides_whole_dir(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": WH}, {"d": {"a": "1", "sub": {"b": "2"}}, "keep": "k"})
    for p in (b"d", b"d/a", b"d/sub", b"d/sub/b"):
        assert v.locate(p) is None, p
    assert v.listdir(b"d") == {}
    assert walked(v) == [b".", b"keep"]


def test_whiteout_in_middle_layer(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": {"new": "0"}}, {"d": WH}, {"d": {"old": "2"}})
    # a directory recreated above a whiteout shows only what lies above
    assert names(v, b"d") == [b"new"]
    assert v.locate(b"d/old") is None


def test_whiteout_shadowed_by_upper_file(tmp_path: Path) -> None:
    v = chain(tmp_path, {"f": "again"}, {"f": WH}, {"f": "first"})
    assert content(v, b"f") == b"again"


def test_opaque_dir_hides_older_children(tmp_path: Path) -> None:
    v = chain(
        tmp_path,
        {"d": Opaque({"mine": "0", "sub": {"x": "0"}})},
        {"d": {"old": "1", "sub": {"y": "1"}}, "other": "1"},
    )
    assert names(v, b"d") == [b"mine", b"sub"]
    assert v.locate(b"d/old") is None
    assert names(v, b"d/sub") == [b"x"]
    assert v.locate(b"d/sub/y") is None
    assert names(v) == [b"d", b"other"]
    loc = v.locate(b"d")
    assert loc is not None
    assert loc.node.opaque


def test_opaque_in_middle_layer(tmp_path: Path) -> None:
    v = chain(
        tmp_path,
        {"d": {"top": "0"}},
        {"d": Opaque({"mid": "1"})},
        {"d": {"bottom": "2", "sub": {"z": "2"}}},
    )
    assert names(v, b"d") == [b"mid", b"top"]
    assert v.locate(b"d/bottom") is None
    assert v.locate(b"d/sub/z") is None


def test_nested_opaque(tmp_path: Path) -> None:
    v = chain(
        tmp_path,
        {"a": {"b": Opaque({"own": "0"}), "top": "0"}},
        {"a": {"b": {"old": "1"}, "mid": "1"}},
        {"a": Opaque({"b": {"older": "2"}, "low": "2"})},
        {"a": {"hidden": "3", "b": {"hidden": "3"}}},
    )
    assert names(v, b"a") == [b"b", b"low", b"mid", b"top"]
    assert names(v, b"a/b") == [b"own"]
    assert v.locate(b"a/b/old") is None
    assert v.locate(b"a/b/older") is None
    assert v.locate(b"a/hidden") is None


def test_opaque_ancestor_hides_deep_paths(tmp_path: Path) -> None:
    v = chain(tmp_path, {"a": Opaque({"b": {}})}, {"a": {"b": {"c": {"d": "1"}}}})
    assert v.locate(b"a/b/c") is None
    assert v.locate(b"a/b/c/d") is None
    assert names(v, b"a/b") == []


def test_file_in_upper_hides_older_dir_subtree(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": "now a file"}, {"d": {"x": "1", "s": {"y": "1"}}})
    loc = v.locate(b"d")
    assert loc is not None
    assert loc.node.kind is Kind.FILE
    assert v.locate(b"d/x") is None
    assert v.locate(b"d/s/y") is None
    assert v.listdir(b"d") == {}
    assert walked(v) == [b".", b"d"]


def test_symlink_in_upper_hides_older_dir_subtree(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": Link("elsewhere")}, {"d": {"x": "1"}}, {"elsewhere": {"y": "2"}})
    loc = v.locate(b"d")
    assert loc is not None
    assert loc.node.kind is Kind.SYMLINK
    assert loc.node.target == b"elsewhere"
    assert v.locate(b"d/x") is None
    assert v.locate(b"d/y") is None  # symlinks are never followed


def test_dir_over_lower_file_stops_merging(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": {"new": "0"}}, {"d": "was a file"}, {"d": {"older": "2"}})
    assert names(v, b"d") == [b"new"]
    assert v.locate(b"d/older") is None


def test_gap_layer_does_not_stop_merging(tmp_path: Path) -> None:
    v = chain(tmp_path, {"d": {"a": "0"}}, {"x": "1"}, {"d": {"b": "2"}})
    assert names(v, b"d") == [b"a", b"b"]
    assert content(v, b"d/b") == b"2"


def test_walk_order_parents_first_sorted(tmp_path: Path) -> None:
    v = chain(tmp_path, {"b": {"y": "0"}, "a": "0"}, {"b": {"x": {"z": "1"}}, "c": "1"})
    assert walked(v) == [b".", b"a", b"b", b"b/x", b"b/x/z", b"b/y", b"c"]
    assert [loc.node.path for loc in v.walk(b"b")] == [b"b", b"b/x", b"b/x/z", b"b/y"]


def test_non_utf8_names(tmp_path: Path) -> None:
    top, low = tmp_path / "L0", tmp_path / "L1"
    top.mkdir()
    low.mkdir()
    (top / "d").mkdir()
    with open(os.fsencode(top) + b"/d/\xff\n", "wb") as out:
        out.write(b"odd")
    os.mknod(os.fsencode(top) + b"/\xfe", stat.S_IFCHR, 0)
    (low / "d").mkdir()
    (low / "d" / "plain").write_text("p")
    with open(os.fsencode(low) + b"/\xfe", "wb") as out:
        out.write(b"gone")
    v = ChainView([top, low])
    assert names(v, b"d") == [b"plain", b"\xff\n"]
    assert v.locate(b"\xfe") is None
    assert content(v, b"d/\xff\n") == b"odd"


def test_entry_hashes_and_caches(tmp_path: Path) -> None:
    cache = HashCache()
    top = build(tmp_path / "L0", {"f": "hello", "l": Link("f"), "p": FIFO})
    v = ChainView([top], cache)
    e = v.entry(b"f")
    assert e is not None
    assert e.kind is Kind.FILE
    assert e.hash == ContentHash.of(b"hello")
    assert e.size == 5
    assert cache.peek(os.fsencode(top / "f")) == e.hash
    link = v.entry(b"l")
    assert link is not None
    assert link.kind is Kind.SYMLINK
    assert link.target == b"f"
    assert link.hash is None
    fifo = v.entry(b"p")
    assert fifo is not None
    assert fifo.kind is Kind.FIFO


def test_entry_records_user_xattrs_not_overlay_ones(tmp_path: Path) -> None:
    top = build(tmp_path / "L0", {"d": Opaque({"f": "x"})})
    os.setxattr(top / "d" / "f", "user.note", b"\x00bin")
    os.setxattr(top / "d" / "f", "trusted.overlay.origin", b"junk")
    v = ChainView([top])
    d = v.entry(b"d")
    f = v.entry(b"d/f")
    assert d is not None
    assert f is not None
    assert d.opaque
    assert "trusted.overlay.opaque" not in d.xattrs
    assert f.xattrs == {"user.note": b"\x00bin"}


# --------------------------------------------------------------------------- against the kernel

NAMES = ("a", "b")
MAX_DEPTH = 4
DIR_CHANCE = (0.85, 0.7, 0.4)  # by depth; none at MAX_DEPTH
OPAQUE_CHANCE = (0.15, 0.3, 0.3)


def random_spec(
    rng: random.Random, layer: int, prefix: str = "", depth: int = 1
) -> dict[str, object]:
    """A random layer tree. Few names and many directories, so that layers
    overlap often and whiteouts, opaque dirs and non-dirs hide older paths at
    every depth."""
    spec: dict[str, object] = {}
    for name in NAMES:
        path = f"{prefix}{name}"
        r = rng.random()
        if r < 0.1:
            continue
        if depth < MAX_DEPTH and r < 0.1 + DIR_CHANCE[depth - 1]:
            kids = random_spec(rng, layer, path + "/", depth + 1)
            spec[name] = Opaque(kids) if rng.random() < OPAQUE_CHANCE[depth - 1] else kids
            continue
        r = rng.random()
        if r < 0.5:
            spec[name] = f"L{layer}:{path}"
        elif r < 0.8:
            spec[name] = WH
        elif r < 0.92:
            spec[name] = Link(f"t{layer}-{name}")
        else:
            spec[name] = FIFO
    return spec


Shown = dict[bytes, tuple[str, bytes | None]]


def describe(st: os.stat_result, abspath: bytes) -> tuple[str, bytes | None]:
    if stat.S_ISDIR(st.st_mode):
        return "dir", None
    if stat.S_ISREG(st.st_mode):
        with open(abspath, "rb") as fh:
            return "file", fh.read()
    if stat.S_ISLNK(st.st_mode):
        return "symlink", os.readlink(abspath)
    if stat.S_ISFIFO(st.st_mode):
        return "fifo", None
    return f"other:{stat.S_IFMT(st.st_mode):o}", None


def view_tree(view: ChainView) -> Shown:
    out: Shown = {}
    for loc in view.walk():
        out[loc.node.path] = describe(loc.node.st, loc.node.abspath)
    return out


def mounted_tree(root: bytes) -> Shown:
    out: Shown = {b".": describe(os.lstat(root), root)}

    def visit(rel: bytes, abspath: bytes) -> None:
        for name in sorted(os.listdir(abspath)):
            p = name if rel == b"." else rel + b"/" + name
            ap = abspath + b"/" + name
            try:
                st = os.lstat(ap)
            except FileNotFoundError:
                continue  # a name readdir lists but lookup denies (whiteout)
            out[p] = describe(st, ap)
            if stat.S_ISDIR(st.st_mode):
                visit(p, ap)

    visit(b".", root)
    return out


@contextmanager
def overlay_view(target: Path, layers: list[Path]) -> Iterator[bytes]:
    """A real read-only overlay of ``layers`` (topmost first) on ``target``."""
    target.mkdir()
    try:
        mount_overlay(MountPlan(target, lowers=tuple(layers)))
        yield os.fsencode(target)
    finally:
        release(target)


def release(target: Path) -> None:
    for _ in range(5):
        info = mount_at(target)
        if info is None or info.mountpoint != Path(os.path.realpath(target)):
            return
        try:
            unmount(target)
        except MountError:
            detach(target)


@pytest.mark.root
def test_chainview_matches_kernel_overlay(tmp_path: Path) -> None:
    """Random 3-4 layer stacks: ChainView.walk() shows exactly what a real
    overlay mount of the same layers shows (paths, kinds, contents).
    Needs root; fails, never skips, when the mount does not work."""
    rng = random.Random(20240611)
    compared = 0
    for it in range(30):
        base = tmp_path / f"it{it}"
        specs = [random_spec(rng, n) for n in range(rng.choice((3, 4)))]
        layers = [build(base / f"L{n}", spec) for n, spec in enumerate(specs)]
        expected = view_tree(ChainView(layers))
        with overlay_view(base / "mnt", layers) as root:
            shown = mounted_tree(root)
        assert expected == shown, f"iteration {it}, layers topmost first: {specs!r}"
        compared += len(shown)
    assert compared > 30 * 3  # the stacks were not all empty
