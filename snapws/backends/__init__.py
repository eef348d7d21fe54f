"""Backends: how a workspace shows its layers, and which one this machine allows.

- ``kernel``: overlayfs mounted by root (:mod:`snapws.backends.kernel`);
- ``rootless``: the kernel overlay inside a user namespace of a non-root user,
  with ``userxattr`` (:class:`snapws.backends.kernel.RootlessBackend`,
  :mod:`snapws.backends.userns`);
- ``fuse``: fuse-overlayfs, as root (:mod:`snapws.backends.fuse`);
- ``plain``: no mount at all, an ordinary directory
  (:class:`snapws.backends.plain.backend.PlainBackend`).

Every one implements the whole :class:`~snapws.backends.base.Backend`
interface; the overlay ones share :class:`~snapws.backends.overlay.OverlayBackend`.

A workspace's backend is chosen once, by ``snapws init`` (``--backend``,
``backend =`` in snapws.toml, default ``auto``: :func:`choose_backend`), and
recorded in its state; every later command uses the recorded one
(:func:`backend_for`). The store and snapshot ids do not depend on it.
"""

from __future__ import annotations

from pathlib import Path

from snapws.backends.base import Availability, Backend, MountStatus
from snapws.config import Config
from snapws.errors import ConfigError, UnsupportedError
from snapws.model import WorkspaceState

__all__ = [
    "AUTO_ORDER",
    "BACKEND_NAMES",
    "Availability",
    "Backend",
    "MountStatus",
    "backend_for",
    "choose_backend",
    "get_backend",
    "probe_all",
]

#: Every backend, fastest first.
BACKEND_NAMES = ("kernel", "rootless", "fuse", "plain")
#: The backends ``auto`` tries, in order: those whose workspace directory
#: every process of the user sees. Not rootless: its mount lives in a user
#: namespace that only ``snapws shell``/``run`` (and what they start) enter,
#: so the editor, other terminals and the file manager would see an empty
#: directory; it is taken only when asked for (``--backend rootless``).
AUTO_ORDER = ("kernel", "fuse", "plain")

_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKEND_NAMES`).

    Raises :class:`UnsupportedError` for an unknown name (a workspace made
    by a newer snapws)."""
    found = _instances.get(name)
    if found is not None:
        return found
    backend: Backend
    if name == "kernel":
        from snapws.backends.kernel import KernelBackend

        backend = KernelBackend()
    elif name == "rootless":
        from snapws.backends.kernel import RootlessBackend

        backend = RootlessBackend()
    elif name == "fuse":
        from snapws.backends.fuse import FuseBackend

        backend = FuseBackend()
    elif name == "plain":
        from snapws.backends.plain.backend import PlainBackend

        backend = PlainBackend()
    else:
        raise UnsupportedError(
            f"unknown backend {name!r}",
            hint=f"backends are {', '.join(BACKEND_NAMES)}; a workspace made by a newer "
            "snapws needs that version",
        )
    _instances[name] = backend
    return backend


def backend_for(state: WorkspaceState) -> Backend:
    """The backend that ``state``'s workspace was made with."""
    return get_backend(state.backend)


def probe_all(store_root: Path, names: tuple[str, ...] = BACKEND_NAMES) -> list[Availability]:
    """:meth:`Backend.probe` of each backend in ``names``, in that order."""
    return [get_backend(n).probe(store_root) for n in names]


def choose_backend(
    config: Config, store_root: Path, requested: str | None = None
) -> tuple[str, str]:
    """Which backend a new workspace with its store at ``store_root`` gets,
    and why: ``(name, reason)``.

    ``requested`` (``--backend``; default ``config.backend``) is a backend
    name or ``auto``. ``auto`` takes the first of :data:`AUTO_ORDER` whose
    probe succeeds: kernel (root, the store not on an overlay, a test overlay
    mount works), fuse (fuse-overlayfs installed, /dev/fuse usable, a test
    mount works, root), else plain, which always works. So a user who is not
    root gets plain: a directory all her processes see. Rootless is never
    chosen by ``auto``, only when requested. The probes may mount
    and unmount small test overlays beside the store.

    Raises :class:`ConfigError` for an unknown name, and
    :class:`UnsupportedError` (exit 9) when the requested backend cannot run
    here: its message says why, its hint names the backend that would.
    """
    wanted = requested if requested is not None else config.backend
    if wanted != "auto" and wanted not in BACKEND_NAMES:
        raise ConfigError(
            f"unknown backend {wanted!r}",
            hint=f"choose auto or one of {', '.join(BACKEND_NAMES)}",
        )
    if wanted == "auto":
        name, reason, skipped = _auto(store_root)
        return name, reason + "".join(f"; {n} skipped: {why}" for n, why in skipped)
    found = get_backend(wanted).probe(store_root)
    if found.ok:
        return wanted, f"requested; {found.reason}"
    name, reason, _ = _auto(store_root, skip=wanted)
    hint = f"use `--backend {name}`, which works here ({reason})"
    if found.fix:
        hint += f"; or, for the {wanted} backend: {found.fix}"
    raise UnsupportedError(f"the {wanted} backend cannot run here: {found.reason}", hint=hint)


def _auto(store_root: Path, skip: str | None = None) -> tuple[str, str, list[tuple[str, str]]]:
    """(first available backend, why it works, [(skipped backend, why not)])."""
    skipped: list[tuple[str, str]] = []
    for name in AUTO_ORDER:
        if name == skip:
            continue
        found = get_backend(name).probe(store_root)
        if found.ok:
            return name, found.reason, skipped
        skipped.append((name, found.reason))
    raise UnsupportedError(
        "no backend can run here: " + "; ".join(f"{n}: {why}" for n, why in skipped),
        hint="`snapws doctor` explains each; the store's directory must be writable",
    )
