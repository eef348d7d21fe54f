"""What is mounted where: /proc/self/mountinfo parsed (pure parsing, and
its reading, kept until the kernel says the table changed), and the stack
of mounts on a path."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from snapws.errors import MountError


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of /proc/self/mountinfo, unescaped.

    ``mount_options`` are the per-mount flags (``rw``/``ro``, ``nosuid``,
    ``relatime``...). ``super_options`` are the superblock's: ``rw``/``ro``
    then the filesystem's own, each ``name -> value`` (None for a flag).

    For an overlay the kernel lists the layers as given: a mount made with
    the new API shows one ``lowerdir+`` per layer, topmost first (the dict keeps
    only the last: read them with :meth:`super_values`), plus ``upperdir`` and
    ``workdir`` as absolute paths. A legacy mount shows ``lowerdir=a:b:c`` with
    the (relative, or descriptor-number) strings it was given, which are
    meaningless afterwards. ``redirect_dir``, ``metacopy``, ``index`` appear
    only when they differ from the module's defaults: with the defaults of
    Linux 6.18 a snapws mount lists none of them, except ``redirect_dir=on``
    on views (the kernel shows "follow" as "on" without upper; it creates no
    redirect there) and ``redirect_dir=nofollow`` with ``userxattr``.
    """

    mount_id: int
    parent_id: int
    mountpoint: Path
    fstype: str
    source: str
    mount_options: tuple[str, ...]
    super_options: dict[str, str | None]
    super_items: tuple[tuple[str, str | None], ...] = ()

    def super_values(self, name: str) -> list[str | None]:
        """Every value of super option ``name``, in order (``lowerdir+`` repeats)."""
        return [value for key, value in self.super_items if key == name]


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(raw: bytes) -> str:
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), raw))


def parse_mountinfo(data: bytes) -> list[MountInfo]:
    """Parse the bytes of a mountinfo file (see proc(5)); malformed lines are skipped."""
    result: list[MountInfo] = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 10:
            continue
        try:
            sep = fields.index(b"-", 6)
            mount_id = int(fields[0])
            parent_id = int(fields[1])
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        supers = fields[sep + 3] if len(fields) > sep + 3 else b""
        items: list[tuple[str, str | None]] = []
        for opt in supers.split(b","):
            if not opt:
                continue
            key, eq, value = opt.partition(b"=")
            items.append((_unescape(key), _unescape(value) if eq else None))
        result.append(
            MountInfo(
                mount_id=mount_id,
                parent_id=parent_id,
                mountpoint=Path(_unescape(fields[4])),
                fstype=_unescape(fields[sep + 1]),
                source=_unescape(fields[sep + 2]),
                mount_options=tuple(o.decode() for o in fields[5].split(b",") if o),
                super_options=dict(items),
                super_items=tuple(items),
            )
        )
    return result


class _Table:
    """The parsed table, kept open (see :func:`read_mountinfo`): the file's
    descriptor, the process and mount namespace it was opened for (a forked
    child opens its own: a poll of a shared descriptor would take the
    parent's notice), and what it showed."""

    fd = -1
    key = (0, 0, 0)
    mounts: list[MountInfo] | None = None


def read_mountinfo() -> list[MountInfo]:
    """The mounts of this process's mount namespace, in /proc/self/mountinfo order.

    Read once and kept: the kernel flags an open mountinfo file (POLLPRI)
    whenever its namespace's mount table changes, as libmount and systemd
    watch it, so a later call reads it again only then (or in another
    mount namespace: rootless entered one). A command asks several times,
    and with many overlay layers the file is tens of kilobytes that take the
    kernel milliseconds to write out.

    Raises :class:`MountError` when /proc is not readable.
    """
    import select

    try:
        st = os.stat("/proc/self/ns/mnt")
        key = (os.getpid(), st.st_dev, st.st_ino)
        table = _Table
        if table.fd >= 0 and table.key != key:
            if table.key[0] == key[0]:
                os.close(table.fd)  # (a child leaves its parent's descriptor open)
            table.fd, table.mounts = -1, None
        if table.fd < 0:
            table.fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            table.key, table.mounts = key, None
        if table.mounts is not None:
            changed = select.poll()
            changed.register(table.fd, select.POLLPRI | select.POLLERR)
            if not changed.poll(0):
                return list(table.mounts)
        chunks = []
        offset = 0
        while chunk := os.pread(table.fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise MountError(
            f"reading '/proc/self/mountinfo' failed: {exc.strerror} ({name})", "mount /proc"
        ) from None
    table.mounts = parse_mountinfo(b"".join(chunks))
    return list(table.mounts)


def mounts_at(path: Path) -> list[MountInfo]:
    """The stack of mounts whose mountpoint is the realpath of ``path``,
    topmost first (what the path shows) down to the bottom one.

    Ordered by parentage, not by mountinfo order: a mount put beneath
    another (``MOVE_MOUNT_BENEATH``) is listed after it in mountinfo but is
    its parent."""
    real = Path(os.path.realpath(path))
    here = [info for info in read_mountinfo() if info.mountpoint == real]
    if len(here) <= 1:
        return here
    ids = {info.mount_id for info in here}
    by_parent = {info.parent_id: info for info in here if info.parent_id in ids}
    bottom = [info for info in here if info.parent_id not in ids]
    if len(bottom) != 1:  # not one stack (cannot happen in one namespace)
        return list(reversed(here))
    stack = [bottom[0]]
    while stack[-1].mount_id in by_parent and len(stack) <= len(here):
        stack.append(by_parent[stack[-1].mount_id])
    return list(reversed(stack))


def mount_at(path: Path) -> MountInfo | None:
    """The topmost mount whose mountpoint is the realpath of ``path``, or None."""
    stack = mounts_at(path)
    return stack[0] if stack else None


def is_readonly(info: MountInfo) -> bool:
    """True when writes through this mount fail with EROFS (mount or superblock ro)."""
    return "ro" in info.mount_options or "ro" in info.super_options
