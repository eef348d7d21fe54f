"""What to mount, as pure data: built by planning code, performed by :mod:`.mounter`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Overlay options every snapws mount carries, in this order. With them the
#: kernel never writes redirect or metacopy xattrs into the upperdir and keeps
#: no index, so an upperdir is a plain tree plus whiteouts and opaque markers
#: that snapws can record faithfully.
FIXED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
)


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

    def options(self) -> list[tuple[str, str | None]]:
        """The overlay options, in a fixed order: ``(name, value)``; value None is a flag.

        Always ``redirect_dir``, ``metacopy=off`` and ``index=off``, then the
        ``userxattr`` flag when set. ``redirect_dir`` is ``off`` except with
        ``userxattr``, where it is ``nofollow``: the kernel turns ``off`` into
        ``follow`` (module parameter ``redirect_always_follow``, on by default)
        and refuses ``userxattr`` together with ``follow``. Both values mean
        the kernel never creates a redirect.
        """
        opts: list[tuple[str, str | None]] = list(FIXED_OPTIONS)
        if self.userxattr:
            opts[0] = ("redirect_dir", "nofollow")
            opts.append(("userxattr", None))
        return opts
