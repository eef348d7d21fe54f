"""Moving what landed in the directory under a workspace mount into the
mount (the fallback of a gapless swap on kernels without mount-beneath),
and naming what an unmounted workspace directory holds that a mount would
hide."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

from snapws.errors import BadPathError
from snapws.mounts import busy

#: How long a freeze waits for files open for writing to be closed.
FREEZE_WAIT = 1.0


#: How many stray entries an error names before "... and N more".
STRAY_SHOWN = 10


def stray_entries(path: Path) -> list[str]:
    """The entries in the (unmounted) directory ``path``, sorted: what a
    mount on it would hide. Empty when it is missing or no directory."""
    try:
        return sorted(os.fsdecode(n) for n in os.listdir(os.fsencode(path)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def stray_entries_error(path: Path, stray: list[str], shared: bool, reach: str) -> BadPathError:
    """The error for an unmounted workspace directory holding ``stray``
    entries (written while it was unmounted, or from outside a rootless
    workspace's namespace): names up to :data:`STRAY_SHOWN` of them, and
    says how to bring them into the workspace (``reach``: how to reach it;
    ``shared``: whether its mount is seen by every process)."""
    shown = ", ".join(stray[:STRAY_SHOWN])
    if len(stray) > STRAY_SHOWN:
        shown += f" ... and {len(stray) - STRAY_SHOWN} more"
    where = (
        "written there while it was unmounted"
        if shared
        else "written there from outside the workspace's namespace, where its mount is not seen"
    )
    return BadPathError(
        f"the unmounted workspace directory {path} is not empty: mounting would hide "
        f"{len(stray)} {'entry' if len(stray) == 1 else 'entries'} {where}: {shown}",
        hint=f"move them elsewhere, then copy them into the workspace through {reach}",
    )


def move_into_mount(below_fd: int, target: Path) -> int:
    """Move every entry of the directory ``below_fd`` (the directory under a
    mount) into the mount on ``target``, entries of the same name replaced
    (what was written below is the newer). Returns the number of entries
    moved. Copies (a rename cannot cross the mount), then removes; a file
    is copied once no process holds it open for writing any more (a
    program that opened it below may still be writing it)."""
    below = f"/proc/self/fd/{below_fd}"  # a magic link: the directory itself
    return _move_tree(below, os.fspath(target))


def _move_tree(src_dir: str, dst_dir: str) -> int:
    moved = 0
    for name in os.listdir(src_dir):
        src = os.path.join(src_dir, name)
        dst = os.path.join(dst_dir, name)
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(dst) and not os.path.isdir(dst):
                os.unlink(dst)
            if not os.path.lexists(dst):
                os.mkdir(dst, stat.S_IMODE(st.st_mode))
                shutil.copystat(src, dst, follow_symlinks=False)
            moved += _move_tree(src, dst)
            os.rmdir(src)
            continue
        if stat.S_ISREG(st.st_mode):
            deadline = time.monotonic() + FREEZE_WAIT * 10
            while busy.inode_open_for_writing(st.st_dev, st.st_ino):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        elif os.path.lexists(dst):
            os.unlink(dst)
        shutil.copy2(src, dst, follow_symlinks=False)
        os.unlink(src)
        moved += 1
    return moved
