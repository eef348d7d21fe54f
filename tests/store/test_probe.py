"""snapws.store.probe: which filesystems can hold a store."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapws.errors import ExitCode, MountError, UnsupportedError
from snapws.mounts.mounter import detach, mount_at, mount_overlay, unmount
from snapws.mounts.plan import MountPlan
from snapws.store import probe
from snapws.store.probe import (
    FUSE_MAGIC,
    OVERLAYFS_MAGIC,
    check_store_filesystem,
    fs_magic,
    has_d_type,
    has_trusted_xattrs,
)

EXT4_MAGIC = 0xEF53
TMPFS_MAGIC = 0x01021994
XFS_MAGIC = 0x58465342
BTRFS_MAGIC = 0x9123683E


def is_mounted(target: Path) -> bool:
    info = mount_at(target)
    return info is not None and info.mountpoint == Path(os.path.realpath(target))


def release(target: Path) -> None:
    """Unmount ``target`` whatever is mounted there (detach as a last resort)."""
    for _ in range(5):
        if not is_mounted(target):
            return
        try:
            unmount(target)
        except MountError:
            detach(target)
    assert not is_mounted(target)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "tmpfs"
    target.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "snapws-test", str(target)],
        check=True,
        capture_output=True,
    )
    try:
        yield target
    finally:
        release(target)


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Path]:
    """A read-only overlay of two small layers, mounted on tmp_path/ovl."""
    top, low = tmp_path / "top", tmp_path / "low"
    (top / "dir").mkdir(parents=True)
    (low / "dir" / "sub").mkdir(parents=True)
    target = tmp_path / "ovl"
    target.mkdir()
    try:
        mount_overlay(MountPlan(target, lowers=(top, low)))
        yield target
    finally:
        release(target)


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(".snapws-")]


def test_tmp_passes(tmp_path: Path) -> None:
    """The test machines keep /tmp on ext4; a tmpfs /tmp must pass as well."""
    assert fs_magic(tmp_path) in (EXT4_MAGIC, TMPFS_MAGIC, XFS_MAGIC, BTRFS_MAGIC)
    assert has_d_type(tmp_path)
    assert has_trusted_xattrs(tmp_path)
    check_store_filesystem(tmp_path)
    assert leftovers(tmp_path) == []


def test_fs_magic_of_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fs_magic(tmp_path / "missing")


@pytest.mark.root
def test_tmpfs_passes(tmpfs: Path) -> None:
    assert fs_magic(tmpfs) == TMPFS_MAGIC
    assert has_d_type(tmpfs)
    assert has_trusted_xattrs(tmpfs)
    check_store_filesystem(tmpfs)
    assert leftovers(tmpfs) == []


@pytest.mark.root
def test_store_on_overlay_is_refused(overlay: Path) -> None:
    inside = overlay / "dir" / "sub"
    assert fs_magic(inside) == OVERLAYFS_MAGIC
    with pytest.raises(UnsupportedError) as info:
        check_store_filesystem(inside)
    assert "overlay" in str(info.value)
    assert str(inside) in str(info.value)
    assert "--store" in info.value.hint
    assert info.value.exit_code is ExitCode.UNSUPPORTED


def test_fuse_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "fs_magic", lambda path: FUSE_MAGIC)
    with pytest.raises(UnsupportedError, match="FUSE") as info:
        check_store_filesystem(tmp_path)
    assert "--store" in info.value.hint


def test_no_d_type_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "has_d_type", lambda directory: False)
    with pytest.raises(UnsupportedError, match="d_type") as info:
        check_store_filesystem(tmp_path)
    assert "ftype=1" in info.value.hint


def test_no_trusted_xattrs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(95, "Operation not supported")  # EOPNOTSUPP

    monkeypatch.setattr(probe.os, "setxattr", refuse)
    assert not has_trusted_xattrs(tmp_path)
    with pytest.raises(UnsupportedError, match="trusted"):
        check_store_filesystem(tmp_path)
    assert leftovers(tmp_path) == []
