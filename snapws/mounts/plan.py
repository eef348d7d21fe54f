"""What to mount, as pure data: built by planning code, performed by :mod:`.mounter`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Overlay options every snapws mount carries, in this order: the safest
#: setting of each overlay feature, given explicitly because module
#: parameters and distro builds differ.
#:
#: * ``redirect_dir=nofollow``: the kernel neither creates nor follows
#:   ``overlay.redirect`` xattrs. ``off`` is not enough: on kernels built with
#:   ``redirect_always_follow`` (the default) ``off`` still follows a redirect
#:   planted in a layer, which then shows another directory's content; with
#:   ``nofollow`` a lookup of a redirected directory fails (EPERM) instead.
#:   ``userxattr`` also refuses any following value.
#: * ``metacopy=off``: no metadata-only copy-ups are made, and a lower file
#:   carrying ``overlay.metacopy`` is refused, never followed to its data.
#: * ``index=off``, ``nfs_export=off``: no index directory, no origin lookups
#:   by file handle for hardlinks or NFS.
#: * ``xino=off``: inode numbers are never composed from layer bits.
#: * ``uuid=off``: the kernel writes no ``overlay.uuid`` into the upperdir and
#:   ignores the uuids of the layers (``off`` rather than ``null``, which only
#:   Linux 6.6 and later accept).
#:
#: With them an upperdir is a plain tree plus whiteouts, opaque markers and
#: the kernel's ``origin``/``impure`` bookkeeping (which commit strips).
FIXED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("redirect_dir", "nofollow"),
    ("metacopy", "off"),
    ("index", "off"),
    ("nfs_export", "off"),
    ("xino", "off"),
    ("uuid", "off"),
)


def fixed_options_text() -> str:
    """:data:`FIXED_OPTIONS` as a mount option string (for messages and docs)."""
    return ",".join(f"{k}={v}" for k, v in FIXED_OPTIONS)


@dataclass(frozen=True, slots=True)
class MountPlan:
    """What to mount; pure data, built by planning code, performed by the mounter.

    ``lowers`` are the lower layer directories, TOPMOST FIRST (the overlay's
    own order: the first lower wins over the later ones). At least one.

    ``upper``/``work`` are both set (a writable workspace) or both ``None``
    (a read-only view of the lowers). A view with a single lower is legal:
    the kernel refuses a lowerdir-only overlay with one layer, and the
    mounter works around that (see :func:`snapws.mounts.mounter.mount_overlay`).

    ``readonly`` mounts a writable overlay read-only from the start;
    ``source`` is the string shown as the mount's source in mountinfo.

    Raises ``ValueError`` when built inconsistently (a programming error).
    """

    target: Path
    lowers: tuple[Path, ...]
    upper: Path | None = None
    work: Path | None = None
    userxattr: bool = False
    readonly: bool = False
    source: str = "snapws"

    def __post_init__(self) -> None:
        if not self.lowers:
            raise ValueError("a mount plan needs at least one lower layer")
        if (self.upper is None) != (self.work is None):
            raise ValueError("upper and work must be given together")
        if "," in self.source or "\n" in self.source or not self.source:
            raise ValueError(f"bad mount source {self.source!r}")

    @property
    def is_view(self) -> bool:
        """True for a read-only view (no upper layer)."""
        return self.upper is None

    def absolute_dirs(self) -> tuple[str, list[str], str | None, str | None]:
        """``(base, lowers, upper, work)``: the layer directories as absolute
        paths (lowers topmost first) and ``base``, their common parent, from
        which mount(2) and fuse-overlayfs are given shorter, relative names."""
        lowers = [os.path.abspath(p) for p in self.lowers]
        upper = os.path.abspath(self.upper) if self.upper is not None else None
        work = os.path.abspath(self.work) if self.work is not None else None
        base = os.path.commonpath(lowers + [p for p in (upper, work) if p is not None])
        return base, lowers, upper, work

    def options(self) -> list[tuple[str, str | None]]:
        """The overlay options, in a fixed order: ``(name, value)``; value None is a flag.

        Always :data:`FIXED_OPTIONS` (``redirect_dir=nofollow`` first), then
        the ``userxattr`` flag when set; views and writable mounts alike.
        """
        opts: list[tuple[str, str | None]] = list(FIXED_OPTIONS)
        if self.userxattr:
            opts.append(("userxattr", None))
        return opts
