"""snapws.beneath: writes resolved beneath a directory opened once; a
symlink or non-directory on the way is refused, never followed. Every test
runs twice: with openat2 and with the component-by-component walk."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws import beneath
from snapws.beneath import Beneath
from snapws.errors import ExitCode, UnsafePathError


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    before = beneath.use_openat2(request.param == "openat2")
    try:
        yield request.param
    finally:
        beneath.use_openat2(before)


@pytest.fixture
def tree(tmp_path: Path, resolver: str) -> Iterator[tuple[Path, Path, Beneath]]:
    """(root, outside, Beneath(root)): root/dir/sub is a directory,
    root/link a symlink to ``outside`` (holding a victim file), root/file a
    file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "file").write_text("f")
    outside.mkdir()
    (outside / "victim").write_text("victim")
    os.symlink(outside, root / "link")
    os.symlink("dir", root / "rel-link")
    with Beneath(root) as b:
        yield root, outside, b


def outside_unchanged(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "victim"


def test_enosys_falls_back_to_the_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without openat2 (ENOSYS): the walk does the job, and
    openat2 is not tried again."""
    calls = []

    def no_openat2(dirfd: int, path: bytes, flags: int) -> int:
        calls.append(path)
        raise OSError(errno.ENOSYS, "no openat2")

    before = beneath.use_openat2(True)
    monkeypatch.setattr(beneath._openat2, "open", no_openat2)
    try:
        (tmp_path / "d" / "e").mkdir(parents=True)
        os.symlink(tmp_path / "d", tmp_path / "l")
        with Beneath(tmp_path) as b:
            b.mkdir(b"d/e/f")
            with pytest.raises(UnsafePathError):
                b.mkdir(b"l/x")
            b.mkdir(b"d/e/g")
        assert calls == [b"d/e"]
        assert (tmp_path / "d/e/f").is_dir() and (tmp_path / "d/e/g").is_dir()
        assert not (tmp_path / "d/x").exists()
    finally:
        beneath.use_openat2(before)


def test_works_through_real_directories(tree: tuple[Path, Path, Beneath]) -> None:
    root, _outside, b = tree
    b.mkdir(b"dir/sub/new")
    fd = b.create(b"dir/sub/new/f", 0o600)
    try:
        os.write(fd, b"data")
    finally:
        os.close(fd)
    assert (root / "dir/sub/new/f").read_bytes() == b"data"
    b.symlink(b"../x", b"dir/l")
    assert os.readlink(root / "dir/l") == "../x"
    b.mknod(b"dir/fifo", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.lstat(root / "dir/fifo").st_mode)
    b.link(b"dir/sub/new/f", b"dir/hard")
    assert os.stat(root / "dir/hard").st_nlink == 2
    b.rename(b"dir/hard", b"dir/sub/moved")
    b.unlink(b"dir/sub/moved")
    assert b.is_dir(b"dir/sub") and not b.is_dir(b"file") and not b.is_dir(b"link")
    st = b.lstat(b"file")
    assert st is not None and stat.S_ISREG(st.st_mode)
    assert b.lstat(b"missing/x") is None
    assert b.lstat(b"file/x") is None  # a parent that is a file: nothing there


def test_parents_made_on_demand(tree: tuple[Path, Path, Beneath]) -> None:
    root, _outside, b = tree
    b.mkdir(b"a/b/c", parents=True)
    assert (root / "a/b/c").is_dir()
    os.close(b.create(b"x/y/z", parents=True))
    assert (root / "x/y/z").is_file()


@pytest.mark.parametrize("rel", [b"link/victim", b"link/new", b"rel-link/f", b"dir/../link/x"])
def test_a_symlinked_parent_is_refused(tree: tuple[Path, Path, Beneath], rel: bytes) -> None:
    root, outside, b = tree
    for op in (
        lambda: b.unlink(rel),
        lambda: os.close(b.create(rel)),
        lambda: b.mkdir(rel),
        lambda: b.mkdir(rel + b"/deeper", parents=True),
        lambda: b.symlink(b"t", rel),
        lambda: b.remove(rel),
        lambda: b.set_meta(rel, 4242, 4242, 0o6777, {"user.x": b"1"}, 0),
        lambda: b.lstat(rel),
    ):
        with pytest.raises(UnsafePathError) as info:
            op()
        assert info.value.exit_code is ExitCode.BAD_PATH
    outside_unchanged(outside)
    assert not (root / "dir" / "f").exists()


def test_the_message_names_the_symlink(tree: tuple[Path, Path, Beneath]) -> None:
    _root, _outside, b = tree
    with pytest.raises(UnsafePathError, match=r"below link in .*: it is a symlink"):
        b.unlink(b"link/victim")
    with pytest.raises(UnsafePathError, match=r"below file in .*: it is not a directory"):
        b.mkdir(b"file/x")


@pytest.mark.parametrize("rel", [b"/etc/passwd", b"../outside/victim", b"dir/../../x", b""])
def test_absolute_and_dotdot_paths_are_refused(
    tree: tuple[Path, Path, Beneath], rel: bytes
) -> None:
    _root, outside, b = tree
    with pytest.raises(UnsafePathError):
        b.unlink(rel)
    with pytest.raises(UnsafePathError):
        os.close(b.create(rel))
    outside_unchanged(outside)


def test_the_last_component_is_never_followed(tree: tuple[Path, Path, Beneath]) -> None:
    root, outside, b = tree
    os.symlink(outside / "victim", root / "dir" / "to-victim")
    before = os.stat(outside / "victim")
    with pytest.raises(FileExistsError):
        b.create(b"dir/to-victim")
    # metadata of the symlink itself (a symlink is not refused: it is the node)
    b.set_meta(b"dir/to-victim", 4242, 4242, 0o6777, {}, 1_000_000_000)
    assert os.lstat(root / "dir" / "to-victim").st_uid == 4242
    # a kind check refuses a node that is not what was made
    with pytest.raises(UnsafePathError, match="replaced"):
        b.set_meta(b"dir/to-victim", 0, 0, 0o644, {}, 0, kind=stat.S_IFREG)
    b.remove(b"dir/to-victim")
    after = os.stat(outside / "victim")
    assert (after.st_mode, after.st_uid, after.st_mtime_ns) == (
        before.st_mode,
        before.st_uid,
        before.st_mtime_ns,
    )
    outside_unchanged(outside)


def test_metadata_of_every_kind(tree: tuple[Path, Path, Beneath]) -> None:
    root, _outside, b = tree
    b.set_meta(b"file", 4242, 4343, 0o6755, {"user.k": b"v"}, 1_234_000_000_000)
    st = os.lstat(root / "file")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o6755)
    assert st.st_mtime_ns == 1_234_000_000_000
    assert os.getxattr(root / "file", "user.k") == b"v"
    b.set_meta(b"dir/sub", 7, 8, 0o555, {}, 5_000_000_000, kind=stat.S_IFDIR)
    st = os.lstat(root / "dir/sub")
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (7, 0o555, 5_000_000_000)
    b.set_meta(b".", None, None, 0o711, {}, None)
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o711


def test_remove_walks_by_descriptors(tree: tuple[Path, Path, Beneath]) -> None:
    root, outside, b = tree
    (root / "dir" / "sub" / "f").write_text("x")
    os.symlink(outside, root / "dir" / "sub" / "out")
    os.chmod(root / "dir" / "sub", 0o555)
    assert b.remove(b"dir", force=True)
    assert not (root / "dir").exists()
    assert b.remove(b"link")  # the symlink, not what it points to
    assert not b.remove(b"missing")
    outside_unchanged(outside)


def test_a_missing_directory_without_create(tree: tuple[Path, Path, Beneath]) -> None:
    _root, _outside, b = tree
    with pytest.raises(FileNotFoundError):
        b.mkdir(b"nope/x")


def test_open_subdir_refuses_a_symlink_and_a_file_saying_which(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("f")
    os.symlink("dir", tmp_path / "link")
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(beneath.open_subdir(top, b"dir"))
        with pytest.raises(beneath.EntryNotADirectoryError) as caught:
            beneath.open_subdir(top, "link", os.O_RDONLY)
        assert caught.value.is_symlink and caught.value.what == "a symlink"
        with pytest.raises(beneath.EntryNotADirectoryError) as caught:
            beneath.open_subdir(top, b"file")
        assert not caught.value.is_symlink and stat.S_ISREG(caught.value.mode)
        with pytest.raises(FileNotFoundError):
            beneath.open_subdir(top, b"missing")
    finally:
        os.close(top)


def test_open_subdir_creates_and_reports_what_it_made(tmp_path: Path) -> None:
    made: list[int] = []
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = beneath.open_subdir(top, b"new", create=True, mode=0o750, made=made.append)
        os.close(fd)
        assert made == [top]
        assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o750 & ~_umask()
        os.close(beneath.open_subdir(top, b"new", create=True, made=made.append))
        assert made == [top]  # there already: nothing made
    finally:
        os.close(top)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_lstat_raises_only_for_a_symlink_on_the_way(tree: tuple[Path, Path, Beneath]) -> None:
    _, outside, b = tree
    with pytest.raises(beneath.SymlinkOnTheWayError):
        b.lstat(b"link/victim")
    assert b.lstat(b"file/below") is None  # a file on the way: nothing there
    assert b.lstat(b"dir/missing/x") is None
    outside_unchanged(outside)


def test_set_meta_fd_sets_an_open_file_s_metadata(tree: tuple[Path, Path, Beneath]) -> None:
    root, _, b = tree
    fd = b.create(b"dir/new", 0o600)
    try:
        beneath.set_meta_fd(fd, os.getuid(), os.getgid(), 0o640, {"user.k": b"v"}, 10**9)
    finally:
        os.close(fd)
    st = os.lstat(root / "dir" / "new")
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == 10**9
    assert os.getxattr(root / "dir" / "new", "user.k") == b"v"


# ---- paths beyond PATH_MAX -------------------------------------------------------

DEEP = 5_000  # "d/" * 5000: 10,000 bytes, beyond PATH_MAX


@pytest.fixture
def deep_tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied with ``rm -rf`` after the test: pytest's own
    clean-up of old temporary directories recurses, and these trees are
    5,000 levels deep."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


def test_a_path_beyond_path_max_is_written_and_read(deep_tmp: Path, resolver: str) -> None:
    deep = b"d/" * DEEP + b"f"
    with Beneath(deep_tmp) as b:
        b.mkdir(deep[:-2], parents=True)
        fd = b.create(deep)
        os.write(fd, b"x")
        os.close(fd)
        st = b.lstat(deep)
        assert st is not None and stat.S_ISREG(st.st_mode)
        b.set_meta(deep, None, None, 0o640, {}, 10**9)
        assert stat.S_IMODE(b.lstat(deep).st_mode) == 0o640  # type: ignore[union-attr]
        b.rename(deep, deep + b"2")
        assert b.lstat(deep) is None and b.lstat(deep + b"2") is not None
        # anchors are few, whatever the depth
        assert 0 < len(b._anchors) <= 64


def test_a_symlink_deep_on_the_way_is_refused(deep_tmp: Path, resolver: str) -> None:
    outside, root = deep_tmp / "outside", deep_tmp / "root"
    outside.mkdir()
    root.mkdir()
    with Beneath(root) as b:
        b.mkdir(b"d/" * DEEP + b"e", parents=True)
        mid = b"d/" * (DEEP - 10) + b"d"
        b.remove(mid)
        with b.parent(mid) as (fd, name):
            os.symlink(outside, name, dir_fd=fd)
        with pytest.raises(UnsafePathError):
            b.create(mid + b"/x")
    assert os.listdir(outside) == []


def test_a_removed_anchor_is_opened_again(deep_tmp: Path) -> None:
    deep = b"d/" * DEEP + b"f"
    with Beneath(deep_tmp) as b:
        b.mkdir(deep[:-2], parents=True)
        os.close(b.create(deep))
        b.remove(b"d")
        assert b.lstat(deep) is None
        b.mkdir(deep[:-2], parents=True)
        os.close(b.create(deep))
        assert b.lstat(deep) is not None


def test_removing_a_deep_tree_needs_few_descriptors(deep_tmp: Path) -> None:
    """Deeper than PATH_MAX and than the descriptors allowed: the walk
    keeps about depth / KEEP_LEVELS + KEEP_LEVELS of them."""
    import resource

    with Beneath(deep_tmp) as b:
        b.mkdir(b"d/" * DEEP + b"e", parents=True)
        for n in (10, 2000, DEEP - 1):
            os.close(b.create(b"d/" * n + b"f"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 200, hard))
    try:
        with Beneath(deep_tmp) as b:
            assert b.remove(b"d")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert os.listdir(deep_tmp) == []
