"""Every kind of node survives commit and checkout exactly: content, type,
mode bits, owners, device numbers, xattrs, mtimes, hardlinks, holes and
names that are not UTF-8."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from conftest import Workspace
from helpers import State, state_diff, tree_state

MB = 1 << 20
SPARSE_SIZE = 1 << 30
SMALL_SPARSE = 64 * MB
T0 = 1_500_000_000_111_222_333  # an mtime in the past, with nanoseconds


def build_everything(root: Path, sparse_size: int = SPARSE_SIZE) -> None:
    """Create one of each kind of node below ``root`` (a workspace mount)."""
    r = os.fsencode(root)

    def p(name: bytes) -> bytes:
        return r + b"/" + name

    os.makedirs(p(b"dir/nested/deeper"))
    os.mkdir(p(b"empty-dir"))
    open(p(b"empty"), "wb").close()
    with open(p(b"dir/large.bin"), "wb") as f:
        f.write(os.urandom(20 * MB))
    with open(p(b"sparse"), "wb") as f:
        f.truncate(sparse_size)
        f.seek(12345)
        f.write(b"in the middle")
        f.seek(sparse_size - 5)
        f.write(b"end!\n")
    with open(p(b"dir/nested/deeper/text"), "w") as f:
        f.write("deep text\n")
    os.symlink(b"dir/nested/deeper/text", p(b"link"))
    os.symlink(b"does/not/exist", p(b"dangling"))
    os.symlink(b"../empty", p(b"dir/up-link"))
    with open(p(b"hard1"), "w") as f:
        f.write("linked content\n")
    os.link(p(b"hard1"), p(b"dir/hard2"))
    os.mkfifo(p(b"fifo"), 0o640)
    os.mknod(p(b"chardev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(p(b"blockdev"), stat.S_IFBLK | 0o660, os.makedev(7, 42))
    # odd names
    with open(p(b"bad-\xff\xfe-name"), "w") as f:
        f.write("not utf-8\n")
    os.mkdir(p(b"dir-\xe9"))
    with open(p(b"dir-\xe9/with\nnewline"), "w") as f:
        f.write("newline in name\n")
    with open(p(b" lead space & tab\t"), "w") as f:
        f.write("spaces\n")
    # owners first (chown clears set-id bits), then modes
    with open(p(b"setuid"), "w") as f:
        f.write("#!/bin/sh\n")
    with open(p(b"owned"), "w") as f:
        f.write("owned by 1234:5678\n")
    os.chown(p(b"owned"), 1234, 5678)
    os.chown(p(b"link"), 4321, 8765, follow_symlinks=False)
    os.chown(p(b"dir/nested"), 1000, 1000)
    os.chmod(p(b"setuid"), 0o4755)
    os.mkdir(p(b"setgid-dir"))
    os.chmod(p(b"setgid-dir"), 0o2775)
    os.mkdir(p(b"sticky-dir"))
    os.chmod(p(b"sticky-dir"), 0o1777)
    os.chmod(p(b"owned"), 0o600)
    os.chmod(p(b"empty-dir"), 0o700)
    # xattrs: user.* and trusted.* (not the overlay's own)
    os.setxattr(p(b"hard1"), "user.note", b"hello")
    os.setxattr(p(b"dir"), "user.dirnote", b"\x00binary\xff")
    os.setxattr(p(b"empty"), "trusted.snapws-test", b"secret")
    os.setxattr(p(b"setgid-dir"), "trusted.other", b"x" * 300)
    os.setxattr(p(b"link"), "trusted.on-link", b"l", follow_symlinks=False)
    # mtimes last (anything written above changed them)
    for name in (b"empty", b"dir/large.bin", b"sparse", b"hard1", b"fifo", b"chardev"):
        os.utime(p(name), ns=(T0, T0))
    os.utime(p(b"link"), ns=(T0 + 7, T0 + 7), follow_symlinks=False)
    os.utime(p(b"bad-\xff\xfe-name"), ns=(T0 + 1, T0 + 1))


def hardlinked(root: Path) -> bool:
    a = os.lstat(root / "hard1")
    b = os.lstat(root / "dir" / "hard2")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) and a.st_nlink == 2


def sparse_ok(root: Path, size: int = SPARSE_SIZE) -> None:
    st = os.lstat(root / "sparse")
    assert st.st_size == size
    assert st.st_blocks * 512 < 4 * MB, f"sparse file takes {st.st_blocks * 512} bytes"
    with open(root / "sparse", "rb") as f:
        f.seek(12345)
        assert f.read(13) == b"in the middle"
        f.seek(size - 5)
        assert f.read() == b"end!\n"


def check_same(expected: dict[bytes, State], root: Path, when: str) -> None:
    problems = state_diff(expected, tree_state(root))
    assert problems == [], f"{when}:\n" + "\n".join(problems)


def test_every_kind_round_trips(workspace: Workspace) -> None:
    ws = workspace
    build_everything(ws.path)
    os.setxattr(ws.path, "user.rootnote", b"root")
    os.chmod(ws.path, 0o750)
    before = tree_state(ws.path)
    assert hardlinked(ws.path)
    assert {s.type for s in before.values()} == {"f", "d", "l", "p", "c", "b"}

    status = ws.porcelain()
    assert "?? sparse" in status
    assert '?? "bad-\\377\\376-name"' in status
    assert '?? "dir-\\351/with\\nnewline"' in status
    assert "?? fifo" in status
    assert "?? chardev" in status

    sid = ws.commit("everything")
    # committing remounts: the tree is unchanged and clean
    check_same(before, ws.path, "after commit")
    assert ws.porcelain() == []
    assert hardlinked(ws.path)
    sparse_ok(ws.path)

    # away to the empty base, and back
    base = ws.log_ids()[1]
    ws.run("checkout", base)
    assert sorted(os.listdir(ws.path)) == []
    ws.run("checkout", "main")
    assert ws.head() == sid
    check_same(before, ws.path, "after checkout back")
    assert hardlinked(ws.path)
    sparse_ok(ws.path)
    assert ws.porcelain() == []

    # a new branch at HEAD shows the same tree
    ws.run("checkout", "-b", "other")
    check_same(before, ws.path, "on a new branch")

    # the layer on disk keeps the holes too (it is U renamed, not a copy)
    layer = ws.json("show")["layer"]
    on_disk = ws.store / "layers" / layer / "tree" / "sparse"
    assert os.lstat(on_disk).st_blocks * 512 < 4 * MB


def test_metadata_changes_round_trip(workspace: Workspace) -> None:
    """Changes to committed nodes (copy-ups) round-trip as well."""
    ws = workspace
    build_everything(ws.path, SMALL_SPARSE)  # the big one is the test above's
    first = ws.commit("everything")
    state1 = tree_state(ws.path)
    r = os.fsencode(ws.path)
    os.chmod(r + b"/hard1", 0o4711)  # a copy-up of a hardlinked file
    os.chown(r + b"/owned", 42, 43)
    os.chmod(r + b"/owned", 0o644)
    os.setxattr(r + b"/empty", "trusted.snapws-test", b"changed")
    os.removexattr(r + b"/dir", "user.dirnote")
    os.unlink(r + b"/link")
    os.symlink(b"elsewhere", r + b"/link")
    os.unlink(r + b"/blockdev")
    os.mknod(r + b"/blockdev", stat.S_IFBLK | 0o600, os.makedev(7, 43))
    os.rename(r + b"/bad-\xff\xfe-name", r + b"/renamed-\xff")
    os.utime(r + b"/sparse", ns=(T0 + 99, T0 + 99))
    with open(r + b"/sparse", "r+b") as f:
        f.seek(SMALL_SPARSE // 2)
        f.write(b"half")
    assert ws.porcelain() == [
        ' D "bad-\\377\\376-name"',
        " M blockdev",
        " M dir/",
        " M empty",
        " M hard1",
        " M link",
        " M owned",
        " M sparse",
        '?? "renamed-\\377"',
    ]
    what = {c["path"]: c["what"] for c in ws.json("status")["changes"]}
    assert what["blockdev"] == ["rdev", "mode"]
    assert what["owned"] == ["mode", "owner"]
    assert what["link"] == ["target", "owner", "xattrs"]  # a new link: root, no xattrs
    assert what["empty"] == ["xattrs"]
    state2 = tree_state(ws.path)
    second = ws.commit("metadata")
    check_same(state2, ws.path, "after second commit")
    ws.run("checkout", first)
    check_same(state1, ws.path, "first snapshot")
    assert hardlinked(ws.path)
    ws.run("checkout", second)
    check_same(state2, ws.path, "second snapshot")
    sparse_ok(ws.path, SMALL_SPARSE)
    assert ws.porcelain() == []
