"""Remote URLs: parsing and validation (pure).

Accepted forms:

- ``HOST[:PORT]/REPO[/MORE...]`` or ``docker://HOST[:PORT]/REPO[/...]``: a
  repository of an OCI registry (``docker.io/NAME`` means
  ``registry-1.docker.io/library/NAME``, as docker does);
- ``dir:/PATH`` or ``oci:/PATH``: an OCI image layout directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from snapws.errors import BadNameError, BadRemoteUrlError

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_REPOSITORY = 255

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """A parsed remote URL. ``kind`` is ``registry`` or ``dir``.

    Registry: ``host`` (``name`` or ``name:port``, as credentials are keyed),
    ``repository``; ``insecure`` means plain HTTP. Dir: ``path`` (absolute)."""

    kind: str
    host: str = ""
    repository: str = ""
    path: Path | None = None
    insecure: bool = False

    @property
    def url(self) -> str:
        """The canonical URL (what ``remote list`` shows)."""
        if self.kind == "dir":
            return f"oci:{self.path}"
        return f"{self.host}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host[:port] to connect to (Docker Hub's API lives elsewhere)."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host


def validate_remote_name(name: str) -> None:
    """Remote names: a letter or digit, then letters, digits, ``_ . -``
    (at most 64). Raises BadNameError."""
    if not _REMOTE_NAME.match(name) or name in (".", ".."):
        raise BadNameError(
            f"invalid remote name {name!r}",
            hint="remote names are letters, digits, '_', '.' and '-' (at most 64), "
            "starting with a letter or digit, such as origin or ci-cache",
        )


def parse_remote_url(text: str, insecure: bool = False, cwd: Path | None = None) -> RemoteSpec:
    """Parse ``text``; relative directory paths are taken from ``cwd``.
    Raises BadRemoteUrlError with the reason."""
    text = text.strip()
    if not text:
        raise BadRemoteUrlError("empty remote URL")
    for prefix in ("dir:", "oci:"):
        if text.startswith(prefix):
            if insecure:
                raise BadRemoteUrlError("--insecure applies to registries, not to directories")
            raw = text[len(prefix) :]
            if raw.startswith("//"):
                raw = raw[2:]  # oci:///path
            if not raw:
                raise BadRemoteUrlError(f"{text!r} names no directory")
            path = Path(os.path.normpath((cwd or Path.cwd()) / os.path.expanduser(raw)))
            return RemoteSpec("dir", path=path)
    rest = text
    if rest.startswith("docker://"):
        rest = rest[len("docker://") :]
    elif "://" in rest:
        scheme = rest.split("://", 1)[0]
        raise BadRemoteUrlError(
            f"unsupported URL scheme {scheme!r} in {text!r}",
            hint="write registries as HOST[:PORT]/REPOSITORY (https; add --insecure for "
            "plain HTTP) and directories as dir:/PATH",
        )
    if "@" in rest.split("/", 1)[0]:
        raise BadRemoteUrlError(
            "remote URLs must not carry credentials",
            hint="put them in the environment, credentials.toml or auth.json "
            "(see `snapws remote --help`)",
        )
    if "/" not in rest:
        raise BadRemoteUrlError(
            f"{text!r} names no repository: write HOST[:PORT]/REPOSITORY "
            "(e.g. 127.0.0.1:5000/team/build-cache)"
        )
    host, repository = rest.split("/", 1)
    repository = repository.rstrip("/")
    _check_host(host, text)
    if ":" in repository.rsplit("/", 1)[-1] or "@" in repository:
        raise BadRemoteUrlError(
            f"{text!r}: a remote names a repository, not a tag or digest",
            hint="give the tag to push/pull/fetch instead (snapws push REMOTE REV --tag TAG)",
        )
    if host == DOCKER_HUB and "/" not in repository:
        repository = "library/" + repository
    _check_repository(repository, text)
    return RemoteSpec("registry", host=host, repository=repository, insecure=insecure)


def _check_host(host: str, text: str) -> None:
    name, port = host, ""
    if host.startswith("["):
        end = host.find("]")
        name, port = host[: end + 1], host[end + 1 :].lstrip(":")
        ok = bool(_IPV6.match(name)) and end > 0
    else:
        if ":" in host:
            name, port = host.rsplit(":", 1)
            if not port:
                raise BadRemoteUrlError(f"{text!r}: empty port after ':'")
        ok = bool(_HOSTNAME.match(name))
    if not ok:
        raise BadRemoteUrlError(f"{text!r}: {name!r} is not a host name or address")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise BadRemoteUrlError(f"{text!r}: bad port {port!r} (1-65535)")


def _check_repository(repository: str, text: str) -> None:
    if not repository:
        raise BadRemoteUrlError(f"{text!r} names no repository after the host")
    if len(repository) > MAX_REPOSITORY:
        raise BadRemoteUrlError(f"{text!r}: repository longer than {MAX_REPOSITORY} characters")
    for comp in repository.split("/"):
        if not _COMPONENT.match(comp):
            raise BadRemoteUrlError(
                f"{text!r}: repository component {comp!r} is invalid",
                hint="repository names are lowercase letters and digits, separated by "
                "'/', '.', '_', '__' or '-' (the OCI distribution spec's rule)",
            )
