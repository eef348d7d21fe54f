"""snapws.layers.materialise: writing layer nodes into a plain tree with every
attribute a manifest records."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from snapws.layers.materialise import copy_file_data, materialise
from snapws.layers.scan import entries_of, read_tree
from snapws.layers.view import ChainView

from . import FIFO, WH, Link, build

MiB = 1 << 20
T_FILE = 1_500_000_000_123_456_789
T_DIR = 1_400_000_000_987_654_321
T_LINK = 1_300_000_000_000_000_042


def fs(p: Path) -> bytes:
    return os.fsencode(p)


def make_source(root: Path) -> Path:
    build(
        root,
        {
            "file": "plain",
            "suid": "#!/bin/sh\n",
            "ro": {"inner": {"deep": "d"}, "sibling": "s"},
            "link": Link("file"),
            "dangling": Link("../nowhere\udcff"),  # target bytes: not UTF-8
            "fifo": FIFO,
            "gone": WH,
            "links": {"a": "shared"},
        },
    )
    os.link(root / "links" / "a", root / "links" / "b")
    os.link(root / "links" / "a", root / "hard")
    os.mknod(root / "tty", stat.S_IFCHR | 0o620, os.makedev(4, 7))
    os.mknod(root / "disk", stat.S_IFBLK | 0o640, os.makedev(8, 17))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.fsdecode(root / "sock"))
    with open(root / "sparse", "wb") as fh:
        fh.write(b"head")
        fh.seek(16 * MiB)
        fh.write(b"middle")
        fh.truncate(64 * MiB)  # ends in a hole
    # owners before modes: chown clears setuid
    os.chown(root / "file", 1234, 5678)
    os.chown(root / "ro", 42, 43)
    os.chown(root / "link", 7, 8, follow_symlinks=False)
    os.chmod(root / "file", 0o640)
    os.chmod(root / "suid", 0o4755)
    os.chmod(root / "ro" / "inner", 0o500)
    os.chmod(root / "ro", 0o555)
    os.chmod(root / "fifo", 0o612)
    os.setxattr(root / "file", "user.bin", b"\x00\x01\xff")
    os.setxattr(root / "file", "trusted.t", b"root only")
    os.setxattr(root / "ro", "user.dir", b"on a dir")
    os.setxattr(root / "link", "trusted.l", b"on a symlink", follow_symlinks=False)
    os.utime(root / "file", ns=(T_FILE, T_FILE))
    os.utime(root / "link", ns=(T_LINK, T_LINK), follow_symlinks=False)
    # directories last: creating their children changed their mtimes
    for d in ("ro/inner", "ro", "links", "."):
        os.utime(root / d, ns=(T_DIR, T_DIR))
    return root


def snapshot(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything a manifest records about each path, as entries_of sees it."""
    out: dict[bytes, tuple[object, ...]] = {}
    for e in entries_of(read_tree(fs(root))):
        out[e.path] = (
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            e.mtime_ns,
            e.size,
            e.hash,
            e.target,
            e.rdev,
            dict(e.xattrs),
            e.link,
        )
    return out


@pytest.fixture
def copied(tmp_path: Path) -> tuple[Path, Path, int]:
    src = make_source(tmp_path / "src")
    dst = tmp_path / "dst"
    count = materialise(read_tree(fs(src)), fs(dst))
    return src, dst, count


def test_everything_recorded_survives(copied: tuple[Path, Path, int]) -> None:
    src, dst, _ = copied
    want = snapshot(src)
    del want[b"gone"]  # whiteouts are not materialised
    assert snapshot(dst) == want


def test_count_excludes_whiteouts(copied: tuple[Path, Path, int]) -> None:
    src, dst, count = copied
    assert count == len(read_tree(fs(src))) - 1
    assert not os.path.lexists(dst / "gone")


def test_kinds(copied: tuple[Path, Path, int]) -> None:
    _, dst, _ = copied
    assert (dst / "file").read_text() == "plain"
    assert os.readlink(dst / "link") == "file"
    assert os.readlink(fs(dst / "dangling")) == b"../nowhere\xff"
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)
    assert stat.S_ISSOCK(os.lstat(dst / "sock").st_mode)
    tty = os.lstat(dst / "tty")
    assert stat.S_ISCHR(tty.st_mode)
    assert (os.major(tty.st_rdev), os.minor(tty.st_rdev)) == (4, 7)
    disk = os.lstat(dst / "disk")
    assert stat.S_ISBLK(disk.st_mode)
    assert (os.major(disk.st_rdev), os.minor(disk.st_rdev)) == (8, 17)


def test_modes_owners_xattrs_mtimes(copied: tuple[Path, Path, int]) -> None:
    _, dst, _ = copied
    st = os.lstat(dst / "file")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == T_FILE
    assert os.getxattr(dst / "file", "user.bin") == b"\x00\x01\xff"
    assert os.getxattr(dst / "file", "trusted.t") == b"root only"
    assert stat.S_IMODE(os.lstat(dst / "suid").st_mode) == 0o4755
    link = os.lstat(dst / "link")
    assert (link.st_uid, link.st_gid) == (7, 8)
    assert link.st_mtime_ns == T_LINK
    assert os.getxattr(dst / "link", "trusted.l", follow_symlinks=False) == b"on a symlink"
    assert stat.S_IMODE(os.lstat(dst / "fifo").st_mode) == 0o612


def test_dir_meta_applied_after_children(copied: tuple[Path, Path, int]) -> None:
    _, dst, _ = copied
    ro = os.lstat(dst / "ro")
    assert stat.S_IMODE(ro.st_mode) == 0o555
    assert (ro.st_uid, ro.st_gid) == (42, 43)
    assert os.getxattr(dst / "ro", "user.dir") == b"on a dir"
    assert stat.S_IMODE(os.lstat(dst / "ro" / "inner").st_mode) == 0o500
    assert (dst / "ro" / "inner" / "deep").read_text() == "d"
    # children were created after mkdir: mtimes were set last
    for d in (dst, dst / "ro", dst / "ro" / "inner", dst / "links"):
        assert os.lstat(d).st_mtime_ns == T_DIR, d


def test_hardlinks_preserved(copied: tuple[Path, Path, int]) -> None:
    _, dst, _ = copied
    a, b, hard = (os.lstat(dst / p) for p in ("links/a", "links/b", "hard"))
    assert a.st_ino == b.st_ino == hard.st_ino
    assert a.st_nlink == 3
    assert os.lstat(dst / "file").st_nlink == 1


def test_sparse_file_keeps_holes(copied: tuple[Path, Path, int]) -> None:
    src, dst, _ = copied
    st = os.lstat(dst / "sparse")
    assert st.st_size == 64 * MiB
    assert st.st_blocks * 512 < 1 * MiB  # only the two written blocks
    with open(dst / "sparse", "rb") as fh:
        assert fh.read(4) == b"head"
        fh.seek(16 * MiB)
        assert fh.read(6) == b"middle"
        assert fh.read(MiB) == bytes(MiB)
    assert (dst / "sparse").read_bytes() == (src / "sparse").read_bytes()


def test_copy_file_data_edge_cases(tmp_path: Path) -> None:
    empty, hole, full = tmp_path / "empty", tmp_path / "hole", tmp_path / "full"
    empty.write_bytes(b"")
    with open(hole, "wb") as fh:
        fh.truncate(3 * MiB)  # nothing but a hole
    full.write_bytes(os.urandom(3 * MiB + 17))  # bigger than one copy chunk
    for src in (empty, hole, full):
        dst = tmp_path / f"{src.name}.copy"
        copy_file_data(fs(src), fs(dst), 0o600)
        assert dst.read_bytes() == src.read_bytes()
    assert os.lstat(tmp_path / "hole.copy").st_blocks == 0
    with pytest.raises(FileExistsError):
        copy_file_data(fs(full), fs(tmp_path / "full.copy"), 0o600)


def test_strip_prefix_from_a_view(tmp_path: Path) -> None:
    top = build(tmp_path / "L0", {"sub": {"new": "0", "gone": WH}})
    low = build(tmp_path / "L1", {"sub": {"old": "1", "gone": "g", "d": {"x": "1"}}, "o": "o"})
    os.chmod(top / "sub", 0o750)
    view = ChainView([top, low])
    dest = tmp_path / "out"
    dest.mkdir()
    count = materialise((loc.node for loc in view.walk(b"sub")), fs(dest), strip=b"sub")
    assert count == 5  # sub itself, new, old, d, d/x
    assert sorted(os.listdir(dest)) == ["d", "new", "old"]
    assert (dest / "d" / "x").read_text() == "1"
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o750
