"""The files of an image to import, read as hostile input: beneath a layout
or docker archive directory (never through a symlink, never a FIFO or a
device), or the regular members of an uncompressed tar of one.

:mod:`snapws.oci.imagesource` makes an image of them; docs/security.md
("Imports read only what the image owns") states the rules.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from snapws.errors import BadImageError
from snapws.oci import tarformat as tf

MAX_MEMBERS = 1 << 16  # files in a layout or docker archive tar


class ImageFiles:
    """Named files of a directory or of an uncompressed tar."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, cap: int) -> bytes:
        """The content of ``name``, at most ``cap`` bytes (else BadImageError)."""
        with self.open(name) as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise BadImageError(f"{name} is larger than {cap} bytes")
        return data

    def close(self) -> None:
        return None


_KINDS = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class DirImageFiles(ImageFiles):
    """Files of a layout directory, read only beneath it: the directory is
    opened once; each name is walked one component at a time with
    ``openat(O_NOFOLLOW | O_DIRECTORY)``, and the file itself is opened with
    ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file (fstat). A
    symlink, FIFO, device or directory anywhere on the way is refused
    (BadImageError naming it, never its content)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise BadImageError(f"cannot open {root}: {e.strerror}") from None

    def _parts(self, name: str) -> list[str]:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts or name.startswith("/") or not parts:
            raise BadImageError(f"the image names a file outside it: {name[:200]!r}")
        return parts

    def _open_parent(self, parts: list[str], name: str) -> int | None:
        """A new fd of the directory holding ``parts[-1]`` (None: a component
        is missing)."""
        fd = os.dup(self._fd)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(
                        part,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                except FileNotFoundError:
                    os.close(fd)
                    return None
                except OSError:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    where = "/".join(parts[: i + 1])
                    raise BadImageError(
                        f"{where} in the image is {_kind(st.st_mode)}, not a directory "
                        f"(while opening {name})"
                    ) from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _lstat(self, name: str) -> os.stat_result | None:
        parts = self._parts(name)
        fd = self._open_parent(parts, name)
        if fd is None:
            return None
        try:
            return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        finally:
            os.close(fd)

    def _open_fd(self, name: str) -> int:
        """An fd of regular file ``name`` beneath the layout. Raises
        BadImageError (missing, or not a regular file)."""
        parts = self._parts(name)
        dfd = self._open_parent(parts, name)
        if dfd is None:
            raise _missing(name)
        try:
            try:
                fd = os.open(
                    parts[-1],
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=dfd,
                )
            except FileNotFoundError:
                raise _missing(name) from None
            except OSError:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                raise BadImageError(
                    f"{name} in the image is {_kind(st.st_mode)}, not a regular file"
                ) from None
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BadImageError(
                    f"{name} in the image is {_kind(st.st_mode)}, not a regular file"
                )
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def exists(self, name: str) -> bool:
        return self._lstat(name) is not None

    def size(self, name: str) -> int:
        fd = self._open_fd(name)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def open(self, name: str) -> BinaryIO:
        return os.fdopen(self._open_fd(name), "rb")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Section(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, as a stream."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed with the section)
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1, /) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


class TarImageFiles(ImageFiles):
    """Files of an uncompressed tar (a layout or a docker archive): its
    regular members, indexed once (at most MAX_MEMBERS entries, no duplicate
    names), each read as a section of the tar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, tuple[int, int]] = {}
        with open(path, "rb") as f:

            def skip(n: int) -> None:
                f.seek(n, os.SEEK_CUR)

            reader = tf.TarReader(f.read, str(path), skip=skip)
            for count, h in enumerate(reader.entries()):
                if count >= MAX_MEMBERS:
                    raise BadImageError(f"{path} holds more than {MAX_MEMBERS} entries")
                name = "/".join(p for p in os.fsdecode(h.name).split("/") if p not in ("", "."))
                if h.type == tf.REGULAR:
                    if name in self.members:
                        raise BadImageError(f"{path}: duplicate member {name!r}")
                    self.members[name] = (reader.offset, h.size)
        if not self.members:
            raise BadImageError(f"{path} holds no files")

    def exists(self, name: str) -> bool:
        return name in self.members

    def size(self, name: str) -> int:
        try:
            return self.members[name][1]
        except KeyError:
            raise _missing(name) from None

    def open(self, name: str) -> BinaryIO:
        try:
            offset, size = self.members[name]
        except KeyError:
            raise _missing(name) from None
        return io.BufferedReader(_Section(self.path, offset, size), 1 << 20)


def _missing(name: str) -> BadImageError:
    return BadImageError(f"the image points at {name}, which is not there (a missing blob)")
