"""Choosing one image of a multi-platform image index, as docker and
skopeo do: the host's platform (``linux/<arch>[/<variant>]``) or the one
asked for with ``--platform os/arch[/variant]``.

Entries whose platform is ``unknown/unknown`` (BuildKit's attestation
manifests) are never chosen. An arm64 image without a variant matches
``v8`` and the other way round (docker's normalisation).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass
from typing import Any

from snapws.errors import BadImageError
from snapws.oci.image import DOCKER_LIST, OCI_INDEX, Descriptor, host_architecture

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_DEFAULT_VARIANT = {"arm64": "v8"}


@dataclass(frozen=True, slots=True)
class Platform:
    """An image platform: ``os/architecture[/variant]`` in Go's spelling."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm/v7``... Raises ValueError."""
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"{text!r} is not a platform such as linux/amd64 or linux/arm/v7")
        return cls(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def matches(self, other: Platform) -> bool:
        """True if an image for ``other`` runs as this platform asks (a
        missing variant on either side matches, save arm's own default)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant or not other.variant:
            return True
        default = _DEFAULT_VARIANT.get(self.architecture, "")
        return (self.variant or default) == (other.variant or default)


def host_platform() -> Platform:
    """This machine's platform: linux, its architecture and arm's variant."""
    arch = host_architecture()
    variant = ""
    if arch == "arm":
        machine = _platform.machine().lower()
        variant = (
            "v7" if machine.startswith("armv7") else "v6" if machine.startswith("armv6") else ""
        )
    return Platform("linux", arch, variant)


def _platform_of(entry: Any) -> Platform | None:
    plat = entry.get("platform") if isinstance(entry, dict) else None
    if not isinstance(plat, dict):
        return None
    os_, arch = plat.get("os"), plat.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or os_ == "unknown":
        return None
    variant = plat.get("variant")
    return Platform(os_.lower(), arch.lower(), variant.lower() if isinstance(variant, str) else "")


def choose_manifest(index: bytes | dict[str, Any], where: str, want: Platform | None) -> Descriptor:
    """The descriptor of ``index``'s image for ``want`` (None: the host's
    platform; an exact variant is preferred to one without). Raises
    BadImageError when the index is malformed or has no image for it,
    naming the platforms it has."""
    try:
        obj = json.loads(index) if isinstance(index, bytes) else index
        manifests = obj.get("manifests")
    except (ValueError, AttributeError, RecursionError):
        manifests = None
    if not isinstance(manifests, list):
        raise BadImageError(f"{where}: an image index without a manifest list")
    wanted = want or host_platform()
    candidates = []
    for m in manifests:
        p = _platform_of(m)
        if p is not None and wanted.matches(p):
            candidates.append((p.variant != wanted.variant, m))  # exact variant first
    if candidates:
        candidates.sort(key=lambda c: c[0])
        return Descriptor.from_json(candidates[0][1])
    known = sorted({str(p) for m in manifests if (p := _platform_of(m)) is not None})
    raise BadImageError(
        f"{where}: the image index has no image for {wanted} "
        f"(it has {', '.join(known) or 'no platform-specific images'})",
        hint="choose one with --platform OS/ARCH[/VARIANT]"
        if known
        else "fetch one image by its digest instead",
    )
