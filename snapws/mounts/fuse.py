"""Mounting an overlay with fuse-overlayfs (a FUSE server), for the fuse backend.

Runs the ``fuse-overlayfs`` program; remounts and unmounts through
:mod:`snapws.mounts.mounter` (``umount2`` and ``MS_REMOUNT`` work on FUSE
mounts as root), or ``fusermount3 -u`` without root.

Facts this module relies on (fuse-overlayfs 1.10 with libfuse 3.14 on Linux
6.18, checked as root by tests/backends/test_fuse.py):

* ``fuse-overlayfs -o lowerdir=A:B,upperdir=U,workdir=W MNT`` mounts and then
  daemonizes: when the program returns 0, the mount is there, served by a
  background process (cwd ``/``, stdio on /dev/null) that lives until the
  mount's last user is gone. It has no escape for ``:`` or ``,`` in paths, so
  paths are given relative to their common parent (the program's cwd).
* It ignores ``-o fsname=``; libfuse names the mount after the program's
  ``argv[0]``: mountinfo shows fstype ``fuse.<argv0>`` and source ``<argv0>``.
  snapws passes the plan's ``source`` as argv[0] to recognise its mounts.
* The server keeps a directory descriptor open on every layer, the upperdir
  and ``workdir/work``: ``/proc/PID/fd`` names them by absolute path.
* ``MS_REMOUNT|MS_RDONLY`` works on the FUSE superblock (root), and fails
  with EBUSY while a file is open for writing, as with the kernel overlay.
* What it writes into the upperdir: see :mod:`snapws.layers.fuseform`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from snapws.errors import MountError, UnsupportedError
from snapws.mounts import mounter
from snapws.mounts.plan import MountPlan

__all__ = [
    "PROGRAM",
    "FuseServer",
    "device_problem",
    "find_program",
    "is_fuse_mount",
    "mount_fuse_overlay",
    "program_version",
    "remount",
    "server_alive",
    "servers",
    "unmount",
]

PROGRAM = "fuse-overlayfs"
#: fstype prefix of every FUSE mount in mountinfo
FUSE_FSTYPE = "fuse."
#: how long the program may take to mount before snapws gives up on it
MOUNT_TIMEOUT = 60.0

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]{1,200}$")
_NOISE = ("unknown argument ignored",)


def find_program() -> str | None:
    """The path of ``fuse-overlayfs`` on PATH (or /usr/bin, /usr/local/bin), or None."""
    return shutil.which(PROGRAM) or shutil.which(
        PROGRAM, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    )


def program_version(program: str) -> str | None:
    """The version ``program --version`` reports (e.g. ``"1.10"``), or None."""
    try:
        out = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"fuse-overlayfs: version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else None


def device_problem() -> str:
    """Why /dev/fuse cannot be used by this process ("" when it can)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (load the module: `modprobe fuse`)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    return ""


def _relative_paths(plan: MountPlan) -> tuple[str, list[str], str | None, str | None]:
    """(cwd, lowers, upper, work) with every path relative to their common parent."""
    base, lowers, upper, work = plan.absolute_dirs()

    def rel(path: str) -> str:
        r = os.path.relpath(path, base)
        if ":" in r or "," in r:
            raise MountError(
                f"cannot give {path!r} to {PROGRAM}: its options cannot hold ':' or ','",
                "rename the directory (or the store) so that it has neither",
            )
        return r

    return (
        base,
        [rel(p) for p in lowers],
        rel(upper) if upper is not None else None,
        rel(work) if work is not None else None,
    )


def mount_fuse_overlay(plan: MountPlan, program: str | None = None) -> None:
    """Mount ``plan`` with fuse-overlayfs on ``plan.target``.

    ``plan.source`` becomes the server's argv[0], hence the mount's source
    and fstype (``fuse.<source>``) in mountinfo: it must be a plain name
    (letters, digits, ``._+-``). ``plan.readonly`` remounts read-only right
    after mounting; ``plan.userxattr`` does not apply (fuse-overlayfs picks
    its xattrs itself). Raises :class:`UnsupportedError` when the program is
    missing, :class:`MountError` when it fails (its own message included) or
    when the mount does not appear.
    """
    program = program or find_program()
    if program is None:
        raise UnsupportedError(
            f"{PROGRAM} is not installed", "install it (Debian: apt-get install fuse-overlayfs)"
        )
    if not _SAFE_NAME.match(plan.source):
        raise MountError(
            f"bad name for a FUSE mount: {plan.source!r}",
            "use letters, digits, '.', '_', '+' and '-' only",
        )
    target = os.path.abspath(plan.target)
    cwd, lowers, upper, work = _relative_paths(plan)
    options = ["lowerdir=" + ":".join(lowers)]
    if upper is not None and work is not None:
        options += [f"upperdir={upper}", f"workdir={work}"]
    args = [plan.source, "-o", ",".join(options), target]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(
                args,
                executable=program,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=MOUNT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MountError(
                f"{PROGRAM} did not mount {target!r} within {MOUNT_TIMEOUT:.0f} s",
                "check that /dev/fuse works (`snapws doctor`)",
            ) from None
        except OSError as exc:
            raise MountError(f"cannot run {program}: {exc.strerror}") from None
        err.seek(0)
        said = _clean(err.read().decode("utf-8", "replace"))
    if proc.returncode != 0:
        raise MountError(
            f"{PROGRAM} failed to mount {target!r} (exit {proc.returncode})"
            + (f": {said}" if said else ""),
            _hint_for(said),
        )
    info = mounter.mount_at(Path(target))
    if info is None or info.fstype != FUSE_FSTYPE + plan.source:
        raise MountError(
            f"{PROGRAM} exited 0 but {target!r} is not its mount" + (f": {said}" if said else ""),
            "run `snapws doctor`",
        )
    if plan.readonly:
        remount(Path(target), readonly=True)


def _clean(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    return " | ".join(ln for ln in lines if ln and not ln.startswith(_NOISE))


def _hint_for(said: str) -> str:
    if "/dev/fuse" in said:
        return "check /dev/fuse (`modprobe fuse`; in a container: --device /dev/fuse)"
    if "Permission denied" in said or "Operation not permitted" in said:
        return "mounting FUSE needs root here (or CAP_SYS_ADMIN in a container)"
    return "run `snapws doctor`"


def is_fuse_mount(info: mounter.MountInfo, name: str | None = None) -> bool:
    """True for a FUSE mount (named ``name`` when given)."""
    if name is not None:
        return info.fstype == FUSE_FSTYPE + name
    return info.fstype.startswith(FUSE_FSTYPE)


def server_alive(target: Path) -> bool:
    """False when the FUSE server behind ``target`` is gone (ENOTCONN).

    Asks with statfs, which always reaches the server (stat may be answered
    from the kernel's attribute cache)."""
    try:
        os.statvfs(target)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return False
    return True


def remount(target: Path, readonly: bool) -> None:
    """Make the FUSE mount on ``target`` read-only (``readonly``) or writable.

    Needs root (CAP_SYS_ADMIN). Raises ``MountBusyError`` while a file is
    open for writing, :class:`MountError` on other failures.
    """
    mounter.remount_superblock(target, readonly)


def unmount(target: Path, lazy: bool = False) -> None:
    """Unmount the FUSE mount on ``target``; its server then exits.

    As root ``umount2`` (``lazy``: MNT_DETACH), otherwise ``fusermount3 -u``
    (``-z`` for lazy). Raises ``MountBusyError`` when busy (not lazy),
    :class:`MountError` otherwise.
    """
    if os.geteuid() == 0:
        if lazy:
            mounter.detach(target)
        else:
            mounter.unmount(target)
        return
    helper = shutil.which("fusermount3") or shutil.which("fusermount")
    if helper is None:
        raise MountError(
            f"cannot unmount {os.fspath(target)!r}: neither fusermount3 nor fusermount found",
            "install fuse3",
        )
    args = [helper, "-u", *(["-z"] if lazy else []), os.fspath(target)]
    proc = subprocess.run(
        args, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        text = proc.stderr.strip()
        error_class = mounter.MountBusyError if "busy" in text.lower() else MountError
        raise error_class(f"unmounting {os.fspath(target)!r} failed: {text}")


@dataclass(frozen=True, slots=True)
class FuseServer:
    """A running fuse-overlayfs: its pid, name (argv[0]) and the directories
    it holds open (layers, upperdir, ``workdir/work``), by absolute path."""

    pid: int
    name: str
    dirs: tuple[Path, ...]


def servers(name: str | None = None) -> list[FuseServer]:
    """Running FUSE servers whose argv[0] is ``name`` (any fuse-overlayfs, by
    its ``-o lowerdir=`` argument, when None). Processes whose /proc entries
    cannot be read (another user's, or gone) are skipped. Sorted by pid."""
    out = []
    try:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        argv0 = os.fsdecode(argv[0])
        if name is not None and argv0 != name:
            continue
        if name is None and not any(a.startswith(b"lowerdir=") for a in argv[1:]):
            continue
        out.append(FuseServer(pid, argv0, tuple(_open_dirs(pid))))
    return out


def _open_dirs(pid: int) -> list[Path]:
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return []
    dirs = []
    for fd in sorted(fds, key=int):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("/") and os.path.isdir(target):
            dirs.append(Path(target))
    return dirs
