"""The names of a (hostile) layer tar's entries, checked before anything is
created (pure: no filesystem).

:func:`normalize` gives an entry's path inside the layer, refusing what
would leave it (``..``, absolute paths other than the root's own entry,
components longer than NAME_MAX); :func:`escapes` tells a symlink whose
relative target climbs above the layer's root. Both raise or answer from
the bytes alone, so :class:`~snapws.oci.tarextractor.LayerExtractor` can
refuse an entry before it touches the tree.
"""

from __future__ import annotations

from snapws.errors import BadImageError
from snapws.layers.entries import parent_of
from snapws.model import ROOT, display_path
from snapws.oci import tarformat as tf


def normalize(name: bytes, what: str) -> bytes:
    """The layer path of the tar name ``name`` (no ``.`` or empty
    components, no trailing slash; ``ROOT`` for the root's own entry).
    Raises BadImageError (naming ``what``, the layer) for an absolute path,
    an empty name, ``..``, or a component longer than
    :data:`~snapws.oci.tarformat.MAX_COMPONENT` bytes."""
    if name.startswith(b"/") and name.strip(b"/.") == b"" and b".." not in name:
        return ROOT  # "/" (umoci insert ... /, docker): the root's entry
    if name.startswith(b"/"):
        raise BadImageError(
            f"{what}: absolute path {display_path(name)} (paths must stay in the layer)"
        )
    if not name:
        raise BadImageError(f"{what}: an entry with an empty name")
    core = name[:-1] if name.endswith(b"/") else name  # (a directory's "d/")
    parts = core.split(b"/")
    if b"" not in parts and b"." not in parts and b".." not in parts:
        # in canonical form already: checked in C loops (10,000 components deep)
        if max(map(len, parts)) > tf.MAX_COMPONENT:
            raise _too_long(name, what)
        return core
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise BadImageError(f"{what}: path {display_path(name)} climbs out of the layer with '..'")
    for p in parts:
        if len(p) > tf.MAX_COMPONENT:
            raise _too_long(name, what)
    return b"/".join(parts) or ROOT


def _too_long(name: bytes, what: str) -> BadImageError:
    return BadImageError(f"{what}: a name longer than {tf.MAX_COMPONENT} bytes in {name[:80]!r}")


def escapes(link: bytes, target: bytes) -> bool:
    """True if the relative symlink ``link`` -> ``target`` climbs above the
    layer's root (an absolute target is the container's business)."""
    if target.startswith(b"/"):
        return False
    level = 0 if parent_of(link) == ROOT else parent_of(link).count(b"/") + 1
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            level -= 1
            if level < 0:
                return True
        else:
            level += 1
    return False
