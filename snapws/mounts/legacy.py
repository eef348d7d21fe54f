"""The legacy mount(2) path for kernels without the new mount API's
``lowerdir+`` (before Linux 6.8): one option string of at most 4095 bytes,
made short by a chdir into the layers' common parent, else by naming each
layer by an O_PATH descriptor. Used by :func:`snapws.mounts.mounter.mount_overlay`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from snapws.errors import MountError
from snapws.mounts.plan import MountPlan
from snapws.mounts.syscalls import (
    _MS_RDONLY,
    KernelLog,
    fs,
    mount_call,
    mount_error,
    overlay_missing,
)

#: mount(2) copies its option string into one page: at most 4095 bytes + NUL.
MAX_LEGACY_OPTIONS = 4095

#: Legacy fallback: when the option string with paths relative to the layers'
#: common parent is still too long, name each layer by an O_PATH descriptor
#: ("lowerdir=5:6:7", resolved from cwd ``/proc/self/fd``). Tests switch it off
#: to exercise the "too many layers" error.
LEGACY_FD_PATHS = True


def _escape_legacy(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _legacy_data(
    lowers: Sequence[str], upper: str | None, work: str | None, plan: MountPlan
) -> str:
    parts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    for key, value in plan.options():
        parts.append(key if value is None else f"{key}={value}")
    return ",".join(parts)


def _fitting_layers(
    lowers: Sequence[str], upper: str | None, work: str | None, plan: MountPlan
) -> int:
    """How many of ``lowers`` (topmost first) fit in the option string."""
    budget = MAX_LEGACY_OPTIONS - len(os.fsencode(_legacy_data([], upper, work, plan)))
    count = 0
    for i, lower in enumerate(lowers):
        budget -= len(os.fsencode(lower)) + (1 if i else 0)
        if budget < 0:
            break
        count += 1
    return count


@contextmanager
def _cwd(path: str) -> Iterator[None]:
    """chdir into ``path``; restore the previous cwd (by descriptor) afterwards."""
    saved = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(path)
        try:
            yield
        finally:
            os.fchdir(saved)
    finally:
        os.close(saved)


def mount_legacy(plan: MountPlan, target: Path) -> None:
    """Mount ``plan`` on ``target`` with mount(2) (see the module docstring).
    Precondition: not a view of a single lower (the kernel refuses it; the
    caller binds it instead). Raises UnsupportedError (no overlay), MountError
    (also when the option string cannot fit: the message says how many fit)."""
    base, lowers, upper, work = plan.absolute_dirs()
    every = lowers + [p for p in (upper, work) if p is not None]

    def rel(path: str) -> str:
        return _escape_legacy(os.path.relpath(path, base))

    rel_lowers = [rel(p) for p in lowers]
    rel_upper = rel(upper) if upper is not None else None
    rel_work = rel(work) if work is not None else None
    data = _legacy_data(rel_lowers, rel_upper, rel_work, plan)
    flags = _MS_RDONLY if plan.readonly else 0
    if len(os.fsencode(data)) <= MAX_LEGACY_OPTIONS:
        _legacy_mount_in(base, data, flags, plan, target)
        return
    size = len(os.fsencode(data))
    fits = _fitting_layers(rel_lowers, rel_upper, rel_work, plan)
    if LEGACY_FD_PATHS:
        fds: list[int] = []
        try:
            for path in every:
                try:
                    fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                except OSError as exc:
                    raise mount_error(exc, f"opening layer {path!r} to mount on", target) from None
            names = [str(fd) for fd in fds]
            n = len(lowers)
            fd_upper = names[n] if upper is not None else None
            fd_work = names[n + 1] if work is not None else None
            data = _legacy_data(names[:n], fd_upper, fd_work, plan)
            if len(data) <= MAX_LEGACY_OPTIONS:
                _legacy_mount_in("/proc/self/fd", data, flags, plan, target)
                return
            fits = max(fits, _fitting_layers(names[:n], fd_upper, fd_work, plan))
        finally:
            for fd in fds:
                os.close(fd)
    raise MountError(
        f"cannot mount overlay on {os.fspath(target)!r} with mount(2): its option string "
        f"for {len(lowers)} layers is {size} bytes, more than the "
        f"kernel's {MAX_LEGACY_OPTIONS}; at most {fits} layers fit with these paths",
        "`snapws flatten` reduces the number of layers (or use a kernel >= 6.8, "
        "whose lowerdir+ has no such limit)",
    )


def _legacy_mount_in(base: str, data: str, flags: int, plan: MountPlan, target: Path) -> None:
    klog = KernelLog()
    try:
        try:
            with _cwd(base):
                mount_call(
                    plan.source.encode(),
                    fs(target),
                    b"overlay",
                    flags,
                    os.fsencode(data),
                    "mount overlay",
                )
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise overlay_missing() from None
            raise mount_error(exc, "mounting overlay on", target, klog.lines()) from None
    finally:
        klog.close()
