"""Durable, atomic publication: write to a temp name, fsync, rename, fsync dir."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new
    content, never a mix. Creates missing parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. ``path`` is a directory: leave no litter
        raise
    fsync_dir(path.parent)


def append_durable(path: Path, line: bytes) -> None:
    """Append one line (O_APPEND, fsync). A crash may leave a torn last line,
    which readers must skip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        append_line_fd(fd, line)
    finally:
        os.close(fd)


def append_line_fd(fd: int, line: bytes) -> None:
    """Append one line to ``fd`` (opened O_RDWR | O_APPEND), then fsync it;
    a line torn by a crash is ended first, so that it stays unreadable alone."""
    if not line.endswith(b"\n"):
        line += b"\n"
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    os.write(fd, line)
    os.fsync(fd)


def rename_durable(src: Path, dst: Path) -> None:
    """rename(2) then fsync both parent directories."""
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
