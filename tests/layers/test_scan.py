"""snapws.layers.scan: reading layer trees into entries, planning a commit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from snapws.errors import ExitCode, LayerRejectedError
from snapws.ids import ContentHash
from snapws.layers.scan import entries_of, plan_upper, prune_upper, read_tree, strip_overlay_xattrs
from snapws.layers.view import ChainView, HashCache
from snapws.model import ChangeType, Kind

from . import FIFO, WH, Link, Opaque, build


def fs(p: Path) -> bytes:
    return os.fsencode(p)


# --------------------------------------------------------------------------- read_tree / entries_of


def test_read_tree_order_and_kinds(tmp_path: Path) -> None:
    root = build(
        tmp_path / "t",
        {"b": {"z": "1", "a": {"deep": "2"}}, "a": "0", "l": Link("a"), "p": FIFO, "w": WH},
    )
    nodes = read_tree(fs(root))
    paths = [n.path for n in nodes]
    assert sorted(paths) == sorted(
        [b".", b"a", b"b", b"b/a", b"b/a/deep", b"b/z", b"l", b"p", b"w"]
    )
    assert paths[0] == b"."
    for n, p in enumerate(paths[1:], 1):  # parents before children
        parent = p.rpartition(b"/")[0] or b"."
        assert parent in paths[:n], p
    kinds = {n.path: n.kind for n in nodes}
    assert kinds[b"."] is Kind.DIR
    assert kinds[b"l"] is Kind.SYMLINK
    assert kinds[b"p"] is Kind.FIFO
    assert kinds[b"w"] is Kind.WHITEOUT
    assert nodes[0].abspath == fs(root)
    by = {n.path: n for n in nodes}
    assert by[b"b/a/deep"].abspath == fs(root) + b"/b/a/deep"


def test_entries_of_records_fields(tmp_path: Path) -> None:
    root = build(tmp_path / "t", {"d": Opaque({"f": "hello"}), "l": Link("d/f"), "w": WH})
    os.chown(root / "d" / "f", 123, 456)
    os.chmod(root / "d" / "f", 0o4751)  # after chown, which clears setuid
    os.utime(root / "d" / "f", ns=(5, 1_600_000_000_000_000_007))
    os.setxattr(root / "d" / "f", "user.k", b"\x00\xff")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", b"bookkeeping")
    os.mknod(root / "tty", stat.S_IFCHR | 0o620, os.makedev(4, 1))
    os.mknod(root / "disk", stat.S_IFBLK | 0o660, os.makedev(8, 3))
    by = {e.path: e for e in entries_of(read_tree(fs(root)))}
    f = by[b"d/f"]
    assert f.kind is Kind.FILE
    assert f.hash == ContentHash.of(b"hello")
    assert f.size == 5
    assert f.mode == 0o4751
    assert (f.uid, f.gid) == (123, 456)
    assert f.mtime_ns == 1_600_000_000_000_000_007
    assert f.xattrs == {"user.k": b"\x00\xff"}
    assert f.link is None
    assert by[b"d"].opaque
    assert "trusted.overlay.opaque" not in by[b"d"].xattrs
    assert by[b"l"].target == b"d/f"
    assert by[b"w"].kind is Kind.WHITEOUT
    assert by[b"tty"].kind is Kind.CHARDEV
    assert by[b"tty"].rdev == (4, 1)
    assert by[b"disk"].kind is Kind.BLOCKDEV
    assert by[b"disk"].rdev == (8, 3)


def test_hardlinks_lead_by_smallest_path(tmp_path: Path) -> None:
    root = build(tmp_path / "t", {"m": "shared", "a": {}, "z": {}, "solo": "s"})
    os.link(root / "m", root / "z" / "last")
    os.link(root / "m", root / "a" / "first")
    (root / "other").write_text("o")
    os.link(root / "other", root / "other2")
    by = {e.path: e for e in entries_of(read_tree(fs(root)))}
    assert by[b"a/first"].link is None  # the leader
    assert by[b"m"].link == b"a/first"
    assert by[b"z/last"].link == b"a/first"
    assert by[b"other"].link is None
    assert by[b"other2"].link == b"other"
    assert by[b"solo"].link is None
    assert by[b"m"].hash == by[b"a/first"].hash == ContentHash.of(b"shared")


def test_links_outside_the_tree_are_not_recorded(tmp_path: Path) -> None:
    root = build(tmp_path / "t", {"f": "x"})
    os.link(root / "f", tmp_path / "outside")
    (e,) = (e for e in entries_of(read_tree(fs(root))) if e.path == b"f")
    assert e.link is None


def test_whiteouts_are_never_links(tmp_path: Path) -> None:
    # the kernel makes whiteouts as hardlinks of one inode: they stay whiteouts
    root = build(tmp_path / "t", {"w1": WH, "d": {}})
    os.link(root / "w1", root / "d" / "w2")
    os.link(root / "w1", root / "w0")
    assert os.lstat(root / "w1").st_nlink == 3
    by = {e.path: e for e in entries_of(read_tree(fs(root)))}
    for p in (b"w0", b"w1", b"d/w2"):
        assert by[p].kind is Kind.WHITEOUT
        assert by[p].link is None
        assert by[p].to_json() == {"p": p.decode(), "k": "w"}


def test_entries_of_reuses_known_hashes(tmp_path: Path) -> None:
    root = build(tmp_path / "t", {"f": "real", "g": "other"})
    cache = HashCache()
    fake = ContentHash.of(b"not the content")
    cache._cache[fs(root / "f")] = fake  # a hash known from an earlier scan
    seen: list[int] = []
    by = {e.path: e for e in entries_of(read_tree(fs(root)), progress=seen.append, known=cache)}
    assert by[b"f"].hash == fake
    assert by[b"g"].hash == ContentHash.of(b"other")
    assert seen[-1] == 1  # only g was hashed


def test_entries_of_parallel_hashing(tmp_path: Path) -> None:
    spec = {f"f{n:03}": f"content {n}" for n in range(150)}
    root = build(tmp_path / "t", spec)
    entries = entries_of(read_tree(fs(root)), threads=4)
    by = {e.path: e for e in entries}
    for name, text in spec.items():
        assert by[name.encode()].hash == ContentHash.of(text.encode())


# --------------------------------------------------------------------------- plan_upper


def same_meta(src: Path, dst: Path) -> None:
    """Make ``dst`` look like a kernel copy-up of ``src``: same mode and owner,
    a different mtime, overlay bookkeeping attributes."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9), follow_symlinks=False)


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    """(upper, lower). The upper holds no-op copy-ups beside real changes."""
    lower = build(
        tmp_path / "lower",
        {
            "same": "s",
            "d": {"same": "s", "sub": {"same": "s"}},
            "e": {"changed": "old", "untouched": "u"},
            "modes": "m",
            "gone": "g",
            "olddir": {"x": "1", "y": "2"},
            "l": Link("same"),
        },
    )
    upper = build(
        tmp_path / "upper",
        {
            "same": "s",
            "d": {"same": "s", "sub": {"same": "s"}},
            "e": {"changed": "new"},
            "modes": "m",
            "gone": WH,
            "olddir": Opaque({"y": "2"}),
            "l": Link("same"),
            "new": {"file": "n"},
        },
    )
    for rel in (".", "same", "d", "d/same", "d/sub", "d/sub/same", "e", "e/changed", "l", "olddir"):
        same_meta(lower / rel, upper / rel)
    os.chmod(lower / "modes", 0o644)
    os.chmod(upper / "modes", 0o600)
    os.setxattr(upper / "d" / "same", "trusted.overlay.origin", b"kernel bookkeeping")
    return upper, lower


def test_plan_upper_changes(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    plan = plan_upper(fs(upper), ChainView([lower]))
    got = {c.path: (c.type, c.what) for c in plan.changes}
    assert got == {
        b"e/changed": (ChangeType.MODIFIED, ("content",)),
        b"modes": (ChangeType.MODIFIED, ("mode",)),
        b"gone": (ChangeType.DELETED, ()),
        b"olddir/x": (ChangeType.DELETED, ()),
        b"new": (ChangeType.ADDED, ()),
        b"new/file": (ChangeType.ADDED, ()),
    }
    assert plan.forbidden == []


def test_plan_upper_prunes_noop_copy_ups(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    plan = plan_upper(fs(upper), ChainView([lower]))
    assert sorted(plan.prune) == sorted([b"same", b"d", b"d/same", b"d/sub", b"d/sub/same", b"l"])
    # deepest first, so that directories are empty when their turn comes
    depths = [p.count(b"/") for p in plan.prune]
    assert depths == sorted(depths, reverse=True)
    kept = {n.path for n in plan.keep}
    # parents of kept nodes stay even when they did not change themselves
    assert kept == {
        b".",
        b"e",
        b"e/changed",
        b"modes",
        b"gone",
        b"olddir",
        b"olddir/y",
        b"new",
        b"new/file",
    }
    assert not kept & set(plan.prune)


def test_children_of_opaque_dirs_are_never_pruned(layers: tuple[Path, Path]) -> None:
    """olddir was removed and recreated with y as before: y equals the lower
    copy, but the opaque olddir hides that copy, so dropping y would delete it."""
    upper, lower = layers
    plan = plan_upper(fs(upper), ChainView([lower]))
    assert b"olddir/y" not in plan.prune
    assert b"olddir/y" in {n.path for n in plan.keep}


def merged_state(upper: Path, lower: Path) -> dict[bytes, object]:
    view = ChainView([upper, lower])
    out: dict[bytes, object] = {}
    for loc in view.walk():
        e = view.entry_of(loc)
        out[e.path] = (e.kind, e.mode, e.uid, e.gid, e.hash, e.target, dict(e.xattrs))
    return out


def test_pruning_does_not_change_the_merged_view(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    before = merged_state(upper, lower)
    plan = plan_upper(fs(upper), ChainView([lower]))
    prune_upper(fs(upper), plan.prune)
    assert merged_state(upper, lower) == before


def test_prune_then_plan_again(layers: tuple[Path, Path]) -> None:
    upper, lower = layers
    view = ChainView([lower])
    plan = plan_upper(fs(upper), view)
    prune_upper(fs(upper), plan.prune)
    assert not (upper / "d").exists()
    assert not (upper / "same").exists()
    assert (upper / "e" / "changed").read_text() == "new"
    again = plan_upper(fs(upper), ChainView([lower]))
    assert again.prune == []
    assert [(c.path, c.type) for c in again.changes] == [(c.path, c.type) for c in plan.changes]


def test_plan_upper_over_several_lowers(tmp_path: Path) -> None:
    low = build(tmp_path / "L1", {"f": "v1", "g": "g"})
    mid = build(tmp_path / "L0", {"f": "v2"})
    upper = build(tmp_path / "U", {"f": "v1", "g": "g"})
    for rel in (".", "f", "g"):
        same_meta(low / rel, upper / rel)
    same_meta(low, mid)
    same_meta(low / "f", mid / "f")
    plan = plan_upper(fs(upper), ChainView([mid, low]))
    # f goes back to an older content: a change against the merged lowers
    assert [(c.path, c.what) for c in plan.changes] == [(b"f", ("content",))]
    assert plan.prune == [b"g"]


def test_empty_upper(tmp_path: Path) -> None:
    lower = build(tmp_path / "lower", {"f": "x"})
    upper = build(tmp_path / "upper", {})
    same_meta(lower, upper)
    plan = plan_upper(fs(upper), ChainView([lower]))
    assert plan.changes == []
    assert plan.prune == []
    assert [n.path for n in plan.keep] == [b"."]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trusted.overlay.redirect", b"/old"),
        ("trusted.overlay.metacopy", b""),
        ("user.overlay.redirect", b"/old"),
        ("trusted.overlay.whiteout", b""),  # 6.7+: a file read as a whiteout
        ("user.overlay.whiteout", b""),
        ("trusted.overlay.opaque", b"x"),  # 6.7+: "search for such whiteouts here"
    ],
)
def test_overlay_xattrs_no_snapws_mount_writes_are_rejected(
    tmp_path: Path, name: str, value: bytes
) -> None:
    lower = build(tmp_path / "lower", {"old": {"f": "1"}})
    upper = build(tmp_path / "upper", {"moved": {"f": "1"}})
    os.setxattr(upper / "moved", name, value)
    with pytest.raises(LayerRejectedError) as info:
        plan_upper(fs(upper), ChainView([lower]))
    assert name in str(info.value)
    assert "moved" in str(info.value)
    assert info.value.exit_code is ExitCode.UNSUPPORTED


def test_strip_overlay_xattrs_keeps_opaque(tmp_path: Path) -> None:
    root = build(tmp_path / "t", {"d": Opaque({"f": "x"}), "w": WH})
    os.setxattr(root / "d", "trusted.overlay.impure", b"y")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", b"o")
    os.setxattr(root / "d" / "f", "user.keep", b"k")
    strip_overlay_xattrs(read_tree(fs(root)))
    assert os.listxattr(root / "d") == ["trusted.overlay.opaque"]
    assert os.listxattr(root / "d" / "f") == ["user.keep"]


def test_prune_upper_skips_gone_paths_and_keeps_parent_mtimes(tmp_path: Path) -> None:
    from snapws.layers.scan import prune_upper

    upper = tmp_path / "upper"
    (upper / "d" / "e").mkdir(parents=True)
    (upper / "d" / "keep").write_text("k")
    (upper / "d" / "noop").write_text("n")
    (upper / "d" / "e" / "noop2").write_text("n")
    os.utime(upper / "d", ns=(1_000_000_000, 1_000_000_000))
    root = os.fsencode(upper)
    # deepest first, as plans list them; "d/gone" vanished in an earlier run
    prune_upper(root, [b"d/e/noop2", b"d/gone", b"d/e", b"d/noop"])
    assert sorted(os.listdir(upper / "d")) == ["keep"]
    assert os.stat(upper / "d").st_mtime_ns == 1_000_000_000
    prune_upper(root, [b"d/e/noop2", b"d/e", b"d/noop"])  # again: nothing left to do
    assert sorted(os.listdir(upper / "d")) == ["keep"]


def test_a_plan_not_compared_keeps_what_shapes_the_tree(layers: tuple[Path, Path]) -> None:
    """A held workspace compares U with HEAD itself: its plan is read and
    checked but not compared (no changes, no prune); what it keeps is what
    any commit keeps (whiteouts, opaque directories and below, parents),
    and its prune cannot be asked for."""
    from layers.test_manifestdiff import _chain, _layer

    upper, lower = layers
    chain = _chain([_layer(lower)], False)
    full = plan_upper(fs(upper), ChainView([lower]), manifests=chain)
    assert full.compared and full.changes and full.prune
    plan = plan_upper(fs(upper), ChainView([lower]), manifests=chain, compare=False)
    assert not plan.compared
    assert plan.changes == [] and plan.prune == []
    assert {n.path for n in plan.nodes} == {n.path for n in full.nodes}
    assert {n.path for n in plan.keep} == {b".", b"gone", b"olddir", b"olddir/y"}
    with pytest.raises(AssertionError):
        plan.prune_around_ignored()


def test_strip_known_overlay_xattrs_removes_what_was_read(tmp_path: Path) -> None:
    """The commit's fast path: the overlay attributes the scan read are
    removed, the opaque marker and user attributes stay, and one removed
    meanwhile is no error."""
    from snapws.layers.scan import strip_known_overlay_xattrs

    root = build(tmp_path / "t", {"d": Opaque({"f": "x", "g": "y"}), "w": WH})
    os.setxattr(root / "d", "trusted.overlay.impure", b"y")
    os.setxattr(root / "d" / "f", "trusted.overlay.origin", b"o")
    os.setxattr(root / "d" / "f", "user.keep", b"k")
    os.setxattr(root / "d" / "g", "trusted.overlay.origin", b"o")
    nodes = read_tree(fs(root))
    os.removexattr(root / "d" / "g", "trusted.overlay.origin")
    strip_known_overlay_xattrs(nodes)
    assert os.listxattr(root / "d") == ["trusted.overlay.opaque"]
    assert os.listxattr(root / "d" / "f") == ["user.keep"]
    assert os.listxattr(root / "d" / "g") == []
