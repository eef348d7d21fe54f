"""Whether a plain workspace's scan may take a directory's recorded names
for its listing when the directory's stat is unchanged (git's untracked
cache, :mod:`snapws.backends.plain.scan`).

That rests on the filesystem moving a directory's mtime and ctime whenever
an entry is added, removed or renamed in it. Local Linux filesystems do; a
network or FUSE filesystem may serve cached or made-up directory times, so
the shortcut is taken only on the filesystems listed here (as git asks the
user to vouch for a filesystem before it enables its untracked cache).
``$SNAPWS_PLAIN_UNTRACKED_CACHE`` (``0`` or ``1``) overrides the choice.
"""

from __future__ import annotations

import os

#: Environment override: ``0`` never takes the shortcut, ``1`` always does.
UNTRACKED_CACHE_ENV = "SNAPWS_PLAIN_UNTRACKED_CACHE"

#: Filesystems whose directory times move with every change of their entries.
RELIABLE_FSTYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "overlay", "zfs", "bcachefs"}
)


def fstype_of(path: bytes) -> str | None:
    """The type of the filesystem that shows ``path`` (an absolute path):
    that of the mount with the longest mountpoint above its real path (the
    last one listed, if several are stacked there). None if /proc cannot
    tell."""
    from snapws.errors import MountError
    from snapws.mounts.mountinfo import read_mountinfo

    try:
        mounts = read_mountinfo()
    except MountError:
        return None
    real = os.fsdecode(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for m in mounts:
        point = str(m.mountpoint)
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), m.fstype)
    return best[1] if best is not None else None


def dir_times_reliable(path: bytes) -> bool:
    """Whether the scan of the working tree at ``path`` may trust unchanged
    directory stats to mean unchanged listings (see the module docstring)."""
    env = os.environ.get(UNTRACKED_CACHE_ENV)
    if env in ("0", "1"):
        return env == "1"
    return fstype_of(path) in RELIABLE_FSTYPES
